"""The run folder of a search: the only code that knows its file names, ``summary.json`` and the Pareto
front of a run. The files' schemas (``trials.csv``, ``fidelity.csv``), reading them with damaged rows
reported, and atomic writes are :mod:`lkscale.records`' (path-based; every public name re-exported here).

A run folder (written by ``lkscale.search``, read by report, export and the CLI)::

    study.yaml        the resolved study
    optuna.journal    Optuna JournalStorage (optuna-dashboard opens it)
    tune*/            Ray Tune experiments (the first run and each resume)
    trials.csv        one row per trial (columns: ``CSV_COLUMNS``)
    costs.json        cost cache, keyed by spec name
    weights/          ``<name>.safetensors``
    summary.json      counts, front, reference points; the report's numbers under ``"report"``
    report.md, report.html, pareto_*.png, kernel_scaling*.png

Only complete trials (trained for the full proxy budget) can be on a front: pruned trials have a
partial accuracy, infeasible ones were never trained, failed ones have none.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

import yaml

from lkscale.pareto import pareto_front
from lkscale.intervals import accuracy_interval
from lkscale.records import (CSV_COLUMNS, FIDELITY_COLUMNS, STATES, Damage, RunDirError, Trial, atomic_write,
                             keep_damaged, parse_value, read_fidelity_csv, read_json, read_trials_csv,
                             write_fidelity_csv, write_trials_csv)
from lkscale.study import Study, StudyError, parse_study

log = logging.getLogger("lkscale.rundir")

STUDY_YAML = "study.yaml"
TRIALS_CSV = "trials.csv"
SUMMARY_JSON = "summary.json"
COSTS_JSON = "costs.json"
OPTUNA_JOURNAL = "optuna.journal"
WEIGHTS_DIR = "weights"
TUNE_DIR = "tune"                   # a search's first Tune experiment
TUNE_RESUME = "tune_resume{k}"      # its k-th resume (k = 1, 2, ...)
FIDELITY_TUNE = "tune_{k}"          # the k-th ``lkscale fidelity`` retrain, under FIDELITY_DIR
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PARETO_PNG = "pareto_{objective}.png"
SCALING_PNG = "kernel_scaling.png"
SCALING_PNG_N = "kernel_scaling_{n}_{family}.png"
FIDELITY_DIR = "fidelity"            # high-fidelity retrains (their Tune folders and weights), never the proxy's
FIDELITY_CSV = "fidelity.csv"
FIDELITY_PNG = "fidelity.png"


@dataclass(frozen=True)
class RunDir:
    """Paths of the files of one run folder."""
    path: str

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def study_yaml(self) -> str:
        return self.file(STUDY_YAML)

    @property
    def trials_csv(self) -> str:
        return self.file(TRIALS_CSV)

    @property
    def summary_json(self) -> str:
        return self.file(SUMMARY_JSON)

    @property
    def costs_json(self) -> str:
        return self.file(COSTS_JSON)

    @property
    def optuna_journal(self) -> str:
        return self.file(OPTUNA_JOURNAL)

    @property
    def weights_dir(self) -> str:
        return self.file(WEIGHTS_DIR)

    def weights(self, name: str) -> str:
        return os.path.join(self.weights_dir, f"{name}.safetensors")

    @property
    def report_md(self) -> str:
        return self.file(REPORT_MD)

    @property
    def report_html(self) -> str:
        return self.file(REPORT_HTML)

    def pareto_png(self, objective: str) -> str:
        return self.file(PARETO_PNG.format(objective=objective))

    def scaling_png(self, n: int = 0, family: str = "") -> str:
        return self.file(SCALING_PNG if n == 0 else SCALING_PNG_N.format(n=n + 1, family=family))

    @property
    def fidelity_dir(self) -> str:
        return self.file(FIDELITY_DIR)

    @property
    def fidelity_csv(self) -> str:
        return self.file(FIDELITY_CSV)

    @property
    def fidelity_png(self) -> str:
        return self.file(FIDELITY_PNG)


@dataclass
class Run:
    path: str
    study: dict
    summary: dict
    trials: list[Trial] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)  # rows and files left out because they are damaged

    @property
    def dir(self) -> RunDir:
        return RunDir(self.path)

    @property
    def name(self) -> str:
        return str(self.study.get("name") or self.summary.get("study") or os.path.basename(self.path))

    @property
    def budgets(self) -> dict:
        return dict(self.study.get("budgets") or {})

    def by_state(self, *states: str) -> list[Trial]:
        return [t for t in self.trials if t.state in states]

    def study_config(self) -> Study:
        """The run's study, typed: every default filled in and older records' flat ``budgets.latency_*`` keys
        read into ``budgets.latency`` (``lkscale.study.parse_study``); its space is None where this version
        cannot parse it. A study.yaml whose settings do not validate: RunDirError."""
        try:
            return parse_study(self.study, source=self.dir.study_yaml, record=True)
        except StudyError as e:
            raise RunDirError(f"{self.dir.study_yaml}: {e}") from None


# ----------------------------------------------------------------------------------------- reading


def read_summary(run_dir: str, damaged: list[Damage] | None = None, strict: bool = True) -> dict:
    """``summary.json`` of a run ({} when there is none yet). Not valid JSON: RunDirError naming the file and
    the position when ``strict``, else {} with the damage added to ``damaged``."""
    return read_json(RunDir(run_dir).summary_json, damaged, strict)


def _read_study(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            study = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise RunDirError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(study, dict):
        raise RunDirError(f"{path}: expected a mapping")
    return study


def load_run(run_dir: str) -> Run:
    """Read a run folder; RunDirError (one line) if it is missing or not a run folder."""
    if not run_dir or not os.path.exists(run_dir):
        raise RunDirError(f"{run_dir}: no such folder")
    if not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir}: not a folder (give the run folder written by `lkscale search`)")
    d = RunDir(run_dir)
    if not os.path.isfile(d.trials_csv) and not os.path.isfile(d.study_yaml):
        raise RunDirError(f"{run_dir}: not a search run folder (no {TRIALS_CSV} or {STUDY_YAML}; "
                          f"give the folder written by `lkscale search`)")
    study = _read_study(d.study_yaml)
    damaged: list[Damage] = []
    summary = read_summary(run_dir, damaged, strict=False)
    trials = read_trials_csv(d.trials_csv, damaged) if os.path.isfile(d.trials_csv) else []
    return Run(path=os.path.abspath(run_dir), study=study, summary=summary, trials=trials, damaged=damaged)


def record_damage(run_dir: str) -> list[Damage]:
    """Every damaged row or file of the record (trials.csv, costs.json, summary.json, fidelity.csv); []
    when all of it reads. Reads only."""
    damaged: list[Damage] = []
    d = RunDir(run_dir)
    if os.path.isfile(d.trials_csv):
        try:
            read_trials_csv(d.trials_csv, damaged)
        except RunDirError as e:
            damaged.append(Damage(d.trials_csv, "the header", str(e).split(": ", 1)[-1]))
    read_costs(run_dir, damaged, strict=False)
    read_summary(run_dir, damaged, strict=False)
    if os.path.isfile(d.fidelity_csv):
        try:
            read_fidelity(run_dir, damaged)
        except RunDirError as e:
            damaged.append(Damage(d.fidelity_csv, "the header", str(e).split(": ", 1)[-1]))
    return damaged


# ----------------------------------------------------------------------------------------- writing


def write_trials(run_dir: str, rows: list[dict]) -> None:
    """Write ``trials.csv`` (the one writer): rows sorted by Optuna trial number, then replicate."""
    write_trials_csv(RunDir(run_dir).trials_csv, rows)


def read_trials(run_dir: str, damaged: list[Damage] | None = None, strict: bool = False) -> list[Trial]:
    """The trials of a run folder ([] before the first trial is recorded); damaged rows as ``read_trials_csv``."""
    path = RunDir(run_dir).trials_csv
    return read_trials_csv(path, damaged, strict) if os.path.isfile(path) else []


def update_summary(run_dir: str, patch: dict) -> dict:
    """Merge ``patch`` into ``summary.json`` (the one writer; each producer owns its keys) and return it.
    A damaged ``summary.json`` is copied aside (``keep_damaged``) and replaced, never silently merged over."""
    damaged: list[Damage] = []
    old = read_summary(run_dir, damaged, strict=False)
    if damaged:
        log.warning("%s kept as %s", damaged[0].file, keep_damaged(damaged[0].file))
    summary = {**old, **patch}
    atomic_write(RunDir(run_dir).summary_json, json.dumps(summary, indent=2))
    return summary


def write_study(run_dir: str, text: str) -> None:
    atomic_write(RunDir(run_dir).study_yaml, text)


def read_costs(run_dir: str, damaged: list[Damage] | None = None, strict: bool = True) -> dict:
    """``costs.json`` ({} when there is none); not valid JSON: as ``read_summary``."""
    return read_json(RunDir(run_dir).costs_json, damaged, strict)


def write_costs(run_dir: str, costs: dict) -> None:
    atomic_write(RunDir(run_dir).costs_json, json.dumps(costs, indent=1))


def read_fidelity(run_dir: str, damaged: list[Damage] | None = None, strict: bool = False) -> list[dict]:
    """Rows of ``fidelity.csv`` (one per retrained candidate; [] when there is none); damaged rows as
    ``read_trials_csv``."""
    path = RunDir(run_dir).fidelity_csv
    return read_fidelity_csv(path, damaged, strict) if os.path.isfile(path) else []


def write_fidelity(run_dir: str, rows: list[dict]) -> None:
    """Write ``fidelity.csv`` (the one writer; rows in the order given)."""
    write_fidelity_csv(RunDir(run_dir).fidelity_csv, rows)


# ----------------------------------------------------------------------------------------- numbers
def candidates(trials: list[Trial], confidence: float = 0.95, role: str = "candidate") -> list[Trial]:
    """One row per architecture: accuracy = mean over its complete replicates (common random numbers:
    replicate r used the same data subset, batch order and init seed for every candidate), with a
    ``confidence`` interval over replicates (``val_acc_low``/``val_acc_high``; with one replicate the
    validation set's Wilson interval). ``replicates`` maps replicate index -> accuracy. A candidate is
    ``complete`` when at least one replicate is; otherwise it keeps the state of its first replicate.
    ``role``: the rows of that role only (``baseline``: the study's reference networks, never candidates)."""
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        if t.get("name") and (t.get("role") or "candidate") == role:
            groups.setdefault(t.name, []).append(t)
    out = []
    for name, ts in groups.items():
        ts = sorted(ts, key=lambda t: (t.get("replicate", 0), t.get("number", 0)))
        done = [t for t in ts if t.state == "complete" and t.get("val_acc") is not None]
        base = dict((done or ts)[0].row)
        if done:
            reps = {int(t.get("replicate", 0)): float(t.val_acc) for t in done}
            iv = accuracy_interval(reps, n_val=done[0].get("val_n"), confidence=confidence)
            base.update(val_acc=iv.estimate, val_acc_low=iv.low, val_acc_high=iv.high, n_replicates=len(reps),
                        replicates=reps, interval_method=iv.method,
                        seconds=sum(float(t.get("seconds") or 0) for t in ts))
        else:
            base.update(n_replicates=0, replicates={})
        out.append(Trial(base))
    return sorted(out, key=lambda t: t.get("number", 0))


def front_of(trials: list[Trial], col: str) -> list[Trial]:
    """Complete trials on the (val_acc max, ``col`` min) front, sorted by ``col``; never other states, never
    a baseline (``role: baseline``)."""
    pool = [t for t in trials if t.state == "complete" and t.get("val_acc") is not None and t.get(col) is not None
            and t.get("role") != "baseline"]
    idx = pareto_front([(t.val_acc, t.row[col]) for t in pool], ("max", "min"))
    front, seen = [], set()
    for t in sorted((pool[i] for i in idx), key=lambda t: (t.row[col], -t.val_acc, t.get("number", 0))):
        if t.name not in seen:  # the same architecture sampled twice is listed once
            seen.add(t.name)
            front.append(t)
    return front


def epochs_saved(run: Run) -> int:
    """Trial-epochs saved by pruning: sum over pruned trials of (epoch budget - epochs trained)."""
    total = 0
    for t in run.by_state("pruned"):
        budget = t.get("epochs_budget")
        if budget is None:
            budget = (run.study.get("proxy") or {}).get("epochs", 0)
        total += max(0, int(budget) - int(t.get("epochs_done", 0)))
    return total


def trial_record(t: Trial) -> dict:
    """The architecture, costs and result of one trial, as JSON-ready dict (fronts in summaries)."""
    keys = ("name", "trial_id", "number", "state", "blocks", "kernels", "depths", "widths", "dcn_groups", "reparam",
            "stem_stride", "params", "deploy_params", "flops", "latency_ms", "latency_low_ms", "latency_high_ms",
            "val_acc", "val_acc_low", "val_acc_high", "n_replicates", "epochs_done", "seed")
    return {k: t.row.get(k) for k in keys}


def _first_free(root: str, pattern: str) -> str:
    k = 1
    while os.path.isdir(os.path.join(root, pattern.format(k=k))):
        k += 1
    return pattern.format(k=k)


def tune_experiment(tune_root: str, resume: bool = False, remote: bool = False) -> str:
    """The Tune experiment a search run writes under ``tune_root``: ``tune`` first, then the first
    ``tune_resume{k}`` not there yet; on remote storage (which cannot be listed here) ``tune_resume-<UTC time>``."""
    if not resume:
        return TUNE_DIR
    if remote:
        return "tune_resume-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return _first_free(tune_root, TUNE_RESUME)


def fidelity_experiment(fidelity_dir: str) -> str:
    """The Tune experiment of the next ``lkscale fidelity`` retrain: the first ``tune_{k}`` not under
    ``fidelity_dir`` yet."""
    return _first_free(fidelity_dir, FIDELITY_TUNE)


__all__ = ["STUDY_YAML", "TRIALS_CSV", "SUMMARY_JSON", "COSTS_JSON", "OPTUNA_JOURNAL", "WEIGHTS_DIR", "TUNE_DIR",
           "REPORT_MD", "REPORT_HTML", "STATES", "CSV_COLUMNS", "RunDirError", "RunDir", "Run", "Trial", "atomic_write",
           "parse_value", "read_trials_csv", "read_summary", "load_run", "front_of", "epochs_saved", "trial_record",
           "write_trials", "read_trials", "update_summary", "write_study", "read_costs", "write_costs", "candidates",
           "FIDELITY_DIR", "FIDELITY_CSV", "FIDELITY_PNG", "FIDELITY_COLUMNS", "read_fidelity", "write_fidelity",
           "Damage", "record_damage", "keep_damaged", "TUNE_RESUME", "FIDELITY_TUNE", "tune_experiment",
           "fidelity_experiment"]
