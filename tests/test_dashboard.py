"""A finished run opens in optuna-dashboard: the server is started on the run's ``optuna.journal`` and the
study and its trials are read back through its HTTP API, against ``trials.csv``."""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("optuna_dashboard")

# lkscale's trial states as Optuna records them (infeasible: told COMPLETE with accuracy 0, so the sampler
# learns that region is useless; failed: FAIL; pruned: PRUNED)
OPTUNA_STATE = {"complete": "Complete", "infeasible": "Complete", "pruned": "Pruned", "failed": "Fail"}
START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def _dashboard_command(journal: str, port: int) -> list[str]:
    exe = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)) or shutil.which("optuna-dashboard")
    base = [exe] if exe else [sys.executable, "-m", "optuna_dashboard"]
    return base + [journal, "--port", str(port), "--host", "127.0.0.1", "--server", "wsgiref"]


@pytest.fixture
def dashboard(smoke_run, tmp_path):
    """optuna-dashboard serving the smoke run's journal on 127.0.0.1; stopped (and killed if need be) after."""
    journal = os.path.join(smoke_run, "optuna.journal")
    assert os.path.isfile(journal), os.listdir(smoke_run)
    port = _free_port()
    log = open(tmp_path / "dashboard.log", "w+")
    proc = subprocess.Popen(_dashboard_command(journal, port), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                _get(f"{base}/api/meta")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"optuna-dashboard did not answer within {START_TIMEOUT_S}s "
                                f"(exit {proc.poll()}): {log.read()[-2000:]}")
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.mark.slow  # the smoke search (once per session) behind smoke_run
def test_dashboard_reads_study_and_trials(dashboard, smoke_run):
    with open(os.path.join(smoke_run, "trials.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(smoke_run, "study.yaml"), encoding="utf-8") as f:
        study_name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("name:"))
    summaries = _get(f"{dashboard}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [study_name]
    assert summaries[0]["directions"] == ["maximize", "minimize"]  # accuracy up, latency down
    study = _get(f"{dashboard}/api/studies/{summaries[0]['study_id']}")
    trials = [t for t in study["trials"] if not any(a["key"] == "duplicate_of" for a in t["user_attrs"])]
    by_name = {next(a["value"] for a in t["user_attrs"] if a["key"] == "name"): t for t in trials}
    assert len(trials) == len(by_name) == len({r["name"] for r in rows}) and rows
    for r in rows:
        t = by_name[r["name"]]
        assert t["state"] == OPTUNA_STATE[r["state"]], (r["name"], r["state"], t["state"])
        if r["state"] == "complete":
            assert t["values"][0] == pytest.approx(float(r["val_acc"]), abs=1e-9)
    best = {next(a["value"] for a in t["user_attrs"] if a["key"] == "name") for t in study["best_trials"]}
    assert best and best <= {r["name"] for r in rows if r["state"] in ("complete", "infeasible")}
