"""Experiment tracking in MLflow through Ray Tune's MLflow integration: a real search (fixed learning curves,
tests/curves.py) tracked in a real local MLflow store (SQLite in tmp_path), read back with MLflow's own
client; and the clear error when MLflow is not installed."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from curves import curve
from lkscale.rundir import read_trials

CURVES = os.path.join(REPO, "tests", "curves.py")
mlflow = pytest.importorskip("mlflow")


def study_file(tmp_path, **tracking):
    raw = {"name": "tracked",
           "space": {"stem_stride": 2, "block": "replk", "kernels": [[3, 3, 3], [7, 7, 3], [13, 7, 3]],
                     "stages": [{"depth": 1, "width": 16}, {"depth": 1, "width": 16}, {"depth": 1, "width": 16}]},
           "data": {"dataset": "synthetic", "train_per_class": 4, "val_per_class": 2}, "proxy": {"epochs": 2},
           "budgets": {"latency": {"runtime": "torch", "rounds": 2, "repeats": 2}},
           "search": {"sampler": "grid", "trials": 3, "concurrency": 1, "pruning": {"scheduler": "none"}}}
    if tracking:
        raw["tracking"] = tracking
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.slow
def test_every_trial_and_the_run_files_are_in_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, CURVES, study_file(tmp_path, mlflow=uri, experiment="exp1"), str(out),
                          "--tensorboard"], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_trials(str(out))
    assert len(rows) == 3 and {t.state for t in rows} == {"complete"}
    # the report's files reach the search's own run when the CLI has written them (as `lkscale search` does)
    (out / "report.md").write_text("# report\n")
    from lkscale.search.tracking import log_run
    from lkscale.study import load_study

    search_run = log_run(load_study(str(tmp_path / "run" / "study.yaml")), str(out))

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("exp1")
    assert exp.artifact_location.startswith(str(tmp_path))  # beside the database, not in the working directory
    runs = client.search_runs([exp.experiment_id])
    trial_runs = {r.data.tags["lkscale.trial_id"]: r for r in runs if r.data.tags.get("lkscale.kind") == "trial"}
    assert set(trial_runs) == {t.row["trial_id"] for t in rows}
    rec = json.load(open(out / "mlflow.json"))
    for t in rows:
        r = trial_runs[t.row["trial_id"]]
        assert rec["trials"][t.row["trial_id"]] == r.info.run_id
        assert r.info.status == "FINISHED" and r.data.tags["lkscale.state"] == "complete"
        assert r.info.run_name == f"trial {t.number} {t.name}"
        p = r.data.params
        assert p["name"] == t.name and json.loads(p["kernels"]) == t.kernels and p["proxy.epochs"] == "2"
        assert float(p["latency_ms"]) == pytest.approx(t.latency_search_ms)
        hist = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "val_acc"))
        assert hist == [(e + 1, pytest.approx(a)) for e, a in enumerate(curve(t.kernels, 2))]  # per epoch
        assert r.data.metrics["latency_ms_final"] == pytest.approx(t.latency_ms)  # re-measured after training
        assert r.data.tags["lkscale.latency_source"] == "measured-final"
    search = client.get_run(search_run)
    assert search.data.tags["lkscale.kind"] == "search" and search.data.params["search.sampler"] == "grid"
    assert search.info.status == "FINISHED"
    assert search.data.metrics["trials_complete"] == 3
    names = {a.path for a in client.list_artifacts(search_run)}
    assert {"study.yaml", "trials.csv", "summary.json", "report.md"} <= names, names
    got = mlflow.artifacts.download_artifacts(run_id=search_run, artifact_path="trials.csv",
                                              dst_path=str(tmp_path / "dl"), tracking_uri=uri)
    assert open(got).read() == open(out / "trials.csv").read()
    assert len([r for r in runs if r.data.tags.get("lkscale.kind") == "search"]) == 1  # logged again, same run
    events = [f for _, _, fs in os.walk(out / "tune") for f in fs if f.startswith("events.out.tfevents")]
    assert len(events) == 3  # --tensorboard keeps working beside MLflow


def test_mlflow_not_installed_is_one_clear_error_before_anything_starts(tmp_path):
    stub = tmp_path / "stub" / "mlflow"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named mlflow (test stub)')\n")
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "lkscale", "search", study_file(tmp_path), "--output", str(out),
                          "--mlflow", f"sqlite:///{tmp_path / 'm.db'}"], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=str(tmp_path / "stub")))
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "MLflow is not installed" in lines[0] and "lkscale[mlflow]" in lines[0], lines
    assert not out.exists() and not (tmp_path / "m.db").exists()  # nothing started


def test_a_store_mlflow_refuses_is_a_clear_error(tmp_path, monkeypatch):
    from lkscale.config import TrackingConfig
    from lkscale.search.tracking import check_tracking
    from lkscale.study import StudyError

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(StudyError, match=r"^tracking.mlflow: file:"):
        check_tracking(TrackingConfig(mlflow=f"file:{tmp_path / 'mlruns'}"), "s")
