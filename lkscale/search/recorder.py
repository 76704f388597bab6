"""A Tune callback that keeps ``trials.csv`` current and tells the user how far along the search is.

One row per Tune trial (a candidate's replicate): architecture, costs, latency with its interval,
accuracy per epoch, state, seconds, node. Scheduler-stopped trials are marked ``pruned`` in the result
itself, which is how the searcher learns to tell Optuna PRUNED. Progress goes to ``progress`` (the
CLI's stderr printer); see ``lkscale.search.progress``.

``LKSCALE_FAULT=exit-after-record`` (tests only) ends the driver with ``os._exit`` right after the first
finished trial is written to ``trials.csv`` and before Optuna is told: the window a ``kill -9`` can hit.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

from ray.tune import Callback

from lkscale.rundir import RunDir, read_trials, write_trials
from lkscale.search.progress import Progress, clear_progress
from lkscale.search.searcher import trial_state

log = logging.getLogger("lkscale.search")
STAGE_KEYS = (("blocks", "block"), ("kernels", "kernel"), ("depths", "depth"), ("widths", "width"))


def row_for(cfg: dict, result: dict, row: dict, state: str, epochs: int, seed: int) -> dict:
    """The trials.csv row of a Tune trial from its config and latest result (``row``: the previous one)."""
    spec = json.loads(cfg["spec"]) if cfg.get("spec") else None
    st = spec["stages"] if spec else []
    row = dict(row)
    row.update({k: [s[key] for s in st] for k, key in STAGE_KEYS})
    row.update({
        "number": cfg.get("number"), "name": cfg.get("name", ""), "state": state,
        "dcn_groups": [s.get("dcn_groups") for s in st], "reparam": [s.get("reparam", []) for s in st],
        "stem_stride": spec["stem"]["stride"] if spec else None, "spec": cfg.get("spec", ""),
        "replicate": int(cfg.get("replicate", 0)), "epochs_budget": epochs, "seed": seed + int(cfg.get("replicate", 0)),
        "val_acc": result.get("val_acc", row.get("val_acc")),
        "val_acc_epochs": result.get("val_acc_epochs", row.get("val_acc_epochs") or "[]"),
        "epochs_done": result.get("epoch", row.get("epochs_done", 0)),
        "seconds": round(float(result.get("seconds", 0.0) or 0.0), 2), "node": result.get("node", ""),
        "error": result.get("error", "") or cfg.get("infeasible", ""), "notes": "; ".join(cfg.get("notes") or []),
        "val_n": result.get("val_n", row.get("val_n")), "device": result.get("device", row.get("device")),
        "precision": result.get("precision", row.get("precision")),
    })
    for k in ("params", "deploy_params", "flops", "latency_ms", "latency_low_ms", "latency_high_ms",
              "latency_runtime", "latency_source", "latency_node"):
        row[k] = cfg.get(k)
    row["latency_search_ms"] = cfg.get("latency_ms")  # what the sampler and the scheduler saw
    row["role"] = cfg.get("role") or "candidate"  # a study's baselines: "baseline" (never on a front)
    if isinstance(row["val_acc_epochs"], str):
        row["val_acc_epochs"] = json.loads(row["val_acc_epochs"] or "[]")
    return row


class Recorder(Callback):
    def __init__(self, run_dir: str, epochs: int, seed: int, progress: Progress | None = None):
        self.run_dir, self.epochs, self.seed = run_dir, epochs, seed
        self.progress = progress
        self.rows: dict[str, dict] = {str(t.row.get("trial_id")): dict(t.row) for t in read_trials(run_dir)}

    def __getstate__(self):  # the progress printer is the driver's; not part of the checkpoint
        d = dict(self.__dict__)
        d["progress"] = None
        return d

    def _record(self, trial, result: dict, state: str) -> dict:
        row = row_for(trial.config, result, self.rows.get(trial.trial_id, {}), state, self.epochs, self.seed)
        row["trial_id"] = trial.trial_id
        self.rows[trial.trial_id] = row
        write_trials(self.run_dir, list(self.rows.values()))
        return row

    def on_trial_result(self, iteration, trials, trial, result, **info):
        done = result.get("done")
        if done and not result.get("infeasible") and not result.get("failed") \
                and int(result.get("epoch") or 0) < self.epochs:
            result["pruned"] = True  # stopped by the scheduler: the searcher records PRUNED
        state = trial_state(result) if done or int(result.get("epoch") or 0) >= self.epochs \
            or result.get("infeasible") or result.get("failed") else "running"
        row = self._record(trial, result, state)
        if self.progress:
            running = {t.trial_id: t for t in trials if t.status == "RUNNING"}
            if state == "running":
                self.progress.epoch_done(row, self.rows.values(), running)
            self.progress.update(self.rows.values(), running=running)
        if state != "running" and os.environ.get("LKSCALE_FAULT") == "exit-after-record":
            os._exit(9)  # fault injection (tests): the row is written, Optuna is not told yet
        return row

    def on_step_end(self, iteration, trials, **info):
        if self.progress:  # the plain-line heartbeat (Tune steps at least every second)
            self.progress.tick(self.rows.values(), {t.trial_id: t for t in trials if t.status == "RUNNING"})

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = dict(trial.last_result or {})
        prev = self.rows.get(trial.trial_id, {})
        row = self._record(trial, result, prev.get("state") if prev.get("state") not in (None, "running")
                           else trial_state(result))
        clear_progress(self.run_dir, trial.trial_id)  # the trial's per-epoch progress file (lkscale.search.progress)
        if self.progress:
            self.progress.trial_done(row, self.rows.values(), _running(trials, trial))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        """Final weights persisted by Tune to storage: copied into the run folder when the trial's node
        could not write there (a cluster without a shared filesystem)."""
        name = trial.config.get("name")
        dest = RunDir(self.run_dir).weights(name) if name else None
        if not dest or os.path.isfile(dest):
            return
        try:
            with checkpoint.as_directory() as d:
                src = RunDir(d).weights(name)
                if os.path.isfile(src):
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    shutil.copyfile(src, dest + ".part")
                    os.replace(dest + ".part", dest)
        except Exception as e:  # noqa: BLE001 - the row still says complete; export reports missing weights
            log.warning("could not copy the weights of %s from its checkpoint: %s", name, e)

    def on_trial_error(self, iteration, trials, trial, **info):
        result = dict(trial.last_result or {})
        err = ""
        if trial.error_file and os.path.isfile(trial.error_file):
            with open(trial.error_file, errors="replace") as f:
                lines = [ln for ln in f.read().strip().splitlines() if ln.strip()]
            err = lines[-1][:300] if lines else ""
        result["error"] = err or "trial process failed"
        row = self._record(trial, result, "failed")
        clear_progress(self.run_dir, trial.trial_id)
        if self.progress:
            self.progress.trial_done(row, self.rows.values(), _running(trials, trial))


def _running(trials, done) -> dict:
    return {t.trial_id: t for t in trials if t.status == "RUNNING" and t is not done}
