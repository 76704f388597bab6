"""Paired comparisons of candidates over common-random-number replicates.

A *replicate* index r fixes the data subset, batch order and init seed, the same for every candidate,
so two candidates' results are paired by r (:func:`paired_values`).

- :func:`paired_test` (paired t-test and interval of a mean difference), :func:`paired_values`
  (pair two candidates by replicate index), :func:`holm` (Holm step-down adjusted p-values).

numpy/scipy only; nothing here prints. Checked against scipy in ``tests/test_stats.py``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from .intervals import as_replicates


@dataclass(frozen=True)
class PairedTest:
    """Mean of ``a - b`` over shared replicates, its interval, t statistic and p-value."""
    diff: float
    low: float
    high: float
    t: float
    p: float
    df: int
    n: int
    alternative: str = "two-sided"

    def to_dict(self) -> dict:
        return asdict(self)


def paired_values(a, b) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Values of two candidates at the replicate indices they share (sorted), and those indices."""
    ra, rb = as_replicates(a), as_replicates(b)
    idx = sorted(set(ra) & set(rb))
    return (np.array([ra[i] for i in idx], dtype=float), np.array([rb[i] for i in idx], dtype=float), idx)


def paired_test(a, b, confidence: float = 0.95, alternative: str = "two-sided") -> PairedTest:
    """Paired t-test of mean(a - b) = 0 over the replicates a and b share (as scipy's ttest_rel).

    ``alternative``: 'two-sided', 'greater' (a > b) or 'less'. The interval is always two-sided.
    A zero spread of the differences gives t = +-inf (p = 0) for a nonzero mean and NaN for zero.
    """
    xa, xb, _ = paired_values(a, b)
    d = xa - xb
    n = len(d)
    nan = float("nan")
    if n < 2:
        return PairedTest(float(d.mean()) if n else nan, nan, nan, nan, nan, max(n - 1, 0), n, alternative)
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.divide(mean, se) if se > 0 else (np.sign(mean) * np.inf if mean != 0 else nan)
    df = n - 1
    if alternative == "greater":
        p = sps.t.sf(t, df)
    elif alternative == "less":
        p = sps.t.cdf(t, df)
    elif alternative == "two-sided":
        p = 2 * sps.t.sf(abs(t), df)
    else:
        raise ValueError(f"alternative {alternative!r} not understood")
    half = sps.t.ppf(0.5 + confidence / 2, df) * se
    return PairedTest(mean, mean - half, mean + half, float(t), float(p), df, n, alternative)


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values (reject hypothesis i at level alpha iff adjusted[i] <= alpha).

    NaN p-values (tests that could not be run) stay NaN and do not count in the family.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
