"""Empirical attainment of a two-objective front over replicates: how certain the front's shape is.

Replicate r (common random numbers: the same data subset, batch order and init for every candidate) gives
each candidate one accuracy; the cost (latency, FLOPs) is the candidate's own. The *attainment set* of
replicate r is every (cost, accuracy) point weakly dominated by one of its candidates: cost >= the
candidate's and accuracy <= its accuracy in replicate r. The empirical attainment function (EAF) of a point
is the number of replicates whose set holds it; the *k-attainment surface* is the boundary of the points
held by at least k of the R replicates (López-Ibáñez, Paquete and Stützle 2010; moocore's ``eaf``). For two
objectives it is a step function of the cost:

    A_r(x) = max{ acc_r(c) : cost(c) <= x }      (the best accuracy replicate r reaches at cost x)
    S_k(x) = the k-th largest of A_1(x) .. A_R(x)

so S_1 is the best replicate's front, S_R the worst's, and S_ceil(R/2) the median (50%) surface. Only
replicate indices every candidate has are used (a replicate only some candidates ran -- racing -- would
make its front look worse than it is).

numpy only; :func:`eaf_counts` is the brute-force definition the surfaces are checked against.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def shared_replicates(replicates: Sequence[Mapping[int, float]]) -> list[int]:
    """Replicate indices present for every candidate (sorted)."""
    sets = [set(int(r) for r in reps) for reps in replicates]
    return sorted(set.intersection(*sets)) if sets else []


def replicate_matrix(replicates: Sequence[Mapping[int, float]]) -> np.ndarray:
    """(R, n) accuracies: one row per shared replicate index, one column per candidate."""
    idx = shared_replicates(replicates)
    return np.array([[float(reps.get(r, reps.get(str(r)))) for reps in replicates] for r in idx], float).reshape(
        len(idx), len(replicates))


def best_at(cost: Sequence[float], acc: np.ndarray, xs: Sequence[float]) -> np.ndarray:
    """A_r(x) for every replicate (rows of ``acc``) and every x in ``xs``: -inf where nothing costs <= x."""
    cost, acc, xs = np.asarray(cost, float), np.atleast_2d(np.asarray(acc, float)), np.asarray(xs, float)
    within = cost[None, :] <= xs[:, None]                              # (x, candidate)
    vals = np.where(within[None, :, :], acc[:, None, :], -np.inf)      # (replicate, x, candidate)
    return vals.max(axis=2)


def level(q: float, n_replicates: int) -> int:
    """k for the q-quantile surface (attained by at least a share q of the replicates): ceil(q R), >= 1."""
    return max(1, min(n_replicates, math.ceil(q * n_replicates - 1e-9)))


def attainment_surface(cost: Sequence[float], acc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k-attainment surface as step vertices (xs, ys): from xs[i] on (up to xs[i+1]) the surface is at
    ys[i]; only the costs where it changes are kept. ``acc``: (R, n) accuracies by replicate and candidate."""
    acc = np.atleast_2d(np.asarray(acc, float))
    R = acc.shape[0]
    if not 1 <= k <= R:
        raise ValueError(f"k must be in 1..{R}, got {k}")
    xs = np.unique(np.asarray(cost, float))
    a = best_at(cost, acc, xs)                                         # (R, x)
    s = -np.sort(-a, axis=0)[k - 1]                                    # k-th largest per x
    keep = np.isfinite(s) & np.r_[True, s[1:] != s[:-1]]
    return xs[keep], s[keep]


def surfaces(cost: Sequence[float], replicates: Sequence[Mapping[int, float]],
             quantiles: Sequence[float] = (0.0, 0.5, 1.0)) -> dict:
    """{"replicates": R, "surfaces": {q: (xs, ys)}} over the shared replicates; q = 0 is the best replicate's
    front (k = 1), 1 the worst's (k = R), 0.5 the median. Empty "surfaces" with fewer than 2 shared replicates."""
    acc = replicate_matrix(replicates)
    R = acc.shape[0]
    if R < 2:
        return {"replicates": R, "surfaces": {}}
    out = {}
    for q in quantiles:
        k = 1 if q <= 0 else level(q, R)
        out[float(q)] = attainment_surface(cost, acc, k)
    return {"replicates": R, "surfaces": out}


def eaf_counts(cost: Sequence[float], acc: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Brute force: for each (x, y) point, how many replicates have a candidate with cost <= x and accuracy >= y."""
    cost, acc, points = np.asarray(cost, float), np.atleast_2d(np.asarray(acc, float)), np.atleast_2d(points)
    out = np.zeros(len(points), int)
    for i, (x, y) in enumerate(points):
        out[i] = int(sum(any(c <= x and a >= y for c, a in zip(cost, row)) for row in acc))
    return out


__all__ = ["shared_replicates", "replicate_matrix", "best_at", "level", "attainment_surface", "surfaces", "eaf_counts"]
