"""Retrain the sample of a finished search at a higher fidelity with Ray Tune, then write the numbers.

Resumable: every finished retrain is recorded in ``fidelity.csv`` as it ends; a re-run (after an
interruption, or with a larger ``sample``) retrains only what is missing at the same settings. Rows at
other settings (epochs, training images) are dropped, since they answer another question.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable

from lkscale.config import DataConfig, FidelityConfig, PruningConfig, TrainConfig, from_dict, to_dict
from lkscale.fidelity.replay import replay_rules
from lkscale.fidelity.sample import strata, stratified_sample
from lkscale.fidelity.stats import fidelity_statistics, rung_statistics
from lkscale.rundir import (Run, RunDir, RunDirError, Trial, candidates, fidelity_experiment, keep_damaged, load_run,
                            read_fidelity, update_summary, write_fidelity)
from lkscale.runlock import RunLock

log = logging.getLogger("lkscale.fidelity")


@dataclass
class Plan:
    run: Run
    cfg: FidelityConfig
    data: DataConfig           # the high-fidelity data settings
    train: TrainConfig         # the high-fidelity training settings
    proxy_epochs: int
    sample: list[tuple[Trial, str]]
    done: list[dict]           # finished retrains at these settings (kept)
    todo: list[tuple[Trial, str]]
    cpus_per_trial: float
    reference: tuple[float, float]


def _reference(run: Run, cands: list[Trial]) -> tuple[float, float]:
    """Hypervolume reference (accuracy 0, latency): 1.1x the largest latency among the run's candidates, and
    never past the latency budget. Close to the points on purpose: with a far reference (the main study's
    50 ms budget is 90x its largest latency) every front's hypervolume is about its best accuracy times the
    budget, and the ratio says 1.00 whatever the front lost."""
    lat = [float(c.latency_ms) for c in cands if c.get("latency_ms") is not None]
    near = 1.1 * max(lat) if lat else 1.0
    budget = run.budgets.get("max_latency_ms")
    return (0.0, min(near, float(budget)) if budget else near)


def _same_settings(row: dict, cfg: FidelityConfig, train_per_class: int | None) -> bool:
    return int(row.get("epochs") or 0) == cfg.epochs and row.get("train_per_class") == train_per_class


def make_plan(run_dir: str, cfg: FidelityConfig) -> Plan:
    """Read the run, fix the high-fidelity settings and the sample, and split it into done / to do."""
    run = load_run(run_dir)
    if not run.study:
        raise RunDirError(f"{run_dir}: no study.yaml, so the proxy's settings are unknown")
    data0 = from_dict(DataConfig, run.study.get("data") or {})
    proxy = from_dict(TrainConfig, run.study.get("proxy") or {})
    data = dataclasses.replace(
        data0, train_per_class=cfg.train_per_class or data0.train_per_class, augment=cfg.augment,
        val_per_class=cfg.val_per_class or data0.val_per_class, input_size=cfg.input_size or data0.input_size)
    train = dataclasses.replace(proxy, epochs=cfg.epochs, seed=cfg.seed)
    cands = candidates([t for t in run.trials])
    sample = stratified_sample(cands, cfg.sample, cfg.seed)
    if len(sample) < 3:
        raise RunDirError(f"{run_dir}: {len(sample)} complete candidate(s) with a latency; a fidelity check needs 3")
    rows = [r for r in read_fidelity(run_dir, []) if _same_settings(r, cfg, data.train_per_class)]  # damage: said
    done = [r for r in rows if r.get("state") == "complete"]
    names = {r["name"] for r in done}
    todo = [(c, role) for c, role in sample if c.name not in names]
    cpus = float((run.study.get("resources") or {}).get("cpus_per_trial") or 1.0)
    return Plan(run, cfg, data, train, int(proxy.epochs), sample, done, todo, cpus, _reference(run, cands))


def keep_finished(plan: Plan) -> None:
    """Rewrite ``fidelity.csv`` with the finished retrains at the plan's settings only (the rest is retrained)."""
    write_fidelity(plan.run.path, plan.done)


def trial_dirname(trial) -> str:
    return f"retrain_{trial.trial_id}"


def _candidate(c: Trial, role: str) -> dict:
    return {"name": c.name, "spec": c.spec, "number": c.get("number", 0), "latency_ms": c.get("latency_ms"),
            "proxy_acc": c.val_acc, "role": role, "kernels": c.get("kernels"), "blocks": c.get("blocks")}


