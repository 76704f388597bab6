"""Kernel scaling along one line of settings: decisions between settings, where gains stop, a saturating fit.

Values are accuracies by replicate index (common random numbers: replicate r used the same data
subset, batch order and init for every setting, so settings are paired by r), in points.

- :func:`step_decisions` (each neighbouring step better / worse / equivalent within +-margin /
  undecided, Holm within the line), :func:`versus_best` (every setting against the best, Holm),
  :func:`gains_stop_index` and :func:`where_gains_stop` (where gains stop, in words).
- :func:`fit_saturating` (acc(k) = a - b*exp(-k/c) or a - b*k^-c). Given each point's replicate, the
  shared replicate component is taken out by a per-replicate offset and put back into the band as
  the spread of the replicate levels (Student t with the smaller df of the two: replicates - 1): treating the points as
  independent covers the true curve ~74% of the time when the shared part dominates. A fit that the
  data cannot pin down (asymptote beyond the data, scale beyond the settings, non-finite covariance)
  is marked not identifiable (:attr:`SaturatingFit.why`), never to be printed as numbers.
- :func:`step_tests`: plain paired t-tests between neighbours, Holm-corrected (kept for comparison).

numpy/scipy only; nothing here prints. Checked in ``tests/test_stats.py`` and ``tests/test_stats_scaling.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sps

from .comparisons import Decision, PairedTest, decide_arrays, decide_family, holm, paired_test
from .intervals import Interval, as_replicates


def _exp(k, a, b, c):
    return a - b * np.exp(-k / c)


def _exp_jac(k, a, b, c):
    e = np.exp(-k / c)
    return np.stack([np.ones_like(k), -e, -b * e * k / c ** 2], axis=-1)


def _power(k, a, b, c):
    return a - b * k ** (-c)


def _power_jac(k, a, b, c):
    p = k ** (-c)
    return np.stack([np.ones_like(k), -p, b * p * np.log(k)], axis=-1)


CURVES = {"exp": (_exp, _exp_jac, "a - b*exp(-k/c)"), "power": (_power, _power_jac, "a - b*k^-c")}


@dataclass(frozen=True)
class SaturatingFit:
    """A fitted saturating curve (parameters a, b, c: asymptote, gap at k=0 / k=1, scale/exponent).

    ``level_var``/``level_df``: the variance of the curve's level from the spread of the replicates'
    levels (0 without replicate labels) and its df; ``why``: empty when the fit is identifiable, else
    the reason its numbers mean nothing.
    """
    model: str
    params: tuple
    cov: tuple
    dof: int
    level_var: float = 0.0
    level_df: int = 0
    why: str = ""

    @property
    def identifiable(self) -> bool:
        return not self.why

    def predict(self, k) -> np.ndarray:
        return CURVES[self.model][0](np.asarray(k, dtype=float), *self.params)

    def _se_df(self, k) -> tuple[np.ndarray, np.ndarray]:
        jac = CURVES[self.model][1](np.asarray(k, dtype=float), *self.params)
        v1 = np.einsum("...i,ij,...j->...", jac, np.asarray(self.cov), jac)
        v2 = self.level_var
        if not v2:
            return np.sqrt(v1), np.full(np.shape(v1), float(self.dof))
        return np.sqrt(v1 + v2), np.full(np.shape(v1), float(min(self.dof, self.level_df)))

    def band(self, k, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise confidence band of the fitted mean curve (delta method plus the replicate level)."""
        se, df = self._se_df(k)
        half = sps.t.ppf(0.5 + confidence / 2, df) * se
        mid = self.predict(k)
        return mid - half, mid + half

    def asymptote(self, confidence: float = 0.95) -> Interval:
        a = self.params[0]
        v1, v2 = self.cov[0][0], self.level_var
        df = self.dof if not v2 else min(self.dof, self.level_df)
        half = sps.t.ppf(0.5 + confidence / 2, df) * float(np.sqrt(v1 + v2))
        return Interval(float(a), float(a - half), float(a + half), self.dof + 3, confidence, self.model)

    def to_dict(self) -> dict:
        return {"model": self.model, "formula": CURVES[self.model][2], "params": list(self.params),
                "cov": [list(r) for r in self.cov], "dof": self.dof, "level_var": self.level_var,
                "level_df": self.level_df, "identifiable": self.identifiable, "why": self.why}


