"""``make_report(run_dir)``: read a run folder, write report.md, PNG figures and report.html into it."""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from typing import Any, Callable

from lkscale.fidelity.figure import markdown_section
from lkscale.report.baselines import markdown_lines as baseline_section
from lkscale.report.figures import pareto_figure, scaling_figure
from lkscale.report.html import html_report
from lkscale.report.labels import OBJECTIVES
from lkscale.report.markdown import answer_lines, markdown
from lkscale.report.numbers import FIXED_NOTE, confirmed_and_tied, front_result, latency_setting, stored_references
from lkscale.report.scaling import kernel_scalings
from lkscale.rundir import Run, RunDir, atomic_write, candidates, epochs_saved, load_run, trial_record, update_summary

log = logging.getLogger(__name__)
SUMMARY_KEY = "report"  # everything the report adds to summary.json lives under this one key


def _figures(run: Run, result: dict, fronts: dict, scalings: list[dict], say: Callable[[str], None]) -> dict:
    d, paths = RunDir(run.path), {}
    for key in OBJECTIVES:
        fr = result["fronts"][key]
        paths[key] = d.pareto_png(key)
        say(f"writing {paths[key]}")
        pareto_figure(run, key, fronts[key], fr["reference"], fr["hypervolume"], paths[key],
                      [r.get("status") for r in fr["front"]])
    for n, scaling in enumerate(scalings):
        family = "_".join(sorted(set(scaling["base"]["blocks"] or [])))
        paths[f"scaling{n}"] = d.scaling_png(n, family)
        say(f"writing {paths[f'scaling{n}']}")
        scaling_figure(run, scaling, paths[f"scaling{n}"])
    return paths


def write_html(run: Run, cands: Run, result: dict, fronts: dict, scalings: list[dict], path: str) -> None:
    """report.html: tables of ``run`` (trial rows) and ``cands`` (one per architecture), plotly figures."""
    from lkscale.report.interactive import plotly_pareto, plotly_scaling

    pareto = {k: plotly_pareto(cands, k, fronts[k], result["fronts"][k]["reference"], result["fronts"][k]["front"])
              for k in OBJECTIVES}
    atomic_write(path, html_report(run, result, fronts, scalings, pareto, [plotly_scaling(cands, s) for s in scalings]))


def known_intervals(cands: list) -> list:
    """Candidates whose interval is undefined (one replicate and no ``val_n``: NaN bounds) get None bounds."""
    for t in cands:
        for k in ("val_acc_low", "val_acc_high", "latency_low_ms", "latency_high_ms"):
            v = t.row.get(k)
            if isinstance(v, float) and v != v:
                t.row[k] = None
    return cands


def confidence_of(run: Run) -> float:
    """The study's confidence level for intervals and tests (``search.confirm.confidence``, default 0.95)."""
    level = ((run.study.get("search") or {}).get("confirm") or {}).get("confidence")
    return float(level) if level else 0.95


def racing(cands: Run, front: list) -> dict:
    """Confirmed front members and those tied within noise (records with their intervals)."""
    by_name = {t.name: t for t in cands.trials}
    conf, tied, known = confirmed_and_tied(cands, [t.name for t in front])
    rec = (lambda n: {**trial_record(by_name[n]), "status": cands.summary["status"].get(n)} if n in by_name
           else {"name": n, "status": cands.summary["status"].get(n)})
    return {"known": known, "confirmed": [rec(n) for n in conf], "tied": [rec(n) for n in tied]}


DECISION_KEYS = ("settings", "margin", "alpha", "power", "replicates", "paired_sd", "mde", "steps", "vs_best",
                 "gains_stop_at", "gains_to", "sentence")


def _update_summary(run: Run, result: dict, refs: dict) -> None:
    """Add the report's numbers to summary.json under ``"report"`` only; what search wrote is kept as is."""
    update_summary(run.path, {SUMMARY_KEY: {
        "fronts": {k: {"names": [r["name"] for r in v["front"]], "hypervolume": v["hypervolume"],
                       "hypervolume_normalized": v["hypervolume_normalized"], "reference": v["reference"]}
                   for k, v in result["fronts"].items()},
        "trial_epochs_saved": result["trial_epochs_saved"],
        "latency": result["latency"],
        "confirmed": [r["name"] for r in result["racing"]["confirmed"]],
        "tied": [r["name"] for r in result["racing"]["tied"]],
        "significant_steps": {f"scaling{n}": {rep: [st for st in line["steps"] if st["significant"]]
                                             for rep, line in sc["lines"].items()}
                              for n, sc in enumerate(result["kernel_scalings"])},
        "answer": answer_lines(result["kernel_scalings"]),  # the report's first lines
        "decisions": {f"scaling{n}": {rep: {k: line.get(k) for k in DECISION_KEYS} for rep, line in sc["lines"].items()}
                      for n, sc in enumerate(result["kernel_scalings"])},
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
    level = confidence_of(run)
    cands = dataclasses.replace(run, trials=known_intervals(candidates(run.trials, level)))  # one per architecture
    result: dict[str, Any] = {
        "study": run.name, "run_dir": run.path, "trials": len(run.trials), "candidates": len(cands.trials),
        "candidates_complete": sum(1 for t in cands.trials if t.state == "complete"), "confidence": level,
        "counts": dict(Counter(t.state for t in run.trials)), "trial_epochs_saved": epochs_saved(run),
        "trial_epochs_saved_summary": run.summary.get("trial_epochs_saved"),
        "trial_epochs_budget": run.summary.get("trial_epochs_budget"), "fronts": {},
    }
    refs, fronts = stored_references(run.summary), {}
    for key, (col, _xl, _u, _b) in OBJECTIVES.items():
        result["fronts"][key], fronts[key] = front_result(cands, key, reference)
        ref = result["fronts"][key]["reference"]
        if ref["source"].startswith(FIXED_NOTE):
            refs[key] = {col: ref[col], "source": ref["source"]}
    result["racing"] = racing(cands, fronts["latency"])
    result["latency"] = latency_setting(run)
    scalings = kernel_scalings(cands, level)
    result["kernel_scaling"] = scalings[0] if scalings else None
    result["kernel_scalings"] = scalings
    d = RunDir(run.path)
    paths = _figures(cands, result, fronts, scalings, say) if figures else {}
    if figures and html_report:
        say(f"writing {d.report_html}")
        write_html(run, cands, result, fronts, scalings, d.report_html)
    md = markdown(run, result, fronts, scalings, paths)
    md += "".join(line + "\n" for line in baseline_section(cands, level))  # the study's baselines, if any
    if run.summary.get("fidelity"):  # written by `lkscale fidelity` (or a study's fidelity: section)
        md += "\n" + markdown_section(run.summary["fidelity"], os.path.basename(d.fidelity_png)
                                       if os.path.isfile(d.fidelity_png) else None)
    atomic_write(d.report_md, md)
    result["files"] = {"report": d.report_md, **paths, **({"html": d.report_html} if figures and html_report else {})}
    _update_summary(run, result, refs)
    say(f"wrote {d.report_md}")
    return result
