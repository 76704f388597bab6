#!/usr/bin/env python
"""Re-derive the headline figures of the run records in ``benchmarks/results/runs/`` with lkscale's own code.

    python benchmarks/rederive.py                      # every benchmarks/results/runs/*/
    python benchmarks/rederive.py RUN_DIR [RUN_DIR ...]
    python benchmarks/rederive.py RUN_DIR --write      # (re)write RUN_DIR/expected.json from the record

A record is the small files of a finished run (``study.yaml``, ``trials.csv``, ``summary.json``,
``costs.json``, ``fidelity.csv``; no weights, no Tune folders, no journal). From them this prints, as JSON:

- ``counts``: trials per state (``trials.csv``);
- ``front``: the accuracy/latency front of the candidates (mean over replicates with its interval,
  ``lkscale.rundir.candidates`` / ``front_of``, the study's confirmation confidence);
- ``fidelity`` (where ``lkscale fidelity`` ran): proxy vs high-fidelity agreement
  (``lkscale.fidelity.stats.fidelity_statistics``: Kendall tau, Spearman rho, top-k recall, front kept,
  hypervolume ratio, each with its interval) on the recorded retrains of the summary's settings;
- ``decisions`` (a study that varies kernel size): the report's first lines and, per scaling line, each
  neighbouring step's verdict (better / worse / equivalent / undecided) with its difference and interval, the
  paired sd and the minimum detectable effect (``lkscale.report.scaling.kernel_scalings``);
- ``baselines`` (a study with ``baselines:``): per baseline, which front members dominate it and the report's
  sentence (``lkscale.report.baselines.comparisons``);
- ``pruning_replay`` (only when ``expected.json`` asks for it: it replays 100 arrival orders per rule):
  ``lkscale.fidelity.replay.replay_rules`` on the run's own complete curves.

``tests/test_evidence.py`` compares these with ``expected.json`` beside each record: every figure the
docs quote is written there once (``--write``), and a change in lkscale that moves one fails the test.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import sys

from lkscale.fidelity.replay import replay_rules
from lkscale.fidelity.stats import fidelity_statistics
from lkscale.report.baselines import baseline_rows, comparisons
from lkscale.report.make import DECISION_KEYS, confidence_of, known_intervals
from lkscale.report.markdown import answer_lines
from lkscale.report.scaling import kernel_scalings
from lkscale.rundir import candidates, front_of, load_run, read_fidelity

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = os.path.join(HERE, "results", "runs")
EXPECTED = "expected.json"
SECTIONS = ("counts", "front", "fidelity", "decisions", "baselines")  # pruning_replay only where expected.json holds it (slower)
FRONT_KEYS = ("name", "val_acc", "val_acc_low", "val_acc_high", "n_replicates", "latency_ms")
FIDELITY_KEYS = ("n", "kendall_tau", "spearman_rho", "front_kept", "hv_ratio")  # and top{k}_recall


def records(root: str = RUNS) -> list[str]:
    """Every run record under ``root`` (a folder with a ``trials.csv``), sorted."""
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(root, "*", "trials.csv")))


def _confidence(run) -> float:
    return float(((run.study.get("search") or {}).get("confirm") or {}).get("confidence") or 0.95)


def _fidelity(run) -> dict | None:
    rows = read_fidelity(run.path)
    if not rows:
        return None
    recorded = (run.summary.get("fidelity") or {})
    settings = recorded.get("settings") or {}
    if settings.get("epochs") is not None:  # the retrains of the settings the summary reports
        rows = [r for r in rows if r.get("epochs") is None or int(r["epochs"]) == int(settings["epochs"])]
    pvh = recorded.get("proxy_vs_high") or {}
    lat = [float(r["latency_ms"]) for r in rows if r.get("latency_ms") is not None]
    reference = tuple(pvh.get("reference") or (0.0, 1.1 * max(lat) if lat else 1.0))
    stats = fidelity_statistics(rows, reference, k=int(settings.get("top_k", 3)),
                                warn_tau=float(settings.get("warn_tau", 0.5)), seed=int(settings.get("seed", 0)))
    return {k: v for k, v in stats.items() if k in FIDELITY_KEYS or (k.startswith("top") and k.endswith("_recall"))}


def _pruning_replay(run) -> dict:
    settings = ((run.summary.get("fidelity") or {}).get("pruning_replay") or {})
    truth = {r["name"]: float(r["high_acc"]) for r in read_fidelity(run.path)
             if r.get("state") == "complete" and r.get("high_acc") is not None}
    kw = {k: settings[k] for k in ("reduction_factor", "orders", "concurrency") if k in settings}
    return replay_rules(run.trials, truth or None, tuple(settings.get("graces") or (1, 2)), **kw)


STEP_KEYS = ("from", "to", "verdict", "diff", "low", "high", "replicates_needed")


def _decisions(run) -> dict | None:
    cands = dataclasses.replace(run, trials=known_intervals(candidates(run.trials, confidence_of(run))))
    scalings = kernel_scalings(cands, confidence_of(run))
    if not scalings:
        return None
    lines = {}
    for n, sc in enumerate(scalings):
        for rep, line in sc["lines"].items():
            rec = {k: line.get(k) for k in ("margin", "alpha", "replicates", "paired_sd", "mde") if k in DECISION_KEYS}
            rec["steps"] = [{k: st.get(k) for k in STEP_KEYS} for st in line.get("steps") or []]
            lines[f"scaling{n}/{rep}"] = rec
    return {"answer": answer_lines(scalings), "lines": lines}


def _baselines(run) -> list | None:
    level = confidence_of(run)
    cands = dataclasses.replace(run, trials=known_intervals(candidates(run.trials, level)))
    bases = baseline_rows(cands, level)
    if not bases:
        return None
    front = front_of(cands.trials, "latency_ms")
    return [{k: c.get(k) for k in ("baseline", "state", "val_acc", "latency_ms", "dominated_by", "sentence")}
            for c in comparisons(front, bases, level)]


def derive(run_dir: str, sections: tuple[str, ...] = SECTIONS) -> dict:
    """The headline figures of one run record (see the module docstring)."""
    run = load_run(run_dir)
    out: dict = {}
    if "counts" in sections:
        counts: dict[str, int] = {}
        for t in run.trials:
            counts[t.state] = counts.get(t.state, 0) + 1
        out["counts"] = dict(sorted(counts.items()))
    if "front" in sections:
        front = front_of(candidates(run.trials, _confidence(run)), "latency_ms")
        out["front"] = [{k: c.get(k) for k in FRONT_KEYS} for c in front]
    if "fidelity" in sections:
        fid = _fidelity(run)
        if fid is not None:
            out["fidelity"] = fid
    if "decisions" in sections:
        dec = _decisions(run)
        if dec is not None:
            out["decisions"] = dec
    if "baselines" in sections:
        bas = _baselines(run)
        if bas is not None:
            out["baselines"] = bas
    if "pruning_replay" in sections:
        out["pruning_replay"] = _pruning_replay(run)
    return out


def mismatches(derived, expected, path: str = "", rel: float = 1e-6, abs_tol: float = 1e-9) -> list[str]:
    """Where ``derived`` differs from ``expected`` (only the keys ``expected`` holds are compared; floats to
    ``rel``/``abs_tol``)."""
    if isinstance(expected, dict):
        if not isinstance(derived, dict):
            return [f"{path or '.'}: expected a mapping, derived {derived!r}"]
        out = []
        for k, v in expected.items():
            if k not in derived:
                out.append(f"{path}.{k}: missing from the re-derived figures")
            else:
                out.extend(mismatches(derived[k], v, f"{path}.{k}", rel, abs_tol))
        return out
    if isinstance(expected, list):
        if not isinstance(derived, list) or len(derived) != len(expected):
            return [f"{path}: expected {len(expected)} items, derived {derived!r}"]
        return [m for i, (d, e) in enumerate(zip(derived, expected)) for m in mismatches(d, e, f"{path}[{i}]", rel, abs_tol)]
    if isinstance(expected, float) or isinstance(derived, float):
        try:
            d, e = float(derived), float(expected)
        except (TypeError, ValueError):
            return [f"{path}: expected {expected!r}, derived {derived!r}"]
        if (math.isnan(d) and math.isnan(e)) or math.isclose(d, e, rel_tol=rel, abs_tol=abs_tol):
            return []
        return [f"{path}: expected {e!r}, derived {d!r}"]
    return [] if derived == expected else [f"{path}: expected {expected!r}, derived {derived!r}"]


def sections_of(expected: dict) -> tuple[str, ...]:
    """The sections an ``expected.json`` asks to be re-derived."""
    return tuple(k for k in (*SECTIONS, "pruning_replay") if k in expected)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="run record folders (default: every benchmarks/results/runs/*/)")
    p.add_argument("--write", action="store_true", help="write each record's expected.json from what it derives")
    p.add_argument("--replay", action="store_true", help="also derive the pruning replay (slower)")
    args = p.parse_args(argv)
    dirs = args.runs or records()
    if not dirs:
        print(f"no run records under {RUNS}", file=sys.stderr)
        return 1
    out = {}
    for d in dirs:
        sections = SECTIONS + (("pruning_replay",) if args.replay else ())
        out[os.path.basename(os.path.normpath(d))] = figures = derive(d, sections)
        if args.write:
            with open(os.path.join(d, EXPECTED), "w", encoding="utf-8") as f:
                json.dump(figures, f, indent=2)
                f.write("\n")
            print(f"wrote {os.path.join(d, EXPECTED)}", file=sys.stderr)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
