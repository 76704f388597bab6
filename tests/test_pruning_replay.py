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


def _record(name, accs, lat, kernels, replicate=0, state="complete"):
    return {"name": name, "state": state, "val_acc_epochs": list(accs), "latency_ms": lat, "kernels": kernels,
            "replicate": replicate}


def test_replay_rules_on_a_run_record_with_a_late_bloomer_that_every_pruning_rule_loses():
    # at epoch 1 the accuracies rank 0 > 1 > ... > 5; at the end the order is reversed, and all share one
    # latency, so the final front (at proxy and at high fidelity) is the last network alone
    records = [_record(f"n{i}", [0.6 - 0.05 * i, 0.5, 0.3 + 0.05 * i], 1.0, [3 + 2 * i] * 3, r)
               for r in range(2) for i in range(6)]
    records.append(_record("cut", [0.1], 1.0, [3, 3, 3], state="pruned"))
    from lkscale.fidelity.replay import curves_by_replicate, fmt_range, replay_rules

    assert [len(w) for w in curves_by_replicate(records)] == [6, 6]
    out = replay_rules(records, truth={"n5": 0.9, "n0": 0.5}, orders=20, graces=(1, 2, 3))
    assert out["replicates"] == 2 and out["graces"] == [1, 2]  # a rung at the last epoch (3) decides nothing
    assert set(out["rules"]) == {"none"} | {f"{r} g{g}" for r in ("asha", "moasha", "optuna") for g in (1, 2)}
    none = out["rules"]["none"]
    assert none["cost"]["mean"] == 1.0 and none["proxy_front_kept"]["mean"] == 1.0 and none["hf_hv_ratio"]["mean"] == 1.0
    for rule in ("asha g1", "moasha g1", "optuna g1"):
        row = out["rules"][rule]
        assert row["cost"]["mean"] < 1.0
        # n5 is last at epoch 1 of every replay; it survives only when it arrives among the first (too few
        # to judge), so it is lost in most arrival orders
        assert row["proxy_front_kept"]["mean"] < 0.6 and row["hf_front_kept"]["mean"] < 0.6
    assert fmt_range({"mean": 0.5, "min": 0.25, "max": 0.75}) == "50% (25%..75%)"
    assert fmt_range({"mean": 0.5, "min": 0.5, "max": 0.5}, pct=False) == "0.50"


def test_replay_rules_says_nothing_about_a_run_without_complete_curves():
    records = [_record(f"p{i}", [0.3], 1.0, [3], state="pruned") for i in range(5)]
    records += [_record("a", [0.3, 0.4], 1.0, [3]), _record("b", [0.2, 0.5], 2.0, [7])]
    from lkscale.fidelity.replay import replay_rules

    assert replay_rules(records) == {}


def test_the_report_section_carries_the_replay_table():
    from lkscale.fidelity.figure import markdown_section

    rp = {"graces": [1], "reduction_factor": 2, "orders": 10, "replicates": 3, "concurrency": 2,
          "rules": {"none": {"cost": {"mean": 1.0, "min": 1.0, "max": 1.0}},
                    "moasha g1": {"cost": {"mean": 0.71, "min": 0.69, "max": 0.72},
                               "proxy_front_kept": {"mean": 0.77, "min": 0.6, "max": 0.9}}}}
    md = markdown_section({"settings": {}, "proxy_vs_high": {}, "rungs": [], "pruning_replay": rp})
    assert "| moasha g1 | 71% (69%..72%) | 77% (60%..90%) | n/a | n/a |" in md and "| none | 100% |" in md


@pytest.mark.parametrize("concurrency", [1, 2])
def test_the_multi_objective_rule_behind_optunas_pruner_interface_decides_as_the_tune_scheduler(concurrency):
    import numpy as np

    rng = np.random.default_rng(5)
    curves = []
    for i in range(12):  # distinct accuracies and latencies: no ties for the two to break differently
        a0 = rng.uniform(0.2, 0.5)
        curves.append(_c(f"n{i:02d}", [a0, a0 + rng.uniform(0, 0.1), a0 + rng.uniform(0, 0.2), a0 + 0.25],
                         float(rng.uniform(0.3, 3.0))))
    stopped = 0
    for seed in range(10):
        order = np.random.default_rng(seed).permutation(12).tolist()
        tune_rule = replay("moasha", curves, order, concurrency=concurrency)
        assert replay("optuna", curves, order, concurrency=concurrency, pruner="moasha") == tune_rule
        stopped += sum(e < 4 for e in tune_rule.values())
    assert stopped > 0  # the rule did stop trials, so the agreement is not two rules that never act
