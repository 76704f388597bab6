"""Intervals of a candidate's noisy proxy accuracy: over replicates, or over one replicate's images.

A *replicate* index r fixes the data subset, batch order and init seed, the same for every candidate
(common random numbers), so two candidates' results are paired by r. Replicates of one candidate are
given as a mapping ``{replicate index: value}`` (or a plain sequence, indexed 0, 1, ...).

- :class:`Interval` (an estimate with a two-sided interval), :func:`as_replicates` (the mapping form);
- :func:`t_interval` (mean and Student-t interval over replicates), :func:`wilson_interval` (one
  replicate's accuracy on n validation images), :func:`accuracy_interval` (picks between them).

numpy/scipy only; nothing here prints. Checked against scipy in ``tests/test_stats.py``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np
from scipy import special
from scipy import stats as sps


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval (``low``/``high`` are NaN when there is none)."""
    estimate: float
    low: float
    high: float
    n: int
    confidence: float = 0.95
    method: str = ""

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict:
        return asdict(self)


def as_replicates(values) -> dict[int, float]:
    """A replicate mapping from a mapping or a sequence (indexed 0, 1, ...)."""
    if isinstance(values, Mapping):
        return {int(k): float(v) for k, v in values.items()}
    return {i: float(v) for i, v in enumerate(values)}


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Mean over replicates with a Student-t interval (df = n - 1); NaN bounds when n < 2."""
    x = np.asarray(list(as_replicates(values).values()), dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n, confidence, "t")
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return Interval(mean, float(mean - half), float(mean + half), n, confidence, "t")


def wilson_interval(accuracy: float, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of an accuracy (a fraction in [0, 1]) measured on ``n`` images."""
    if n <= 0 or not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"need n > 0 and accuracy in [0, 1], got n={n}, accuracy={accuracy}")
    k = round(accuracy * n)
    p, z = k / n, special.ndtri(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(float(p), float(max(0.0, centre - half)), float(min(1.0, centre + half)), 1,
                    confidence, "wilson")


def accuracy_interval(values, n_val: int | None = None, confidence: float = 0.95,
                      scale: float = 1.0) -> Interval:
    """Interval of a candidate's accuracy: over replicates when there are >= 2, else Wilson on n_val.

    ``scale`` is the unit of the values (100 for percentages, 1 for fractions); the Wilson interval
    is computed on ``value / scale`` and given back in the same unit.
    """
    reps = as_replicates(values)
    if len(reps) >= 2 or not n_val:
        return t_interval(reps, confidence)
    w = wilson_interval(next(iter(reps.values())) / scale, n_val, confidence)
    return Interval(next(iter(reps.values())), w.low * scale, w.high * scale, 1, confidence, "wilson")
