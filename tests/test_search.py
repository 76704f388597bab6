"""The main job end to end: `lkscale search` on the smoke study, what it records, and resume after kill -9."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from conftest import REPO, run_cli
from lkscale.search import optuna_storage


def rows(run_dir):
    with open(os.path.join(run_dir, "trials.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_search_records_every_trial(smoke_run):
    rs = rows(smoke_run)
    assert len(rs) == 4
    assert {r["state"] for r in rs} <= {"complete", "pruned", "infeasible", "failed"}
    complete = [r for r in rs if r["state"] == "complete"]
    assert complete, "no trial completed"
    for r in complete:
        accs = json.loads(r["val_acc_epochs"])
        assert len(accs) == 2 and float(r["val_acc"]) == pytest.approx(accs[-1])
        assert int(r["params"]) > 0 and int(r["flops"]) > 0 and float(r["latency_ms"]) > 0 and r["node"]
        assert os.path.isfile(os.path.join(smoke_run, "weights", f"{r['name']}.safetensors"))
    # Optuna agrees with trials.csv: pruned runs are PRUNED and never in best_trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.load_study(study_name="smoke", storage=optuna_storage(smoke_run))
    states = {t.number: t.state.name for t in st.trials}
    for r in rs:
        want = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "infeasible": "COMPLETE"}[r["state"]]
        assert states[int(r["number"])] == want
    best = {t.user_attrs["name"] for t in st.best_trials}
    assert best <= {r["name"] for r in complete}
    summary = json.load(open(os.path.join(smoke_run, "summary.json")))
    saved = sum(2 - int(r["epochs_done"]) for r in rs if r["state"] == "pruned")
    assert summary["trial_epochs_saved"] == saved
    # the front uses the latencies measured again side by side after training (brute force from trials.csv)
    pts = {r["name"]: (float(r["val_acc"]), float(r["latency_ms"])) for r in complete}
    brute = {n for n, (a, l) in pts.items()
             if not any(a2 >= a and l2 <= l and (a2, l2) != (a, l) for a2, l2 in pts.values())}
    assert set(summary["front"]) == brute
    assert all(r["latency_source"] == "measured-final" and float(r["latency_low_ms"]) <= float(r["latency_ms"])
               <= float(r["latency_high_ms"]) for r in complete)
    for m in summary["front_detail"]:  # every front member carries its interval (Wilson on val_n images here)
        assert m["val_acc_low"] < m["val_acc"] < m["val_acc_high"] and m["n_replicates"] == 1


def test_over_budget_is_never_trained(tmp_path):
    # smoke candidates have 2.0M (k3), 2.25M (k7) and 2.74M (k13) multiply-adds: the k13 ones are over budget
    study = tmp_path / "tight.yaml"
    text = open(os.path.join(REPO, "studies", "smoke.yaml")).read()
    study.write_text(text.replace("max_params: 1000000", "max_params: 1000000\n  max_flops: 2500000")
                     .replace("kernels:\n    - [3, 3, 3]\n    - [7, 7, 3]\n", "kernels:\n    - [7, 7, 3]\n")
                     .replace("trials: 4", "trials: 3"))
    out = tmp_path / "run"
    res = run_cli("search", str(study), "--output", str(out), "--no-report",
                  env={"LKSCALE_CACHE": str(tmp_path / "cache")})
    rs = rows(str(out))
    assert len(rs) == 3, res.stderr[-2000:]
    over = [r for r in rs if int(r["flops"]) > 2_500_000]
    assert over, "the sampler never picked an over-budget point; pick another seed"
    for r in over:  # never trained: no epochs, no weights, recorded with its costs and the reason
        assert r["state"] == "infeasible" and r["epochs_done"] == "0" and "over budget: flops" in r["error"]
        assert not os.path.isfile(out / "weights" / f"{r['name']}.safetensors")
    for r in rs:
        assert (r["state"] == "infeasible") == (int(r["flops"]) > 2_500_000)


def test_impossible_budget_is_one_line_error(tmp_path):
    study = tmp_path / "impossible.yaml"
    text = open(os.path.join(REPO, "studies", "smoke.yaml")).read()
    study.write_text(text.replace("max_params: 1000000", "max_params: 1000"))
    res = run_cli("search", str(study), "--output", str(tmp_path / "run"))
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert "budgets.max_params" in last and "no feasible candidate" in last and "Traceback" not in res.stderr
    assert not os.path.isdir(tmp_path / "run" / "tune")  # nothing started


@pytest.mark.parametrize("args, needle", [
    (["studies/nope.yaml"], "no such file"),
    (["{bad}"], "search.sampler"),
    (["{nodata}"], "data"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    text = open(os.path.join(REPO, "studies", "smoke.yaml")).read()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("sampler: random", "sampler: bayes"))
    nodata = tmp_path / "nodata.yaml"
    nodata.write_text(text.replace("data:\n", f"data:\n  root: {tmp_path / 'missing.tar.gz'}\n"))
    args = [a.replace("{bad}", str(bad)).replace("{nodata}", str(nodata)) for a in args]
    res = run_cli("search", *args, "--output", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) <= 2 and needle in lines[-1] and "Traceback" not in res.stderr


def test_existing_run_needs_resume(smoke_run):
    res = run_cli("search", "studies/smoke.yaml", "--output", smoke_run)
    assert res.returncode == 2 and "--resume" in res.stderr


def test_resume_after_kill_keeps_finished_trials(tmp_path):
    out = str(tmp_path / "run")
    env = dict(os.environ, LKSCALE_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "lkscale", "search", "studies/smoke.yaml", "--output", out, "--trials", "5",
           "--no-report"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(1)
            if os.path.isfile(os.path.join(out, "trials.csv")) and any(
                    r["state"] in ("complete", "pruned") for r in rows(out)):
                break
        else:
            pytest.fail("no trial finished in 300 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, as a crash would
        proc.wait()
    before = {r["trial_id"]: r for r in rows(out) if r["state"] in ("complete", "pruned", "infeasible", "failed")}
    # weights of the trials recorded as finished (a trial killed between writing its weights and reporting
    # its last epoch is not finished: it is re-queued and may write its weights again)
    done = {f"{r['name']}.safetensors" for r in before.values() if r["state"] == "complete"}
    stamps = {f: os.path.getmtime(os.path.join(out, "weights", f)) for f in os.listdir(os.path.join(out, "weights"))
              if f in done} if os.path.isdir(os.path.join(out, "weights")) else {}
    res = run_cli("search", "studies/smoke.yaml", "--output", out, "--trials", "5", "--resume", "--no-report",
                  env={"LKSCALE_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming:" in res.stderr
    after = {r["trial_id"]: r for r in rows(out)}
    lat = ("latency_ms", "latency_low_ms", "latency_high_ms", "latency_source")  # measured again at the end
    for tid, r in before.items():  # nothing finished is lost or trained again
        assert {k: v for k, v in after[tid].items() if k not in lat} == {k: v for k, v in r.items() if k not in lat}
    for f, t in stamps.items():
        assert os.path.getmtime(os.path.join(out, "weights", f)) == t
    assert len(after) == 5 and all(r["state"] != "running" for r in after.values())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.load_study(study_name="smoke", storage=optuna_storage(out))
    finished = [t for t in st.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= len(after) - sum(r["state"] == "failed" for r in after.values())
    assert not [t for t in st.trials if t.state.name == "RUNNING"]
