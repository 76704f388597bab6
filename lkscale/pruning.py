"""Tune schedulers that stop weak proxy runs between epochs.

``MultiObjectiveASHA`` is asynchronous successive halving where "weak" means *dominated*: at each
rung (epoch ``grace * rf**k``) a trial is compared with every trial that reached that rung before it
on (validation accuracy up, deploy latency down). Points are sorted into non-dominated layers; the
trial continues if it falls within the best ``ceil(n / rf)`` points, taking whole layers in order and
breaking ties inside the boundary layer by crowding distance (as NSGA-II does; MO-ASHA, Schmucker et
al. 2021). A fast, less accurate model is on the first layer and survives, which plain ASHA on
accuracy would stop at its first rung, cutting off the low-latency end of the front.

Ray's single-objective ``ASHAScheduler`` on accuracy (``asha``) and no pruning (``none``) stay selectable.
A stopped trial's final result gets ``done=True`` from Tune before callbacks run; the search's
recorder marks it ``pruned`` there, which is how the Optuna searcher learns to record it as PRUNED.
"""
from __future__ import annotations

import math

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

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
    breaking ties inside the boundary layer by crowding distance."""
    k = max(1, math.ceil(len(points) * fraction))
    kept: list = []
    for i, layer in enumerate(nondominated_layers(points)):
        if i == 0 or len(kept) + len(layer) <= k:
            kept.extend(layer)
            continue
        cd = crowding(points, layer)
        kept.extend(sorted(layer, key=lambda key: (-cd[key], key))[: k - len(kept)])
        break
    return set(kept)


class MultiObjectiveASHA(FIFOScheduler):
    def __init__(self, max_t: int, grace_period: int = 1, reduction_factor: float = 2, time_attr: str = "epoch",
                 acc: str = "val_acc", cost: str = "latency_ms", history: list | None = None):
        super().__init__()
        if grace_period < 1 or reduction_factor <= 1:
            raise ValueError("grace_period must be >= 1 and reduction_factor > 1")
        self.max_t, self.rf, self.time_attr, self.acc, self.cost = max_t, reduction_factor, time_attr, acc, cost
        self.rungs = []
        r = grace_period
        while r < max_t:
            self.rungs.append(int(r))
            r = math.ceil(r * reduction_factor)
        self.recorded: dict[int, dict[str, tuple[float, float]]] = {r: {} for r in self.rungs}
        for key, accs, cost in history or []:  # a resumed search: the rungs as the record left them
            for r in self.rungs:
                if len(accs) >= r:
                    self.recorded[r][key] = (float(accs[r - 1]), float(cost))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        t = result.get(self.time_attr)
        if t is None or result.get("infeasible") or result.get("failed") or t >= self.max_t:
            return TrialScheduler.CONTINUE
        if int((trial.config or {}).get("replicate") or 0) > 0:
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


def make_scheduler(kind: str, max_t: int, grace_period: int, reduction_factor: float, history: list | None = None):
    """``history``: (key, accuracy per epoch, latency) of trials already run (multi-objective ASHA only)."""
    if kind == "moasha":
        return MultiObjectiveASHA(max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor,
                                  history=history)
    if kind == "asha":
        return ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=max_t,
                             grace_period=grace_period, reduction_factor=reduction_factor)
    return FIFOScheduler()