def _why_not_identifiable(model: str, params, cov, k, y) -> str:
    a, b, c = params
    span = max(float(np.ptp(y)), 1e-9)
    if not np.all(np.isfinite(cov)):
        return "its parameter covariance is not finite (the data do not pin the curve down)"
    if model == "exp" and c > 2 * float(np.max(k)):
        return (f"its scale c = {c:.3g} is beyond twice the largest setting: the data rise without levelling off, "
                f"so the asymptote is an extrapolation")
    if a - float(np.max(y)) > 2 * span:
        return "its asymptote lies far above every measured value (more than twice their range): an extrapolation"
    if b > 100 * span * (float(np.max(k)) if model == "power" else 1.0) or (model == "exp" and c < 1e-3):
        return "its gap b (or scale c) is degenerate: the curve is a step the data cannot place"
    if np.sqrt(cov[0][0]) > 5 * span:
        return "its asymptote's standard error is several times the data's range"
    return ""


def fit_saturating(k, acc, model: str = "exp", replicate=None) -> SaturatingFit:
    """Least-squares fit of acc(k) = a - b*exp(-k/c) (``model='exp'``) or a - b*k^-c (``'power'``).

    Give every replicate as its own point (``k`` repeated) and, in ``replicate``, each point's replicate
    index: a per-replicate offset (summing to 0) then absorbs the noise the replicate shares across
    settings, the covariance of (a, b, c) is scaled by the residual spread left, and the spread of the
    offsets enters the band as the level's variance (df = replicates - 1). Without ``replicate`` the
    points are treated as independent (right only when nothing is shared). b >= 0 and c > 0 are
    enforced, so the curve rises and saturates. Needs >= 4 points at >= 3 distinct settings.
    """
    if model not in CURVES:
        raise ValueError(f"model {model!r} not understood; use one of {sorted(CURVES)}")
    k, y = np.asarray(k, dtype=float), np.asarray(acc, dtype=float)
    if len(k) != len(y) or len(k) < 4 or len(np.unique(k)) < 3:
        raise ValueError("fit_saturating needs >= 4 points at >= 3 distinct settings")
    fn, jac, _ = CURVES[model]
    reps = np.unique(replicate) if replicate is not None else np.zeros(1)
    R = len(reps)
    if R > 1:
        code = np.searchsorted(reps, np.asarray(replicate))
        # offsets u_1..u_{R-1}, u_0 = -sum: design columns +1 for replicate r, -1 for replicate 0
        X = np.zeros((len(k), R - 1))
        for r in range(1, R):
            X[code == r, r - 1] = 1.0
        X[code == 0, :] = -1.0
    else:
        X = np.zeros((len(k), 0))
    if len(k) - 3 - X.shape[1] < 1:
        raise ValueError("fit_saturating needs more points than parameters (3 + replicates - 1)")

    def f(_, *p):
        return fn(k, *p[:3]) + X @ np.asarray(p[3:])

    def j(_, *p):
        return np.hstack([jac(k, *p[:3]), X])

    span = float(np.ptp(y)) or 1.0
    p0 = [float(y.max()), span, float(np.median(k)) if model == "exp" else 1.0] + [0.0] * X.shape[1]
    lb = [-np.inf, 0.0, 1e-6] + [-np.inf] * X.shape[1]
    params, cov = optimize.curve_fit(f, k, y, p0=p0, jac=j, bounds=(lb, [np.inf] * len(p0)), maxfev=20000)
    level_var, level_df = 0.0, 0
    if R > 1:
        u = np.append(-params[3:].sum(), params[3:])
        level_var, level_df = float(np.var(u, ddof=1) / R), R - 1
    p3, c3 = tuple(float(v) for v in params[:3]), np.asarray(cov)[:3, :3]
    why = _why_not_identifiable(model, p3, c3, k, y)
    return SaturatingFit(model, p3, tuple(tuple(map(float, r)) for r in c3), len(k) - len(p0), level_var, level_df, why)


