"""Pareto fronts and 2-D hypervolume for the search results.

Objectives are given as rows of a points array with one *sense* per column, ``"max"`` (e.g.
validation accuracy) or ``"min"`` (latency, FLOPs). Internally every column is turned into a
minimisation by negating the ``"max"`` ones, so "a dominates b" means: no worse in every objective
and strictly better in at least one.

- :func:`dominates`, :func:`non_dominated_sort` (fast non-dominated sorting, Deb et al. 2002),
  :func:`pareto_front` (indices of the first front), :func:`crowding_distance`.
- :func:`hypervolume_2d`: the area dominated by a set of points and bounded by an explicit
  *reference point* (a point every counted solution must strictly improve on). The reference point
  is an input, never derived here from the points: hypervolumes are only comparable between runs
  when they share it (``lkscale.report`` takes it from the study's budgets).

Pure numpy, no lkscale imports: a leaf module, so the search (pruning, progress lines) and the report
share one definition of dominance.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SENSES = ("max", "min")


def _as_min(points, senses: Sequence[str]) -> np.ndarray:
    """Points as a float (n, m) array with every objective turned into a minimisation."""
    p = np.asarray(points, dtype=float)
    if p.ndim == 1:
        p = p.reshape(0, len(senses)) if p.size == 0 else p.reshape(1, -1)
    if p.ndim != 2 or p.shape[1] != len(senses):
        raise ValueError(f"points must be an (n, {len(senses)}) array, got shape {p.shape}")
    bad = [s for s in senses if s not in SENSES]
    if bad:
        raise ValueError(f"sense {bad[0]!r} not understood; use 'max' or 'min'")
    if np.isnan(p).any():
        raise ValueError("points contain NaN; drop trials without a value first")
    sign = np.array([-1.0 if s == "max" else 1.0 for s in senses])
    return p * sign


def dominates(a, b, senses: Sequence[str] = ("max", "min")) -> bool:
    """True if ``a`` is no worse than ``b`` in every objective and strictly better in one."""
    q = _as_min([a, b], senses)
    return bool(np.all(q[0] <= q[1]) and np.any(q[0] < q[1]))


def non_dominated_sort(points, senses: Sequence[str] = ("max", "min")) -> list[list[int]]:
    """Fronts of indices: front 0 is non-dominated, front 1 is non-dominated once front 0 is removed, ...

    Identical points share a front. O(m n^2), fine for the few thousand trials of a study.
    """
    q = _as_min(points, senses)
    n = len(q)
    if n == 0:
        return []
    le = np.all(q[:, None, :] <= q[None, :, :], axis=2)
    lt = np.any(q[:, None, :] < q[None, :, :], axis=2)
    dom = le & lt  # dom[i, j]: i dominates j
    count = dom.sum(axis=0)  # how many points dominate j
    fronts: list[list[int]] = []
    current = [int(i) for i in np.flatnonzero(count == 0)]
    while current:
        fronts.append(current)
        nxt: list[int] = []
        for i in current:
            for j in np.flatnonzero(dom[i]):
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(int(j))
        current = sorted(nxt)
    return fronts


def pareto_front(points, senses: Sequence[str] = ("max", "min")) -> list[int]:
    """Indices of the non-dominated points (front 0), in input order."""
    fronts = non_dominated_sort(points, senses)
    return sorted(fronts[0]) if fronts else []


def crowding_distance(points, senses: Sequence[str] = ("max", "min")) -> np.ndarray:
    """NSGA-II crowding distance of each point within the set given (usually one front).

    Boundary points get ``inf``; larger means more isolated (more worth keeping when thinning a front).
    """
    q = _as_min(points, senses)
    n, m = q.shape
    dist = np.zeros(n)
    if n <= 2:
        dist[:] = np.inf
        return dist
    for k in range(m):
        order = np.argsort(q[:, k], kind="stable")
        lo, hi = q[order[0], k], q[order[-1], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if hi == lo:
            continue
        dist[order[1:-1]] += (q[order[2:], k] - q[order[:-2], k]) / (hi - lo)
    return dist


def hypervolume_2d(points, reference: Sequence[float], senses: Sequence[str] = ("max", "min")) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (two objectives).

    Only points that strictly improve on the reference in both objectives count; for accuracy
    (max) against latency (min) with reference ``(0, L)`` that is every trained point with accuracy
    > 0 and latency < L. The result is in the objectives' units (e.g. accuracy x ms).
    """
    if len(senses) != 2:
        raise ValueError("hypervolume_2d takes exactly two objectives")
    q = _as_min(points, senses)
    r = _as_min([list(reference)], senses)[0]
    if not np.all(np.isfinite(r)):
        raise ValueError(f"reference point must be finite, got {tuple(reference)}")
    q = q[np.all(q < r, axis=1)]
    if len(q) == 0:
        return 0.0
    q = q[np.lexsort((q[:, 1], q[:, 0]))]  # by first objective, ties by second
    # Sweep along the first objective: on [x_i, x_{i+1}) the dominated height is r_y minus the best
    # (lowest) second objective among the points with x <= x_i.
    area, best_y = 0.0, r[1]
    xs = np.append(q[:, 0], r[0])
    for i in range(len(q)):
        best_y = min(best_y, q[i, 1])
        area += (xs[i + 1] - xs[i]) * (r[1] - best_y)
    return float(area)


__all__ = ["dominates", "non_dominated_sort", "pareto_front", "crowding_distance", "hypervolume_2d", "SENSES"]
