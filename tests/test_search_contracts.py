"""Contracts of the search that the record must keep, driven through real Ray Tune + Optuna runs with fixed
learning curves (tests/curves.py): pruning, duplicates, resume after a kill at the worst moment, budgets."""
import collections
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from conftest import REPO
from curves import curve
from lkscale.pruning import keep_top
from lkscale.rundir import read_trials
from lkscale.search import optuna_storage

CURVES = os.path.join(REPO, "tests", "curves.py")
KERNELS = [[3, 3, 3], [5, 5, 3], [7, 7, 3], [9, 7, 3], [13, 7, 3]]


def study_file(tmp_path, name="contracts", **over):
    raw = {"name": name,
           "space": {"stem_stride": 2, "block": "replk", "kernels": KERNELS, "reparam": [[], [3]],
                     "stages": [{"depth": 1, "width": 16}, {"depth": 1, "width": 32}, {"depth": 1, "width": 32}]},
           "data": {"dataset": "synthetic", "train_per_class": 4, "val_per_class": 2},
           "proxy": {"epochs": 4},
           "budgets": {"latency": {"runtime": "torch", "rounds": 3, "repeats": 3}},
           "search": {"sampler": "grid", "trials": 10, "concurrency": 1, "seed": 0,
                      "pruning": {"scheduler": "moasha", "grace_epochs": 1, "reduction_factor": 2}}}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run(study, out, *extra, env=None, check=True):
    e = dict(os.environ, **(env or {}))
    res = subprocess.run([sys.executable, CURVES, study, str(out), *extra], cwd=REPO, capture_output=True, text=True,
                         env=e, timeout=600)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def trained(log) -> collections.Counter:
    return collections.Counter(tuple(line.split()) for line in open(log)) if os.path.isfile(log) else collections.Counter()


def optuna_trials(out, name="contracts"):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=optuna_storage(str(out))).trials


@pytest.mark.slow
def test_grid_search_prunes_dominated_keeps_rung_front_and_never_trains_a_network_twice(tmp_path):
    log = tmp_path / "trained.log"
    out = tmp_path / "run"
    run(study_file(tmp_path), out, "--tensorboard", env={"CURVES_LOG": str(log)})
    rows = read_trials(str(out))
    names = [t.name for t in rows]
    events = [f for _, _, fs in os.walk(out / "tune") for f in fs if f.startswith("events.out.tfevents")]
    assert len(events) >= 9  # --tensorboard: per-trial learning curves as TensorBoard event files
    # 10 grid points build 9 networks (the 3x3 branch is dropped on the all-3x3 network): 9 rows, each trained once
    assert len(rows) == 9 and len(set(names)) == 9
    assert all(n == 1 for n in trained(log).values()) and len(trained(log)) == 9
    ot = optuna_trials(out)
    dup = [t for t in ot if "duplicate_of" in t.user_attrs]
    assert len(dup) == 1 and dup[0].state.name == "FAIL"
    best = [t.user_attrs["name"] for t in optuna.load_study(study_name="contracts",
                                                            storage=optuna_storage(str(out))).best_trials]
    assert len(best) == len(set(best))  # no network listed twice in Optuna's Pareto set
    # pruning: stopped trials are pruned in trials.csv, PRUNED in Optuna, absent from best_trials
    pruned = [t for t in rows if t.state == "pruned"]
    assert pruned, "with these curves the scheduler must stop some trials"
    by_number = {t.number: t for t in ot}
    for t in pruned:
        assert by_number[t.number].state.name == "PRUNED" and t.name not in best
        assert len(t.val_acc_epochs) < 4
    # a trial on the front of its rung (accuracy at that epoch, latency the scheduler saw, over every trial that
    # reached the rung) is never stopped there: non-dominated among all, it was non-dominated among those seen
    # before it. (Judged per rung: a rung-1 front member may fairly be stopped at rung 2, where the order of
    # these curves flips, when measured latencies are not in kernel order.)
    for r in (1, 2):
        rung = {t.name: (t.val_acc_epochs[r - 1], t.latency_search_ms) for t in rows if len(t.val_acc_epochs) >= r}
        front = keep_top(rung, 0.0)  # keep_top always keeps the whole first non-dominated layer
        stopped_here = {t.name for t in pruned if len(t.val_acc_epochs) == r}
        assert front and not front & stopped_here, (r, front & stopped_here)
    for t in rows:  # the recorded curve is the one the trainable reported
        assert t.val_acc_epochs == curve(t.kernels, 4)[:len(t.val_acc_epochs)]


