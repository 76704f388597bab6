"""The sample to retrain: every candidate on the proxy's (accuracy, latency) front, then candidates spread
over the rest of the accuracy and latency range (greedy farthest point in rank space, seeded)."""
from __future__ import annotations

import numpy as np

from lkscale.rundir import Trial, front_of


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties keep their order of appearance; one value -> 0)."""
    r = np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float)
    return r / max(1, len(v) - 1)


def _spread(points: np.ndarray, chosen: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """Add points one at a time, each the farthest (max-min distance) from those already chosen."""
    chosen = list(chosen)
    if not chosen:
        chosen.append(int(rng.integers(len(points))))
    jitter = rng.uniform(0, 1e-9, len(points))  # seeded tie-break between equally far points
    while len(chosen) < min(n, len(points)):
        d = np.min(np.linalg.norm(points[:, None, :] - points[None, chosen, :], axis=-1), axis=1) + jitter
        d[chosen] = -1.0
        chosen.append(int(np.argmax(d)))
    return chosen


def stratified_sample(cands: list[Trial], n: int, seed: int = 0, col: str = "latency_ms") -> list[tuple[Trial, str]]:
    """``n`` complete candidates as ``(candidate, role)``, role ``front`` or ``spread``.

    Every front member is taken (when the front alone is larger than ``n``, ``n`` of them spread along
    it); the rest are chosen farthest-first in (accuracy rank, ``col`` rank) space from those already
    taken, so the sample reaches the ends of both ranges before it fills the middle.
    """
    pool = [c for c in cands if c.state == "complete" and c.get("val_acc") is not None and c.get(col) is not None]
    if n < 1 or not pool:
        return []
    rng = np.random.default_rng(seed)
    pts = np.c_[_ranks(np.array([c.val_acc for c in pool], float)), _ranks(np.array([c.row[col] for c in pool], float))]
    front_names = [t.name for t in front_of(pool, col)]
    front_idx = [next(i for i, c in enumerate(pool) if c.name == name) for name in front_names]
    if len(front_idx) > n:
        sub = _spread(pts[front_idx], [0, len(front_idx) - 1][: min(2, n)], n, rng)
        return [(pool[front_idx[i]], "front") for i in sub]
    chosen = _spread(pts, front_idx, n, rng)
    fset = set(front_idx)
    return [(pool[i], "front" if i in fset else "spread") for i in chosen]