def run_tune(plan: Plan, address: str | None = None, say: Callable[[str], None] = log.info,
             trainable: Callable | None = None) -> None:
    """Ray Tune over the retrains still to do (``trainable``: a stand-in for tests; the search's by default)."""
    import ray  # deferred on purpose: reading a run's fidelity numbers needs no Ray
    from ray import tune

    from lkscale.fidelity.recorder import FidelityRecorder
    from lkscale.fidelity.trainable import retrain

    run_dir, d = plan.run.path, RunDir(plan.run.path)
    keep_finished(plan)
    if not plan.todo:
        return
    if not ray.is_initialized():
        say("starting Ray" if not address else f"connecting to Ray at {address}")
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables would land on stdout, which --json owns
    fn = retrain if trainable is None else tune.with_parameters(retrain, inner=trainable)
    if address and trainable is None:
        from lkscale.search.staging import data_stage_payload

        stage = data_stage_payload(plan.data)
        if stage is not None:
            fn = tune.with_parameters(fn, data_stage=stage)
    fn = tune.with_resources(fn, {"cpu": plan.cpus_per_trial})
    space = {"run_dir": d.fidelity_dir, "data": to_dict(plan.data), "proxy": to_dict(plan.train),
             "cpus_per_trial": plan.cpus_per_trial, "weights_checkpoint": bool(address),
             "candidate": tune.grid_search([_candidate(c, role) for c, role in plan.todo])}
    os.makedirs(d.fidelity_dir, exist_ok=True)
    experiment = fidelity_experiment(d.fidelity_dir)
    say(f"retraining {len(plan.todo)} of {len(plan.sample)} sampled candidates at {plan.cfg.epochs} epochs "
        f"({plan.proxy_epochs} in the proxy), {plan.cfg.concurrency} at a time"
        + (f"; {len(plan.done)} finished before are kept" if plan.done else ""))
    tuner = tune.Tuner(fn, param_space=space,
                       tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=plan.cfg.concurrency,
                                                   reuse_actors=False, trial_dirname_creator=trial_dirname),
                       run_config=tune.RunConfig(name=experiment, storage_path=d.fidelity_dir, verbose=0,
                                                 callbacks=[FidelityRecorder(run_dir, plan.cfg.epochs,
                                                                             plan.data.train_per_class, say)]))
    with contextlib.redirect_stdout(sys.stderr):  # whatever Tune still prints is progress, not the result
        tuner.fit()


def statistics(plan: Plan) -> dict:
    """The ``fidelity`` entry of summary.json: settings, sample, proxy-vs-high statistics, pruning rungs."""
    cfg, run = plan.cfg, plan.run
    rows = [r for r in read_fidelity(run.path) if _same_settings(r, cfg, plan.data.train_per_class)]
    search = run.study.get("search") or {}
    pr = search.get("pruning") or {}
    pcfg = from_dict(PruningConfig, pr)  # the study's pruning, its defaults filled in
    rf = float(pcfg.reduction_factor)
    rungs = pcfg.rungs(plan.proxy_epochs)
    searched = [t for t in run.trials if t.get("role") != "baseline"]  # a study's baselines were never searched
    first = [t for t in searched if int(t.get("replicate") or 0) == 0]
    truth = {r["name"]: float(r["high_acc"]) for r in rows if r.get("state") == "complete" and r.get("high_acc") is not None}
    replayed = replay_rules(searched, truth, (1, 2, int(pcfg.grace_epochs)), rf, seed=cfg.seed)
    return {
        "settings": {**to_dict(cfg), "proxy_epochs": plan.proxy_epochs,
                     "proxy_train_per_class": (run.study.get("data") or {}).get("train_per_class"),
                     "high_train_per_class": plan.data.train_per_class, "high_val_per_class": plan.data.val_per_class,
                     "high_input_size": plan.data.input_size, "epoch_ratio": cfg.epochs / max(1, plan.proxy_epochs)},
        "sample": [{"name": c.name, "role": role} for c, role in plan.sample],
        "proxy_vs_high": fidelity_statistics(rows, plan.reference, cfg.top_k, cfg.warn_tau, cfg.seed,
                                             population=strata(candidates(list(run.trials)))),
        "rungs": [rung_statistics(first, r, plan.proxy_epochs, cfg.top_k, 1 / rf, cfg.warn_tau, cfg.seed) for r in rungs],
        "pruning": "none (scaling study)" if search.get("mode") == "scaling" else pcfg.scheduler,
        "pruning_replay": replayed,
    }


def run_fidelity(run_dir: str, cfg: FidelityConfig, address: str | None = None,
                 say: Callable[[str], None] = log.info, trainable: Callable | None = None,
                 figure: bool = True) -> dict:
    """Retrain what is missing, then write ``summary.json``'s ``fidelity`` key (and the scatter); returns it.
    Holds the run folder (``lkscale.runlock``) throughout; a damaged row of ``fidelity.csv`` is said, kept
    in a copy, and retrained; damaged rows of ``trials.csv`` are said and left out of the sample."""
    with RunLock(run_dir, "fidelity", create=False) as lock:
        if lock.took_over:
            say(f"note: took over the run-folder lock left by {lock.took_over.describe()}, which is gone")
        bad: list = []
        read_fidelity(run_dir, bad)
        if bad:
            copy = keep_damaged(RunDir(run_dir).fidelity_csv)
            for dmg in bad:
                say(f"warning: {dmg}: retrained (the damaged file is kept as {copy})")
        plan = make_plan(run_dir, cfg)
        for dmg in plan.run.damaged:
            say(f"warning: {dmg}: left out")
        run_tune(plan, address, say, trainable)
        out = statistics(plan)
        if figure:
            from lkscale.fidelity.figure import scatter_png

            rows = [r for r in read_fidelity(run_dir) if r.get("state") == "complete"]
            out["figure"] = os.path.basename(scatter_png(rows, RunDir(run_dir).fidelity_png, out["proxy_vs_high"]) or "")
        out = _finite(out)
        update_summary(run_dir, {"fidelity": out})
    return out


def _finite(v):
    """NaN/inf as None, so summary.json stays strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v