@pytest.mark.slow
def test_driver_killed_after_recording_before_telling_optuna_then_resumed(tmp_path):
    log = tmp_path / "trained.log"
    out = tmp_path / "run"
    study = study_file(tmp_path, search={"sampler": "random", "trials": 4, "pruning": {"scheduler": "none"}})
    res = run(study, out, env={"CURVES_LOG": str(log), "LKSCALE_FAULT": "exit-after-record"}, check=False)
    assert res.returncode == 9, res.stderr[-2000:]  # died right after the first finished row was written
    rows = read_trials(str(out))
    done = [t for t in rows if t.state == "complete"]
    assert len(done) == 1
    first = done[0]
    assert optuna_trials(out)[first.number].state.name == "RUNNING"  # Optuna was never told: the race window
    run(study, out, "--resume", env={"CURVES_LOG": str(log)})
    after = read_trials(str(out))
    ot = optuna_trials(out)
    assert ot[first.number].state.name == "COMPLETE"  # told from the record, not failed
    assert ot[first.number].values[0] == pytest.approx(first.val_acc)
    counts = trained(log)
    assert counts[(first.name, "0")] == 1  # never trained again
    assert len({t.name for t in after}) == 4 and all(c == 1 for c in counts.values())
    assert not [t for t in ot if t.state.name == "RUNNING"]


