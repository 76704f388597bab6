"""Stratified, seeded subsets of a decoded dataset."""
from __future__ import annotations

import numpy as np


def stratified_split(y: np.ndarray, counts: list[int | None], seed: int,
                     num_classes: int) -> list[np.ndarray]:
    """Disjoint per-class index sets: ``counts[i]`` images of every class for part i (None: the rest).

    Each class's images are shuffled once with ``seed``; part 0 takes the first ones, part 1 the next
    ones, so asking for more training images keeps the same validation set. Indices come back sorted.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in counts]
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for i, n in enumerate(counts):
            take = idx[start:] if n is None else idx[start:start + n]
            parts[i].append(take)
            start += len(take)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]
