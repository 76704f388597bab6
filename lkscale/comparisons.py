"""Paired comparisons of candidates over common-random-number replicates.

A *replicate* index r fixes the data subset, batch order and init seed, the same for every candidate,
so two candidates' results are paired by r (:func:`paired_values`).

- :func:`paired_test` (paired t-test and interval of a mean difference), :func:`paired_values`
  (pair two candidates by replicate index), :func:`holm` (Holm step-down adjusted p-values).
- :func:`decide` (better / worse / equivalent within +-margin / undecided, with the replicates that
  would decide it), :func:`decide_family` (the same over a family of comparisons, Holm-adjusted),
  :func:`sd_floor` (the smallest spread a difference of grid-rounded accuracies is given).
- :func:`power_difference`, :func:`power_equivalence`, :func:`min_detectable_effect`,
  :func:`replicates_needed`: power and sample size of those tests (noncentral t; checked against
  simulation in ``tests/test_equivalence.py``).

**Conventions of a decision** (``a - b`` at ``alpha``; every verdict can be read off the printed interval,
the ``1 - 2*alpha`` two-sided interval of the mean paired difference: 90% at the default alpha 0.05):

- *better*: the one-sided paired t-test of ``diff > 0`` rejects at ``alpha`` (the interval lies above 0)
  and the pair is not equivalent; *worse* likewise below 0.
- *equivalent*: two one-sided tests (TOST) reject ``diff <= -margin`` and ``diff >= margin``, each at
  ``alpha`` (the interval lies inside +-margin). A difference that is significant *and* inside the
  margin is *equivalent*: the margin is the smallest difference the study says matters, so "no
  difference that matters" is the answer; ``diff``/``low``/``high`` still show the sign.
- *undecided*: none of these; ``replicates_needed`` says how many replicates per setting would decide
  it (at the measured spread, if the true difference were the measured one).

Accuracies sit on a grid of ``resolution`` points (``100 / n_val``): the same difference at every
replicate has zero sample spread and would give t = inf, p = 0. The spread used is never below
:func:`sd_floor` = ``resolution / sqrt(6)``, the sd of the difference of two values each rounded to
the grid (a uniform rounding error of variance ``resolution^2 / 12`` each).

numpy/scipy only; nothing here prints. Checked against scipy in ``tests/test_stats.py``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize
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


# -------------------------------------------------------------------------------------- decisions
VERDICTS = ("better", "worse", "equivalent", "undecided")


@dataclass(frozen=True)
class Decision:
    """``a - b``, paired by replicate index, in the values' unit (accuracy points); see the module."""
    verdict: str                 # 'better' | 'worse' | 'equivalent' | 'undecided'
    diff: float                  # mean paired difference
    low: float                   # its (1 - 2*alpha) two-sided interval (the one TOST reads)
    high: float
    n: int
    sd: float                    # the paired-difference sd actually used (after the floor)
    p_better: float
    p_worse: float
    p_equivalent: float
    margin: float
    alpha: float
    replicates_needed: int | None  # undecided: total replicates per setting that would decide it

    @property
    def confidence(self) -> float:
        return 1 - 2 * self.alpha

    def to_dict(self) -> dict:
        return asdict(self)


def sd_floor(resolution: float | None) -> float:
    """Smallest spread a paired difference of grid values is given: ``resolution / sqrt(6)``."""
    return float(resolution) / math.sqrt(6.0) if resolution and resolution > 0 else 0.0


