"""`lkscale plan`: the study expanded into distinct networks, costed, checked and estimated — nothing trained."""
import json
import os

import yaml

from conftest import REPO, run_cli


def grid_study(tmp_path, **over):
    raw = yaml.safe_load(open(os.path.join(REPO, "studies", "smoke.yaml")))
    raw["search"].update(sampler="grid", trials=6)
    raw["budgets"]["max_flops"] = 2_500_000  # the 13x13 networks (2.74M multiply-adds) are over
    raw["data"] = {"dataset": "synthetic", "train_per_class": 8, "val_per_class": 2}
    raw["output"] = str(tmp_path / "would-be-run")
    for k, v in over.items():
        raw[k].update(v)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_plan_names_distinct_networks_duplicates_over_budget_and_estimates(tmp_path):
    res = run_cli("plan", grid_study(tmp_path), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    plan = json.loads(res.stdout)
    # 3 kernel patterns x 2 re-param settings = 6 points; the 3x3 branch is dropped on the all-3x3 network
    assert plan["points"] == 6 and plan["distinct"] == 5
    assert list(plan["duplicates"].values()) == [2]
    over = {r["name"] for r in plan["networks"] if r["over_budget"]}
    assert over == {r["name"] for r in plan["networks"] if r["flops"] > 2_500_000} and len(over) == 2
    assert all(r["latency_low_ms"] <= r["latency_ms"] <= r["latency_high_ms"] for r in plan["networks"])
    est = plan["estimate"]  # 3 feasible networks x 2 epochs, from a measured probe
    assert est["trials"] == 3 and est["trial_epochs"] == 6 and est["wall_seconds"] > 0
    assert not (tmp_path / "would-be-run").exists()  # nothing written, nothing trained


def test_more_cpus_per_trial_than_the_machine_has_is_one_line(tmp_path):
    study = grid_study(tmp_path, resources={"cpus_per_trial": (os.cpu_count() or 1) + 1})
    for verb in ("plan", "search"):
        res = run_cli(verb, study, "--output", str(tmp_path / "out")) if verb == "search" else run_cli(verb, study)
        assert res.returncode == 2, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert "resources.cpus_per_trial" in last and "no trial could ever start" in last
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_plan_says_at_which_epochs_pruning_decides_and_when_it_cannot(tmp_path):
    from lkscale.search.planning import pruning_plan
    from lkscale.study import load_study

    def plan_of(epochs, pruning, mode=None):
        raw = yaml.safe_load(open(os.path.join(REPO, "studies", "smoke.yaml")))
        raw["proxy"]["epochs"] = epochs
        raw["search"]["pruning"] = pruning
        if mode:
            raw["search"].update(mode=mode, sampler="grid")
        path = tmp_path / f"p{epochs}{mode}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return pruning_plan(load_study(str(path)))

    assert plan_of(8, {"scheduler": "moasha"})["rungs"] == [2, 4]  # the default first rung is epoch 2
    assert plan_of(8, {"scheduler": "asha", "grace_epochs": 1, "reduction_factor": 3})["rungs"] == [1, 3]
    p = plan_of(2, {"scheduler": "moasha"})
    assert p["rungs"] == [] and "nothing will be pruned" in p["text"]
    assert plan_of(4, {"scheduler": "moasha"}, mode="scaling")["text"].startswith("pruning: none (a scaling study")
    assert "moasha at epoch(s) 2 of 3" in run_cli("plan", os.path.join(REPO, "studies", "pareto.yaml"), "--no-latency",
                                                  "--no-probe").stdout
