"""Do two runs of the same study (different seeds) agree? Fronts, statuses and every significant claim.

    python benchmarks/compare_runs.py RUN_A RUN_B

Prints, for each run: the front on mean accuracy (members in common), the confirmed members, and the
significant kernel steps the report found (Holm-corrected paired tests over replicates); then whether
every claim one run calls significant holds in the other (same sign, and significant there too), and the
paired difference of chosen pairs (largest vs smallest kernel per family) with its 95% interval in each run.
"""
from __future__ import annotations

import argparse
import json

from lkscale.rundir import candidates, front_of, load_run
from lkscale.comparisons import paired_test


def claims(run) -> dict:
    """Significant kernel steps the report found: {"scalingN|re-param|from->to|sign": step}."""
    out = {}
    for scaling, lines in ((run.summary.get("report") or {}).get("significant_steps") or {}).items():
        for rep, steps in lines.items():
            for st in steps:
                sign = "+" if st["diff"] > 0 else "-"
                key = f"{scaling}|{rep}|{'-'.join(map(str, st['from']))}->{'-'.join(map(str, st['to']))}|{sign}"
                out[key] = st
    return out


def describe(path: str) -> dict:
    run = load_run(path)
    cands = [c for c in candidates(run.trials) if c.state == "complete"]
    front = front_of(cands, "latency_ms")
    status = run.summary.get("status", {})
    by_kernels = {}
    for c in cands:
        by_kernels[(c.blocks[0], tuple(c.kernels))] = c
    return {"run": run, "front": [f"{c.blocks[0]} {'-'.join(map(str, c.kernels))}" for c in front],
            "confirmed": [n for n, s in status.items() if s == "confirmed"], "claims": claims(run),
            "by_kernels": by_kernels}


def pair_lines(d: dict) -> list[str]:
    out = []
    for fam in sorted({k[0] for k in d["by_kernels"]}):
        ks = sorted((k for k in d["by_kernels"] if k[0] == fam), key=lambda k: sum(k[1]))
        lo, hi = d["by_kernels"][ks[0]], d["by_kernels"][ks[-1]]
        t = paired_test(hi.replicates, lo.replicates)
        out.append(f"  {fam} {'-'.join(map(str, hi.kernels))} vs {'-'.join(map(str, lo.kernels))}: "
                   f"{100 * t.diff:+.1f} [{100 * t.low:+.1f}, {100 * t.high:+.1f}] points, p={t.p:.3f} (n={t.n})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    a, b = describe(args.runs[0]), describe(args.runs[1])
    common = sorted(set(a["front"]) & set(b["front"]))
    out = {"front_a": a["front"], "front_b": b["front"], "front_common": common,
           "confirmed_a": a["confirmed"], "confirmed_b": b["confirmed"],
           "claims_a": sorted(a["claims"]), "claims_b": sorted(b["claims"]),
           "claims_a_hold_in_b": sorted(set(a["claims"]) & set(b["claims"])),
           "claims_b_hold_in_a": sorted(set(b["claims"]) & set(a["claims"]))}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for tag, d in (("A", a), ("B", b)):
        print(f"run {tag}: {d['run'].path}\n  front: {', '.join(d['front'])}\n  confirmed: {len(d['confirmed'])}"
              f"\n  significant steps: {', '.join(sorted(d['claims'])) or 'none'}")
        print("\n".join(pair_lines(d)))
    print(f"fronts: {len(a['front'])} and {len(b['front'])} members, {len(common)} in common: {', '.join(common)}")
    print(f"claims of A that B also calls significant: {len(out['claims_a_hold_in_b'])}/{len(a['claims'])}; "
          f"of B in A: {len(out['claims_b_hold_in_a'])}/{len(b['claims'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