def decide_arrays(d, margin: float, alpha: float = 0.05, resolution: float | None = None) -> dict:
    """:func:`decide` on paired differences ``d`` of shape (..., n), vectorised over the leading axes.

    Returns arrays ``diff, low, high, sd, p_better, p_worse, p_equivalent``, ``p_below_margin`` (the
    one-sided test of ``diff < margin``: not better by the margin or more) and ``verdict`` (an index
    into :data:`VERDICTS`). Needs n >= 2.
    """
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    if n < 2:
        raise ValueError("decide needs >= 2 shared replicates")
    df = n - 1
    mean = d.mean(axis=-1)
    sd = np.maximum(d.std(axis=-1, ddof=1), sd_floor(resolution))
    se = sd / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t_lo, t_hi = mean / se, (mean + margin) / se, (mean - margin) / se
    zero = se == 0  # only without a floor: the sign decides, exactly as a limit of t
    p_better = np.where(zero, np.where(mean > 0, 0.0, 1.0), sps.t.sf(t0, df))
    p_worse = np.where(zero, np.where(mean < 0, 0.0, 1.0), sps.t.cdf(t0, df))
    p_eq = np.where(zero, np.where(np.abs(mean) < margin, 0.0, 1.0),
                    np.maximum(sps.t.sf(t_lo, df), sps.t.cdf(t_hi, df)))
    half = sps.t.ppf(1 - alpha, df) * se
    verdict = np.full(mean.shape, 3)
    verdict = np.where(p_better <= alpha, 0, verdict)
    verdict = np.where(p_worse <= alpha, 1, verdict)
    verdict = np.where(p_eq <= alpha, 2, verdict)
    p_below = np.where(zero, np.where(mean < margin, 0.0, 1.0), sps.t.cdf(t_hi, df))
    return {"diff": mean, "low": mean - half, "high": mean + half, "sd": sd, "p_better": p_better,
            "p_worse": p_worse, "p_equivalent": p_eq, "p_below_margin": p_below, "verdict": verdict}


