"""Tune schedulers that stop weak proxy runs between epochs.

``MultiObjectiveASHA`` is asynchronous successive halving where "weak" means *dominated*: at each
rung (epoch ``grace * rf**k``) a trial is compared with every trial that reached that rung before it
on (validation accuracy up, deploy latency down). Points are sorted into non-dominated layers; the
trial continues if it falls within the best ``ceil(n / rf)`` points, taking whole layers in order and
breaking ties inside the boundary layer by crowding distance (as NSGA-II does; MO-ASHA, Schmucker et
al. 2021). A fast, less accurate model is on the first layer and survives, which plain ASHA on
accuracy would stop at its first rung, cutting off the low-latency end of the front.

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

import math

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from lkscale.config import rung_epochs
from lkscale.pareto import crowding_distance, non_dominated_sort


def nondominated_layers(points: dict) -> list[list]:
    """Sort keys of {key: (acc, cost)} into non-dominated layers (best first; lkscale.pareto's sort)."""
    keys = list(points)
    return [sorted(keys[i] for i in layer) for layer in non_dominated_sort([points[k] for k in keys])]


def crowding(points: dict, layer: list) -> dict:
    """NSGA-II crowding distance of each key in ``layer`` (boundary points get infinity)."""
    return dict(zip(layer, crowding_distance([points[k] for k in layer]).tolist()))


def keep_top(points: dict, fraction: float) -> set:
    """The first non-dominated layer (never pruned), then more layers up to ``ceil(n * fraction)`` points,
    breaking ties inside the boundary layer by crowding distance, then by accuracy and cost (values only, so
    the decision does not depend on how trials are named or numbered)."""
    k = max(1, math.ceil(len(points) * fraction))
    kept: list = []
    for i, layer in enumerate(nondominated_layers(points)):
        if i == 0 or len(kept) + len(layer) <= k:
            kept.extend(layer)
            continue
        cd = crowding(points, layer)  # ties (e.g. two boundary points, both infinite): the more accurate first
        kept.extend(sorted(layer, key=lambda key: (-cd[key], -points[key][0], points[key][1], str(key)))[: k - len(kept)])
        break
    return set(kept)


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


COST_ATTR = "latency_ms"  # the trial user attribute the multi-objective pruner reads as the second objective


class MultiObjectiveSHAPruner(optuna.pruners.BasePruner):
    """lkscale's multi-objective successive halving behind Optuna's ``BasePruner`` interface.

    At a rung step (``grace * rf**k``) the trial's reported accuracy and its ``latency_ms`` user attribute are
    compared with every trial of the study that reported at that step; it is pruned unless it is within the
    best ``ceil(n / rf)`` by non-dominated layers and crowding (``keep_top``), the rule
    ``MultiObjectiveASHA`` applies as a Tune scheduler. Fewer than ``rf`` trials at a rung: never pruned.
    """

    def __init__(self, grace_period: int, reduction_factor: float, max_t: int):
        self.rungs = set(rung_epochs(max_t, grace_period, reduction_factor))
        self.rf = reduction_factor

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs or COST_ATTR not in trial.user_attrs:
            return False
        seen = {t.number: (float(t.intermediate_values[step]), float(t.user_attrs[COST_ATTR]))
                for t in study.get_trials(deepcopy=False)
                if step in t.intermediate_values and COST_ATTR in t.user_attrs}
        if len(seen) < self.rf:
            return False
        return trial.number not in keep_top(seen, 1 / self.rf)


def optuna_pruner(name: str, grace_period: int, reduction_factor: float, max_t: int) -> optuna.pruners.BasePruner:
    if name == "moasha":
        return MultiObjectiveSHAPruner(grace_period, reduction_factor, max_t)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=grace_period,
                                                      reduction_factor=max(2, round(reduction_factor)))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=grace_period, max_resource=max_t,
                                              reduction_factor=max(2, round(reduction_factor)))
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=grace_period)  # first prunable step: grace


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
