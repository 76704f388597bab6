"""lkscale.intervals, .comparisons, .rank_agreement and .scaling_fit against scipy (and brute force), known answers."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from lkscale.comparisons import holm, paired_test
from lkscale.intervals import accuracy_interval, t_interval, wilson_interval
from lkscale.rank_agreement import (_front_kept, bootstrap_ci, fidelity_summary, kendall_tau_b, rank_correlation,
                                    spearman_rho, topk_recall)
from lkscale.scaling_fit import CURVES, fit_saturating, step_tests, where_gains_stop

CONVNEXT = [50.2, 52.0, 51.6, 48.0]  # measured: ConvNeXt 3-3-3-3 proxy, seeds 0-3
REPLK = [54.5, 55.5, 59.8, 52.8]     # measured: RepLK 31-15-7-3 proxy, seeds 0-3


@pytest.mark.parametrize("values", [CONVNEXT, REPLK, [1.0, 2.0], list(np.linspace(0, 1, 17))])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_t_interval_matches_scipy(values, confidence):
    got = t_interval(values, confidence)
    lo, hi = sps.t.interval(confidence, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert got.estimate == pytest.approx(np.mean(values))
    assert (got.low, got.high) == pytest.approx((lo, hi), rel=1e-12)
    assert got.n == len(values)


def test_t_interval_single_value_has_no_interval():
    got = t_interval({3: 51.0})
    assert got.estimate == 51.0 and np.isnan(got.low) and np.isnan(got.high)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (500, 1000), (473, 1000), (999, 1000), (1000, 1000), (7, 30)])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_wilson_matches_scipy_binomtest(k, n, confidence):
    ci = sps.binomtest(k, n).proportion_ci(confidence, method="wilson")
    got = wilson_interval(k / n, n, confidence)
    assert (got.low, got.high) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_accuracy_interval_picks_wilson_for_one_replicate_and_t_otherwise():
    one = accuracy_interval([50.0], n_val=1000, scale=100)
    ci = sps.binomtest(500, 1000).proportion_ci(0.95, method="wilson")
    assert (one.low, one.high) == pytest.approx((100 * ci.low, 100 * ci.high))
    assert one.half_width == pytest.approx(3.1, abs=0.1)  # the "about +-3 points at 50%"
    many = accuracy_interval(REPLK, n_val=1000, scale=100)
    assert many.method == "t" and (many.low, many.high) == pytest.approx(
        sps.t.interval(0.95, 3, loc=np.mean(REPLK), scale=sps.sem(REPLK)))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_test_matches_ttest_rel(alternative):
    got = paired_test(REPLK, CONVNEXT, alternative=alternative)
    ref = sps.ttest_rel(REPLK, CONVNEXT, alternative=alternative)
    assert got.t == pytest.approx(ref.statistic) and got.p == pytest.approx(ref.pvalue)
    ci = sps.ttest_rel(REPLK, CONVNEXT).confidence_interval(0.95)
    assert (got.low, got.high) == pytest.approx((ci.low, ci.high))
    assert got.diff == pytest.approx(5.2) and got.df == 3


def test_paired_test_pairs_by_replicate_index_not_position():
    a = {0: 1.0, 2: 3.0, 5: 4.0, 7: 9.0}
    b = {5: 2.0, 0: 0.5, 2: 1.0, 9: 100.0}
    got = paired_test(a, b)
    ref = sps.ttest_rel([1.0, 3.0, 4.0], [0.5, 1.0, 2.0])
    assert got.n == 3 and got.p == pytest.approx(ref.pvalue)


def test_paired_test_degenerate_cases():
    assert np.isnan(paired_test([1.0], [0.0]).p)
    const = paired_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], alternative="greater")
    assert const.t == np.inf and const.p == 0.0
    assert np.isnan(paired_test([1.0, 2.0], [1.0, 2.0]).p)


def _holm_brute(p, alpha):
    """Holm's procedure as a rejection rule, step by step."""
    order = np.argsort(p, kind="stable")
    reject = np.zeros(len(p), bool)
    for rank, i in enumerate(order):
        if p[i] > alpha / (len(p) - rank):
            break
        reject[i] = True
    return reject


@pytest.mark.parametrize("seed", range(20))
def test_holm_adjusted_pvalues_agree_with_the_rejection_rule(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.1, size=rng.integers(1, 9))
    adj = holm(p)
    for alpha in (0.01, 0.05, 0.1):
        assert np.array_equal(adj <= alpha, _holm_brute(p, alpha))
    assert np.all(adj >= p) and np.all(adj <= 1)


