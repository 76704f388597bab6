"""`lkscale report` on a hand-made run folder (and on the real smoke study when lkscale.search can run it)."""
import csv
import json
import os
import re
import struct

import pytest

from lkscale.cli import main as cli_main
from lkscale.report import REPLKNET_TABLE5, load_run, make_report

COLUMNS = ["trial_id", "number", "name", "state", "blocks", "kernels", "depths", "widths", "dcn_groups", "reparam",
           "stem_stride", "params", "deploy_params", "flops", "latency_ms", "val_acc", "val_acc_epochs", "epochs_done",
           "epochs_budget", "seconds", "node", "error", "notes", "seed", "spec"]

# kernels -> (params, deploy params, flops): per architecture, so identical across trials of it
COSTS = {(3, 3, 3, 3): (1000, 900, 50_000), (7, 7, 7, 3): (1040, 940, 56_000), (13, 13, 7, 3): (1100, 1000, 64_000),
         (31, 29, 27, 13): (1210, 1110, 80_000)}
# (state, kernels, reparam, latency_ms, val_acc, epochs_done)
TRIALS = [
    ("complete", (3, 3, 3, 3), [[], [], [], []], 2.0, 0.50, 4),
    ("complete", (7, 7, 7, 3), [[], [], [], []], 3.0, 0.58, 4),
    ("complete", (7, 7, 7, 3), [[5], [5], [3], []], 3.1, 0.61, 4),
    ("complete", (13, 13, 7, 3), [[5], [5], [3], []], 4.5, 0.60, 4),   # dominated by the one above
    ("complete", (13, 13, 7, 3), [[], [], [], []], 4.4, 0.66, 4),
    ("complete", (31, 29, 27, 13), [[5], [5], [5], []], 9.0, 0.70, 4),
    ("complete", (31, 29, 27, 13), [[], [], [], []], 8.5, 0.64, 4),    # dominated
    ("complete", (3, 3, 3, 3), [[], [], [], []], 2.0, 0.50, 4),        # exact duplicate of trial 0
    ("pruned", (3, 3, 3, 3), [[], [], [], []], 1.0, 0.95, 1),          # would dominate everything: never on a front
    ("pruned", (13, 13, 7, 3), [[], [], [], []], 4.0, 0.40, 2),
    ("infeasible", (31, 29, 27, 13), [[], [], [], []], 0.5, None, 0),  # over budget: never trained
    ("failed", (7, 7, 7, 3), [[], [], [], []], 0.7, 0.99, 1),          # failed after reporting something
    ("running", (7, 7, 7, 3), [[], [], [], []], 0.8, 0.97, 2),
]
BUDGET_MS = 12.0


def _name(i, kernels):
    return f"rep-k{'.'.join(map(str, kernels))}-d1.1.1.1-w8.16.32.64-{i:06x}"


