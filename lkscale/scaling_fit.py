"""Kernel scaling along one line of settings: a saturating fit, neighbouring steps, where gains stop.

- :func:`fit_saturating` (acc(k) = a - b*exp(-k/c) or a - b*k^-c, with a delta-method band),
  :func:`step_tests` (paired tests between neighbouring settings, Holm-corrected) and
  :func:`where_gains_stop` (the same in words).

numpy/scipy only; nothing here prints. Checked against scipy in ``tests/test_stats.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sps

from .comparisons import PairedTest, holm, paired_test
from .intervals import Interval, as_replicates, t_interval


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
    reps = [as_replicates(replicates[i]) for i in order]
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
    halves = [t_interval(r, 1 - alpha).half_width for r in replicates if len(as_replicates(r)) >= 2]
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
        top = max(float(np.mean(list(as_replicates(r).values()))) for r in replicates)
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
