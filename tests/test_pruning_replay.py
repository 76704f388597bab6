"""Replaying the search's own pruning rules over recorded learning curves (lkscale.fidelity.replay).

Every expected outcome here is worked out by hand from the rule's definition (Ray's ASHA: stop below the
rung's running median; MO-ASHA: keep the first non-dominated layer; Optuna's median pruner: never before
the grace epoch), so the replay is checked against the rules, not against itself."""
from __future__ import annotations

import pytest

from lkscale.fidelity.replay import Curve, judge, replay, replay_many


def _c(key, accs, lat=1.0, kernel=3.0):
    return Curve(key, tuple(accs), lat, kernel)


def test_no_pruning_trains_every_curve_to_the_end_and_keeps_everything():
    curves = [_c("a", [0.3, 0.5, 0.6]), _c("b", [0.1, 0.2, 0.3], 2.0), _c("c", [0.4, 0.4, 0.7], 3.0)]
    epochs = replay("none", curves, [2, 0, 1])
    assert epochs == {"a": 3, "b": 3, "c": 3}
    j = judge(curves, epochs, truth={"a": 0.7, "b": 0.5, "c": 0.8})
    assert j["cost"] == 1.0 and j["kept"] == 1.0 and j["proxy_front_kept"] == 1.0
    assert j["hf_front_kept"] == 1.0 and j["hf_hv_ratio"] == pytest.approx(1.0)


def test_ray_asha_stops_a_trial_below_the_running_median_of_its_rung():
    # One rung (epoch 1 of 2). In order: a (0.5) has nobody to compare with; b (0.4) < median{0.5};
    # c (0.3) < median{0.5, 0.4}; d (0.6) >= median{0.5, 0.4, 0.3} = 0.4.
    curves = [_c("a", [0.5, 0.6]), _c("b", [0.4, 0.9]), _c("c", [0.3, 0.4]), _c("d", [0.6, 0.7])]
    epochs = replay("asha", curves, [0, 1, 2, 3], concurrency=1)
    assert epochs == {"a": 2, "b": 1, "c": 1, "d": 2}
    j = judge(curves, epochs)
    assert j["cost"] == pytest.approx(6 / 8) and j["kept"] == 0.5
    # b was the best at the end (0.9 at latency 1, as all): the final front is {b}, and it was stopped
    assert j["proxy_front_kept"] == 0.0


def test_multi_objective_asha_keeps_the_fast_network_plain_asha_stops():
    # (acc at epoch 1, latency): a (0.5, 1) and b (0.6, 2) trade off; c (0.4, 3) is dominated by both;
    # d (0.3, 0.5) is the fastest, so it is on the first layer for MO-ASHA though least accurate.
    curves = [_c("a", [0.5, 0.6], 1.0), _c("b", [0.6, 0.7], 2.0), _c("c", [0.4, 0.5], 3.0), _c("d", [0.3, 0.4], 0.5)]
    assert replay("moasha", curves, [0, 1, 2, 3], concurrency=1) == {"a": 2, "b": 2, "c": 1, "d": 2}
    assert replay("asha", curves, [0, 1, 2, 3], concurrency=1)["d"] == 1


def test_optuna_median_pruner_never_stops_before_the_grace_epoch():
    # the later ones fall ever further below the median: with grace 1 some stop at epoch 1
    curves = [_c(str(i), [0.6 - 0.05 * i, 0.7 - 0.05 * i, 0.8 - 0.05 * i]) for i in range(8)]
    order = list(range(8))
    g1 = replay("optuna", curves, order, grace=1, concurrency=1, pruner="median")
    g2 = replay("optuna", curves, order, grace=2, concurrency=1, pruner="median")
    assert min(g1.values()) == 1
    assert min(g2.values()) == 2 and max(g2.values()) == 3


def test_judge_counts_the_high_fidelity_front_and_its_hypervolume_by_hand():
    # latencies 1, 2, 3; high-fidelity accuracies 0.5, 0.7, 0.6 (c dominated by b): the front is {a, b}.
    # Reference (0, 3.3): all -> (3.3-1)*0.5 + (3.3-2)*(0.7-0.5) = 1.41; a stopped -> (3.3-2)*0.7 = 0.91
    curves = [_c("a", [0.2, 0.3], 1.0, 3.0), _c("b", [0.1, 0.2], 2.0, 13.0), _c("c", [0.3, 0.4], 3.0, 13.0)]
    j = judge(curves, {"a": 1, "b": 2, "c": 2}, truth={"a": 0.5, "b": 0.7, "c": 0.6})
    assert j["hf_front_kept"] == 0.5
    assert j["hf_hv_ratio"] == pytest.approx(0.91 / 1.41)
    assert j["stopped_by_kernel"] == {"3": 1.0, "13": 0.0}
    assert j["cost"] == pytest.approx(5 / 6)


def test_replays_over_arrival_orders_are_seeded():
    curves = [_c(str(i), [0.5 + 0.03 * ((i * 7) % 5), 0.6 + 0.02 * i], 1.0 + i) for i in range(6)]
    a = replay_many("asha", curves, orders=5, seed=3)
    assert a == replay_many("asha", curves, orders=5, seed=3)
    assert len({round(x["cost"], 6) for x in replay_many("asha", curves, orders=30, seed=0)}) > 1


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown pruning rule"):
        replay("hyperband", [_c("a", [0.1, 0.2])], [0])