def write_fake_run(path, trials=TRIALS, max_latency_ms=BUDGET_MS, max_flops=None):
    os.makedirs(path, exist_ok=True)
    study = {"name": "fake", "space": {"block": "replk"},
             "data": {"dataset": "synthetic", "train_per_class": 10, "val_per_class": 5, "input_size": 32},
             "proxy": {"epochs": 4, "batch_size": 16, "lr": 0.004, "seed": 0},
             "budgets": {"max_params": None, "max_flops": max_flops, "max_latency_ms": max_latency_ms,
                         "latency_batch_size": 1, "latency_input_size": 32, "latency_threads": 1},
             "search": {"sampler": "tpe", "trials": len(trials), "concurrency": 2, "seed": 0,
                        "pruning": {"scheduler": "moasha", "grace_epochs": 1, "reduction_factor": 2}},
             "resources": {"cpus_per_trial": 1}, "output": path}
    import yaml

    with open(os.path.join(path, "study.yaml"), "w") as f:
        yaml.safe_dump(study, f)
    with open(os.path.join(path, "trials.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for i, (state, kern, rep, lat, acc, done) in enumerate(trials):
            params, dparams, flops = COSTS[kern]
            params += sum(len(r) for r in rep) * 10  # re-param branches only add train-form parameters
            name = _name(0 if i == 7 else i, kern)  # trial 7 re-samples trial 0's architecture: same name
            w.writerow({"trial_id": f"t{i:04d}", "number": i, "name": name, "state": state,
                        "blocks": json.dumps(["replk"] * 4), "kernels": json.dumps(list(kern)),
                        "depths": "[1, 1, 1, 1]", "widths": "[8, 16, 32, 64]", "dcn_groups": "[null, null, null, null]",
                        "reparam": json.dumps(rep), "stem_stride": 2, "params": params, "deploy_params": dparams,
                        "flops": flops, "latency_ms": lat, "val_acc": "" if acc is None else acc,
                        "val_acc_epochs": json.dumps([acc] * done if acc is not None else []), "epochs_done": done,
                        "epochs_budget": 4, "seconds": 1.0, "node": "n", "error": "boom" if state == "failed" else "",
                        "notes": "", "seed": 0, "spec": ""})
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump({"study": "fake", "counts": {}, "trial_epochs_saved": 5, "kept": "by search"}, f)
    return path


def _brute_front(rows, col):
    pts = [(r["val_acc"], r[col], r["name"]) for r in rows if r["state"] == "complete"]
    return {n for a, c, n in pts
            if not any(a2 >= a and c2 <= c and (a2 > a or c2 < c) for a2, c2, _ in pts)}


def _hv_union(points, ref_acc, ref_cost):
    pts = [(a, c) for a, c in points if a > ref_acc and c < ref_cost]
    xs = sorted({c for _, c in pts} | {ref_cost})
    ys = sorted({a for a, _ in pts} | {ref_acc})
    return sum((x1 - x0) * (y1 - y0) for x0, x1 in zip(xs, xs[1:]) for y0, y1 in zip(ys, ys[1:])
               if any(c <= x0 and a >= y1 for a, c in pts))


def _rows(path):
    with open(os.path.join(path, "trials.csv")) as f:
        out = []
        for r in csv.DictReader(f):
            r = dict(r)
            for k in ("val_acc", "latency_ms", "flops"):
                r[k] = float(r[k]) if r[k] else None
            out.append(r)
        return out


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory):
    run = write_fake_run(str(tmp_path_factory.mktemp("run") / "fake"))
    return run, make_report(run)


def test_report_files_and_front(fake_report):
    run, res = fake_report
    for f in ("report.md", "pareto_latency.png", "pareto_flops.png", "kernel_scaling.png", "report.html"):
        assert os.path.isfile(os.path.join(run, f)), f
    for f in ("pareto_latency.png", "pareto_flops.png", "kernel_scaling.png"):
        w, h = _png_size(os.path.join(run, f))
        assert w >= 800 and h >= 500
    html = open(os.path.join(run, "report.html"), encoding="utf-8").read()
    assert "<script src=" not in html and len(html) > 1_000_000  # plotly.js embedded once: works offline
    assert html.count("Plotly.newPlot") == 3
    rows = _rows(run)
    for key, col in (("latency", "latency_ms"), ("flops", "flops")):
        names = [r["name"] for r in res["fronts"][key]["front"]]
        assert set(names) == _brute_front(rows, col)
        states = {r["name"]: r["state"] for r in rows}
        assert all(states[n] == "complete" for n in names)
    # pruned / infeasible / failed / running trials dominate on paper, yet never appear on the front
    lat_front = {r["name"] for r in res["fronts"]["latency"]["front"]}
    assert not lat_front & {r["name"] for r in rows if r["state"] != "complete"}
    names = [r["name"] for r in res["fronts"]["latency"]["front"]]
    assert len(names) == len(set(names)) == 5  # trial 0 and its duplicate 7 listed once


def test_hypervolume_and_reference(fake_report):
    run, res = fake_report
    rows = _rows(run)
    fr = res["fronts"]["latency"]
    assert fr["reference"]["latency_ms"] == BUDGET_MS and fr["reference"]["val_acc"] == 0
    assert fr["reference"]["source"] == "budgets.max_latency_ms"
    pts = [(r["val_acc"], r["latency_ms"]) for r in rows if r["state"] == "complete"]
    assert fr["hypervolume"] == pytest.approx(_hv_union(pts, 0.0, BUDGET_MS), rel=1e-12)
    assert fr["hypervolume_normalized"] == pytest.approx(fr["hypervolume"] / BUDGET_MS)
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    assert f"latency_ms = {BUDGET_MS:g} ms (budgets.max_latency_ms)" in md
    assert f"{fr['hypervolume']:.6g}" in md
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["kept"] == "by search"  # what search wrote is kept
    assert summary["report"]["fronts"]["latency"]["hypervolume"] == pytest.approx(fr["hypervolume"])
    # counts and epochs saved: pruned trials ran 1 and 2 of 4 epochs
    assert res["counts"] == {"complete": 8, "pruned": 2, "infeasible": 1, "failed": 1, "running": 1}
    assert res["trial_epochs_saved"] == (4 - 1) + (4 - 2)
    assert "Trial-epochs saved by pruning: **5**" in md


def test_reference_without_budget_is_fixed_once(tmp_path):
    run = write_fake_run(str(tmp_path / "nobudget"), max_latency_ms=None)
    first = make_report(run, figures=False)["fronts"]
    ref_lat, ref_flops = first["latency"]["reference"]["latency_ms"], first["flops"]["reference"]["flops"]
    lats = [t[3] for t in TRIALS]
    assert ref_lat >= 1.5 * max(lats) and ref_flops >= 1.5 * max(c[2] for c in COSTS.values())
    stored = json.load(open(os.path.join(run, "summary.json")))["report"]["reference_point"]
    assert stored["latency"]["latency_ms"] == ref_lat
    # more trials arrive (a resumed search), one far slower: the reference point does not move
    write_fake_run(run, trials=TRIALS + [("complete", (31, 29, 27, 13), [[], [], [], []], 100.0, 0.9, 4)],
                   max_latency_ms=None)
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump({"study": "fake", "report": {"reference_point": stored}}, f)
    again = make_report(run, figures=False)["fronts"]
    assert again["latency"]["reference"]["latency_ms"] == ref_lat
    assert again["flops"]["reference"]["flops"] == ref_flops


def test_kernel_scaling_table(fake_report):
    run, res = fake_report
    ks = res["kernel_scaling"]
    assert ks["kernel_settings"][0] == [3, 3, 3, 3] and ks["kernel_settings"][-1] == [31, 29, 27, 13]
    assert ks["same_setting_as_replknet"] is True
    lo, hi = COSTS[(3, 3, 3, 3)], COSTS[(31, 29, 27, 13)]
    assert ks["change"]["deploy_params"] == pytest.approx(hi[1] / lo[1] - 1)
    assert ks["change"]["flops"] == pytest.approx(hi[2] / lo[2] - 1)
    row = next(r for r in ks["rows"] if r["kernels"] == [7, 7, 7, 3] and r["reparam"] == "none")
    assert row["complete"] == 1 and row["val_acc_mean"] == pytest.approx(0.58)  # failed/running not averaged
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    assert "+10.4% (71.8M -> 79.3M)" in md and "+18.6% (12.9G -> 15.3G)" in md
    assert REPLKNET_TABLE5["params"][1] / REPLKNET_TABLE5["params"][0] - 1 == pytest.approx(0.104, abs=5e-4)
    assert REPLKNET_TABLE5["flops"][1] / REPLKNET_TABLE5["flops"][0] - 1 == pytest.approx(0.186, abs=5e-4)
    assert f"{(hi[2] / lo[2] - 1) * 100:+.1f}%" in md
    # the front table lists every front member with its architecture columns
    for r in res["fronts"]["latency"]["front"]:
        assert re.search(rf"\| `{re.escape(r['name'])}` \| replk \| {'-'.join(map(str, r['kernels']))} \|", md)


def test_cli_report_json_and_errors(tmp_path, capsys):
    run = write_fake_run(str(tmp_path / "cli"))
    assert cli_main(["report", run, "--json", "--no-figures"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["study"] == "fake" and "report for fake" in err
    assert data["fronts"]["latency"]["reference"]["latency_ms"] == BUDGET_MS
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().count("\n") == 0 and "no such folder" in err
    os.makedirs(tmp_path / "empty")
    assert cli_main(["report", str(tmp_path / "empty")]) == 2
    assert "not a search run folder" in capsys.readouterr().err
    assert load_run(run).name == "fake"


# ------------------------------------------------------------------------------ the real smoke study
# ``smoke_run`` (tests/conftest.py) runs `lkscale search studies/smoke.yaml` once per session.


@pytest.mark.slow
def test_report_on_real_smoke_study(smoke_run):
    res = make_report(smoke_run)
    rows = _rows(smoke_run)
    assert sum(res["counts"].values()) == len(rows) > 0
    assert {r["name"] for r in res["fronts"]["latency"]["front"]} == _brute_front(rows, "latency_ms")
    pts = [(r["val_acc"], r["latency_ms"]) for r in rows if r["state"] == "complete"]
    ref = res["fronts"]["latency"]["reference"]["latency_ms"]
    assert res["fronts"]["latency"]["hypervolume"] == pytest.approx(_hv_union(pts, 0.0, ref), rel=1e-12)
    for f in ("report.md", "pareto_latency.png", "pareto_flops.png", "report.html"):
        assert os.path.isfile(os.path.join(smoke_run, f))
    # the second report re-uses the reference point stored by the first
    assert make_report(smoke_run, figures=False)["fronts"]["latency"]["reference"]["latency_ms"] == ref


@pytest.mark.slow
def test_export_real_smoke_winners(smoke_run, tmp_path):
    """The search's own weight files export, reload and convert to ONNX (the export contract on real output)."""
    import torch

    from lkscale.export import export_winners, load, read_export

    paths = export_winners(smoke_run, str(tmp_path / "out"), pareto=True)
    front = make_report(smoke_run, figures=False)["fronts"]["latency"]["front"]
    assert [os.path.basename(p) for p in paths] == [r["name"] for r in front]
    x = torch.randn(2, 3, 32, 32)
    for p in paths:
        rec = read_export(p)
        assert rec["checks"]["onnx"]["max_abs_diff"] <= 1e-4
        with torch.no_grad():
            torch.testing.assert_close(load(p, deploy=True)(x), load(p)(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ replicates: means, intervals, real steps
# Common random numbers: replicate r shifts every candidate alike (REP_SHIFT), so the paired steps are
# much tighter than the spread of one setting. kernels -> (latency ms, mean accuracy, per-replicate jitter)
REP_SHIFT = (0.0, 0.012, -0.009)
SCALING = {(3, 3, 3, 3): (2.0, 0.500, (0.001, -0.002, 0.001)),
           (7, 7, 7, 3): (3.0, 0.580, (-0.002, 0.002, 0.000)),      # the one real step: +8 pp
           (13, 13, 7, 3): (4.4, 0.582, (0.003, -0.004, 0.003)),    # +0.2 pp: noise
           (31, 29, 27, 13): (8.5, 0.579, (-0.003, 0.004, -0.002))}  # -0.3 pp: noise
RE5 = [[5], [5], [5], []]
# a re-param candidate trained twice (replicates 0 and 1): on the front once, at its mean
TWICE = ((7, 7, 7, 3), RE5, 3.1, (0.640, 0.650))
VAL_N = 500


def _rep_row(number, name, kern, rep, lat, acc, replicate, state="complete"):
    params, dparams, flops = COSTS[kern]
    return {"trial_id": f"t{number:04d}", "number": number, "name": name, "state": state, "blocks": ["replk"] * 4,
            "kernels": list(kern), "depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "dcn_groups": [None] * 4,
            "reparam": rep, "stem_stride": 2, "params": params + 10 * sum(map(len, rep)), "deploy_params": dparams,
            "flops": flops, "latency_ms": lat, "latency_low_ms": lat * 0.97, "latency_high_ms": lat * 1.03,
            "latency_runtime": "onnxruntime", "latency_source": "measured-final", "latency_search_ms": lat * 1.1,
            "val_acc": acc, "val_acc_epochs": [acc] * 4 if acc is not None else [], "epochs_done": 4 if acc else 1,
            "epochs_budget": 4, "seconds": 1.0, "replicate": replicate, "val_n": VAL_N, "seed": replicate}


def replicate_rows(replicates=3):
    rows, n = [], 0
    for i, (kern, (lat, mean, jitter)) in enumerate(SCALING.items()):
        for r in range(replicates):
            rows.append(_rep_row(n, _name(100 + i, kern), kern, [[]] * 4, lat, round(mean + REP_SHIFT[r] + jitter[r], 4), r))
        n += 1
    kern, rep, lat, accs = TWICE
    rows += [_rep_row(n, _name(200, kern), kern, rep, lat, a, r) for r, a in enumerate(accs)]
    rows.append(_rep_row(n + 1, _name(300, (13, 13, 7, 3)), (13, 13, 7, 3), RE5, 4.0, 0.30, 0, "pruned"))
    return rows


def write_replicate_run(path, replicates=3):
    """A run folder as the search writes it now: trials.csv through rundir.write_trials (one row per
    architecture and replicate), study.yaml with budgets.latency, summary.json with racing statuses
    (from lkscale.racing.Race on the same numbers, as the search computes them)."""
    import yaml

    from lkscale.racing import Candidate, Race
    from lkscale.rundir import candidates, write_trials

    os.makedirs(path, exist_ok=True)
    study = {"name": "reps", "space": {"block": "replk"},
             "data": {"dataset": "synthetic", "train_per_class": 10, "val_per_class": 50, "input_size": 32},
             "proxy": {"epochs": 4, "batch_size": 16, "lr": 0.004, "seed": 0},
             "budgets": {"max_latency_ms": 12.0, "latency": {"runtime": "onnxruntime", "batch_size": 1, "threads": 1,
                                                             "input_size": 32, "source": "measured"}},
             "search": {"sampler": "grid", "trials": 6, "mode": "scaling", "replicates": replicates,
                        "confirm": {"confidence": 0.95}}}
    with open(os.path.join(path, "study.yaml"), "w") as f:
        yaml.safe_dump(study, f)
    rows = replicate_rows(replicates)
    write_trials(path, rows)
    done = [c for c in candidates(load_run(path).trials) if c.state == "complete"]
    race = Race([Candidate(c.name, c.latency_ms, (c.latency_high_ms - c.latency_low_ms) / 3.92, c.replicates)
                 for c in done], alpha=0.05, min_replicates=2, n_val=VAL_N, scale=1.0)
    verdicts = race.verdicts()
    status = {n: v.status for n, v in verdicts.items()}
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump({"study": "reps", "status": status, "mode": "scaling", "replicates": replicates,
                   "confirmed": sorted(n for n, s in status.items() if s == "confirmed"),
                   "tied": sorted(n for n, s in status.items() if s == "tied" and verdicts[n].on_front),
                   "latency": {**study["budgets"]["latency"], "final": "measured-final"}}, f)
    return path, status


@pytest.fixture(scope="module")
def replicate_report(tmp_path_factory):
    run, status = write_replicate_run(str(tmp_path_factory.mktemp("reps") / "reps"))
    return run, status, make_report(run)


def _holm(ps):
    """Holm step-down adjusted p-values, written out here (not lkscale.comparisons.holm)."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def test_report_names_the_significant_step_only(replicate_report):
    """3 replicates per kernel setting: only the large step is significant, checked against scipy's ttest_rel
    and a hand-written Holm; report.md names it (Conclusions and the steps table) and not the others."""
    from scipy.stats import ttest_rel

    run, _status, res = replicate_report
    rows = [r for r in replicate_rows() if r["reparam"] == [[]] * 4]
    kernels = list(SCALING)
    acc = {k: [r["val_acc"] for r in sorted(rows, key=lambda r: r["replicate"]) if tuple(r["kernels"]) == k]
           for k in kernels}
    tests = [ttest_rel(acc[b], acc[a], alternative="greater") for a, b in zip(kernels, kernels[1:])]
    p_holm = _holm([t.pvalue for t in tests])  # one-sided "better" at 0.05, Holm over the line
    significant = [bool(p <= 0.05) for p in p_holm]
    assert significant == [True, False, False]  # the fixture's truth: one real step, two noise steps
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    conclusions = md.split("## Study settings")[0]
    sig_line = next(ln for ln in conclusions.splitlines() if "Kernel steps decided better or worse" in ln)
    line = res["kernel_scaling"]["lines"]["none"]
    for (a, b), ph, sig, st in zip(zip(kernels, kernels[1:]), p_holm, significant, line["steps"]):
        step = f"{'-'.join(map(str, a))} -> {'-'.join(map(str, b))}"
        diff = sum(x - y for x, y in zip(acc[b], acc[a])) / 3
        assert (step in sig_line) is sig
        cells = f"| none | {step} | {100 * diff:+.1f} pp"
        assert cells in md
        assert st["p_better"] == pytest.approx(ph)  # the spread is above the grid's floor here
        assert ("| **better** |" in md.split(cells)[1].splitlines()[0]) is sig
    assert line["x"] == "effective stage-1 kernel" and line["x_values"] == [3.0, 7.0, 13.0, 31.0]  # min(K, 2 x 16 - 1) on the 16 px stage-1 map
    # 31-29-27-13 is shown less than 1 point above 13-13-7-3; 13-13-7-3 vs 7-7-7-3 is undecided
    assert line["gains_stop_at"] == [13, 13, 7, 3]
    assert "gains stop by 13-13-7-3 at the latest" in conclusions
    assert line["fit"] is not None and len(line["fit"]["band_low"]) == len(line["fit"]["grid"])
    row = next(r for r in res["kernel_scaling"]["rows"] if r["kernels"] == [7, 7, 7, 3] and r["reparam"] == "none")
    assert row["val_acc_mean"] == pytest.approx(sum(acc[(7, 7, 7, 3)]) / 3) and row["n_replicates"] == 3


def test_candidate_with_two_replicates_once_on_the_front_at_its_mean(replicate_report):
    run, status, res = replicate_report
    kern, rep, lat, accs = TWICE
    name = _name(200, kern)
    front = res["fronts"]["latency"]["front"]
    names = [r["name"] for r in front]
    assert names.count(name) == 1 and len(names) == len(set(names))
    member = next(r for r in front if r["name"] == name)
    assert member["val_acc"] == pytest.approx(sum(accs) / 2) and member["n_replicates"] == 2
    assert member["status"] == status[name]
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    table_row = next(ln for ln in md.splitlines() if ln.startswith("| ") and f"`{name}`" in ln and "(n=2)" in ln)
    assert f"{100 * sum(accs) / 2:.1f}% [" in table_row and f"| {status[name]} |" in table_row
    assert "3.10 [3.01-3.19]" in table_row  # latency median [interval]
    # the front is computed on means: brute force over candidates' means
    means = {}
    for r in replicate_rows():
        if r["state"] == "complete":
            means.setdefault(r["name"], (r["latency_ms"], []))[1].append(r["val_acc"])
    pts = [(sum(a) / len(a), la, n) for n, (la, a) in means.items()]
    assert set(names) == {n for a, c, n in pts if not any(a2 >= a and c2 <= c and (a2 > a or c2 < c)
                                                           for a2, c2, _ in pts)}


def test_confirmed_and_tied_lines_and_latency_setting(replicate_report):
    run, status, _res = replicate_report
    confirmed = [n for n, s in status.items() if s == "confirmed"]
    tied = [n for n, s in status.items() if s == "tied"]
    assert confirmed and tied  # the fixture's race resolves some and not others
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    html = open(os.path.join(run, "report.html"), encoding="utf-8").read()
    conf_md = next(ln for ln in md.splitlines() if "**Confirmed front**" in ln)
    tied_md = next(ln for ln in md.splitlines() if "**Tied within noise**" in ln)
    assert all(n in conf_md for n in confirmed) and not any(n in conf_md for n in tied)
    assert all(n in tied_md for n in tied) and not any(n in tied_md for n in confirmed)
    assert html.count("<b>Confirmed front</b>") >= 1 and html.count("<b>Tied within noise</b>") >= 1
    for n in confirmed + tied:
        assert f"<code>{n}</code>" in html
    for text in (md, html):
        assert "onnxruntime, batch 1, 1 thread(s), 32 px, deploy form; measured-final" in text


def test_one_replicate_says_steps_cannot_be_tested(tmp_path):
    run, _ = write_replicate_run(str(tmp_path / "one"), replicates=1)
    res = make_report(run, figures=False)
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    assert "Nothing can be decided: one replicate per setting" in md
    assert "**Kernel steps decided better or worse** (replk): none." in md
    row = next(r for r in res["kernel_scaling"]["rows"] if r["kernels"] == [3, 3, 3, 3])
    assert row["interval"] == "wilson" and row["n_replicates"] == 1
    from lkscale.intervals import wilson_interval

    w = wilson_interval(row["val_acc_mean"], VAL_N)
    assert (row["val_acc_low"], row["val_acc_high"]) == pytest.approx((w.low, w.high))
    assert f"{100 * w.low:.1f}-{100 * w.high:.1f}] (n=1: val sampling only)" in md


def test_run_without_racing_status_shows_none(fake_report):
    run, res = fake_report
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    assert "**Confirmed front**: not determined" in md
    assert all(r["status"] is None for r in res["fronts"]["latency"]["front"])


def test_interactive_front_has_error_bars_and_statuses(replicate_report):
    """The plotly front: every complete candidate carries its accuracy and latency interval as error bars;
    front members are split into confirmed / tied traces by their racing status."""
    import dataclasses

    from lkscale.report.interactive import plotly_pareto
    from lkscale.rundir import candidates

    run_dir, status, res = replicate_report
    run = load_run(run_dir)
    cands = dataclasses.replace(run, trials=candidates(run.trials))
    fr = res["fronts"]["latency"]
    by_name = {t.name: t for t in cands.trials}
    front = [by_name[r["name"]] for r in fr["front"]]
    fig = plotly_pareto(cands, "latency", front, fr["reference"], fr["front"])
    complete = next(t for t in fig.data if t.name and t.name.startswith("complete"))
    names = [re.search(r"<b>(.*?)</b>", h).group(1) for h in complete.hovertext]
    for i, n in enumerate(names):
        t = by_name[n]
        assert complete.y[i] == pytest.approx(t.val_acc)
        assert complete.error_y.array[i] == pytest.approx(t.val_acc_high - t.val_acc)
        assert complete.error_y.arrayminus[i] == pytest.approx(t.val_acc - t.val_acc_low)
        assert complete.error_x.array[i] == pytest.approx(t.latency_high_ms - t.latency_ms)
    for st in ("confirmed", "tied"):
        trace = next(t for t in fig.data if t.name and t.name.startswith(f"front: {st}"))
        shown = {re.search(r"<b>(.*?)</b>", h).group(1) for h in trace.hovertext}
        assert shown == {r["name"] for r in fr["front"] if status.get(r["name"]) == st}


def test_predicted_latency_says_so_with_its_error(tmp_path):
    import yaml

    run, _ = write_replicate_run(str(tmp_path / "pred"))
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"runtime": "onnxruntime", "error_pct": 7.3}))
    with open(os.path.join(run, "study.yaml")) as f:
        study = yaml.safe_load(f)
    study["budgets"]["latency"].update(source="predicted", table=str(table))
    with open(os.path.join(run, "study.yaml"), "w") as f:
        yaml.safe_dump(study, f)
    summary = json.load(open(os.path.join(run, "summary.json")))
    del summary["latency"]  # only study.yaml says it: the report reads budgets.latency
    json.dump(summary, open(os.path.join(run, "summary.json"), "w"))
    make_report(run, figures=False)
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    assert (f"| latency | onnxruntime, batch 1, 1 thread(s), 32 px, deploy form; predicted from table {table} "
            "(held-out MAPE 7.3%) |") in md


def test_scaling_line_keeps_the_requested_branch_where_the_kernel_was_too_small_for_it():
    from lkscale.report.scaling import requested_reparam
    from lkscale.rundir import Trial

    small = Trial({"reparam": [[], [], [], []], "notes": "stage 0: branches [5] dropped (not smaller than kernel 3); "
                   "stage 1: branches [5] dropped (not smaller than kernel 3); stage 2: branches [5] dropped (not "
                   "smaller than kernel 3); stage 3: branches [5] dropped (not smaller than kernel 3)"})
    large = Trial({"reparam": [[5], [5], [5], []], "notes": "stage 3: kernel 13 -> 3 (2x2 map); stage 3: branches [5] "
                   "dropped (not smaller than kernel 3)"})
    plain = Trial({"reparam": [[], [], [], []], "notes": ""})
    assert requested_reparam(small) == requested_reparam(large) == "5|5|5|5" and requested_reparam(plain) == "none"


def test_markdown_tables_in_the_fidelity_section_become_html_tables():
    from lkscale.report.html import md_blocks

    out = md_blocks(["Some **text**:", "| rule | cost |", "|---|---|", "| moasha g2 | 88% |", "| none | 100% |", "after"])
    assert out.startswith("<p>Some <b>text</b>:</p><table><thead><tr><th>rule</th><th>cost</th></tr></thead>")
    assert "<tr><td>moasha g2</td><td>88%</td></tr><tr><td>none</td><td>100%</td></tr></tbody></table><p>after</p>" in out
    assert "|" not in out and "---" not in out
