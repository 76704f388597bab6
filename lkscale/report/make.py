"""``make_report(run_dir)``: read a run folder, write report.md, PNG figures and report.html into it."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable

from lkscale.report.figures import pareto_figure, scaling_figure
from lkscale.report.html import html_report
from lkscale.report.labels import OBJECTIVES
from lkscale.report.markdown import markdown
from lkscale.report.numbers import FIXED_NOTE, front_result, stored_references
from lkscale.report.scaling import kernel_scalings
from lkscale.rundir import Run, RunDir, atomic_write, epochs_saved, load_run, update_summary

log = logging.getLogger(__name__)
SUMMARY_KEY = "report"  # everything the report adds to summary.json lives under this one key


def _figures(run: Run, result: dict, fronts: dict, scalings: list[dict], say: Callable[[str], None]) -> dict:
    d, paths = RunDir(run.path), {}
    for key in OBJECTIVES:
        fr = result["fronts"][key]
        paths[key] = d.pareto_png(key)
        say(f"writing {paths[key]}")
        pareto_figure(run, key, fronts[key], fr["reference"], fr["hypervolume"], paths[key])
    for n, scaling in enumerate(scalings):
        family = "_".join(sorted(set(scaling["base"]["blocks"] or [])))
        paths[f"scaling{n}"] = d.scaling_png(n, family)
        say(f"writing {paths[f'scaling{n}']}")
        scaling_figure(run, scaling, paths[f"scaling{n}"])
    return paths


def write_html(run: Run, result: dict, fronts: dict, scalings: list[dict], path: str) -> None:
    from lkscale.report.interactive import plotly_pareto, plotly_scaling

    pareto = {k: plotly_pareto(run, k, fronts[k], result["fronts"][k]["reference"]) for k in OBJECTIVES}
    atomic_write(path, html_report(run, result, fronts, scalings, pareto, [plotly_scaling(run, s) for s in scalings]))


def _update_summary(run: Run, result: dict, refs: dict) -> None:
    """Add the report's numbers to summary.json under ``"report"`` only; what search wrote is kept as is."""
    update_summary(run.path, {SUMMARY_KEY: {
        "fronts": {k: {"names": [r["name"] for r in v["front"]], "hypervolume": v["hypervolume"],
                       "hypervolume_normalized": v["hypervolume_normalized"], "reference": v["reference"]}
                   for k, v in result["fronts"].items()},
        "trial_epochs_saved": result["trial_epochs_saved"],
        "reference_point": refs,
        "files": result["files"],
    }})


def make_report(run_dir: str, reference: dict | None = None, figures: bool = True, html_report: bool = True,
                progress: Callable[[str], None] | None = None) -> dict:
    """Write ``report.md`` (+ PNG figures and ``report.html``) into ``run_dir``; return the summary as a dict.

    ``reference`` may give ``{"latency_ms": ..., "flops": ...}`` to override the reference point (else the
    study's budgets, else the value stored in ``summary.json``, else fixed now and stored there).
    """
    say = progress or (lambda m: log.info(m))
    run = load_run(run_dir)
    say(f"report for {run.name}: {len(run.trials)} trials in {run.path}")
    result: dict[str, Any] = {
        "study": run.name, "run_dir": run.path, "trials": len(run.trials),
        "counts": dict(Counter(t.state for t in run.trials)), "trial_epochs_saved": epochs_saved(run),
        "trial_epochs_saved_summary": run.summary.get("trial_epochs_saved"),
        "trial_epochs_budget": run.summary.get("trial_epochs_budget"), "fronts": {},
    }
    refs, fronts = stored_references(run.summary), {}
    for key, (col, _xl, _u, _b) in OBJECTIVES.items():
        result["fronts"][key], fronts[key] = front_result(run, key, reference)
        ref = result["fronts"][key]["reference"]
        if ref["source"].startswith(FIXED_NOTE):
            refs[key] = {col: ref[col], "source": ref["source"]}
    scalings = kernel_scalings(run)
    result["kernel_scaling"] = scalings[0] if scalings else None
    result["kernel_scalings"] = scalings
    d = RunDir(run.path)
    paths = _figures(run, result, fronts, scalings, say) if figures else {}
    if figures and html_report:
        say(f"writing {d.report_html}")
        write_html(run, result, fronts, scalings, d.report_html)
    atomic_write(d.report_md, markdown(run, result, fronts, scalings, paths))
    result["files"] = {"report": d.report_md, **paths, **({"html": d.report_html} if figures and html_report else {})}
    _update_summary(run, result, refs)
    say(f"wrote {d.report_md}")
    return result