# ------------------------------------------------------------------------------------ decisions
@dataclass(frozen=True)
class StepDecision:
    """A comparison of two settings of a line: ``decision`` is of ``upper - lower`` (or best - other)."""
    lower: float
    upper: float
    decision: Decision


def _sorted(settings: Sequence[float], replicates: Sequence) -> tuple[list[float], list[dict]]:
    order = np.argsort(np.asarray(settings, dtype=float), kind="stable")
    return [float(settings[i]) for i in order], [as_replicates(replicates[i]) for i in order]


def step_decisions(settings: Sequence[float], replicates: Sequence, margin: float, alpha: float = 0.05,
                   resolution: float | None = None, power: float = 0.8) -> list[StepDecision]:
    """Each neighbouring step (upper - lower), decided at ``margin`` with Holm over the line's steps."""
    s, reps = _sorted(settings, replicates)
    fam = decide_family([(reps[i + 1], reps[i]) for i in range(len(s) - 1)], margin, alpha, resolution, power)
    return [StepDecision(s[i], s[i + 1], d) for i, d in enumerate(fam)]


def versus_best(settings: Sequence[float], replicates: Sequence, margin: float, alpha: float = 0.05,
                resolution: float | None = None, power: float = 0.8) -> tuple[float, list[StepDecision]]:
    """The best setting (highest mean) against every other (best - other), Holm over the line.

    ``StepDecision.upper`` is the best, ``lower`` the other setting (whatever their order).
    """
    s, reps = _sorted(settings, replicates)
    means = [float(np.mean(list(r.values()))) if r else -np.inf for r in reps]
    b = int(np.argmax(means))
    others = [i for i in range(len(s)) if i != b]
    fam = decide_family([(reps[b], reps[i]) for i in others], margin, alpha, resolution, power)
    return s[b], [StepDecision(s[i], s[b], d) for i, d in zip(others, fam)]


def gains_stop_index(values, margin: float, alpha: float = 0.05, resolution: float | None = None):
    """Where gains stop, vectorised: ``values`` of shape (..., settings, replicates), settings in order.

    "Gains stop at k" claims that no larger setting is better than k by ``margin`` or more: for each
    j > k the one-sided paired test of ``diff(j - k) < margin`` rejects at ``alpha`` (the upper end of
    the 1 - 2*alpha interval is below +margin: j is equivalent to k or worse). The claims are tested
    in a fixed sequence from the second-largest setting down, each at ``alpha``, stopping at the first
    that fails, so the chance of any false "gains stop" claim stays <= alpha. Returns the index of the
    smallest k reached (-1: no stop shown).
    """
    v = np.asarray(values, dtype=float)
    K = v.shape[-2]
    out = np.full(v.shape[:-2], -1)
    alive = np.ones(v.shape[:-2], dtype=bool)
    for k in range(K - 2, -1, -1):
        d = v[..., k + 1:, :] - v[..., k:k + 1, :]  # (..., larger settings, replicates)
        ok = np.all(decide_arrays(d, margin, alpha, resolution)["p_below_margin"] <= alpha, axis=-1)
        alive &= ok
        out = np.where(alive, k, out)
    return out


@dataclass(frozen=True)
class GainsVerdict:
    """Where gains stop along a line and why (``setting``: the stop, None when none is shown)."""
    setting: float | None
    gains_to: float | None          # the largest setting shown better than a smaller one (None: none)
    sentence: str
    steps: list = field(default_factory=list)       # StepDecision per neighbouring step
    best: float | None = None
    vs_best: list = field(default_factory=list)     # StepDecision, best - other
    plateau_from: float | None = None               # by the fitted curve (identifiable fits only)


def _iv(d: Decision) -> str:
    return f"{d.diff:+.1f} [{d.low:+.1f}, {d.high:+.1f}]"


