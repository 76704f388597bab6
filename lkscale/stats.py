"""Intervals and tests for noisy proxy accuracies: replicates, paired differences, rank agreement, scaling.

A *replicate* index r fixes the data subset, batch order and init seed, the same for every candidate
(common random numbers), so two candidates' results are paired by r. Replicates of one candidate are
given as a mapping ``{replicate index: value}`` (or a plain sequence, indexed 0, 1, ...).

- :func:`t_interval` (mean and Student-t interval over replicates), :func:`wilson_interval` (one
  replicate's accuracy on n validation images), :func:`accuracy_interval` (picks between them).
- :func:`paired_test` (paired t-test and interval of a mean difference), :func:`paired_values`
  (pair two candidates by replicate index), :func:`holm` (Holm step-down adjusted p-values).
- :func:`bootstrap_ci` (seeded percentile bootstrap, resampling rows of paired arrays together),
  :func:`kendall_tau_b`, :func:`spearman_rho`, :func:`rank_correlation` (estimate + bootstrap CI),
  :func:`topk_recall`, :func:`fidelity_summary` (all of these for a proxy against high fidelity).
- :func:`fit_saturating` (acc(k) = a - b*exp(-k/c) or a - b*k^-c, with a delta-method band),
  :func:`step_tests` (paired tests between neighbouring settings, Holm-corrected) and
  :func:`where_gains_stop` (the same in words).

numpy/scipy only; nothing here prints. Checked against scipy in ``tests/test_stats.py``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

from .pareto import hypervolume_2d, pareto_front


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


def _as_reps(values) -> dict[int, float]:
    """A replicate mapping from a mapping or a sequence (indexed 0, 1, ...)."""
    if isinstance(values, Mapping):
        return {int(k): float(v) for k, v in values.items()}
    return {i: float(v) for i, v in enumerate(values)}


# ------------------------------------------------------------------------------------- intervals
def t_interval(values, confidence: float = 0.95) -> Interval:
    """Mean over replicates with a Student-t interval (df = n - 1); NaN bounds when n < 2."""
    x = np.asarray(list(_as_reps(values).values()), dtype=float)
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
    reps = _as_reps(values)
    if len(reps) >= 2 or not n_val:
        return t_interval(reps, confidence)
    w = wilson_interval(next(iter(reps.values())) / scale, n_val, confidence)
    return Interval(next(iter(reps.values())), w.low * scale, w.high * scale, 1, confidence, "wilson")


# -------------------------------------------------------------------------------- paired tests
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
    ra, rb = _as_reps(a), _as_reps(b)
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


# ----------------------------------------------------------------------------------- bootstrap
def bootstrap_ci(data: Sequence, statistic: Callable[..., float], n_resamples: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``statistic(*data)``, resampling the rows of ``data`` together.

    ``data`` is a tuple of equal-length arrays (paired observations: one array for a plain sample).
    The resampled indices are ``default_rng(seed).integers(0, n, (n_resamples, n))``, exactly as
    ``scipy.stats.bootstrap(..., paired=True, method='percentile', rng=default_rng(seed))`` draws
    them. Resamples where the statistic is undefined (NaN, e.g. a constant resample for a
    correlation) are left out of the quantiles.
    """
    arrays = [np.asarray(d, dtype=float) for d in data]
    n = len(arrays[0])
    if n < 2 or any(len(a) != n for a in arrays):
        raise ValueError("bootstrap_ci needs equal-length arrays with at least 2 rows")
    idx = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    theta = np.array([statistic(*(a[i] for a in arrays)) for i in idx], dtype=float)
    theta = theta[~np.isnan(theta)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(theta, [alpha, 1 - alpha]) if len(theta) else (np.nan, np.nan)
    return Interval(float(statistic(*arrays)), float(low), float(high), n, confidence, "bootstrap")


# ------------------------------------------------------------------------------- rank agreement
def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (ties corrected), from all pairs: (C - D) / sqrt((n0 - n1)(n0 - n2))."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    iu = np.triu_indices(len(x), k=1)
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    denom = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float(np.sum(sx * sy) / denom) if denom > 0 else float("nan")


def spearman_rho(x, y) -> float:
    """Spearman's rho: Pearson correlation of the ranks (ties get their average rank)."""
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def rank_correlation(x, y, method: str = "kendall", n_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Kendall tau-b or Spearman rho of paired scores with a percentile bootstrap interval over pairs."""
    fn = {"kendall": kendall_tau_b, "spearman": spearman_rho}.get(method)
    if fn is None:
        raise ValueError(f"method {method!r} not understood; use 'kendall' or 'spearman'")
    out = bootstrap_ci((x, y), fn, n_resamples, confidence, seed)
    return Interval(out.estimate, out.low, out.high, out.n, confidence, method)


def _front_kept(proxy, high, latency) -> float:
    """Share of the proxy's (accuracy, latency) front that is still non-dominated at high fidelity."""
    front = set(pareto_front(np.c_[proxy, latency]))
    return len(front & set(pareto_front(np.c_[high, latency]))) / len(front)


def _hv_ratio(proxy, high, latency, reference) -> float:
    """Hypervolume at high fidelity of the proxy's front over that of the best (high-fidelity) front."""
    best = hypervolume_2d(np.c_[high, latency], reference)
    front = pareto_front(np.c_[proxy, latency])
    return hypervolume_2d(np.c_[high, latency][front], reference) / best if best > 0 else float("nan")


def fidelity_summary(proxy, high, latency, reference, k: int = 3, n_resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, Interval]:
    """How well a proxy ranks candidates, against high-fidelity accuracies of the same candidates.

    Kendall tau-b, Spearman rho, top-k recall, the share of the proxy's front still non-dominated
    at high fidelity, and the hypervolume ratio (reference point ``(acc, latency)``, as in
    :func:`lkscale.pareto.hypervolume_2d`), each with a percentile bootstrap over candidates.
    """
    data = tuple(np.asarray(v, dtype=float) for v in (proxy, high, latency))
    stats = {"kendall_tau": lambda p, h, _: kendall_tau_b(p, h), "spearman_rho": lambda p, h, _: spearman_rho(p, h),
             f"top{k}_recall": lambda p, h, _: topk_recall(p, h, min(k, len(p))), "front_kept": _front_kept,
             "hv_ratio": lambda p, h, lat: _hv_ratio(p, h, lat, reference)}
    return {name: bootstrap_ci(data, fn, n_resamples, confidence, seed) for name, fn in stats.items()}


def topk_recall(proxy, truth, k: int) -> float:
    """Share of the ``k`` best items by ``truth`` that are also among the ``k`` best by ``proxy``.

    Higher is better for both; ties are broken by input order (a stable sort), so the result is
    deterministic.
    """
    proxy, truth = np.asarray(proxy, dtype=float), np.asarray(truth, dtype=float)
    if not 0 < k <= len(truth) or len(proxy) != len(truth):
        raise ValueError(f"need 0 < k <= n and equal lengths, got k={k}, n={len(truth)}")
    top_p = set(np.argsort(-proxy, kind="stable")[:k].tolist())
    top_t = set(np.argsort(-truth, kind="stable")[:k].tolist())
    return len(top_p & top_t) / k


# ------------------------------------------------------------------------------ kernel scaling
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
    """A fitted saturating curve (parameters a, b, c: asymptote, gap at k=0 / k=1, scale/exponent)."""
    model: str
    params: tuple
    cov: tuple
    dof: int

    def predict(self, k) -> np.ndarray:
        return CURVES[self.model][0](np.asarray(k, dtype=float), *self.params)

    def band(self, k, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise confidence band of the fitted mean curve (delta method, Student-t with ``dof``)."""
        k = np.asarray(k, dtype=float)
        jac = CURVES[self.model][1](k, *self.params)
        se = np.sqrt(np.einsum("...i,ij,...j->...", jac, np.asarray(self.cov), jac))
        half = sps.t.ppf(0.5 + confidence / 2, self.dof) * se
        mid = self.predict(k)
        return mid - half, mid + half

    def asymptote(self, confidence: float = 0.95) -> Interval:
        a, se = self.params[0], float(np.sqrt(self.cov[0][0]))
        half = sps.t.ppf(0.5 + confidence / 2, self.dof) * se
        return Interval(float(a), float(a - half), float(a + half), self.dof + 3, confidence, self.model)

    def to_dict(self) -> dict:
        return {"model": self.model, "formula": CURVES[self.model][2], "params": list(self.params),
                "cov": [list(r) for r in self.cov], "dof": self.dof}


def fit_saturating(k, acc, model: str = "exp") -> SaturatingFit:
    """Least-squares fit of acc(k) = a - b*exp(-k/c) (``model='exp'``) or a - b*k^-c (``'power'``).

    Give every replicate as its own point (``k`` repeated): the covariance is then scaled by the
    residual spread, which holds the replicate noise (scipy.optimize.curve_fit, absolute_sigma=False).
    b >= 0 and c > 0 are enforced, so the curve rises and saturates. Needs >= 4 points.
    """
    if model not in CURVES:
        raise ValueError(f"model {model!r} not understood; use one of {sorted(CURVES)}")
    k, y = np.asarray(k, dtype=float), np.asarray(acc, dtype=float)
    if len(k) != len(y) or len(k) < 4 or len(np.unique(k)) < 3:
        raise ValueError("fit_saturating needs >= 4 points at >= 3 distinct settings")
    fn, jac, _ = CURVES[model]
    span = float(np.ptp(y)) or 1.0
    p0 = [float(y.max()), span, float(np.median(k)) if model == "exp" else 1.0]
    params, cov = optimize.curve_fit(fn, k, y, p0=p0, jac=lambda x, *p: jac(x, *p),
                                     bounds=([-np.inf, 0.0, 1e-6], [np.inf, np.inf, np.inf]), maxfev=20000)
    return SaturatingFit(model, tuple(float(p) for p in params), tuple(tuple(map(float, r)) for r in cov),
                         len(k) - 3)


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
    order = np.argsort(np.asarray(settings, dtype=float), kind="stable")
    s = [float(settings[i]) for i in order]
    reps = [_as_reps(replicates[i]) for i in order]
    tests = [paired_test(reps[i + 1], reps[i], 1 - alpha) for i in range(len(s) - 1)]
    adj = holm([t.p for t in tests])
    return [Step(s[i], s[i + 1], t, float(adj[i]), bool(adj[i] <= alpha)) for i, t in enumerate(tests)]


@dataclass(frozen=True)
class GainsVerdict:
    """Where gains stop: by the step tests (``setting``) and by the fitted curve (``plateau_from``)."""
    setting: float
    plateau_from: float | None
    noise: float
    sentence: str


def where_gains_stop(settings: Sequence[float], replicates: Sequence, alpha: float = 0.05,
                     fit: SaturatingFit | None = None, what: str = "kernel") -> GainsVerdict:
    """Say in words where accuracy gains stop along ``settings``.

    By the tests: the upper setting of the last significant *gain* between neighbours (Holm over all
    steps at ``alpha``); the first setting when no gain is significant. By the curve (when ``fit``
    is given): the smallest k from which the fitted curve is within the noise of its asymptote, the
    noise being the median half-width of the settings' mean intervals (over replicates).
    """
    steps = step_tests(settings, replicates, alpha)
    gains = [st for st in steps if st.significant and st.test.diff > 0]
    setting = gains[-1].upper if gains else float(min(settings))
    halves = [t_interval(r, 1 - alpha).half_width for r in replicates if len(_as_reps(r)) >= 2]
    noise = float(np.median(halves)) if halves else float("nan")
    if gains:
        text = (f"Gains stop at {what} {setting:g}: no step beyond it is significant "
                f"(paired t-test over replicates, Holm-corrected, alpha {alpha:g}).")
    else:
        text = (f"No step between neighbouring {what} settings is significant (paired t-test over "
                f"replicates, Holm-corrected, alpha {alpha:g}): no gain beyond {what} {setting:g} is shown.")
    plateau = None
    if fit is not None and np.isfinite(noise) and noise > 0:
        grid = np.linspace(min(settings), max(settings), 2001)
        within = np.flatnonzero(fit.params[0] - fit.predict(grid) <= noise)
        asym = fit.asymptote(1 - alpha)
        top = max(float(np.mean(list(_as_reps(r).values()))) for r in replicates)
        if not np.isfinite(asym.estimate) or asym.estimate - top > 5 * noise:
            return GainsVerdict(setting, None, noise, text + (
                f" The fitted curve {CURVES[fit.model][2]} does not level off within these settings (its "
                f"asymptote lies far above every measured mean): the fit cannot say where gains stop."))
        if len(within):
            plateau = float(grid[within[0]])
            text += (f" The fitted curve {CURVES[fit.model][2]} is within the noise of one setting's mean "
                     f"({noise:.2g}) of its asymptote {asym.estimate:.3g} [{asym.low:.3g}, {asym.high:.3g}] "
                     f"from {what} {plateau:.3g}.")
        else:
            text += (f" The fitted curve {CURVES[fit.model][2]} is still more than the noise of one "
                     f"setting's mean ({noise:.2g}) below its asymptote {asym.estimate:.3g} at the largest {what}.")
    return GainsVerdict(setting, plateau, noise, text)
