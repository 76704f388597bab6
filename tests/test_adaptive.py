"""Adaptive replicates of a scaling study (lkscale.search.adaptive).

(a) The rule, by simulation with a known truth: replicate noise shared by every setting (common random
numbers) plus each setting's own, accuracies on the 1/val_n grid, true differences on the boundaries of
the claims (0 and +-margin), so wrong claims are as likely as they can be. Per kind of claim, the
chance of any wrong decided claim over all looks stays <= alpha with the looks' error spending, and not
without it.
(b) End to end through the real search (Ray Tune + Optuna + the ledger) with a fixed-curve trainable:
replicates go only to settings in undecided comparisons, one record row per replicate.

Run as a script (b's search): ``python tests/test_adaptive.py STUDY OUT``.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from lkscale.search.adaptive import AdaptiveRule, comparisons, families

ALPHA, MARGIN, N_VAL = 0.05, 1.0, 2000


def _spec(k: int) -> dict:
    return {"stem": {"stride": 2}, "stages": [{"block": "replk", "depth": 1, "width": 16, "kernel": k},
                                              {"block": "replk", "depth": 1, "width": 32, "kernel": 3}]}


def test_families_order_by_kernel_and_compare_steps_and_the_best():
    specs = {"k7": _spec(7), "k3": _spec(3), "k13": _spec(13), "other": {**_spec(3), "stem": {"stride": 4}}}
    fams = families(specs)
    assert list(fams.values()) == [["k3", "k7", "k13"]]       # "other" is alone on its line
    comps = comparisons(fams, {"k3": 50.0, "k7": 53.0, "k13": 52.0})
    assert ("k7", "k3", "step") in comps and ("k13", "k7", "step") in comps
    assert [c for c in comps if c[2] == "vs_best"] == []        # the best's comparisons are steps already
    comps = comparisons(fams, {"k3": 50.0, "k7": 51.0, "k13": 52.0})
    assert ("k13", "k3", "vs_best") in comps
    assert AdaptiveRule({}, 3, 10).schedule == [3, 6, 10] and AdaptiveRule({}, 3, 10).alpha_look == ALPHA / 3


def test_a_look_decides_as_decide_family_does():
    """decide_open (scipy.special t tails, run thousands of times) against lkscale.comparisons.decide_family."""
    from lkscale.comparisons import decide, decide_family
    from lkscale.search.adaptive import decide_open

    rng = np.random.default_rng(5)
    for _ in range(12):
        n = int(rng.integers(2, 8))
        res = {s: {r: round(float(v) / 0.05) * 0.05 for r, v in enumerate(rng.normal(m, 1.0, n))}
               for s, m in (("a", 50.0), ("b", 50.0 + rng.normal(0, 1.5)), ("c", 50.5))}
        pairs = [("b", "a"), ("c", "b"), ("c", "a")]
        ours = decide_open(res, pairs, MARGIN, 0.02, 0.05)
        ref = decide_family([(res[x], res[y]) for x, y in pairs], MARGIN, 0.02, 0.05)
        for (x, y), o, r in zip(pairs, ours, ref):
            assert o["verdict"] == r.verdict
            one = decide(res[x], res[y], MARGIN, 0.02, 0.05)  # unadjusted p-values and interval
            assert [o[k] for k in ("p_better", "p_worse", "p_equivalent", "low", "high")] == pytest.approx(
                [one.p_better, one.p_worse, one.p_equivalent, one.low, one.high], abs=1e-9)


TRUTH = {"k3": 50.0, "k7": 51.0, "k13": 51.0, "k25": 51.0}   # steps +1 (= margin), 0, 0: every claim on its edge


def _fwer(spend: bool, sims: int, seed: int) -> dict:
    """Share of simulated studies with at least one wrong decided claim, per kind, and the replicates used."""
    rng = np.random.default_rng(seed)
    fams = families({n: _spec(int(n[1:])) for n in TRUTH})
    grid = 100.0 / N_VAL
    wrong = collections.Counter()
    used = []
    for _ in range(sims):
        shared = rng.normal(0, 3.0, 10)                              # common random numbers: cancels in a pair
        own = {n: rng.normal(0, 1.2 / np.sqrt(2), 10) for n in TRUTH}  # paired sd 1.2 points
        acc = lambda n, r: round((TRUTH[n] + shared[r] + own[n][r]) / grid) * grid  # noqa: E731
        results = {n: {r: acc(n, r) for r in range(3)} for n in TRUTH}
        rule = AdaptiveRule(fams, 3, 10, MARGIN, ALPHA, grid, planned=3, spend=spend, needs=False)
        while True:
            jobs = rule.look(results)
            if not jobs:
                break
            for n, r in jobs:
                results[n][r] = acc(n, r)
        used.append(sum(len(v) for v in results.values()))
        bad = set()
        for d in rule.decided.values():
            delta = TRUTH[d["a"]] - TRUTH[d["b"]]
            if d["verdict"] == "better" and delta <= 0 or d["verdict"] == "worse" and delta >= 0:
                bad.add(d["verdict"])
            if d["verdict"] == "equivalent" and abs(delta) >= MARGIN:
                bad.add("equivalent")
        wrong.update(bad)
    return {k: wrong[k] / sims for k in ("better", "worse", "equivalent")} | {"replicates": float(np.mean(used))}


def test_error_spending_keeps_wrong_claims_within_alpha_over_the_looks():
    """2,000 simulated studies (the error rates to +-0.5 point): with alpha / 3 per look every kind of
    claim is wrong in at most alpha (+1.5 points) of the studies; at the nominal alpha on every look,
    the three looks push some kind well past it."""
    sims = 2000
    with_spending = _fwer(True, sims, 0)
    without = _fwer(False, sims, 0)
    assert max(with_spending[k] for k in ("better", "worse", "equivalent")) <= ALPHA + 0.015, with_spending
    assert max(without[k] for k in ("better", "worse", "equivalent")) > ALPHA + 0.02, without
    assert with_spending["replicates"] > 12  # it did add replicates (4 settings x 3 to start)


def test_only_undecided_settings_get_replicates_and_the_budget_holds():
    fams = families({n: _spec(int(n[1:])) for n in ("k3", "k7", "k13")})
    # k7 - k3 = +5.5 (decided at once); k13 - k7 = -0.4 with spread (undecided): only k7 and k13 grow
    res = {"k3": {r: 40.0 + s for r, s in enumerate((0.0, 0.5, -0.5))},
           "k7": {r: 45.5 + s for r, s in enumerate((0.0, 0.5, -0.5))},
           "k13": {r: 45.0 + s for r, s in enumerate((1.0, -1.0, 0.3))}}
    rule = AdaptiveRule(fams, 3, 10, MARGIN, ALPHA, 0.05, budget_epochs=0, epochs_per_replicate=3)
    jobs = rule.look(res)
    assert sorted(jobs) == sorted([(n, r) for n in ("k7", "k13") for r in (3, 4, 5)])
    assert rule.decided["k3|k7"]["verdict"] == "better"
    capped = AdaptiveRule(fams, 3, 10, MARGIN, ALPHA, 0.05, budget_epochs=9, epochs_per_replicate=3)
    assert capped.look(res) == [] and capped.stopped == "budget spent"  # 6 jobs x 3 epochs > 9
    assert all(r.get("replicates_needed") for r in capped.open)        # and it says what deciding needs


# ------------------------------------------------------------------------------------------ end to end
KERNELS = [[3, 3, 3], [7, 3, 3], [13, 3, 3]]
FINAL = {3: 40.0, 7: 45.0, 13: 45.2}      # points: 7 vs 3 decided at once, 13 vs 7 needs more


def noisy_trainable(config: dict) -> None:
    """Fixed curves plus replicate noise: a shared part and each setting's own (hash-seeded)."""
    from ray import tune

    k = json.loads(config["spec"])["stages"][0]["kernel"]
    rep = int(config.get("replicate", 0))
    shared = np.random.default_rng(1000 + rep).normal(0, 2.0)
    own = np.random.default_rng(k * 7919 + rep).normal(0, 0.8)
    acc = round((FINAL[k] + shared + own) * 10) / 1000  # val_n 1000: a 0.1-point grid
    log = os.environ.get("CURVES_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{config['name']} {rep}\n")
    base = {"latency_ms": float(config.get("latency_ms") or 0.0), "node": "adaptive", "infeasible": False,
            "failed": False, "error": "", "replicate": rep, "val_n": 1000}
    tune.report({**base, "epoch": 1, "val_acc": acc, "val_acc_epochs": json.dumps([acc]), "seconds": 0.1})


