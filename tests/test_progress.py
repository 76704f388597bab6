"""Progress you can trust in a log: epoch lines, a heartbeat while slow trials train, and an estimate of the
time left that says what it rests on (observed seconds per epoch, or the plan's probe)."""
import io
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from lkscale.search import progress as progress_mod
from lkscale.search.progress import Progress

CURVES = os.path.join(REPO, "tests", "curves.py")


class FakeTrial:
    def __init__(self, number, name, epoch=0):
        self.config = {"number": number, "name": name}
        self.last_result = {"epoch": epoch}


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress_mod.time, "time", lambda: now[0])
    return now


def plain(**kw):
    lines = []
    p = Progress(lines.append, live=False, stream=io.StringIO(), **kw)
    return p, lines


def test_estimate_uses_each_running_trials_own_rate_and_says_so(clock):
    p, _ = plain(total_trials=6, epochs=4, concurrency=2)
    rows = [{"trial_id": "a", "state": "complete", "epochs_done": 4, "seconds": 40.0, "name": "fast"},
            {"trial_id": "b", "state": "pruned", "epochs_done": 2, "seconds": 20.0, "name": "fast2"},
            {"trial_id": "c", "state": "running", "epochs_done": 1, "seconds": 400.0, "name": "dcn"}]
    running = {"c": FakeTrial(2, "dcn", 1)}
    p.epoch_done(rows[2], rows, running)  # its epoch 1 ended now
    eta, basis = p.estimate(rows, running)
    # running: 3 epochs left at its own 400 s; pool: 460 s / 7 epochs; 3 unstarted x 4 epochs at the pool
    pool = 460.0 / 7
    assert eta == pytest.approx(max((3 * 400 + 3 * 4 * pool) / 2, 3 * 400))
    assert basis == f"2 finished and 1 running trial(s)' observed {pool:.0f} s/epoch"
    # the old estimate (one pooled rate for everything) would say (3 * 4 + 3) * 65.7 / 2 = 493 s
    assert eta > 1000


def test_a_long_current_epoch_raises_the_estimate_and_the_probe_is_used_before_any_epoch(clock):
    p, _ = plain(total_trials=2, epochs=2, concurrency=2, probe={"dcn": 393.0})
    running = {"x": FakeTrial(0, "dcn"), "y": FakeTrial(1, "tiny")}
    rows = []
    assert p.estimate(rows, running) == (None, "no estimate yet: no epoch has finished and the run folder holds "
                                               "no plan probe")  # 'tiny' has neither an epoch nor a probe
    p2, _ = plain(total_trials=1, epochs=2, concurrency=1, probe={"dcn": 393.0})
    one = {"x": FakeTrial(0, "dcn")}
    eta, basis = p2.estimate(rows, one)
    assert eta == pytest.approx(786.0) and "the plan's probe for dcn" in basis
    clock[0] += 500.0  # its first epoch has taken 500 s already: slower than probed
    eta, _ = p2.estimate(rows, one)
    assert eta == pytest.approx(2 * 500.0 - 500.0)  # at least 500 s per epoch: one more epoch of 500 s left


def test_heartbeat_once_per_interval_on_plain_lines_only(clock):
    p, lines = plain(total_trials=3, epochs=3, concurrency=1, heartbeat_s=60.0)
    rows = [{"trial_id": "a", "state": "complete", "epochs_done": 3, "seconds": 285.0, "name": "n0", "number": 0},
            {"trial_id": "b", "state": "running", "epochs_done": 1, "seconds": 95.0, "name": "n1", "number": 1}]
    running = {"b": FakeTrial(1, "n1", 1)}
    p.epoch_done(rows[1], rows, running)
    assert lines[-1].startswith("[trial 1] epoch 1/3") and "95 s/epoch" in lines[-1]
    clock[0] += 30.0
    p.tick(rows, running)
    assert len(lines) == 1  # not yet
    clock[0] += 31.0
    p.tick(rows, running)
    beat = lines[-1]
    assert beat.startswith("... elapsed 1m01s; running: trial 1 epoch 1/3 (95 s/epoch, 1m01s into epoch 2)")
    # n1: 2 epochs left at 95 s, minus the 61 s already in; 1 unstarted x 3 epochs x 95 s
    assert "~6m54s left, from 1 finished and 1 running trial(s)' observed 95 s/epoch" in beat
    p.tick(rows, running)
    assert len(lines) == 2  # once per interval
    live, llines = Progress([].append, 3, 3, 1, live=True, stream=io.StringIO(), heartbeat_s=0.0), []
    live.write = llines.append
    clock[0] += 100
    live.tick(rows, running)
    live.epoch_done(rows[1], rows, running)
    assert llines == []  # a terminal has the live line instead


