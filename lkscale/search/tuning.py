"""The Ray Tune part of a search: Ray, the searcher, the scheduler, the Tuner. Imports Ray (on purpose:
the driver imports this module only when it is about to run Tune)."""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Callable

import optuna
import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from lkscale.config import to_dict
from lkscale.search.schedulers import make_scheduler
from lkscale.rundir import read_trials
from lkscale.search.adaptive import adaptive_hook
from lkscale.search.checks import check_resources
from lkscale.search.confirm import confirm_hook
from lkscale.search.ledger import Ledger
from lkscale.search.objective import Objective
from lkscale.search.progress import Progress, plan_probe
from lkscale.search.recorder import Recorder
from lkscale.search.resume import close_abandoned, cut_short, reconcile, rung_history
from lkscale.search.searcher import StudySearch
from lkscale.search.staging import data_stage_payload
from lkscale.search.storage import optuna_storage
from lkscale.search.tracking import callbacks as tracking_callbacks
from lkscale.search.trainable import train_candidate
from lkscale.space import grid as space_grid
from lkscale.space import size as space_size
from lkscale.study import Study, StudyError

log = logging.getLogger("lkscale.search")


class _TuneGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose exhausted grid does not call ``study.stop()``: the searcher ends the sweep, and
    ``Study.stop`` raises outside ``optimize()``. Module level, so Tune can pickle the searcher."""

    def after_trial(self, study, trial, state, values) -> None:
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError as e:
            if "Study.stop" not in str(e):
                raise


def make_sampler(study: Study, resume_index: int = 0):
    """The study's sampler; a resumed search gets a fresh random stream (seed + resume index), so it does
    not replay the draws of the first run (the ledger skips any architecture already tried anyway)."""
    s = study.search
    seed = s.seed + 7919 * resume_index
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, max(2, s.trials // 3)),
                                          multivariate=True, group=True)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, s.trials // 3)))
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    g = space_grid(study.space)
    if not g:
        raise StudyError("search.sampler", "grid: the space has no choices to enumerate")
    # the grid keeps the first run's seed: GridSampler shuffles its points by the seed and records each trial's
    # grid_id in that order, so a resumed grid under another seed skips points (found by tests/test_faults.py)
    return _TuneGridSampler(g, seed=s.seed)


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _quiet(verbose: bool) -> None:
    """Progress is ours; Ray's status tables and hints only with --verbose."""
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _grid_size(study: Study) -> int | None:
    return space_size(study.space) if study.search.sampler == "grid" else None


def _scheduler(study: Study, run_dir: str, resume: bool):
    if study.search.mode == "scaling":
        return make_scheduler("none", study.proxy.epochs, 1, 2)  # a scaling study never prunes a grid point
    pr = study.search.pruning
    history = rung_history(read_trials(run_dir), study.proxy.epochs) if resume else []
    return make_scheduler(pr.scheduler, int(study.proxy.epochs), pr.grace_epochs, pr.reduction_factor, history=history,
                          pruner=pr.pruner)


def start_ray(address: str | None, verbose: bool, say: Callable[[str], None]) -> None:
    """Start (or connect to) Ray once per process; before costing when latency runs on a cluster node."""
    if not ray.is_initialized():
        say("starting Ray" if not address else f"connecting to Ray at {address}")
        ray.init(address=address, include_dashboard=False, logging_level=logging.INFO if verbose else logging.ERROR,
                 log_to_driver=verbose, configure_logging=True)


def fit(study: Study, run_dir: str, tune_root: str, objective: Objective, *, resume: bool, address: str | None,
        storage: str | None, optuna_url: str | None, verbose: bool, progress: Callable[[str], None] | None,
        max_failures: int, experiment: str, tensorboard: bool, say: Callable[[str], None],
        trainable: Callable | None = None) -> bool:
    """Run the Tuner; False when a resumed study had nothing left to run."""
    _quiet(verbose)
    if not tensorboard:
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    start_ray(address, verbose, say)
    check_resources(study, ray.cluster_resources())
    store = optuna_storage(run_dir, optuna_url)
    resume_index = 0
    if resume:
        ledger, requeued = reconcile(study, run_dir, store)
        resume_index = int(re.sub(r"\D", "", experiment) or 1) % 1_000_003  # tune_resumeK or a timestamp
        say(f"resuming: {ledger.distinct_finished()} architectures already finished are kept; {requeued} "
            f"interrupted trial(s) re-queued; {ledger.budget} new architecture(s) to run"
            + (f", {len(ledger.jobs)} replicate(s) owed" if ledger.jobs else ""))
        if ledger.budget == 0 and ledger.idle():
            return False
    else:
        ledger = Ledger(study.search.trials, study.search.replicates)
    r = study.resources
    proxy = study.proxy if r.gpus_per_trial else dataclasses.replace(study.proxy, device="cpu")  # no GPU asked: none used
    param_space = {"run_dir": run_dir, "data": to_dict(study.data), "proxy": to_dict(proxy),
                   "cpus_per_trial": r.cpus_per_trial, "weights_checkpoint": bool(address),
                   "memory_mb": r.memory_per_trial_mb}
    trainable = trainable or train_candidate
    if address:  # a cluster: nodes without the data root get it from the object store (once per node)
        stage = data_stage_payload(study.data)
        if stage is not None:
            trainable = tune.with_parameters(trainable, data_stage=stage)
        if not storage:
            say(f"note: Tune results and trial weights go to {run_dir}; on a cluster without a shared "
                f"filesystem pass --storage (a path every node shares, or a URI such as s3://...)")
    trainable = tune.with_resources(trainable, {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})
    ot_study = optuna.create_study(study_name=study.name, storage=store, directions=["maximize", "minimize"],
                                   sampler=make_sampler(study, resume_index), load_if_exists=True)
    searcher = StudySearch(objective, ot_study, ledger, on_idle=adaptive_hook(study, run_dir) or confirm_hook(study, run_dir),
                           grid_size=_grid_size(study))
    lines = progress or (lambda m: log.info(m))
    prog = Progress(lines, ledger.budget * study.search.replicates + len(ledger.jobs), int(study.proxy.epochs),
                    study.search.concurrency, study.budgets.max_latency_ms, probe=plan_probe(run_dir), run_dir=run_dir,
                    validated_every_epoch=study.proxy.val_every_epoch)
    recorder = Recorder(run_dir, int(study.proxy.epochs), study.proxy.seed, prog)
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=study.search.concurrency),
                                    scheduler=_scheduler(study, run_dir, resume), num_samples=-1, reuse_actors=False,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=experiment, storage_path=storage if storage and "://" in storage else tune_root,
                                  verbose=2 if verbose else 0,
                                  callbacks=[recorder, *tracking_callbacks(study, run_dir, recorder.rows)],
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    mode = "a scaling study: every grid point at full fidelity, no pruning" if study.search.mode == "scaling" else \
        f"pruning: {study.search.pruning.scheduler}"
    say(f"searching: {ledger.budget} architectures x {study.search.replicates} replicate(s), "
        f"{study.search.concurrency} at a time, {int(study.proxy.epochs)} epochs each ({mode}); results in {run_dir}")
    tuner.fit()
    if close_abandoned(study, store, run_dir) or cut_short(run_dir):  # Ctrl-C: Tune stopped and returned
        raise KeyboardInterrupt("the search was interrupted; `lkscale search --resume` continues it")
    if ledger.duplicates:
        say(f"{ledger.duplicates} draw(s) of architectures already tried were skipped (recorded in Optuna as "
            f"FAIL with user attribute duplicate_of)")
    return True