def where_gains_stop(settings: Sequence[float], replicates: Sequence, margin: float, alpha: float = 0.05,
                     resolution: float | None = None, fit: SaturatingFit | None = None, what: str = "kernel",
                     power: float = 0.8) -> GainsVerdict:
    """Say in words where accuracy gains stop along ``settings`` (values in points, ``margin`` in points).

    Gains stop at k only when every larger setting is shown not better than k by the margin
    (:func:`gains_stop_index`); otherwise the sentence names the largest setting shown better than a
    smaller one (neighbouring steps and best-vs-rest, Holm within each family) and what is undecided,
    with the replicates per setting that would decide it. Intervals are 1 - 2*alpha.
    """
    s, reps = _sorted(settings, replicates)
    steps = step_decisions(s, reps, margin, alpha, resolution, power)
    best, vs = versus_best(s, reps, margin, alpha, resolution, power)
    shared = sorted(set.intersection(*(set(r) for r in reps))) if reps else []
    stop = None
    if len(shared) >= 2:
        arr = np.array([[r[i] for i in shared] for r in reps])
        idx = int(gains_stop_index(arr, margin, alpha, resolution))
        stop = s[idx] if idx >= 0 else None
    wins = [(st.upper, st) for st in steps if st.decision.verdict == "better"]
    wins += [(st.upper, st) for st in vs if st.decision.verdict == "better" and st.upper > st.lower]
    gains_to = max((w[0] for w in wins), default=None)
    conf = f"{1 - 2 * alpha:.0%}"
    parts = []
    if stop is not None:
        larger = [x for x in s if x > stop]
        parts.append(f"Gains stop at {what} {stop:g}: every larger setting ({', '.join(f'{x:g}' for x in larger)}) is "
                     f"within +{margin:g} points of it or below (one-sided tests at {alpha:g}, in a fixed sequence).")
    elif gains_to is not None:
        w = max((w for w in wins if w[0] == gains_to), key=lambda t: t[1].decision.diff)[1]
        parts.append(f"Gains are not shown to stop: {what} {w.upper:g} beats {w.lower:g} by {_iv(w.decision)} points "
                     f"({conf} interval).")
    else:
        parts.append(f"No gain and no stop is shown along the {what} settings at a margin of {margin:g} points.")
    for st in steps:
        if st.decision.verdict == "better" and (stop is None or st.upper <= stop):
            parts.append(f"{what} {st.upper:g} beats {st.lower:g} by {_iv(st.decision)}.")
        elif st.decision.verdict == "worse":
            parts.append(f"{what} {st.upper:g} is worse than {st.lower:g} by {_iv(st.decision)}.")
    und = [st for st in steps if st.decision.verdict == "undecided"]
    if und:
        parts.append("Undecided steps: " + "; ".join(
            f"{st.lower:g} -> {st.upper:g} {_iv(st.decision)}" + _need(st.decision) for st in und) + ".")
    plateau = None
    if fit is not None and fit.identifiable:
        grid = np.linspace(min(s), max(s), 2001)
        within = np.flatnonzero(fit.params[0] - fit.predict(grid) <= margin)
        plateau = float(grid[within[0]]) if len(within) else None
    return GainsVerdict(stop, gains_to, " ".join(parts), steps, best, vs, plateau)


def _need(d: Decision) -> str:
    if d.replicates_needed is None or not np.isfinite(d.sd):
        return ""
    return f" (needs ~{d.replicates_needed} replicates at the paired sd {d.sd:.2g})"


# -------------------------------------------------------------------------- plain paired tests
@dataclass(frozen=True)
class Step:
    """Paired comparison of two neighbouring settings: ``test.diff`` = upper - lower."""
    lower: float
    upper: float
    test: PairedTest
    p_holm: float
    significant: bool


def step_tests(settings: Sequence[float], replicates: Sequence, alpha: float = 0.05) -> list[Step]:
    """Paired t-tests (two-sided, by replicate index) between neighbouring settings, Holm-corrected.

    ``replicates[i]`` holds setting i's values by replicate index; settings are sorted first.
    """
    s, reps = _sorted(settings, replicates)
    tests = [paired_test(reps[i + 1], reps[i], 1 - alpha) for i in range(len(s) - 1)]
    adj = holm([t.p for t in tests])
    return [Step(s[i], s[i + 1], t, float(adj[i]), bool(adj[i] <= alpha)) for i, t in enumerate(tests)]
