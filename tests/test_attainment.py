"""Empirical attainment surfaces of the front over replicates: against brute force and moocore (when installed)."""
import dataclasses
import os

import numpy as np
import pytest
import yaml

from lkscale.attainment import attainment_surface, eaf_counts, level, shared_replicates, surfaces
from lkscale.report.figures import _accuracy_axis, _attainment, _figure, pareto_figure
from lkscale.report.html import attainment_html
from lkscale.rundir import RunDir, candidates, front_of, load_run, write_trials


def problem(seed, n=9, R=5, grid=0.5):
    """Candidates with a cost each and accuracies by replicate: a true trade-off, a replicate effect shared by
    every candidate (common random numbers), an individual one, on a grid of ``grid`` points (ties happen)."""
    rng = np.random.default_rng(seed)
    cost = np.round(rng.uniform(1, 5, n), 1)
    acc = 50 + 3 * np.log(cost)[None, :] + rng.normal(0, 1.0, (R, 1)) + rng.normal(0, 1.0, (R, n))
    return cost, np.round(acc / grid) * grid


def value_at(xs, ys, x):
    i = np.searchsorted(xs, x, side="right") - 1
    return ys[i] if i >= 0 else -np.inf


@pytest.mark.parametrize("seed", range(12))
def test_surfaces_match_the_brute_force_attainment_function(seed):
    """A point is attained by at least k replicates iff it lies on or below the k-attainment surface."""
    cost, acc = problem(seed)
    R = acc.shape[0]
    xs_grid = np.r_[np.unique(cost), np.unique(cost) - 0.05, cost.max() + 1]
    ys_grid = np.r_[np.unique(acc), np.unique(acc) + 0.25]
    pts = np.array([(x, y) for x in xs_grid for y in ys_grid])
    counts = eaf_counts(cost, acc, pts)
    for k in range(1, R + 1):
        xs, ys = attainment_surface(cost, acc, k)
        assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) > 0)  # a front: costlier only when better
        inside = np.array([y <= value_at(xs, ys, x) for x, y in pts])
        assert np.array_equal(inside, counts >= k), k


def test_best_and_worst_surfaces_are_the_best_and_worst_replicate_envelopes():
    cost, acc = problem(99, R=3)
    best, worst = attainment_surface(cost, acc, 1), attainment_surface(cost, acc, 3)
    for x in np.unique(cost):
        reach = [max(a for c, a in zip(cost, row) if c <= x) for row in acc]
        assert value_at(*best, x) == max(reach) and value_at(*worst, x) == min(reach)
    assert level(0.5, 3) == 2 and level(0.5, 4) == 2 and level(0.25, 4) == 1 and level(0.75, 4) == 3


def test_only_replicates_every_candidate_has_are_used():
    reps = [{0: 50.0, 1: 51.0, 2: 49.0}, {0: 55.0, 1: 54.0}, {0: 58.0, 1: 59.0, 3: 70.0}]
    assert shared_replicates(reps) == [0, 1]
    out = surfaces([1.0, 2.0, 3.0], reps)
    assert out["replicates"] == 2 and set(out["surfaces"]) == {0.0, 0.5, 1.0}
    xs, ys = out["surfaces"][1.0]  # the worse replicate at every cost: 50, 54, 58
    assert list(xs) == [1.0, 2.0, 3.0] and list(ys) == [50.0, 54.0, 58.0]
    assert surfaces([1.0, 2.0], [{0: 50.0}, {0: 51.0, 1: 52.0}])["surfaces"] == {}  # one shared replicate: no spread


@pytest.mark.parametrize("seed", range(4))
def test_surfaces_match_moocore(seed):
    moocore = pytest.importorskip("moocore")
    cost, acc = problem(seed, n=12, R=4)
    R = acc.shape[0]
    pts = np.array([(c, -a) for row in acc for c, a in zip(cost, row)])  # moocore minimises every objective
    sets = np.repeat(np.arange(R) + 1, len(cost))
    for k in range(1, R + 1):
        ref = moocore.eaf(pts, sets, percentiles=[100 * k / R])
        xs, ys = attainment_surface(cost, acc, k)
        assert sorted(map(tuple, ref[:, :2].tolist())) == sorted(zip(xs.tolist(), (-ys).tolist())), k


