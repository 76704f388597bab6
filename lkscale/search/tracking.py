"""Experiment tracking in MLflow (``tracking:`` in a study, ``lkscale search --mlflow URI``).

Through Ray Tune's own MLflow integration (``ray.air.integrations.mlflow.MLflowLoggerCallback``): one
MLflow run per Tune trial (a candidate's replicate) in the study's experiment, named ``trial N NAME``,
with the architecture and the proxy settings as parameters, ``val_acc``/``val_loss``/``train_loss``/
``epoch_seconds`` per epoch (step = epoch), the search-time latency, and the lkscale state as the tag
``lkscale.state`` (complete / pruned / infeasible / failed; Tune's end status as the MLflow status,
pruned as KILLED). After the search, each trial's final (re-measured) latency is logged as
``latency_ms_final``, and one more run (``search NAME``, tag ``lkscale.kind=search``) holds the run's
files as artifacts: study.yaml, trials.csv, summary.json and, once the CLI has written it, the report.
The trial -> MLflow run ids are kept in the run folder (``mlflow.json``).

MLflow is an optional extra (``pip install lkscale[mlflow]``): without it, asking for tracking fails
before anything starts (:func:`check_tracking`).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile

from ray.air.integrations.mlflow import MLflowLoggerCallback

from lkscale.config import TrackingConfig, to_dict
from lkscale.rundir import RunDir, read_trials
from lkscale.search.searcher import trial_state
from lkscale.study import Study, StudyError

try:  # the optional extra
    import mlflow
except ImportError:  # pragma: no cover - exercised by the "not installed" test through a stub
    mlflow = None

RECORD = "mlflow.json"
METRICS = ("epoch", "val_acc", "val_loss", "train_loss", "epoch_seconds", "images_per_s", "seconds", "latency_ms",
           "infeasible", "failed")
RUN_FILES = ("study.yaml", "trials.csv", "summary.json", "report.md", "report.html", "*.png", "*.html")
MLFLOW_STATUS = {"complete": "FINISHED", "infeasible": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


def check_tracking(cfg: TrackingConfig, name: str | None = None) -> None:
    """Tracking asked for but MLflow missing (or the store refused): one clear error, before anything starts.
    With ``name`` (the study's), the experiment is also opened or created."""
    if cfg.mlflow and mlflow is None:
        raise StudyError("tracking.mlflow", f"{cfg.mlflow}: MLflow is not installed; install the extra "
                                            f"(pip install 'lkscale[mlflow]') or drop --mlflow")
    if cfg.mlflow and name:
        ensure_experiment(cfg, name)


def artifact_root(uri: str) -> str | None:
    """Where a local database keeps the artifacts (beside it, not in the working directory); None: the
    tracking server's own setting."""
    if uri.startswith("sqlite:///"):
        return os.path.join(os.path.dirname(os.path.abspath(uri[len("sqlite:///"):])), "mlartifacts")
    return None


def ensure_experiment(cfg: TrackingConfig, name: str) -> str:
    """The experiment's id, created when new; a store MLflow refuses is one clear error, before the search."""
    exp_name = cfg.experiment or name
    try:
        client = mlflow.MlflowClient(tracking_uri=cfg.mlflow)
        exp = client.get_experiment_by_name(exp_name)
        if exp is not None:
            return exp.experiment_id
        root = artifact_root(cfg.mlflow)
        return client.create_experiment(exp_name, artifact_location=root and f"{root}/{exp_name}")
    except Exception as e:  # noqa: BLE001 - MlflowException, a bad URI, a server that does not answer
        raise StudyError("tracking.mlflow", f"{cfg.mlflow}: {str(e).split('. ')[0]}") from None


def _record(run_dir: str) -> dict:
    path = RunDir(run_dir).file(RECORD)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {"trials": {}}


def _save_record(run_dir: str, rec: dict) -> None:
    path = RunDir(run_dir).file(RECORD)
    with open(path + ".part", "w") as f:
        json.dump(rec, f, indent=1)
    os.replace(path + ".part", path)


def trial_params(config: dict) -> dict:
    """What a trial's MLflow parameters say: the architecture, its costs, the proxy and data settings."""
    spec = json.loads(config["spec"]) if config.get("spec") else {"stages": []}
    st = spec.get("stages", [])
    p = {"name": config.get("name", ""), "number": config.get("number"), "replicate": config.get("replicate", 0),
         "blocks": [s.get("block") for s in st], "kernels": [s.get("kernel") for s in st],
         "depths": [s.get("depth") for s in st], "widths": [s.get("width") for s in st],
         "stem_stride": (spec.get("stem") or {}).get("stride"), "infeasible": config.get("infeasible") or ""}
    for k in ("params", "deploy_params", "flops", "latency_ms", "latency_runtime", "latency_source", "latency_node"):
        if config.get(k) is not None:
            p[k] = config[k]
    for section in ("proxy", "data"):
        for k, v in (config.get(section) or {}).items():
            p[f"{section}.{k}"] = v
    return {k: (json.dumps(v) if isinstance(v, (list, dict, tuple)) else v) for k, v in p.items()}


class TrialTracker(MLflowLoggerCallback):
    """Ray Tune's MLflow logger with lkscale's parameters, metrics per epoch and trial states."""

    def __init__(self, cfg: TrackingConfig, study: Study, run_dir: str, states: dict | None = None):
        super().__init__(tracking_uri=cfg.mlflow, experiment_name=cfg.experiment or study.name,
                         tags={"lkscale.study": study.name, "lkscale.run_dir": run_dir})
        self.run_dir = run_dir
        self.states = states if states is not None else {}  # trial id -> trials.csv row (the Recorder's rows)

    def log_trial_start(self, trial) -> None:
        if trial in self._trial_runs:
            return
        cfg = trial.config
        tags = {**self.tags, "trial_name": str(trial), "lkscale.trial_id": trial.trial_id,
                "lkscale.name": cfg.get("name", ""), "lkscale.kind": "trial"}
        run = self.mlflow_util.start_run(tags=tags, run_name=f"trial {cfg.get('number')} {cfg.get('name', '')}".strip())
        run_id = self._trial_runs[trial] = run.info.run_id
        self.mlflow_util.log_params(run_id=run_id, params_to_log=trial_params(cfg))
        rec = _record(self.run_dir)
        rec.update(uri=self.tracking_uri, experiment_id=self.mlflow_util.experiment_id)
        rec["trials"][trial.trial_id] = run_id
        _save_record(self.run_dir, rec)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        metrics = {k: result[k] for k in METRICS if result.get(k) is not None}
        step = int(result.get("epoch") or 0) or int(result.get("training_iteration") or 0)
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=metrics, step=step)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial not in self._trial_runs:
            return
        run_id = self._trial_runs[trial]
        row = self.states.get(trial.trial_id) or {}
        state = "failed" if failed else (row.get("state") if row.get("state") not in (None, "", "running")
                                         else trial_state(dict(trial.last_result or {})))
        self.mlflow_util._get_client().set_tag(run_id, "lkscale.state", state)
        self.mlflow_util.end_run(run_id=run_id, status=MLFLOW_STATUS.get(state, "FINISHED"))


