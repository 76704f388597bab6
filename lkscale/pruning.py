"""The pruning rules themselves, free of Ray: which trials a rung keeps.

``keep_top`` is multi-objective successive halving's decision: at each rung (epoch ``grace * rf**k``) a
trial is compared with every trial that reached that rung before it on (validation accuracy up, deploy
latency down). Points are sorted into non-dominated layers; the trial continues if it falls within the
best ``ceil(n / rf)`` points, taking whole layers in order and breaking ties inside the boundary layer by
crowding distance (as NSGA-II does; MO-ASHA, Schmucker et al. 2021). A fast, less accurate model is on
the first layer and survives, which plain ASHA on accuracy would stop at its first rung, cutting off the
low-latency end of the front.

``MultiObjectiveSHAPruner`` applies the same rule behind Optuna's ``BasePruner`` interface
(``pruning.pruner: moasha``); ``optuna_pruner`` builds it or one of Optuna's own pruners (successive
halving, Hyperband, median). The Tune schedulers that ask these rules between epochs
(``MultiObjectiveASHA``, ``OptunaPrunerScheduler``, ``make_scheduler``) live in
``lkscale.search.schedulers``: nothing below the search imports Ray.
"""
from __future__ import annotations

import math

import optuna

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