# ------------------------------------------------------------------------------------ in the report
def fake_run(path, replicates=3, n=12, seed=4):
    """A front search's folder: ``n`` architectures x ``replicates`` replicates (a shared replicate shift and an
    individual one, on the grid of 500 validation images), latencies with intervals, one pruned trial."""
    os.makedirs(path, exist_ok=True)
    study = {"name": "eaf", "space": {"block": "replk"},
             "data": {"dataset": "synthetic", "train_per_class": 10, "val_per_class": 50, "input_size": 32},
             "proxy": {"epochs": 4, "batch_size": 16}, "search": {"mode": "front", "replicates": replicates},
             "budgets": {"max_latency_ms": 50.0, "latency": {"input_size": 32}}}
    with open(os.path.join(path, "study.yaml"), "w") as f:
        yaml.safe_dump(study, f)
    rng = np.random.default_rng(seed)
    shift, rows = rng.normal(0, 0.012, replicates), []
    for i in range(n):
        lat = float(np.exp(rng.uniform(np.log(1.5), np.log(9))))
        mu = 0.40 + 0.08 * np.log(lat) - rng.uniform(0, 0.06)
        for r in range(replicates):
            acc = float(np.round((mu + shift[r] + rng.normal(0, 0.008)) * 500) / 500)
            rows.append({"trial_id": f"t{i}_{r}", "number": i, "name": f"rep-k{i}", "state": "complete",
                         "latency_ms": lat, "latency_low_ms": 0.98 * lat, "latency_high_ms": 1.02 * lat,
                         "val_acc": acc, "replicate": r, "val_n": 500, "kernels": [3, 3, 3, 3]})
    rows.append({"trial_id": "tp", "number": n, "name": "rep-pruned", "state": "pruned", "latency_ms": 3.0,
                 "val_acc": 0.31, "replicate": 0, "kernels": [3, 3, 3, 3]})
    write_trials(path, rows)
    return path


def test_pareto_figure_shows_the_attainment_band_and_frames_accuracy_on_the_data(tmp_path):
    path = fake_run(str(tmp_path / "run"))
    raw = load_run(path)
    run = dataclasses.replace(raw, trials=candidates(raw.trials))
    fig = _figure((6, 4))
    ax = fig.add_subplot()
    drawn = _attainment(ax, run, "latency_ms", 10.0)
    done = [t for t in run.trials if t.state == "complete"]
    eaf = surfaces([t.latency_ms for t in done], [t.replicates for t in done])
    assert eaf["replicates"] == 3
    assert max(drawn) == pytest.approx(max(eaf["surfaces"][0.0][1])) and min(drawn) == pytest.approx(
        min(eaf["surfaces"][1.0][1]))
    assert {"median attainment surface"} <= set(ax.get_legend_handles_labels()[1])
    _accuracy_axis(ax, run, "latency", drawn)
    low, high = ax.get_ylim()
    accs = [v for t in run.trials for v in (t.get("val_acc_low"), t.val_acc) if v is not None]
    assert 0 < low <= min(accs) and high >= max(drawn)  # framed on the data, not from 0
    front = front_of(run.trials, "latency_ms")
    png = RunDir(path).pareto_png("latency")
    pareto_figure(run, "latency", front, {"latency_ms": 10.0, "flops": 1e6}, 1.0, png)
    html = attainment_html(raw, "latency")
    assert "3 replicates" in html and "data:image/png;base64," in html
    single = fake_run(str(tmp_path / "one"), replicates=1)
    assert attainment_html(load_run(single), "latency") == ""  # one replicate: no spread to show