@pytest.mark.slow
def test_kill_while_a_trial_runs_requeues_it_with_identical_parameters(tmp_path):
    log = tmp_path / "trained.log"
    out = tmp_path / "run"
    study = study_file(tmp_path, search={"sampler": "random", "trials": 3, "pruning": {"scheduler": "none"}})
    env = dict(os.environ, CURVES_LOG=str(log), CURVES_SLEEP="1.5")
    proc = subprocess.Popen([sys.executable, CURVES, study, str(out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait until one trial is finished and another is known to be running
            time.sleep(0.5)
            rows = read_trials(str(out)) if os.path.isfile(out / "trials.csv") else []
            if any(t.state == "complete" for t in rows) and any(t.state == "running" for t in rows):
                break
        else:
            pytest.fail("never saw a finished and a running trial together")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    running = [t for t in read_trials(str(out)) if t.state == "running"]
    finished = {t.name for t in read_trials(str(out)) if t.state == "complete"}
    params = {t.number: t.params for t in optuna_trials(out)}
    cut = {t.name: params[t.number] for t in running}
    run(study, out, "--resume", env={"CURVES_LOG": str(log)})
    ot = optuna_trials(out)
    after = read_trials(str(out))
    for name, p in cut.items():  # re-queued with identical parameters and trained to the end
        assert any(t.params == p and t.state.name == "COMPLETE" for t in ot)
        assert [t.state for t in after if t.name == name] == ["complete"]
    counts = trained(log)
    for name in finished:
        assert counts[(name, "0")] == 1  # nothing finished was trained again
    assert len({t.name for t in after}) == 3


@pytest.mark.slow
def test_resumed_random_search_asks_only_new_architectures_and_replicates_use_crn(tmp_path):
    log = tmp_path / "trained.log"
    out = tmp_path / "run"
    study = study_file(tmp_path, search={"sampler": "random", "trials": 3, "replicates": 2,
                                         "pruning": {"scheduler": "none"}})
    run(study, out, env={"CURVES_LOG": str(log)})
    run(study, out, "--resume", "--trials", "6", env={"CURVES_LOG": str(log)})
    rows = read_trials(str(out))
    counts = trained(log)
    assert all(c == 1 for c in counts.values())  # no (architecture, replicate) trained twice
    names = {t.name for t in rows}
    assert len(names) == 6 and {r for _, r in counts} == {"0", "1"}
    assert all(sorted(t.replicate for t in rows if t.name == n) == [0, 1] for n in names)
    assert all(t.seed == t.replicate for t in rows)  # replicate r uses seed proxy.seed + r for every candidate
    summary = json.load(open(out / "summary.json"))
    for m in summary["front_detail"]:  # the front is on means over the two replicates, with a t interval
        reps = [t.val_acc for t in rows if t.name == m["name"]]
        assert m["n_replicates"] == 2 and m["val_acc"] == pytest.approx(sum(reps) / 2)
    ot = {t.number: t for t in optuna_trials(out)}
    for n in names:  # Optuna sees the same mean
        t0 = next(t for t in rows if t.name == n)
        assert ot[t0.number].values[0] == pytest.approx(sum(t.val_acc for t in rows if t.name == n) / 2)


@pytest.mark.slow
def test_budgets_end_to_end_never_train_and_violate_the_constraint(tmp_path):
    log = tmp_path / "trained.log"
    out = tmp_path / "run"
    # FLOPs: [3,3,3] 2.0M, [5,5,3] 2.1M, [7,7,3] 2.25M, [9,7,3] 2.4M, [13,7,3] 2.74M multiply-adds
    study = study_file(tmp_path, budgets={"max_flops": 2_300_000, "max_params": 1_000_000},
                       search={"trials": 10, "pruning": {"scheduler": "none"}})
    run(study, out, env={"CURVES_LOG": str(log)})
    rows = read_trials(str(out))
    over = [t for t in rows if t.flops > 2_300_000]
    assert over and all(t.state == "infeasible" and "over budget: flops" in t.error for t in over)
    assert not {t.name for t in over} & {n for n, _ in trained(log)}  # never trained
    ot = {t.number: t for t in optuna_trials(out)}
    best = {t.user_attrs["name"] for t in optuna.load_study(study_name="contracts",
                                                            storage=optuna_storage(str(out))).best_trials}
    for t in over:
        assert ot[t.number].system_attrs["constraints:flops"] > 0 and t.name not in best
    # a latency budget below every network: all infeasible, nothing trained
    out2, log2 = tmp_path / "run2", tmp_path / "trained2.log"
    run(study_file(tmp_path, name="lat", budgets={"max_latency_ms": 1e-6}, search={"trials": 4}), out2,
        env={"CURVES_LOG": str(log2)})
    rows2 = read_trials(str(out2))
    assert len(rows2) == 4 and all(t.state == "infeasible" and "latency_ms" in t.error for t in rows2)
    assert not trained(log2)
    assert not [f for _, _, fs in os.walk(out2) for f in fs if f.startswith("events.out.tfevents")]  # not asked


def test_run_folder_holds_no_pickle(smoke_run):
    for dirpath, dirs, files in os.walk(smoke_run):
        dirs[:] = [d for d in dirs if not d.startswith("tune")]  # Ray Tune's own experiment state
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                head = fh.read(2)
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), f


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["successive_halving", "moasha"])
def test_optunas_own_pruner_stops_trials_recorded_pruned(tmp_path, pruner):
    out = tmp_path / "run"
    run(study_file(tmp_path, search={"pruning": {"scheduler": "optuna", "pruner": pruner,
                                                 "grace_epochs": 1, "reduction_factor": 2}}), out)
    rows = read_trials(str(out))
    ot = {t.number: t for t in optuna_trials(out)}
    pruned = [t for t in rows if t.state == "pruned"]
    assert pruned and all(ot[t.number].state.name == "PRUNED" and len(t.val_acc_epochs) < 4 for t in pruned)
    assert all(ot[t.number].state.name == "COMPLETE" for t in rows if t.state == "complete")


def test_optuna_pruner_scheduler_survives_tunes_checkpoint_pickle():
    import pickle

    from lkscale.search.schedulers import OptunaPrunerScheduler

    s = OptunaPrunerScheduler("successive_halving", max_t=4, history=[("a", [0.3, 0.4, 0.5, 0.6], 1.0),
                                                                         ("b", [0.2], 1.0)])
    again = pickle.loads(pickle.dumps(s))  # Tune checkpoints its scheduler; the side study is rebuilt
    states = sorted(t.state.name for t in again.study.trials)
    assert states == ["COMPLETE", "PRUNED"] and again.curves == s.curves
    assert [t.user_attrs["latency_ms"] for t in again.study.trials] == [1.0, 1.0]  # what the MO pruner reads
