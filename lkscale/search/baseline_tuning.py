"""The Tune experiment that trains a study's baselines (see ``lkscale.search.baselines``). Imports Ray:
the driver imports this module only when it is about to run Tune."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from lkscale.config import to_dict
from lkscale.rundir import read_trials
from lkscale.search.baselines import baseline_jobs
from lkscale.search.objective import Objective
from lkscale.search.recorder import Recorder
from lkscale.search.staging import data_stage_payload
from lkscale.study import Study

EXPERIMENT = "tune_baselines"


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


class JobSearch(Searcher):
    """Hands out a fixed list of Tune configs, then finishes."""

    def __init__(self, jobs: list[dict], say: Callable[[str], None] | None = None):
        super().__init__(metric="val_acc", mode="max")
        self.jobs, self.total, self.done, self.say = list(jobs), len(jobs), 0, say

    def suggest(self, trial_id: str):
        return self.jobs.pop(0) if self.jobs else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.done += 1
        if self.say:
            r = result or {}
            acc = f"{100 * float(r['val_acc']):.1f}%" if r.get("val_acc") is not None and not r.get("failed") \
                else (r.get("error") or "failed")
            self.say(f"baseline {self.done}/{self.total} finished: {acc}")

    def __getstate__(self):
        d = dict(self.__dict__)
        d["say"] = None
        return d


def _experiment(tune_root: str, resume: bool) -> str:
    if not resume:
        return EXPERIMENT
    k = 1
    while os.path.isdir(os.path.join(tune_root, f"{EXPERIMENT}_resume{k}")):
        k += 1
    return f"{EXPERIMENT}_resume{k}"


def train_baselines(study: Study, run_dir: str, tune_root: str, objective: Objective, *, trainable: Callable,
                    address: str | None = None, storage: str | None = None, resume: bool = False,
                    max_failures: int = 2, say: Callable[[str], None] = lambda m: None) -> int:
    """Train the baselines' missing replicates (see the module docstring); returns how many were run."""
    jobs = baseline_jobs(study, objective, read_trials(run_dir))
    if not jobs:
        return 0
    r = study.resources
    proxy = study.proxy if r.gpus_per_trial else dataclasses.replace(study.proxy, device="cpu")
    param_space = {"run_dir": run_dir, "data": to_dict(study.data), "proxy": to_dict(proxy),
                   "cpus_per_trial": r.cpus_per_trial, "weights_checkpoint": False}
    if address:
        stage = data_stage_payload(study.data)
        if stage is not None:
            trainable = tune.with_parameters(trainable, data_stage=stage)
    trainable = tune.with_resources(trainable, {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})
    say(f"training {len(jobs)} baseline run(s) ({len({j['name'] for j in jobs})} model(s)) with the study's proxy "
        f"settings and replicate seeds")
    searcher = ConcurrencyLimiter(JobSearch(jobs, say), max_concurrent=study.search.concurrency)
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=len(jobs), reuse_actors=False,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=_experiment(tune_root, resume),
                                  storage_path=storage if storage and "://" in storage else tune_root, verbose=0,
                                  callbacks=[Recorder(run_dir, int(study.proxy.epochs), study.proxy.seed, None)],
                                  failure_config=tune.FailureConfig(max_failures=max_failures)))
    tuner.fit()
    return len(jobs)


__all__ = ["train_baselines", "JobSearch", "EXPERIMENT"]
