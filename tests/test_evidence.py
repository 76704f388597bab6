"""The evidence in the repo: every run record under ``benchmarks/results/runs/*/`` re-derives the figures its
``expected.json`` holds (``benchmarks/rederive.py``, lkscale's own functions), and the comparison itself
catches a moved figure."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from lkscale.rundir import update_summary, write_fidelity, write_study, write_trials

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("rederive", os.path.join(ROOT, "benchmarks", "rederive.py"))
rederive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rederive)

RECORDS = [d for d in rederive.records() if os.path.isfile(os.path.join(d, rederive.EXPECTED))]


@pytest.mark.skipif(not RECORDS, reason="no run record with an expected.json under benchmarks/results/runs/ yet")
@pytest.mark.parametrize("record", RECORDS, ids=[os.path.basename(d) for d in RECORDS])
def test_record_rederives_its_figures(record):
    with open(os.path.join(record, rederive.EXPECTED), encoding="utf-8") as f:
        expected = json.load(f)
    derived = rederive.derive(record, rederive.sections_of(expected))
    assert not rederive.mismatches(derived, expected), rederive.mismatches(derived, expected)


def test_records_hold_small_files_only():
    """No weights, Tune folders or journals in a record (``.gitignore`` lets only the small files in)."""
    allowed = {"study.yaml", "trials.csv", "summary.json", "costs.json", "fidelity.csv", rederive.EXPECTED}
    for d in rederive.records():
        extra = sorted(set(os.listdir(d)) - allowed)
        assert not extra, f"{d}: {extra}"


def _record(tmp_path, accs: dict[str, tuple[float, float]]) -> str:
    """A tiny finished scaling run: two replicates per architecture (accuracy, latency), 2 epochs, a fidelity CSV."""
    run = str(tmp_path / "run")
    os.makedirs(run)
    write_study(run, "name: tiny\nsearch: {confirm: {confidence: 0.95}}\n")
    rows, n = [], 0
    for name, (acc, lat) in accs.items():
        for rep, d in enumerate((-0.01, 0.01)):
            rows.append({"trial_id": f"t{n}", "number": n, "name": name, "state": "complete", "val_acc": acc + d,
                         "val_acc_epochs": [acc + d - 0.1, acc + d], "latency_ms": lat, "replicate": rep, "val_n": 1000,
                         "kernels": [3, 3, 3, 3], "epochs_done": 2, "epochs_budget": 2})
            n += 1
    rows.append({"trial_id": f"t{n}", "number": n, "name": "pruned_one", "state": "pruned", "val_acc": 0.1,
                 "latency_ms": 1.0, "replicate": 0, "epochs_done": 1, "epochs_budget": 2})
    write_trials(run, rows)
    update_summary(run, {"study": "tiny"})
    high = {name: acc + 0.2 + 0.01 * i for i, (name, (acc, _)) in enumerate(accs.items())}
    write_fidelity(run, [{"name": k, "role": "front", "state": "complete", "proxy_acc": accs[k][0], "high_acc": v,
                          "latency_ms": accs[k][1], "epochs": 8} for k, v in high.items()])
    return run


def test_derive_and_compare_catch_a_moved_figure(tmp_path):
    accs = {"a": (0.50, 1.0), "b": (0.60, 2.0), "c": (0.55, 3.0), "d": (0.70, 4.0)}
    run = _record(tmp_path, accs)
    got = rederive.derive(run)
    assert got["counts"] == {"complete": 8, "pruned": 1}
    # the front by mean accuracy over the two replicates: a (fastest), b, d; c is dominated by b
    assert [f["name"] for f in got["front"]] == ["a", "b", "d"]
    assert got["front"][1]["val_acc"] == pytest.approx(0.60)
    assert got["front"][1]["n_replicates"] == 2
    # proxy and high fidelity rank the four the same way: Kendall tau 1
    assert got["fidelity"]["n"] == 4
    assert got["fidelity"]["kendall_tau"]["estimate"] == pytest.approx(1.0)
    expected = json.loads(json.dumps(got))  # what --write would store
    assert rederive.mismatches(rederive.derive(run, rederive.sections_of(expected)), expected) == []
    # one replicate's accuracy moves: the front's mean moves and the comparison names it
    moved = _record(tmp_path / "moved", {**accs, "b": (0.62, 2.0)})
    diff = rederive.mismatches(rederive.derive(moved, rederive.sections_of(expected)), expected)
    assert any(m.startswith(".front[1].val_acc") for m in diff), diff
    # a figure missing from what is derived is named too, and NaN equals NaN
    assert rederive.mismatches({}, {"fidelity": {"n": 4}}) == [".fidelity: missing from the re-derived figures"]
    assert rederive.mismatches({"x": float("nan")}, {"x": np.nan}) == []


def test_the_two_seed_runs_agreement_rederives():
    """docs/results.md's count of the main study's claims over two disjoint seed sets
    (``benchmarks/compare_runs.py``) re-derives from the two records, and no decided claim contradicts."""
    path = os.path.join(ROOT, "benchmarks", "results", "seed_agreement_kernel_size.json")
    runs = [os.path.join(rederive.RUNS, n) for n in ("kernel_size", "kernel_size_seed10")]
    if not (os.path.isfile(path) and all(os.path.isdir(r) for r in runs)):
        pytest.skip("the two seed runs' records are not in this checkout")
    spec = importlib.util.spec_from_file_location("compare_runs", os.path.join(ROOT, "benchmarks", "compare_runs.py"))
    compare_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_runs)
    got = compare_runs.compare(compare_runs.claims(runs[0]), compare_runs.claims(runs[1]))
    with open(path, encoding="utf-8") as f:
        recorded = json.load(f)
    keys = ("claims", "decided_a", "decided_b", "agree", "contradict", "one_sided_consistent", "one_sided_inconsistent",
            "one_run_only", "one_run_only_inconsistent")
    assert {k: got[k] for k in keys} == {k: recorded[k] for k in keys}
    assert got["contradict"] == 0 and got["one_sided_inconsistent"] == 0 and got["one_run_only_inconsistent"] == 0