@pytest.mark.slow
def test_adaptive_search_adds_replicates_only_where_undecided(tmp_path):
    raw = {"name": "adaptive",
           "space": {"stem_stride": 2, "block": "replk", "kernels": KERNELS,
                     "stages": [{"depth": 1, "width": 16}, {"depth": 1, "width": 16}, {"depth": 1, "width": 16}]},
           "data": {"dataset": "synthetic", "train_per_class": 4, "val_per_class": 2},
           "proxy": {"epochs": 1},
           "budgets": {"latency": {"runtime": "torch", "rounds": 2, "repeats": 2}},
           "search": {"mode": "scaling", "sampler": "grid", "trials": 3, "replicates": 3, "concurrency": 2,
                      "adaptive": {"enabled": True, "max_replicates": 9, "looks": 3}}}
    study = tmp_path / "adaptive.yaml"
    study.write_text(yaml.safe_dump(raw))
    log, out = tmp_path / "trained.log", tmp_path / "run"
    res = subprocess.run([sys.executable, __file__, str(study), str(out)], capture_output=True, text=True,
                         env=dict(os.environ, CURVES_LOG=str(log)), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    from lkscale.rundir import read_summary, read_trials

    trained = collections.Counter(line.split()[0] for line in open(log))
    rows = read_trials(str(out))
    pairs = [(t.name, int(t.get("replicate") or 0)) for t in rows]
    assert len(pairs) == len(set(pairs)) == sum(trained.values())  # one row per replicate, each trained once
    by_k = {json.loads(t.get("spec"))["stages"][0]["kernel"]: t.name for t in rows}
    state = read_summary(str(out))["adaptive_state"]
    assert trained[by_k[3]] == 3                                    # decided vs 7 at the first look: no more
    assert trained[by_k[7]] > 3 and trained[by_k[13]] > 3           # the undecided pair grew together
    assert trained[by_k[7]] == trained[by_k[13]]
    assert any(d["a"] == by_k[7] and d["b"] == by_k[3] and d["verdict"] == "better" for d in state["decided"])
    assert state["looks"] >= 2 and state["alpha_per_look"] == pytest.approx(ALPHA / 3)


def main(argv: list[str]) -> int:
    import ray.cloudpickle

    import lkscale  # noqa: F401
    from lkscale.search import run_study

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    run_study(argv[0], output=argv[1], trainable=noisy_trainable,
              progress=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