def decide(a, b, margin: float, alpha: float = 0.05, resolution: float | None = None,
           power: float = 0.8) -> Decision:
    """Is ``a`` better than, worse than or equivalent within +-``margin`` to ``b``? (module docstring).

    ``a``/``b``: values by replicate index (paired on the indices both have). ``resolution``: the grid
    of the values (``100 / n_val`` for accuracies in points) for the sd floor. An undecided pair gets
    the replicates per setting that would decide it with probability ``power`` (:func:`decision_replicates`).
    With fewer than 2 shared replicates nothing is tested: undecided, NaN interval.
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    xa, xb, _ = paired_values(a, b)
    d, nan = xa - xb, float("nan")
    if len(d) < 2:
        return Decision("undecided", float(d.mean()) if len(d) else nan, nan, nan, len(d), nan, nan, nan, nan,
                        float(margin), float(alpha), None)
    r = {k: float(v) for k, v in decide_arrays(d, margin, alpha, resolution).items() if k != "p_below_margin"}
    verdict = VERDICTS[int(r["verdict"])]
    need = decision_replicates(r["sd"], margin, r["diff"], alpha, power) if verdict == "undecided" else None
    return Decision(verdict, r["diff"], r["low"], r["high"], len(d), r["sd"], r["p_better"], r["p_worse"],
                    r["p_equivalent"], float(margin), float(alpha), need)


def decide_family(pairs, margin: float, alpha: float = 0.05, resolution: float | None = None,
                  power: float = 0.8) -> list[Decision]:
    """:func:`decide` over a family of comparisons ``[(a, b), ...]``, Holm-adjusted within the family.

    Each kind of claim (better, worse, equivalent) has its p-values Holm-adjusted over the family
    and the verdict follows the adjusted values, so the chance of any false claim of that kind in the
    family stays <= alpha. The intervals stay per comparison (unadjusted).
    """
    raw = [decide(a, b, margin, alpha, resolution, power) for a, b in pairs]
    adj = {k: holm([getattr(x, k) for x in raw]) for k in ("p_better", "p_worse", "p_equivalent")}
    out = []
    for i, x in enumerate(raw):
        pb, pw, pe = (float(adj[k][i]) for k in ("p_better", "p_worse", "p_equivalent"))
        verdict = ("equivalent" if pe <= alpha else "better" if pb <= alpha else "worse" if pw <= alpha
                   else "undecided")
        need = None
        if verdict == "undecided" and x.n >= 2:
            need = decision_replicates(x.sd, margin, x.diff, alpha / max(len(raw), 1), power)
        out.append(Decision(verdict, x.diff, x.low, x.high, x.n, x.sd, pb, pw, pe, x.margin, x.alpha, need))
    return out


# ------------------------------------------------------------------------------- power and size
def power_difference(sd: float, n: int, diff: float, alpha: float = 0.05) -> float:
    """Probability that the one-sided paired t-test (n replicates) shows ``diff > 0`` at ``alpha``."""
    if n < 2 or not sd > 0:
        return float("nan")
    return float(sps.nct.sf(sps.t.ppf(1 - alpha, n - 1), n - 1, diff * math.sqrt(n) / sd))


def power_equivalence(sd: float, n: int, margin: float, diff: float = 0.0, alpha: float = 0.05) -> float:
    """Exact probability that TOST (n replicates, each test at ``alpha``) shows ``|diff| < margin``.

    Given the sample sd s, the mean is normal: the power is the average over s (s^2 (n-1)/sd^2 is
    chi-square with n - 1 df) of P(-margin + t*s/sqrt(n) < mean < margin - t*s/sqrt(n)) -- Owen's Q,
    here by a midpoint rule on _QUANTILES of the chi-square distribution.
    """
    if n < 2 or not sd > 0:
        return float("nan")
    df, tc, se = n - 1, sps.t.ppf(1 - alpha, n - 1), sd / math.sqrt(n)
    s = sd * np.sqrt(sps.chi2.ppf(_QUANTILES, df) / df)
    w = np.maximum(margin - tc * s / math.sqrt(n), 0.0)
    inner = np.maximum(sps.norm.cdf((w - diff) / se) - sps.norm.cdf((-w - diff) / se), 0.0)
    return float(min(max(inner.mean(), 0.0), 1.0))


_QUANTILES = (np.arange(4000) + 0.5) / 4000


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8,
                          two_sided: bool = True) -> float:
    """Smallest true paired difference the t-test over n replicates finds with probability ``power``.

    ``two_sided``: the test is at alpha/2 per side (only the near side counted), else one-sided at alpha.
    """
    if n < 2 or not sd > 0:
        return float("nan")
    a = alpha / 2 if two_sided else alpha
    return float(optimize.brentq(lambda x: power_difference(sd, n, x, a) - power, 0.0, 1e3 * sd, xtol=1e-10 * sd))


def replicates_needed(sd: float, margin: float, alpha: float = 0.05, power: float = 0.8, diff: float = 0.0,
                      kind: str = "equivalence", limit: int = 100000) -> int:
    """Smallest n (replicates per setting, paired) with probability ``power`` of the claim at this sd.

    ``kind='equivalence'``: TOST within +-margin when the true difference is ``diff`` (impossible when
    ``|diff| >= margin``: returns ``limit``). ``kind='difference'``: the one-sided test finds a true
    difference of ``|diff|`` (``margin`` when diff is 0). Capped at ``limit``.
    """
    if kind == "equivalence":
        if abs(diff) >= margin:
            return limit
        fn = lambda n: power_equivalence(sd, n, margin, diff, alpha)  # noqa: E731
    elif kind == "difference":
        eff = abs(diff) or margin
        fn = lambda n: power_difference(sd, n, eff, alpha)  # noqa: E731
    else:
        raise ValueError(f"kind {kind!r} not understood; use 'equivalence' or 'difference'")
    if not sd > 0:
        return 2
    lo, hi = 1, 2
    while fn(hi) < power:  # power grows with n: double, then bisect
        lo, hi = hi, hi * 2
        if hi >= limit:
            return limit if fn(limit) < power else _bisect(fn, lo, limit, power)
    return _bisect(fn, lo, hi, power)


def _bisect(fn, lo: int, hi: int, power: float) -> int:
    """Smallest n in (lo, hi] with fn(n) >= power, given fn(hi) >= power."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fn(mid) >= power else (mid, hi)
    return hi


def decision_replicates(sd: float, margin: float, diff: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Replicates per setting that would decide a pair (either claim) at this sd and this difference.

    The fewer of: equivalence (when |diff| < margin) and a difference of the measured size.
    """
    eq = replicates_needed(sd, margin, alpha, power, diff, "equivalence")
    if diff == 0:
        return eq
    return min(eq, replicates_needed(sd, margin, alpha, power, diff, "difference"))
