"""Tune schedulers that stop weak proxy runs between epochs (the rules are ``lkscale.pruning``'s).

``MultiObjectiveASHA`` (``moasha``) is asynchronous successive halving where "weak" means *dominated*:
at each rung a trial is compared with every trial that reached that rung before it and continues if
``lkscale.pruning.keep_top`` keeps it.

``OptunaPrunerScheduler`` (``optuna``) asks one of Optuna's own pruners (successive halving, Hyperband,
median) or lkscale's multi-objective rule behind Optuna's ``BasePruner`` interface (``MultiObjectiveSHAPruner``,
``pruner: moasha``) through Optuna's public API (``Trial.report`` / ``Trial.should_prune`` on a side study of
validation accuracy: Optuna does not support intermediate values in a two-objective study, which is why
Ray's ``OptunaSearch`` cannot prune there). Ray's single-objective ``ASHAScheduler`` on accuracy
(``asha``) and no pruning (``none``) stay selectable.
A stopped trial's final result gets ``done=True`` from Tune before callbacks run; the search's
recorder marks it ``pruned`` there, which is how the Optuna searcher learns to record it as PRUNED.
"""
from __future__ import annotations

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from lkscale.config import rung_epochs
from lkscale.pruning import COST_ATTR, keep_top, optuna_pruner


class MultiObjectiveASHA(FIFOScheduler):
    def __init__(self, max_t: int, grace_period: int = 1, reduction_factor: float = 2, time_attr: str = "epoch",
                 acc: str = "val_acc", cost: str = "latency_ms", history: list | None = None):
        super().__init__()
        if grace_period < 1 or reduction_factor <= 1:
            raise ValueError("grace_period must be >= 1 and reduction_factor > 1")
        self.max_t, self.rf, self.time_attr, self.acc, self.cost = max_t, reduction_factor, time_attr, acc, cost
        self.rungs = rung_epochs(max_t, grace_period, reduction_factor)
        self.recorded: dict[int, dict[str, tuple[float, float]]] = {r: {} for r in self.rungs}
        for key, accs, cost in history or []:  # a resumed search: the rungs as the record left them
            for r in self.rungs:
                if len(accs) >= r:
                    self.recorded[r][key] = (float(accs[r - 1]), float(cost))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        t = result.get(self.time_attr)
        if t is None or result.get("infeasible") or result.get("failed") or t >= self.max_t:
            return TrialScheduler.CONTINUE
        if int((getattr(trial, "config", None) or {}).get("replicate") or 0) > 0:
            return TrialScheduler.CONTINUE  # extra replicates of a candidate that passed are never pruned
        for rung in reversed(self.rungs):
            if t < rung:
                continue
            seen = self.recorded[rung]
            if trial.trial_id in seen:
                return TrialScheduler.CONTINUE
            seen[trial.trial_id] = (float(result[self.acc]), float(result[self.cost]))
            if len(seen) < self.rf:  # too few to judge: like ASHA, let early arrivals through
                return TrialScheduler.CONTINUE
            return TrialScheduler.CONTINUE if trial.trial_id in keep_top(seen, 1 / self.rf) else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return "MultiObjectiveASHA: " + ", ".join(f"rung {r}: {len(v)}" for r, v in self.recorded.items())


class OptunaPrunerScheduler(FIFOScheduler):
    """Optuna's pruner decides, between epochs, on the validation accuracy curve (see the module docstring).

    The side study lives in memory and is rebuilt from the recorded curves when Tune restores the
    scheduler or a search resumes (``history``)."""

    def __init__(self, pruner: str, max_t: int, grace_period: int = 1, reduction_factor: float = 2,
                 acc: str = "val_acc", history: list | None = None):
        super().__init__()
        self.pruner, self.max_t, self.grace, self.rf, self.acc = pruner, max_t, grace_period, reduction_factor, acc
        self.curves: dict[str, list[float]] = {key: list(accs) for key, accs, _ in history or []}
        self.costs: dict[str, float] = {key: float(cost or 0.0) for key, _, cost in history or []}
        self.stopped: set = set()
        self._build()

    def _build(self) -> None:
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # a fixed name: Optuna's Hyperband assigns brackets by hashing the study name with the trial number,
        # so a random name would make the same curves prune differently from one run to the next
        self.study = optuna.create_study(study_name="lkscale-pruning-side-study", direction="maximize",
                                         pruner=optuna_pruner(self.pruner, self.grace, self.rf, self.max_t))
        optuna.logging.set_verbosity(level)
        self.live: dict[str, optuna.Trial] = {}
        for key, accs in self.curves.items():  # the record: finished curves, so rungs compare with them
            t = self.study.ask()
            t.set_user_attr(COST_ATTR, self.costs.get(key, 0.0))
            for e, a in enumerate(accs, 1):
                t.report(a, e)
            done = len(accs) >= self.max_t and key not in self.stopped
            self.study.tell(t, accs[-1] if done else None,
                            state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.PRUNED)

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("study", None)
        d.pop("live", None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._build()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        step = result.get("epoch")
        if step is None or result.get("infeasible") or result.get("failed") \
                or int((getattr(trial, "config", None) or {}).get("replicate") or 0) > 0:
            return TrialScheduler.CONTINUE
        t = self.live.get(trial.trial_id)
        if t is None:
            t = self.live[trial.trial_id] = self.study.ask()
            self.costs[trial.trial_id] = float(result.get(COST_ATTR) or 0.0)
            t.set_user_attr(COST_ATTR, self.costs[trial.trial_id])
        acc = float(result[self.acc])
        self.curves.setdefault(trial.trial_id, []).append(acc)
        t.report(acc, int(step))
        if step >= self.max_t:
            self.study.tell(t, acc, skip_if_finished=True)
            return TrialScheduler.CONTINUE
        if t.should_prune():
            self.stopped.add(trial.trial_id)
            self.study.tell(t, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


def make_scheduler(kind: str, max_t: int, grace_period: int, reduction_factor: float, history: list | None = None,
                   pruner: str = "successive_halving"):
    """``history``: (key, accuracy per epoch, latency) of trials already run (rebuilds the rungs on resume)."""
    if kind == "optuna":
        return OptunaPrunerScheduler(pruner, max_t, grace_period, reduction_factor, history=history)
    if kind == "moasha":
        return MultiObjectiveASHA(max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor,
                                  history=history)
    if kind == "asha":
        return ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=max_t,
                             grace_period=grace_period, reduction_factor=reduction_factor)
    return FIFOScheduler()