@pytest.mark.slow
@pytest.mark.parametrize("every", [True, False], ids=["validated", "end-only"])
def test_a_real_search_log_has_epoch_lines_and_heartbeats(tmp_path, every):
    """Ray Tune + the searcher + the recorder with the fixed-curve trainable (1 s per epoch), heartbeat 0.5 s.
    End-only (proxy.val_every_epoch false): Tune hears of each trial once, after its last epoch; the epoch lines
    and heartbeats come from the trials' progress files, removed when the trials end."""
    study = {"name": "beat", "space": {"stem_stride": 2, "block": "replk", "kernels": [[3, 3, 3], [7, 7, 3]],
                                       "stages": [{"depth": 1, "width": 16}, {"depth": 1, "width": 16},
                                                  {"depth": 1, "width": 16}]},
             "data": {"dataset": "synthetic", "train_per_class": 4, "val_per_class": 2}, "proxy": {"epochs": 3, "val_every_epoch": every},
             "budgets": {"latency": {"runtime": "torch", "rounds": 2, "repeats": 2}},
             "search": {"sampler": "grid", "trials": 2, "concurrency": 1, "pruning": {"scheduler": "none"}}}
    path = tmp_path / "beat.yaml"
    path.write_text(yaml.safe_dump(study))
    res = subprocess.run([sys.executable, CURVES, str(path), str(tmp_path / "run")], cwd=REPO, capture_output=True,
                         text=True, timeout=300,
                         env=dict(os.environ, CURVES_SLEEP="1.0", LKSCALE_HEARTBEAT_S="0.5"))
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr.splitlines()
    epochs = [ln for ln in err if "] epoch " in ln]
    assert len(epochs) == 4, err  # 2 trials x epochs 1-2 (the last epoch is the trial's own line)
    assert all(("not validated" in ln) != every for ln in epochs), epochs
    beats = [ln for ln in err if ln.startswith("... elapsed")]
    assert len(beats) >= 3, err
    assert any("running: trial" in b and "s/epoch" in b and " left, from " in b for b in beats), beats
    assert any(f"epoch {k}/3 (" in b for b in beats for k in (1, 2)), beats  # a trial seen past its first epoch
    assert not os.listdir(tmp_path / "run" / ".progress")  # each trial's progress file removed when it ended


