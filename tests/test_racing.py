"""Two-objective racing on synthetic problems with a known front and known noise."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from scipy import stats as sps

from conftest import REPO
from lkscale.pareto import pareto_front
from lkscale.racing import CONFIRMED, DOMINATED, EQUIVALENT, TIED, Candidate, Race, looks
from lkscale.search.confirm import MAPE_TO_SD, make_race
from lkscale.study import load_study


def synthetic(seed, n=12, m=5, gap=3.0, sd_shared=2.0, sd_ind=1.0, lat_se=0.05):
    """A problem with a known front of ``m`` members (accuracy steps of ``gap``) among ``n`` candidates.

    Noise: acc(i, r) = mu_i + s_r + e_ir with a shared replicate effect s_r (common random numbers)
    and an individual one e_ir; latency measured once with standard error ``lat_se``. Dominated
    candidates lie anywhere from their dominator's accuracy down to 6 points below it.
    """
    rng = np.random.default_rng(seed)
    lat = 1 + 0.5 * np.arange(n) + rng.uniform(-0.1, 0.1, n)
    front = np.sort(np.r_[0, rng.choice(np.arange(1, n), m - 1, replace=False)])
    mu = np.empty(n)
    mu[front] = 50 + gap * np.arange(m) + rng.uniform(0, 0.5, m)
    for i in sorted(set(range(n)) - set(front)):
        mu[i] = mu[front[front < i]].max() - rng.uniform(0, 6)
    shared = rng.normal(0, sd_shared, 1000)

    def sample(name, r):
        i = int(name[1:])
        return float(mu[i] + shared[r] + np.random.default_rng([seed, i, r]).normal(0, sd_ind))

    cands = [Candidate(f"c{i}", float(lat[i] + rng.normal(0, lat_se)), lat_se, {0: sample(f"c{i}", 0)})
             for i in range(n)]
    truth = {f"c{i}" for i in pareto_front(np.c_[mu, lat])}
    return cands, sample, truth


def drive(race, sample, max_size=None, max_rounds=1000):
    for _ in range(max_rounds):
        batch = race.next_batch(max_size)
        if not batch:
            return race
        for name, r in batch:
            race.add(name, r, sample(name, r))
    raise AssertionError("race did not finish")


def test_racing_confirms_the_true_front_and_never_a_dominated_point():
    hits = total = false = 0
    for seed in range(50):
        cands, sample, truth = synthetic(seed)
        race = drive(Race(cands, alpha=0.05, cap=10), sample)
        confirmed = set(race.confirmed())
        hits, total, false = hits + len(confirmed & truth), total + len(truth), false + len(confirmed - truth)
        assert all(len(c.accs) <= 10 for c in race.candidates.values())
    assert hits / total >= 0.9
    assert false == 0


@pytest.mark.parametrize("objective", ["accuracy", "latency"])
def test_false_confirmation_rate_is_below_alpha_in_the_worst_case(objective):
    """b is dominated by a that equals it in one objective (the hardest case): confirming b is an error."""
    alpha, trials, wrong = 0.1, 400, 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        if objective == "accuracy":  # same accuracy, a clearly faster: b can only win on accuracy, by noise
            mu, lat, se = {"a": 50.0, "b": 50.0}, {"a": 1.0, "b": 2.0}, 0.01
        else:  # same latency, a clearly more accurate: b can only win on latency, by measurement noise
            mu, lat, se = {"a": 60.0, "b": 50.0}, {"a": 2.0, "b": 2.0}, 0.1
        shared = rng.normal(0, 2, 20)
        noise = {n: rng.normal(0, 1.5, 20) for n in mu}
        sample = lambda n, r: float(mu[n] + shared[r] + noise[n][r])  # noqa: E731
        cands = [Candidate(n, lat[n] + rng.normal(0, se), se, {0: sample(n, 0)}) for n in mu]
        race = drive(Race(cands, alpha=alpha, cap=10), sample)
        wrong += race.verdicts()["b"].status == CONFIRMED
    # the design bounds each half at alpha/2; allow binomial slack above the expected alpha/2 * trials
    assert wrong <= sps.binom.ppf(0.999, trials, alpha / 2)


def test_acc_test_is_a_one_sided_paired_t_test_on_the_first_shared_look():
    a = Candidate("a", 1.0, 0.0, {0: 51.0, 1: 53.5, 2: 52.0, 3: 55.0, 5: 54.0, 6: 52.2})
    b = Candidate("b", 2.0, 0.0, {0: 50.0, 1: 52.0, 2: 51.9, 3: 53.0, 4: 49.0, 6: 50.1})
    race = Race([a, b], cap=10)
    look, t = race.acc_test("a", "b")
    shared = [0, 1, 2, 3, 6]  # 5 shared: look 5 (looks are 3, 5, 8, 10)
    ref = sps.ttest_rel([a.accs[i] for i in shared], [b.accs[i] for i in shared], alternative="greater")
    assert looks(3, 10) == [3, 5, 8, 10] and look == 5
    assert t.p == pytest.approx(ref.pvalue) and t.t == pytest.approx(ref.statistic)
    assert race.alpha_acc == pytest.approx(0.05 / 2 / 4)


def test_statuses_and_evidence_on_a_hand_made_case():
    reps = range(8)
    fast_good = Candidate("fast_good", 1.0, 0.01, {r: 60.0 + 0.1 * (r % 3) for r in reps})
    slow_bad = Candidate("slow_bad", 3.0, 0.01, {r: 50.0 + 0.2 * (r % 2) for r in reps})
    slow_best = Candidate("slow_best", 3.0, 0.01, {r: 70.0 - 0.1 * (r % 2) for r in reps})
    twin = Candidate("twin", 1.0, 0.01, {r: 60.0 + 0.1 * ((r + 1) % 3) for r in reps})
    race = Race([fast_good, slow_bad, slow_best, twin], cap=8)
    v = race.verdicts()
    assert v["slow_bad"].status == DOMINATED and set(v["slow_bad"].dominated_by) == {"fast_good", "twin", "slow_best"}
    assert v["slow_bad"].dominated_by["slow_best"]["acc_p"] < race.alpha_acc
    assert v["slow_best"].status == CONFIRMED and v["slow_best"].worst_p <= race.alpha_acc
    # fast_good and twin: same latency, accuracies equal within noise: tied with each other
    assert v["fast_good"].status == TIED and v["fast_good"].unresolved == ["twin"]
    # on the front of means: twin (mean 60.1125) edges out fast_good (60.0875) at the same latency
    assert v["twin"].on_front and not v["fast_good"].on_front and not v["slow_bad"].on_front
    assert race.next_batch() == []  # every pair at the cap or settled: nothing left to race
    summary = json.loads(json.dumps(race.summary(), allow_nan=False))
    assert summary["confirmed"] == ["slow_best"] and summary["dominated"] == ["slow_bad"]
    assert summary["verdicts"]["slow_bad"]["dominated_by"]["slow_best"]["lat_z"] == 0.0


def test_state_round_trips_through_json_and_the_resumed_race_continues_identically():
    cands, sample, _ = synthetic(3)
    race = Race(cands, cap=10, budget_epochs=200, epochs_per_replicate=4)
    for _ in range(2):
        for name, r in race.next_batch():
            race.add(name, r, sample(name, r))
    in_flight = race.next_batch(5)
    for name, r in in_flight[:2]:
        race.add(name, r, sample(name, r))
    state = json.loads(json.dumps(race.to_dict()))
    resumed = Race.from_dict(state)
    assert resumed.to_dict() == race.to_dict()
    for rc in (race, resumed):
        for name, r in in_flight[2:]:
            rc.add(name, r, sample(name, r))
        drive(rc, sample)
    assert resumed.to_dict() == race.to_dict()
    assert {n: v.status for n, v in resumed.verdicts().items()} == {n: v.status for n, v in race.verdicts().items()}


def test_budget_cap_and_in_flight_runs_are_respected():
    cands, sample, _ = synthetic(5)
    race = Race(cands, cap=6, budget_epochs=30, epochs_per_replicate=4)
    first, second = race.next_batch(3), race.next_batch(3)
    assert len(first) == 3 and len(second) == 3 and not set(first) & set(second)
    assert len(race.next_batch()) == 1  # 7 runs x 4 epochs = 28 <= 30: one more fits, then none
    assert race.next_batch() == []
    for name, r in first + second:
        race.add(name, r, sample(name, r))
    race.fail(*race.pending.copy().pop())
    assert race.spent_epochs == 28 and race.next_batch() == [] and race.done()
    hard, sample, _ = synthetic(5, gap=0.3, sd_ind=3.0)  # steps far below the noise: pairs run into the cap
    unlimited = drive(Race(hard, cap=6), sample)
    assert max(len(c.accs) for c in unlimited.candidates.values()) == 6
    assert unlimited.spent_epochs == sum(len(c.accs) - 1 for c in unlimited.candidates.values())


def test_failed_runs_are_not_proposed_again():
    cands, sample, _ = synthetic(1)
    race = Race(cands, cap=5)
    batch = race.next_batch()
    bad = batch[0]
    race.fail(*bad)
    for name, r in batch[1:]:
        race.add(name, r, sample(name, r))
    for _ in range(50):
        nxt = race.next_batch()
        assert bad not in nxt
        if not nxt:
            break
        for name, r in nxt:
            race.add(name, r, sample(name, r))


# ------------------------------------------------------------------- grid accuracies, looks, equivalence
def pair_rates(trials, alpha, cap, min_replicates, val_n, ratio, mu_b=50.0, margin=None, lat_b=1.01):
    """Race a (50%, 1.00 ms) against b (``mu_b``, ``lat_b`` ms, latency se 0.05 each: not told apart at 1.01)
    ``trials`` times; accuracies = true mean + a replicate effect shared by both (common random numbers) + an
    individual one, rounded to the 1/val_n grid; the individual sd makes the paired difference's sd ``ratio``
    grid steps. Returns (share of races where b is confirmed, share where the pair ends equivalent)."""
    h = 100 / val_n
    confirmed = equivalent = 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        acc = np.round((np.array([[50.0], [mu_b]]) + rng.normal(0, 2.0, cap + 2)
                        + rng.normal(0, ratio * h / np.sqrt(2), (2, cap + 2))) / h) * h
        sample = lambda n, r: float(acc[int(n == "b"), r])  # noqa: E731
        race = Race([Candidate("a", 1.0, 0.05, {0: sample("a", 0)}), Candidate("b", lat_b, 0.05, {0: sample("b", 0)})],
                    alpha=alpha, cap=cap, min_replicates=min_replicates, n_val=val_n, margin=margin)
        v = drive(race, sample).verdict("b", interval=False)
        confirmed += v.status == CONFIRMED
        equivalent += "a" in v.equivalent or v.dominated_by.get("a", {}).get("within_margin", False)
    return confirmed / trials, equivalent / trials


def slack(p, n):
    return 2 * np.sqrt(p * (1 - p) / n)  # two binomial standard errors


def test_accuracies_on_a_coarse_grid_keep_the_bound():
    """Two replicates, differences on a 0.5-point grid: the same difference at both replicates (zero spread)
    is common. Without the spread floor the race confirms the dominated b at ~2x its accuracy bound."""
    alpha, trials = 0.05, 1000
    rate, _ = pair_rates(trials, alpha, cap=4, min_replicates=2, val_n=200, ratio=1.0)
    assert rate <= alpha / 2 + slack(alpha / 2, trials)


def test_the_correction_over_looks_is_what_keeps_the_bound():
    """Same accuracy, latency not told apart: the pair runs to the cap through 4 looks. Tested at alpha/2 at
    every look, b would be confirmed ~10% of the time (bound 5%)."""
    alpha, trials = 0.1, 1000
    rate, _ = pair_rates(trials, alpha, cap=10, min_replicates=3, val_n=200, ratio=2.0)
    assert rate <= alpha / 2 + slack(alpha / 2, trials)


def test_equivalence_is_declared_rarely_at_the_margin_and_often_well_inside_it():
    """True difference = the margin (not equivalent): declared equivalent at most alpha/2 over all looks;
    true difference 0 with a small spread: declared equivalent almost always, before the cap."""
    alpha, trials, margin = 0.1, 600, 1.0
    _, at_margin = pair_rates(trials, alpha, cap=10, min_replicates=3, val_n=2000, ratio=20.0, mu_b=50 - margin,
                              margin=margin)
    assert at_margin <= alpha / 2 + slack(alpha / 2, trials)
    _, inside = pair_rates(100, alpha, cap=10, min_replicates=3, val_n=2000, ratio=4.0, margin=margin)
    assert inside >= 0.9


def test_equivalent_pairs_stop_racing_and_a_faster_equivalent_rival_dominates():
    reps = range(5)
    a = Candidate("a", 1.0, 0.01, {r: 60.0 + 0.1 * (r % 2) for r in reps})
    twin = Candidate("twin", 1.0, 0.01, {r: 60.05 - 0.1 * (r % 2) for r in reps})
    slow = Candidate("slow", 2.0, 0.01, {r: 60.2 - 0.1 * (r % 3) for r in reps})  # a hair more accurate
    race = Race([a, twin, slow], alpha=0.05, cap=10, margin=1.0)
    v = race.verdicts()
    assert v["a"].status == EQUIVALENT and v["a"].equivalent == ["twin"] and not v["a"].unresolved
    assert v["slow"].status == DOMINATED and v["slow"].dominated_by["a"]["within_margin"]
    assert race.next_batch() == []  # nothing left that replicates could decide
    no_margin = Race([Candidate.from_dict(c.to_dict()) for c in (a, twin, slow)], alpha=0.05, cap=10)
    assert no_margin.verdicts()["a"].status == TIED and no_margin.next_batch()  # without a margin: race on
    assert Race.from_dict(json.loads(json.dumps(race.to_dict()))).to_dict() == race.to_dict()


# ------------------------------------------------------------------ latencies as the search records them
def study_with(**latency):
    study = load_study(os.path.join(REPO, "studies", "pareto.yaml"))
    lat = dataclasses.replace(study.budgets.latency, **latency)
    return dataclasses.replace(study, budgets=dataclasses.replace(study.budgets, latency=lat))


def row(ms, source="measured-final", half=0.002):
    return {"latency_ms": ms, "latency_low_ms": ms - half, "latency_high_ms": ms + half, "latency_source": source}


ACCURATE = {r: 0.60 + 0.001 * (r % 2) for r in range(6)}  # as fractions, 6 replicates each
WORSE = {r: 0.54 + 0.001 * (r % 3) for r in range(6)}     # 6 points less accurate


def test_a_predicted_latency_carries_the_predictors_error(tmp_path):
    """A 3% predicted edge with tight part intervals confirmed a candidate 6 points less accurate."""
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"runtime": "onnxruntime", "batch_size": 1, "threads": 1, "input_size": 32,
                                 "in_chans": 3, "num_classes": 10, "parts": {}, "error_pct": 3.0}))
    study = study_with(source="predicted", table=str(table))
    race = make_race(study, [("acc", row(1.00, "predicted"), ACCURATE), ("fast", row(0.97, "predicted"), WORSE)],
                     None, 2000)
    assert race.candidates["fast"].latency_se == pytest.approx(math.hypot(0.002 / 1.96, 0.97 * 0.03 * MAPE_TO_SD))
    assert race.verdicts()["fast"].status != CONFIRMED
    no_table = make_race(study_with(source="predicted", table=None), [("acc", row(1.0, "predicted"), ACCURATE),
                                                                      ("fast", row(0.5, "predicted"), WORSE)], None, 2000)
    assert no_table.verdicts()["fast"].status != CONFIRMED  # unknown predictor error: latency decides nothing


def test_a_candidate_without_latency_is_never_confirmed_by_latency():
    race = make_race(study_with(), [("acc", row(1.0), ACCURATE), ("nolat", {"latency_ms": None}, WORSE)], None, 2000)
    v = race.verdicts()["nolat"]
    assert math.isnan(race.candidates["nolat"].latency) and v.status != CONFIRMED and "no latency" in v.note
    summary = json.loads(json.dumps(race.summary(), allow_nan=False))
    assert summary["verdicts"]["nolat"]["latency"] is None


def test_a_draw_time_latency_compared_with_the_final_run_carries_the_run_to_run_spread():
    """Beyond 40 candidates only the front is measured again: a rival's draw-time figure 5% below the front's
    final one, with a tight within-run interval, confirmed it although it is 6 points less accurate."""
    study = study_with()
    race = make_race(study, [("front", row(1.00), ACCURATE), ("rival", row(0.95, "measured"), WORSE)], None, 2000)
    assert race.between_run_cv == study.latency.between_run_cv > 0
    assert race.verdicts()["rival"].status != CONFIRMED
    same_run = make_race(study, [("front", row(1.00), ACCURATE), ("rival", row(0.95), WORSE)], None, 2000)
    assert same_run.verdicts()["rival"].status == CONFIRMED  # side by side in one run: the within-run error holds