def callbacks(study: Study, run_dir: str, states: dict) -> list:
    """The Tune callbacks that track this search (none when tracking is off)."""
    return [TrialTracker(study.tracking, study, run_dir, states)] if study.tracking.mlflow else []


def log_run(study: Study, run_dir: str) -> str | None:
    """After the search (and again after the report): final latencies and states on every trial's run, and
    the run folder's files as artifacts of the search's own run; returns that run's id."""
    cfg = study.tracking
    if not cfg.mlflow:
        return None
    check_tracking(cfg)
    client = mlflow.MlflowClient(tracking_uri=cfg.mlflow)
    exp_id = ensure_experiment(cfg, study.name)
    rec = _record(run_dir)
    for t in read_trials(run_dir):
        run_id = rec["trials"].get(str(t.row.get("trial_id")))
        if not run_id:
            continue
        if t.row.get("latency_ms") is not None:
            client.log_metric(run_id, "latency_ms_final", float(t.row["latency_ms"]))
        client.set_tag(run_id, "lkscale.state", t.row.get("state") or "")
        client.set_tag(run_id, "lkscale.latency_source", t.row.get("latency_source") or "")
    run_id = rec.get("search_run")
    if not run_id:
        run = client.create_run(exp_id, run_name=f"search {study.name}",
                                tags={"lkscale.kind": "search", "lkscale.study": study.name,
                                      "lkscale.run_dir": run_dir})
        run_id = rec["search_run"] = run.info.run_id
        for section in ("search", "proxy", "budgets"):
            for k, v in _flat(to_dict(getattr(study, section) if section != "proxy" else study.proxy)).items():
                client.log_param(run_id, f"{section}.{k}", v)
        rec.update(uri=cfg.mlflow, experiment_id=exp_id)
        _save_record(run_dir, rec)
    summary = os.path.join(run_dir, "summary.json")
    if os.path.isfile(summary):
        with open(summary) as f:
            s = json.load(f)
        for k, v in (s.get("counts") or {}).items():
            client.log_metric(run_id, f"trials_{k}", float(v))
    files = sorted({p for pat in RUN_FILES for p in glob.glob(os.path.join(run_dir, pat)) if os.path.isfile(p)})
    with tempfile.TemporaryDirectory() as tmp:  # one log_artifacts call: the files as they are now
        for p in files:
            shutil.copyfile(p, os.path.join(tmp, os.path.basename(p)))
        client.log_artifacts(run_id, tmp)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out

