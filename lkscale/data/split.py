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


def carve_val_train(y: np.ndarray, val_n: int, train_n: int | None, val_seed: int, subset_seed: int,
                    num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation and training indices drawn with separate seeds (one noise source changed at a time).

    Per class, the validation images are the first ``val_n`` of a shuffle drawn with ``val_seed``; the
    training images the first ``train_n`` (None: all) of a shuffle drawn with ``subset_seed``, skipping the
    validation images. With ``val_seed == subset_seed`` both shuffles are the same and this is exactly
    ``stratified_split(y, [val_n, train_n], seed, num_classes)``. Indices come back sorted.
    """
    rv, rt = np.random.default_rng(val_seed), np.random.default_rng(subset_seed)
    vals, trains = [], []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        pv, pt = rv.permutation(len(idx)), rt.permutation(len(idx))
        v = idx[pv[:val_n]]
        rest = idx[pt][~np.isin(idx[pt], v)]
        vals.append(v)
        trains.append(rest if train_n is None else rest[:train_n])
    cat = (lambda p: np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64))
    return cat(vals), cat(trains)
