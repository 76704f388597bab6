"""lkscale.scaling_fit by simulation: where gains stop, and the saturating fit's band under shared noise.

Known truths; replicate noise shared by every setting (common random numbers); accuracies on a
0.5-point grid (val_n = 200).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats as sps

from lkscale.comparisons import decide
from lkscale.scaling_fit import CURVES, fit_saturating, gains_stop_index, where_gains_stop

KS = np.array([3, 7, 13, 25, 31.0])
GRID = 0.5


def scaling_runs(rng, mu, runs, R=3, shared=2.0, own=0.25):
    """Accuracies (runs, settings, replicates): truth + a shared per-replicate shift + own noise, on the grid."""
    y = np.asarray(mu)[None, :, None] + rng.normal(0, shared, (runs, 1, R)) + rng.normal(0, own, (runs, len(mu), R))
    return np.round(y / GRID) * GRID


def old_gains_stop(y, alpha=0.05):
    """The rule before: the upper setting of the last neighbouring gain significant after Holm (index)."""
    d = y[:, 1:, :] - y[:, :-1, :]
    n, m, s = d.shape[-1], d.mean(-1), d.std(-1, ddof=1)
    with np.errstate(all="ignore"):
        t = np.where(s > 0, m / (s / np.sqrt(n)), np.sign(m) * np.inf)
    p = 2 * sps.t.sf(np.abs(t), n - 1)
    order = np.argsort(p, axis=1)
    k = p.shape[1]
    adj = np.maximum.accumulate(np.minimum(1, np.take_along_axis(p, order, 1) * (k - np.arange(k))), axis=1)
    padj = np.empty_like(adj)
    np.put_along_axis(padj, order, adj, 1)
    gain = (padj <= alpha) & (m > 0)
    return np.where(gain.any(1), k - np.argmax(gain[:, ::-1], 1), 0)


def test_gains_do_not_stop_where_a_larger_setting_refutes_it():
    """Issue 19's case: true means 50/53/54/55/56 at 3/7/13/25/31, 3 replicates.

    The old rule says "gains stop at 7" in about a third of runs, each time with 31 vs 7 clearly
    better; the new rule claims a stop (anywhere: every claim is false here, 25 at the boundary) in
    <= alpha of runs.
    """
    y = scaling_runs(np.random.default_rng(0), [50, 53, 54, 55, 56.0], 4000)
    old = old_gains_stop(y)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical grid differences: scipy warns of the zero spread
        p31_7 = sps.ttest_1samp(y[:, 4] - y[:, 1], 0, axis=1, alternative="greater").pvalue
    assert np.mean(old == 1) > 0.25 and np.mean(p31_7[old == 1] <= 0.05) > 0.95
    new = gains_stop_index(y, 1.0, 0.05, GRID)
    assert np.mean(new >= 0) <= 0.05 + 0.01
    assert np.mean(new == 1) == 0.0


def test_gains_stop_found_on_a_true_plateau_and_never_below_it():
    """True plateau from 7 (50/53/53/53/53), 6 replicates: the stop is found at 7 often, never at 3."""
    y = scaling_runs(np.random.default_rng(1), [50, 53, 53, 53, 53.0], 2000, R=6)
    new = gains_stop_index(y, 1.0, 0.05, GRID)
    assert np.mean(new == 0) <= 0.01  # 3 is worse by 3 points: claiming a stop there is false
    assert np.mean(new == 1) > 0.5


def test_where_gains_stop_in_words_agrees_with_the_decisions():
    rng = np.random.default_rng(2)
    y = scaling_runs(rng, [50, 53, 53, 53, 53.0], 1, R=8)[0]
    reps = [dict(enumerate(r)) for r in y]
    v = where_gains_stop(KS, reps, 1.0, 0.05, GRID)
    assert v.setting == 7 and v.sentence.startswith("Gains stop at kernel 7")
    assert all(decide(reps[j], reps[1], 1.0, 0.05, GRID).high < 1.0 for j in range(2, 5))
    assert v.steps[0].decision.verdict == "better" and "7 beats 3" in v.sentence
    assert v.best in KS and len(v.vs_best) == 4
    y = scaling_runs(rng, [50, 53, 54, 55, 56.0], 1, R=3)[0]
    v = where_gains_stop(KS, [dict(enumerate(r)) for r in y], 1.0, 0.05, GRID)
    assert v.setting is None and "not shown to stop" in v.sentence and v.gains_to is not None


def _coverage(shared, own, seeds, grouped):
    fn, true = CURVES["exp"][0], (53.0, 6.0, 5.0)
    R, cov = 3, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            y = fn(KS, *true)[:, None] + rng.normal(0, shared, (1, R)) + rng.normal(0, own, (len(KS), R))
            y = np.round(y / GRID) * GRID
            fit = fit_saturating(np.repeat(KS, R), y.ravel(), replicate=np.tile(np.arange(R), len(KS)) if grouped else None)
            lo, hi = fit.band(KS)
            cov.append(np.mean((lo <= fn(KS, *true)) & (fn(KS, *true) <= hi)))
    return float(np.mean(cov))


def test_saturating_band_covers_the_true_curve_when_replicate_noise_is_shared():
    """Shared part dominant (sd 2 per replicate vs 0.5 own), 3 replicates, 5 settings: the band with the
    replicate labels covers ~95% (measured 95.0% over 400 seeds); treating the 15 points as independent
    (the old covariance) covers ~74%."""
    new = _coverage(2.0, 0.5, 300, grouped=True)
    assert 0.93 <= new <= 0.985
    assert _coverage(2.0, 0.5, 150, grouped=False) < 0.85


def test_saturating_fit_recovers_the_asymptote_with_nominal_coverage():
    fn, true = CURVES["exp"][0], (53.0, 6.0, 5.0)
    hits = []
    for seed in range(200):
        rng = np.random.default_rng(100 + seed)
        y = fn(KS, *true)[:, None] + rng.normal(0, 1.0, (1, 4)) + rng.normal(0, 0.5, (len(KS), 4))
        a = fit_saturating(np.repeat(KS, 4), y.ravel(), replicate=np.tile(np.arange(4), len(KS))).asymptote()
        hits.append(a.low <= true[0] <= a.high)
    assert np.mean(hits) >= 0.92


def test_degenerate_fit_is_marked_not_identifiable():
    rng = np.random.default_rng(3)
    x = np.repeat(KS, 3)
    y = 40 + 0.4 * x + rng.normal(0, 0.3, len(x))  # rises without levelling off
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_saturating(x, y, replicate=np.tile(np.arange(3), len(KS)))
    assert not fit.identifiable and fit.why and fit.to_dict()["identifiable"] is False
    good = fit_saturating(x, CURVES["exp"][0](x, 53.0, 6.0, 5.0) + rng.normal(0, 0.3, len(x)),
                          replicate=np.tile(np.arange(3), len(KS)))
    assert good.identifiable, good.why


@pytest.mark.parametrize("model", ["exp", "power"])
def test_fit_with_replicate_offsets_recovers_the_shape(model):
    fn = CURVES[model][0]
    true = (53.0, 6.0, 5.0) if model == "exp" else (54.0, 9.0, 0.8)
    x = np.repeat(KS, 4)
    shift = np.tile([-3.0, 1.0, 0.5, 1.5], len(KS))
    fit = fit_saturating(x, fn(x, *true) + shift, model, replicate=np.tile(np.arange(4), len(KS)))
    assert fit.params == pytest.approx(true, rel=1e-4)
