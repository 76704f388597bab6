"""A Tune callback that records each finished retrain in ``fidelity.csv`` as it ends (so an interrupted run
keeps what finished). Imports Ray: ``run`` imports this module only when it is about to run Tune."""
from __future__ import annotations

import json
from typing import Callable

from ray.tune import Callback

from lkscale.rundir import read_fidelity, write_fidelity


def result_row(candidate: dict, role: str, result: dict, epochs: int, train_per_class: int | None) -> dict:
    """One ``fidelity.csv`` row from a retrain's last reported result."""
    done = int(result.get("epoch") or 0)
    failed = bool(result.get("failed")) or done < epochs
    error = result.get("error") or ("" if not failed else f"stopped after {done} of {epochs} epochs")
    curve = result.get("val_acc_epochs") or "[]"
    return {"name": candidate["name"], "role": role, "state": "failed" if failed else "complete",
            "proxy_acc": candidate.get("proxy_acc"), "high_acc": None if failed else float(result.get("val_acc")),
            "latency_ms": candidate.get("latency_ms"), "epochs": epochs, "train_per_class": train_per_class,
            "val_n": result.get("val_n"), "seconds": result.get("seconds"), "error": error,
            "val_acc_epochs": json.loads(curve) if isinstance(curve, str) else curve,
            "kernels": candidate.get("kernels"), "blocks": candidate.get("blocks"), "spec": candidate.get("spec")}


class FidelityRecorder(Callback):
    def __init__(self, run_dir: str, epochs: int, train_per_class: int | None, say: Callable[[str], None]):
        self.run_dir, self.epochs, self.train_per_class, self.say = run_dir, epochs, train_per_class, say
        self.last: dict[str, dict] = {}

    def __getstate__(self):  # Tune saves its callbacks with the experiment; the progress printer is the driver's
        return {k: v for k, v in self.__dict__.items() if k != "say"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.say = lambda m: None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = dict(result)
        cand = trial.config["candidate"]
        self.say(f"  {cand['name']}: epoch {result.get('epoch')}/{self.epochs}, val acc {float(result.get('val_acc') or 0):.4f}")

    def _record(self, trial, result: dict) -> None:
        cand = trial.config["candidate"]
        row = result_row(cand, cand.get("role", ""), result, self.epochs, self.train_per_class)
        rows = [r for r in read_fidelity(self.run_dir) if r.get("name") != row["name"]]  # callbacks run one at a time
        write_fidelity(self.run_dir, rows + [row])
        what = f"high-fidelity acc {row['high_acc']:.4f}" if row["state"] == "complete" else f"failed: {row['error']}"
        self.say(f"retrained {row['name']} ({row['role']}): proxy acc {float(row['proxy_acc']):.4f}, {what}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(trial, self.last.get(trial.trial_id, {}))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._record(trial, {**self.last.get(trial.trial_id, {}), "failed": True, "error": "the trial raised"})
