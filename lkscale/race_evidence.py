"""The evidence a race weighs between two candidates: paired accuracy tests at fixed looks, and latency
known with error (within and across measurement runs).

Each candidate has accuracies by *replicate index* (common random numbers: replicate r fixes data
subset, batch order and init seed for every candidate, so candidates are compared with paired tests
over the replicates they share) and one latency with its standard error (NaN latency: unknown).

Relations between two candidates, per objective: +1 (significantly better), -1 (significantly worse),
0 (unresolved); in accuracy also *equivalent within +-margin* (when the race has a margin).

- Accuracy: one-sided paired t-tests over shared replicates. Tests run only at fixed *looks* (sample
  sizes ``min_replicates``, then about x1.5 each, up to ``cap``), on the first ``look`` shared
  replicate indices, each at ``alpha / 2 / len(looks)`` (Bonferroni over the looks, so adding
  replicates and testing again does not inflate the error). Accuracies sit on a grid of
  ``resolution`` points (100 / n_val): the same difference at every replicate has zero sample spread
  and would give t = inf, p = 0. The spread used is at least ``resolution / sqrt(6)`` -- the sd of the
  difference of two values each rounded to the grid (uniform rounding error, variance h^2/12 each).
  Equivalence is two one-sided tests (TOST) of ``|diff| < margin`` at the same per-look level.
- Latency (measured once, known with error): a is faster when
  ``(lat_b - lat_a) / sqrt(se_a^2 + se_b^2 [+ between-run terms]) > z(1 - alpha/2)``. Two latencies from
  different measurement runs (``Candidate.latency_run``) also carry the run-to-run spread
  ``between_run_cv`` (relative sd per run): side by side, a run's shift is common and cancels; across
  runs it does not. A candidate without a latency is never faster or slower than anyone.

Here: :class:`Candidate` (accuracies by replicate, latency with its error and run), :func:`looks`,
:func:`paired_acc_test` (:class:`AccTest`), :func:`latency_se` / :func:`latency_z` (the latency error model),
the statuses and :class:`Verdict` (a candidate's status with its evidence). :mod:`lkscale.racing` uses them
to decide statuses and propose replicates. numpy/scipy only; nothing here prints.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import special

from .comparisons import sd_floor

CONFIRMED, TIED, DOMINATED, EQUIVALENT = "confirmed", "tied", "dominated", "equivalent"


@dataclass
class Candidate:
    """One architecture in the race: accuracies by replicate index, latency (NaN: unknown) and its error.

    ``latency_run``: which measurement run the latency comes from ("" = the one common run)."""
    name: str
    latency: float
    latency_se: float = 0.0
    accs: dict = field(default_factory=dict)
    latency_run: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "latency": None if not math.isfinite(self.latency) else self.latency,
                "latency_se": self.latency_se, "latency_run": self.latency_run,
                "accs": {str(r): a for r, a in sorted(self.accs.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        lat = d.get("latency")
        return cls(str(d["name"]), float("nan") if lat is None else float(lat), float(d.get("latency_se", 0.0)),
                   {int(r): float(a) for r, a in d.get("accs", {}).items()}, str(d.get("latency_run", "")))


@dataclass(frozen=True)
class AccTest:
    """Paired difference a - b on one look: mean, the spread used (floored), one-sided and TOST p-values."""
    diff: float
    sd: float
    n: int
    t: float
    p: float          # one-sided, a > b
    p_less: float     # one-sided, a < b
    p_equiv: float    # TOST: |a - b| < margin (NaN without a margin)


@dataclass(frozen=True)
class Verdict:
    """A candidate's status with its evidence (p-values are one-sided, before the look correction)."""
    name: str
    status: str
    mean: float
    low: float
    high: float
    n: int
    latency: float
    latency_se: float
    on_front: bool
    dominated_by: dict   # rival -> {"acc_p", "lat_z", "within_margin"}
    unresolved: list     # rivals neither side has beaten yet (and not equivalent)
    worst_p: float       # confirmed: the largest p-value among the wins that confirm it
    equivalent: list = field(default_factory=list)  # rivals equivalent in accuracy, latency not told apart
    note: str = ""

    def to_dict(self) -> dict:
        """JSON-safe (non-finite numbers become None)."""
        return _finite(asdict(self))


def _finite(x):
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def looks(min_replicates: int, cap: int) -> list[int]:
    """Sample sizes at which a pair's accuracy is tested: min_replicates, then about x1.5, then cap."""
    out, n = [], max(2, min_replicates)
    while n < cap:
        out.append(n)
        n = max(n + 1, math.ceil(n * 1.5))
    return out + [cap] if cap >= max(2, min_replicates) else out


def paired_acc_test(d, resolution: float = 0.0, margin: float | None = None) -> AccTest:
    """One-sided paired t-tests and TOST on differences ``d``, the spread floored at
    ``lkscale.comparisons.sd_floor(resolution)`` (the floor ``comparisons.decide`` uses)."""
    d = np.asarray(d, dtype=float)
    n, nan = len(d), float("nan")
    if n < 2:
        return AccTest(float(d.mean()) if n else nan, nan, n, nan, nan, nan, nan)
    mean, sd = float(d.mean()), max(float(d.std(ddof=1)), sd_floor(resolution))
    df, se = n - 1, sd / math.sqrt(n)
    if se > 0:
        t = mean / se
    else:
        t = math.copysign(math.inf, mean) if mean else nan
    p, p_less = (float(special.stdtr(df, -t)), float(special.stdtr(df, t))) if not math.isnan(t) else (nan, nan)
    p_eq = nan
    if margin is not None and margin > 0:
        if se > 0:  # H0 diff <= -margin and H0 diff >= margin, each one-sided (stdtr: Student's t cdf)
            p_eq = float(max(special.stdtr(df, -(mean + margin) / se), special.stdtr(df, (mean - margin) / se)))
        else:
            p_eq = 0.0 if abs(mean) < margin else 1.0
    return AccTest(mean, sd, n, float(t), p, p_less, p_eq)


def latency_se(ca: Candidate, cb: Candidate, between_run_cv: float = 0.0) -> float:
    """Standard error of ``lat_b - lat_a``: the two measurement errors and, when the latencies come from
    different measurement runs, each run's shift (``between_run_cv`` x latency; a common run's shift cancels)."""
    var = ca.latency_se ** 2 + cb.latency_se ** 2
    if ca.latency_run != cb.latency_run:
        var += (between_run_cv * ca.latency) ** 2 + (between_run_cv * cb.latency) ** 2
    return math.sqrt(var)


def latency_z(ca: Candidate, cb: Candidate, between_run_cv: float = 0.0) -> float:
    """z of "a is faster than b" (inf when both are known exactly and differ; NaN when one is unknown)."""
    if not (math.isfinite(ca.latency) and math.isfinite(cb.latency)):
        return float("nan")
    diff, se = cb.latency - ca.latency, latency_se(ca, cb, between_run_cv)
    return diff / se if se > 0 else (math.copysign(math.inf, diff) if diff else 0.0)


__all__ = ["Candidate", "AccTest", "Verdict", "looks", "paired_acc_test", "latency_se", "latency_z", "CONFIRMED",
           "TIED", "DOMINATED", "EQUIVALENT"]