def test_the_plans_probe_is_read_from_the_run_folder(tmp_path):
    """`lkscale plan STUDY --json > RUN_DIR/plan.json`: the probed networks, the others interpolated by FLOPs."""
    from lkscale.search.progress import plan_probe

    assert plan_probe(str(tmp_path)) == {}
    plan = {"networks": [{"name": "small", "flops": 1e6}, {"name": "mid", "flops": 3e6}, {"name": "dcn", "flops": 5e6}],
            "estimate": {"seconds_per_epoch": {"small": 10.0, "dcn": 393.0}}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    probe = plan_probe(str(tmp_path))
    assert probe == {"small": 10.0, "dcn": 393.0, "mid": pytest.approx(201.5)}
    (tmp_path / "plan.json").write_text(json.dumps({**plan, "estimate": {"note": "no probe"}}))
    assert plan_probe(str(tmp_path)) == {}


def test_epochs_without_a_tune_report_are_seen_through_the_trials_progress_file(clock, tmp_path):
    """proxy.val_every_epoch false: Tune hears of a trial only after its last epoch. The trainable's progress file
    (RUN_DIR/.progress/TRIAL_ID.json) makes the heartbeat say the epoch really running, at the observed rate."""
    from lkscale.search.progress import read_progress, write_progress

    run = str(tmp_path)
    p, lines = plain(total_trials=1, epochs=3, concurrency=1, heartbeat_s=150.0, run_dir=run)
    rows = [{"trial_id": "a", "state": "running", "epochs_done": 0, "seconds": 0.0, "name": "n0", "number": 0}]
    running = {"a": FakeTrial(0, "n0", 0)}  # its last Tune result: none (epoch 0)
    assert write_progress(run, "a", 0, 0.0, t=1000.0)  # the trial starts
    p.tick(rows, running)
    clock[0] += 100.0
    write_progress(run, "a", 1, 100.0, t=1100.0)
    p.tick(rows, running)
    assert lines == ["[trial 0] epoch 1/3  not validated  100 s/epoch  n0"]
    p.tick(rows, running)
    assert len(lines) == 1  # one line per epoch
    clock[0] += 100.0
    write_progress(run, "a", 2, 200.0, t=1200.0)
    clock[0] += 17.0
    p.tick(rows, running)
    assert lines[1] == "[trial 0] epoch 2/3  not validated  100 s/epoch  n0"
    beat = lines[2]
    assert beat.startswith("... elapsed 3m37s; running: trial 0 epoch 2/3 (100 s/epoch, 0m17s into epoch 3)"), beat
    assert "~1m23s left, from 1 running trial(s)' observed 100 s/epoch" in beat  # 1 epoch of 100 s, 17 s done
    # without the file (the search before this change): "epoch 0/3 (no epoch yet, 3m37s into epoch 1)"
    blind, _ = plain(total_trials=1, epochs=3, concurrency=1, heartbeat_s=60.0)
    blind._since["a"] = 1000.0
    assert "trial 0 epoch 0/3 (no epoch yet, 3m37s into epoch 1)" in blind.heartbeat(rows, running)
    # a Tune result further along than the file wins; a file cut short is ignored
    ahead = [{**rows[0], "epochs_done": 3, "seconds": 330.0}]
    assert "epoch 3/3 (110 s/epoch" in p.heartbeat(ahead, running)
    (tmp_path / ".progress" / "a.json").write_text('{"epoch": 2, "seco')
    assert read_progress(run, "a") is None
    assert not write_progress(str(tmp_path / "elsewhere"), "a", 1, 1.0)  # a node that cannot see the run folder


def test_a_validated_epoch_is_printed_once_from_tunes_result_not_first_from_the_progress_file(clock, tmp_path):
    """proxy.val_every_epoch true: the trainable writes its progress file just before it reports to Tune, so a
    tick between the two must not print the epoch as "not validated" (Tune's result prints it with its acc)."""
    from lkscale.search.progress import write_progress

    run = str(tmp_path)
    rows = [{"trial_id": "a", "state": "running", "epochs_done": 0, "seconds": 0.0, "name": "n0", "number": 0}]
    running = {"a": FakeTrial(0, "n0", 0)}
    write_progress(run, "a", 1, 10.0, t=1010.0)  # epoch 1 done, Tune's result not in yet
    validated, lines = plain(total_trials=1, epochs=3, concurrency=1, heartbeat_s=150.0, run_dir=run,
                             validated_every_epoch=True)
    validated.tick(rows, running)
    assert lines == []
    end_only, lines2 = plain(total_trials=1, epochs=3, concurrency=1, heartbeat_s=150.0, run_dir=run)
    end_only.tick(rows, running)
    assert lines2 == ["[trial 0] epoch 1/3  not validated  10 s/epoch  n0"]


def test_the_search_trainable_writes_every_epoch_to_its_progress_file(monkeypatch, tmp_path):
    """The real trainable with proxy.val_every_epoch false: one Tune report (the last epoch, a real accuracy),
    and the progress file written at the start and after each of the 3 epochs (train_model's on_epoch_end)."""
    import ray.tune

    import lkscale.search.trainable as trainable
    from lkscale.config import DataConfig, TrainConfig, to_dict
    from lkscale.search.progress import read_progress

    reports, writes = [], []
    monkeypatch.setattr(ray.tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(trainable, "node_id", lambda: "test")  # no Ray runtime needed
    monkeypatch.setattr(trainable, "_trial_id", lambda tune: "t0")
    real = trainable.write_progress
    monkeypatch.setattr(trainable, "write_progress", lambda *a: (writes.append(a[2:]), real(*a))[1])
    spec = {"stem": {"family": "convnext", "stride": 2}, "downsample": "convnext", "head": "convnext",
            "stages": [{"block": "convnext", "depth": 1, "width": w, "kernel": 3} for w in (8, 16, 16)]}
    cfg = {"spec": json.dumps(spec), "name": "tiny", "run_dir": str(tmp_path), "cpus_per_trial": 1, "replicate": 1,
           "data": to_dict(DataConfig(dataset="synthetic", train_per_class=4, val_per_class=2, input_size=16)),
           "proxy": to_dict(TrainConfig(epochs=3, batch_size=8, warmup_epochs=0, device="cpu",
                                        val_every_epoch=False))}
    trainable.train_candidate(cfg)
    assert [r["epoch"] for r in reports] == [3] and not reports[0]["failed"], reports
    assert [w[0] for w in writes] == [0, 1, 2, 3], writes
    assert [w[1] for w in writes] == sorted(w[1] for w in writes)  # seconds since the trial started, growing
    assert read_progress(str(tmp_path), "t0")["epoch"] == 3
