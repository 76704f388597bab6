"""lkscale.comparisons decisions: levels under a grid and shared noise, TOST, power and sample size.

Simulations with a known truth: replicate noise shared by both candidates (common random numbers),
accuracies rounded to the 1/val_n grid, enough draws that an error rate is measured to a few tenths of
a point; power against brute-force simulation, p-values against scipy.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from lkscale.comparisons import (decide, decide_arrays, decide_family, holm, min_detectable_effect,
                                 power_difference, power_equivalence, replicates_needed, sd_floor)

GRID = 0.5  # points: 100 / val_n with val_n = 200


def crn_pairs(rng, draws, n, true_diff, sd_diff, grid=GRID, shared=2.0):
    """Accuracies (points) of two candidates at n replicates, shared noise, rounded to the grid."""
    common = 50 + rng.uniform(0, grid, (draws, 1)) + rng.normal(0, shared, (draws, n))
    a = common + true_diff + rng.normal(0, sd_diff / np.sqrt(2), (draws, n))
    b = common + rng.normal(0, sd_diff / np.sqrt(2), (draws, n))
    return np.round(a / grid) * grid, np.round(b / grid) * grid


@pytest.mark.parametrize("n,sd_diff", [(2, 0.25), (2, 0.5), (3, 0.5), (3, 1.0)])
def test_better_keeps_its_level_on_a_grid(n, sd_diff):
    """No true difference: 'better' at one-sided 0.025 is claimed <= 2.5% (+1 point), never from t = inf.

    Without the sd floor (resolution None: the plain paired t-test) the same draws claim it more often
    than the level allows (the defect: identical grid differences give t = inf, p = 0).
    """
    rng = np.random.default_rng(n * 10 + int(4 * sd_diff))
    a, b = crn_pairs(rng, 200_000, n, 0.0, sd_diff)
    new = decide_arrays(a - b, 1.0, 0.025, resolution=GRID)
    rate = np.mean(new["p_better"] <= 0.025)
    assert rate <= 0.025 + 0.01
    assert np.all(np.isfinite(new["p_better"]))
    if (n, sd_diff) in [(2, 0.25), (2, 0.5)]:
        old = decide_arrays(a - b, 1.0, 0.025, resolution=None)
        assert np.mean(old["p_better"] <= 0.025) > 0.025 + 0.01  # the old test is past its level here


@pytest.mark.parametrize("n", [3, 6])
def test_equivalence_keeps_its_level_at_the_margin(n):
    """True difference exactly at the margin: 'equivalent' is claimed <= alpha (+1 point)."""
    rng = np.random.default_rng(n)
    a, b = crn_pairs(rng, 200_000, n, 1.0, 0.8)
    out = decide_arrays(a - b, 1.0, 0.05, resolution=GRID)
    assert np.mean(out["verdict"] == 2) <= 0.05 + 0.01


def test_decide_matches_scipy_and_the_array_form():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(3, 9))
        a, b = rng.normal(50, 2, n), rng.normal(50.5, 2, n)
        d = decide(a, b, 1.0, 0.05, resolution=0.01)
        assert d.p_better == pytest.approx(sps.ttest_rel(a, b, alternative="greater").pvalue)
        assert d.p_worse == pytest.approx(sps.ttest_rel(a, b, alternative="less").pvalue)
        tost = max(sps.ttest_1samp(a - b + 1.0, 0, alternative="greater").pvalue,
                   sps.ttest_1samp(a - b - 1.0, 0, alternative="less").pvalue)
        assert d.p_equivalent == pytest.approx(tost)
        ci = sps.ttest_rel(a, b).confidence_interval(0.90)
        assert (d.low, d.high) == pytest.approx((ci.low, ci.high))
        arr = decide_arrays(a - b, 1.0, 0.05, 0.01)
        assert d.verdict == ("better", "worse", "equivalent", "undecided")[int(arr["verdict"])]
        # every verdict is read off the 90% interval
        want = ("equivalent" if -1 < d.low and d.high < 1 else "better" if d.low > 0 else
                "worse" if d.high < 0 else "undecided")
        assert d.verdict == want
        assert (d.replicates_needed is None) == (d.verdict != "undecided")


def test_zero_spread_gets_the_grid_floor_not_infinity():
    d = decide({0: 51.0, 1: 52.0}, {0: 50.5, 1: 51.5}, 1.0, 0.025, resolution=GRID)  # +0.5 at both replicates
    assert d.sd == pytest.approx(sd_floor(GRID)) and d.sd == pytest.approx(GRID / np.sqrt(6))
    assert d.p_better > 0.025 and d.verdict == "undecided" and d.replicates_needed >= 3


def test_decide_pairs_by_replicate_index():
    d = decide({0: 50.0, 2: 52.0, 5: 51.0}, {5: 50.0, 0: 49.0, 2: 51.0, 7: 0.0}, 1.0)
    assert d.n == 3 and d.diff == pytest.approx(1.0)
    assert decide({0: 50.0}, {0: 49.0}, 1.0).verdict == "undecided"


def test_family_is_holm_adjusted():
    rng = np.random.default_rng(3)
    pairs = [(rng.normal(50 + m, 1, 4), rng.normal(50, 1, 4)) for m in (0.0, 1.5, 3.0)]
    raw = [decide(a, b, 1.0) for a, b in pairs]
    fam = decide_family(pairs, 1.0)
    for k in ("p_better", "p_worse", "p_equivalent"):
        assert [getattr(x, k) for x in fam] == pytest.approx(list(holm([getattr(x, k) for x in raw])))


@pytest.mark.parametrize("n,diff", [(3, 1.0), (5, 2.0), (8, 0.5)])
def test_power_difference_matches_simulation(n, diff):
    rng = np.random.default_rng(n)
    d = rng.normal(diff, 1.4, (100_000, n))
    sim = np.mean(sps.ttest_1samp(d, 0, axis=1, alternative="greater").pvalue <= 0.05)
    assert power_difference(1.4, n, diff, 0.05) == pytest.approx(sim, abs=0.006)


@pytest.mark.parametrize("n,diff", [(4, 0.0), (10, 0.0), (12, 0.4), (25, -0.3)])
def test_power_equivalence_matches_simulation(n, diff):
    rng = np.random.default_rng(n)
    d = rng.normal(diff, 1.4, (100_000, n))
    out = decide_arrays(d, 1.0, 0.05)
    sim = np.mean(out["p_equivalent"] <= 0.05)
    assert power_equivalence(1.4, n, 1.0, diff, 0.05) == pytest.approx(sim, abs=0.006)


def test_min_detectable_effect_and_replicates_needed_by_simulation():
    sd, n = 1.4, 3
    mde = min_detectable_effect(sd, n, 0.05, 0.8)  # two-sided 0.05: one side at 0.025
    rng = np.random.default_rng(7)
    d = rng.normal(mde, sd, (100_000, n))
    sim = np.mean(sps.ttest_1samp(d, 0, axis=1, alternative="greater").pvalue <= 0.025)
    assert sim == pytest.approx(0.8, abs=0.006)
    for kind, fn in [("equivalence", lambda m: power_equivalence(sd, m, 1.0, 0.0)),
                     ("difference", lambda m: power_difference(sd, m, 1.0))]:
        need = replicates_needed(sd, 1.0, 0.05, 0.8, 0.0, kind)
        assert fn(need) >= 0.8 > fn(need - 1)
    assert replicates_needed(sd, 1.0, diff=1.2) == 100000  # outside the margin: never equivalent
