"""Two-objective racing on synthetic problems with a known front and known noise."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from lkscale.pareto import pareto_front
from lkscale.racing import CONFIRMED, DOMINATED, TIED, Candidate, Race, looks


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
