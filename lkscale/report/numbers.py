"""Reference points and the fronts/hypervolumes of a run (numbers only)."""
from __future__ import annotations

import math

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
    """(JSON-ready front entry with reference and hypervolume, the front's Trials) for one objective."""
    col = OBJECTIVES[objective][0]
    ref = reference_point(run, objective, reference)
    front = front_of(run.trials, col)
    pts = [(t.val_acc, t.row[col]) for t in front]
    hv = hypervolume_2d(pts, (ref["val_acc"], ref[col]), ("max", "min")) if pts else 0.0
    entry = {"objectives": ["val_acc", col], "senses": ["max", "min"], "reference": ref, "hypervolume": hv,
             "hypervolume_normalized": hv / (1.0 * ref[col]) if ref[col] else 0.0,
             "front": [trial_record(t) for t in front]}
    return entry, front
