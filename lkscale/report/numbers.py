"""Reference points and the fronts/hypervolumes of a run (numbers only)."""
from __future__ import annotations

import json
import math
import os

from lkscale.pareto import hypervolume_2d
from lkscale.report.labels import OBJECTIVES
from lkscale.rundir import Run, front_of, trial_record

FIXED_NOTE = "fixed at the first report"


def nice_ceil(x: float) -> float:
    """Smallest value of the 1-2-5 series >= x."""
    if x <= 0:
        return 1.0
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        v = m * 10 ** e
        if v >= x * (1 - 1e-12):
            return float(v)
    return float(10 ** (e + 1))


def stored_references(summary: dict) -> dict:
    """Reference points a previous report stored (``summary["report"]["reference_point"]``; older runs kept
    them at the top level as ``reference_point``)."""
    stored = (summary.get("report") or {}).get("reference_point")
    return dict(stored or summary.get("reference_point") or {})


def reference_point(run: Run, objective: str, override: dict | None = None) -> dict:
    """Reference point of the accuracy/``objective`` hypervolume: ``{"val_acc": 0, col: value, "source": ...}``."""
    col, _, _, budget_key = OBJECTIVES[objective]
    if override and override.get(col) is not None:
        return {"val_acc": 0.0, col: float(override[col]), "source": "given explicitly"}
    budget = run.budgets.get(budget_key)
    if budget:
        return {"val_acc": 0.0, col: float(budget), "source": f"budgets.{budget_key}"}
    stored = stored_references(run.summary).get(objective)
    if stored and stored.get(col) is not None:
        return {"val_acc": 0.0, col: float(stored[col]), "source": stored.get("source", "summary.json")}
    measured = [t.get(col) for t in run.trials if t.get(col) is not None]
    if not measured:
        return {"val_acc": 0.0, col: 1.0, "source": "placeholder: nothing measured yet (not stored)"}
    value = nice_ceil(1.5 * max(measured))
    return {"val_acc": 0.0, col: value,
            "source": f"{FIXED_NOTE} of this run (no budgets.{budget_key}): 1.5x the largest "
                      f"measured value, rounded up; stored in summary.json"}


def front_result(run: Run, objective: str, reference: dict | None = None) -> tuple[dict, list]:
    """(JSON-ready front entry with reference and hypervolume, the front's Trials) for one objective.

    ``run.trials`` are candidates (``lkscale.rundir.candidates``: one per architecture, mean accuracy over
    its replicates): the front is computed on means. Members of the latency front carry their racing
    ``status`` from summary.json (None when the search recorded none)."""
    col = OBJECTIVES[objective][0]
    ref = reference_point(run, objective, reference)
    front = front_of(run.trials, col)
    pts = [(t.val_acc, t.row[col]) for t in front]
    hv = hypervolume_2d(pts, (ref["val_acc"], ref[col]), ("max", "min")) if pts else 0.0
    entry = {"objectives": ["val_acc", col], "senses": ["max", "min"], "reference": ref, "hypervolume": hv,
             "hypervolume_normalized": hv / (1.0 * ref[col]) if ref[col] else 0.0,
             "front": [{**trial_record(t), "status": status_of(run, t.name) if objective == "latency" else None}
                       for t in front]}
    return entry, front


def status_of(run: Run, name: str) -> str | None:
    """Racing status (confirmed / tied / dominated) summary.json gives ``name``; None when there is none."""
    return (run.summary.get("status") or {}).get(name)


def confirmed_and_tied(run: Run, front_names: list[str]) -> tuple[list[str], list[str], bool]:
    """(confirmed, tied within noise, known?): from summary.json's racing statuses, in front order, the
    tied ones also off the front of means (a candidate tied with the front may sit just below it)."""
    status = run.summary.get("status") or {}
    if not status:
        return [], [], False
    confirmed = [n for n in front_names if status.get(n) == "confirmed"]
    confirmed += sorted(n for n in run.summary.get("confirmed") or [] if n not in confirmed)
    tied = [n for n in front_names if status.get(n) == "tied"]
    tied += sorted(n for n in run.summary.get("tied") or [] if n not in tied)
    return confirmed, tied, True


def _table_error(path: str | None, run_path: str) -> float | None:
    """The held-out MAPE (%) a predictor table records (``error_pct``); None when it cannot be read."""
    for p in ([path, os.path.join(run_path, path)] if path else []):
        try:
            with open(p, encoding="utf-8") as f:
                v = json.load(f).get("error_pct")
            return None if v is None else float(v)
        except (OSError, ValueError, AttributeError):
            continue
    return None


def latency_setting(run: Run) -> dict:
    """What latency means in this run: runtime, batch, threads, input size, source (and MAPE when predicted),
    from summary.json ``latency`` (written by the search), else study.yaml ``budgets.latency`` (or the old
    flat ``latency_*`` keys). Keys absent everywhere are None."""
    b = run.budgets
    cfg = dict(run.summary.get("latency") or b.get("latency") or {})
    for old, new in (("latency_batch_size", "batch_size"), ("latency_threads", "threads"),
                     ("latency_input_size", "input_size")):
        if cfg.get(new) is None and b.get(old) is not None:
            cfg[new] = b[old]
    if cfg.get("input_size") is None:
        cfg["input_size"] = (run.study.get("data") or {}).get("input_size")
    sources = sorted({str(t.get("latency_source")) for t in run.trials if t.get("latency_source")})
    runtimes = sorted({str(t.get("latency_runtime")) for t in run.trials if t.get("latency_runtime")})
    out = {k: cfg.get(k) for k in ("runtime", "batch_size", "threads", "input_size", "source", "table")}
    out["runtime"] = out["runtime"] or (runtimes[0] if len(runtimes) == 1 else None)
    out["final"] = cfg.get("final")
    out["sources_in_trials"] = sources
    out["runtimes_in_trials"] = runtimes
    out["mape_pct"] = _table_error(out["table"], run.path) if out["source"] == "predicted" else None
    return out
