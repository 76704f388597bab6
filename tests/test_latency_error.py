"""What a latency interval covers: one measurement run. Across runs the measured run-to-run spread is added."""
import math

import numpy as np
import pytest
from scipy import special

from lkscale.config import LatencyConfig
from lkscale.cost.latency import LatencyResult, across_runs_interval
from lkscale.racing import Candidate, Race


def measured(rng, true_ms, shift_sd, within_sd, rounds=7):
    """One measurement run: a run shift (load, process, machine state) times round noise; the run's own
    median and its within-run standard error."""
    shift = math.exp(rng.normal(0, shift_sd))
    values = true_ms * shift * np.exp(rng.normal(0, within_sd, rounds))
    return float(np.median(values)), float(true_ms * shift * within_sd * 1.2533 / math.sqrt(rounds))


@pytest.mark.parametrize("cross_run_term", [True, False])
def test_equal_latencies_from_different_runs_are_rarely_told_apart(cross_run_term):
    """Two networks with the same true latency, each measured in its own run (a 19% run-to-run spread, 2%
    within a run): the race calls one faster at most alpha of the time only with the run-to-run term."""
    cv, alpha, trials, wrong = LatencyConfig().between_run_cv, 0.05, 2000, 0
    rng = np.random.default_rng(0)
    for i in range(trials):
        (ma, sa), (mb, sb) = measured(rng, 1.0, cv, 0.02), measured(rng, 1.0, cv, 0.02)
        race = Race([Candidate("a", ma, sa, {}, "run1"), Candidate("b", mb, sb, {}, "run2")], alpha=alpha,
                    between_run_cv=cv if cross_run_term else 0.0)
        wrong += race.lat_relation("a", "b") != 0
    rate = wrong / trials
    if cross_run_term:
        assert rate <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / trials)
    else:
        assert rate > 0.5  # the within-run interval alone claims a difference most of the time


def test_side_by_side_in_one_run_the_within_run_error_holds():
    """The run shift is common to everything measured side by side: it cancels and only the within-run error is used."""
    race = Race([Candidate("a", 1.00, 0.004, {}, "final"), Candidate("b", 1.03, 0.004, {}, "final")],
                between_run_cv=0.19)
    assert race.lat_relation("a", "b") == 1
    race.candidates["b"].latency_run = "draw:b"
    assert race.lat_relation("a", "b") == 0


def test_across_runs_interval_adds_the_run_to_run_sd_in_quadrature():
    lo, hi = across_runs_interval(2.0, 1.9, 2.2, 0.1)
    z = special.ndtri(0.975)
    assert lo == pytest.approx(2.0 - math.hypot(0.1, z * 0.2)) and hi == pytest.approx(2.0 + math.hypot(0.2, z * 0.2))
    assert across_runs_interval(2.0, 1.9, 2.2, 0.0) == pytest.approx((1.9, 2.2))
    res = LatencyResult("onnxruntime", 1, 1, 32, 2.0, 1.9, 2.2, 0.02, 7, False, 500.0, between_run_cv=0.19)
    assert "within-run" in res.describe() and LatencyResult.from_dict(res.to_dict()).between_run_cv == 0.19