def test_holm_skips_nan():
    adj = holm([0.01, np.nan, 0.04])
    assert np.isnan(adj[1]) and adj[0] == pytest.approx(0.02) and adj[2] == pytest.approx(0.04)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_bootstrap_matches_scipy_percentile_exactly(seed):
    rng = np.random.default_rng(100 + seed)
    x, y = rng.normal(size=25), rng.normal(size=25)
    got = bootstrap_ci((x,), np.mean, 999, 0.9, seed)
    ref = sps.bootstrap((x,), np.mean, n_resamples=999, confidence_level=0.9, method="percentile",
                        vectorized=False, rng=np.random.default_rng(seed))
    assert (got.low, got.high) == pytest.approx(tuple(ref.confidence_interval), rel=1e-12)
    diff = lambda a, b: float(np.mean(a - b))  # noqa: E731
    got = bootstrap_ci((x, y), diff, 999, 0.95, seed)
    ref = sps.bootstrap((x, y), diff, n_resamples=999, method="percentile", paired=True,
                        vectorized=False, rng=np.random.default_rng(seed))
    assert (got.low, got.high) == pytest.approx(tuple(ref.confidence_interval), rel=1e-12)


def _ties(rng, n):
    return rng.integers(0, 5, size=n).astype(float)


@pytest.mark.parametrize("seed", range(15))
def test_kendall_and_spearman_match_scipy_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    x = _ties(rng, n) if seed % 2 else rng.normal(size=n)
    y = x + rng.normal(size=n) if seed % 3 else _ties(rng, n)
    assert kendall_tau_b(x, y) == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)


def test_rank_correlation_known_rankings_and_bootstrap_interval():
    x = np.arange(12.0)
    assert rank_correlation(x, x).estimate == 1.0
    assert rank_correlation(x, -x, "spearman").estimate == -1.0
    y = x.copy()
    y[[0, 1]] = y[[1, 0]]  # one swapped pair of 66: tau = 1 - 2/66
    got = rank_correlation(x, y, "kendall", 500, seed=3)
    assert got.estimate == pytest.approx(1 - 2 / 66)
    ref = sps.bootstrap((x, y), kendall_tau_b, n_resamples=500, method="percentile", paired=True,
                        vectorized=False, rng=np.random.default_rng(3))
    assert (got.low, got.high) == pytest.approx(tuple(ref.confidence_interval))
    assert got.low <= got.estimate <= got.high


def test_topk_recall_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        truth, proxy = rng.permutation(10), rng.permutation(10)
        k = int(rng.integers(1, 11))
        want = len(set(np.flatnonzero(truth >= 10 - k)) & set(np.flatnonzero(proxy >= 10 - k))) / k
        assert topk_recall(proxy, truth, k) == want
    assert topk_recall([3, 2, 1], [1, 2, 3], 1) == 0.0


