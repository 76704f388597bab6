"""``lkscale report RUN_DIR [--json]``: Pareto fronts, hypervolume, scaling table and figures of a search run."""
from __future__ import annotations

import argparse
import json
import sys

from lkscale.cli import UsageError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write report.md, figures and report.html for a search run folder",
        description="Pareto fronts (mean validation accuracy over replicates with its interval vs deploy latency "
                    "and vs FLOPs, complete candidates only) with hypervolume, the confirmed front and the members tied "
                    "within noise (racing statuses from summary.json), trial counts, trial-epochs saved by pruning, "
                    "kernel-size scaling with the significant steps (paired tests over replicates, Holm) and where "
                    "gains stop. Files are written into RUN_DIR; progress goes to stderr.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `lkscale search`")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--no-figures", action="store_true", help="write report.md only (no PNG/HTML)")
    p.add_argument("--ref-latency-ms", type=float, default=None, metavar="MS",
                   help="hypervolume reference latency (default: budgets.max_latency_ms, else the run's stored one)")
    p.add_argument("--ref-flops", type=float, default=None, metavar="MACS",
                   help="hypervolume reference FLOPs (default: budgets.max_flops, else the run's stored one)")


def warnings(run_dir: str) -> list[str]:
    """What the report must say before its numbers: a driver still writing the folder (the report reads a
    snapshot and takes no lock, so a search is never kept from resuming), and every damaged row or file
    of the record (left out, never silently dropped)."""
    import os

    from lkscale.rundir import record_damage
    from lkscale.runlock import holder

    if not os.path.isdir(run_dir):
        return []
    out = []
    owner = holder(run_dir)
    if owner is not None:
        out.append(f"{os.path.abspath(run_dir)} is being written by {owner.describe()}: this report is a snapshot; "
                   f"run it again when that ends")
    out += [f"{d}; left out of this report" for d in record_damage(run_dir)]
    return out


def run(args: argparse.Namespace) -> int:
    from lkscale.report import RunDirError, make_report

    for name in ("ref_latency_ms", "ref_flops"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {v}")
    reference = {"latency_ms": args.ref_latency_ms, "flops": args.ref_flops}
    for line in warnings(args.run_dir):
        print(f"lkscale report: warning: {line}", file=sys.stderr)
    try:
        result = make_report(args.run_dir, reference=reference, figures=not args.no_figures,
                             progress=lambda m: print(m, file=sys.stderr))
    except RunDirError as e:
        raise UsageError(str(e)) from None
    if args.json:
        json.dump(result, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for key, fr in result["fronts"].items():
            ref = fr["reference"]
            col = fr["objectives"][1]
            print(f"front vs {col}: {len(fr['front'])} candidates, hypervolume {fr['hypervolume']:.6g} "
                  f"(reference acc 0, {col} {ref[col]:g}; {ref['source']})")
        racing = result["racing"]
        if racing["known"]:
            print("confirmed front: " + (", ".join(r["name"] for r in racing["confirmed"]) or "none"))
            print("tied within noise: " + (", ".join(r["name"] for r in racing["tied"]) or "none"))
        else:
            print("confirmed front: not determined (summary.json has no racing status)")
        for sc in result["kernel_scalings"]:
            for rep, line in sc["lines"].items():
                print(f"kernel scaling ({'/'.join(sorted(set(sc['base']['blocks'])))}, re-param {rep}): {line['sentence']}")
        print(f"report: {result['files']['report']}")
        if result["files"].get("html"):
            print(f"report (standalone HTML, opens offline): {result['files']['html']}")
    return 0