@pytest.mark.parametrize("model,true", [("exp", (53.0, 6.0, 5.0)), ("power", (54.0, 9.0, 0.8))])
def test_saturating_fit_recovers_a_known_curve_and_its_band_covers_it(model, true):
    """Independent noise (nothing shared): band and asymptote interval cover the truth near nominal."""
    fn = CURVES[model][0]
    ks = np.array([3, 5, 7, 9, 13, 17, 25, 31], dtype=float)
    covered, asym_hit = [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        x = np.repeat(ks, 4)
        y = fn(x, *true) + rng.normal(0, 1.0, size=len(x))
        fit = fit_saturating(x, y, model)
        lo, hi = fit.band(ks)
        covered.append(np.mean((lo <= fn(ks, *true)) & (fn(ks, *true) <= hi)))
        asym = fit.asymptote()
        asym_hit.append(asym.low <= true[0] <= asym.high)
    assert np.mean(covered) > 0.85  # nominal 95% pointwise; the delta method is approximate
    if model == "exp":  # the report's model; a power law's asymptote is an extrapolation (~64% when identifiable)
        assert np.mean(asym_hit) >= 0.85  # measured 94.5% over 200 seeds


def test_saturating_band_matches_brute_force_parameter_draws():
    x = np.repeat([3.0, 5, 7, 9, 13, 17, 25, 31], 10)
    y = CURVES["exp"][0](x, 53.0, 6.0, 5.0) + np.random.default_rng(1).normal(0, 0.5, size=len(x))
    fit = fit_saturating(x, y)
    draws = np.random.default_rng(0).multivariate_normal(fit.params, fit.cov, size=40000)
    k = 10.0
    sd_mc = np.std(CURVES["exp"][0](k, *draws.T))
    lo, hi = fit.band(k)
    assert (hi - lo) / 2 / sps.t.ppf(0.975, fit.dof) == pytest.approx(sd_mc, rel=0.1)


def test_step_tests_and_where_gains_stop_on_a_known_plateau():
    rng = np.random.default_rng(0)
    ks = [3, 7, 13, 19, 25, 31]
    true = {3: 45.0, 7: 49.0, 13: 53.0, 19: 53.0, 25: 53.0, 31: 53.0}
    shared = rng.normal(0, 2.0, size=8)  # common random numbers: one effect per replicate
    reps = [{r: true[k] + shared[r] + rng.normal(0, 0.5) for r in range(8)} for k in ks]
    steps = step_tests(ks, reps)
    ref = [sps.ttest_rel(list(reps[i + 1].values()), list(reps[i].values())).pvalue for i in range(5)]
    assert [st.test.p for st in steps] == pytest.approx(ref)
    assert [st.significant for st in steps] == [True, True, False, False, False]
    x = [k for k, r in zip(ks, reps) for _ in r]
    y = [v for r in reps for v in r.values()]
    rep = [i for r in reps for i in r]
    verdict = where_gains_stop(ks, reps, 1.0, fit=fit_saturating(x, y, replicate=rep))
    # a stop at 13 or later is a true claim (the plateau starts at 13); here 25 happens to sit 0.5 above 13
    assert verdict.setting == 19 and verdict.sentence.startswith("Gains stop at kernel 19")
    assert [st.decision.verdict for st in verdict.steps][:4] == ["better", "better", "equivalent", "equivalent"]
    assert verdict.plateau_from is not None and 7 < verdict.plateau_from <= 19


def test_where_gains_stop_when_nothing_is_decided():
    reps = [CONVNEXT, [v + 0.3 for v in CONVNEXT[::-1]], [v - 0.2 for v in CONVNEXT]]
    verdict = where_gains_stop([3, 7, 13], reps, 1.0)
    assert verdict.setting is None and verdict.gains_to is None
    assert "No gain and no stop" in verdict.sentence and "needs ~" in verdict.sentence


def test_all_pairs_kendall_definition_on_a_tiny_case():
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    pairs = list(itertools.combinations(range(4), 2))
    conc = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    assert kendall_tau_b(x, y) == pytest.approx(conc / len(pairs))


def test_fidelity_summary_on_known_rankings():
    lat = [1.0, 2.0, 3.0, 4.0]
    same = fidelity_summary([50, 52, 51, 56], [50, 52, 51, 56], lat, reference=(40, 5), k=2, n_resamples=200)
    assert {k: v.estimate for k, v in same.items()} == {
        "kendall_tau": 1.0, "spearman_rho": 1.0, "top2_recall": 1.0, "front_kept": 1.0, "hv_ratio": 1.0}
    proxy, high = [50, 49, 54, 53], [50, 52, 51, 56]
    got = fidelity_summary(proxy, high, lat, reference=(40, 5), k=2, n_resamples=300, seed=4)
    # proxy front {(50,1), (54,3)}; at high fidelity the front is {0, 1, 3}: half of it is kept, and its
    # hypervolume is 40 + 2 = 42 of the best front's 40 + 6 + 4 = 50
    assert got["front_kept"].estimate == 0.5 and got["hv_ratio"].estimate == pytest.approx(42 / 50)
    assert got["kendall_tau"].estimate == pytest.approx(sps.kendalltau(proxy, high).statistic)
    assert got["top2_recall"].estimate == 0.5  # proxy top 2: {2, 3}; high top 2: {1, 3}
    kept = lambda p, h, lat_: _front_kept(p, h, lat_)  # noqa: E731
    ref = sps.bootstrap((proxy, high, lat), kept, n_resamples=300, method="percentile", paired=True,
                        vectorized=False, rng=np.random.default_rng(4))
    assert (got["front_kept"].low, got["front_kept"].high) == pytest.approx(tuple(ref.confidence_interval))
