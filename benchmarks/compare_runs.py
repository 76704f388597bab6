#!/usr/bin/env python
"""Do two runs of one scaling study with disjoint seeds agree on every claim each of them decided?

    python benchmarks/compare_runs.py benchmarks/results/runs/kernel_size benchmarks/results/runs/kernel_size_seed10
    python benchmarks/compare_runs.py RUN_A RUN_B --json

A claim is one comparison the report decides (``lkscale.report.scaling.kernel_scalings``, the same code and
settings as ``report.md``): every neighbouring kernel step and every "setting vs the best" of each family
line, with its verdict (better / worse / equivalent within the margin / undecided), and the line's
"gains stop at" and "gains up to" settings. Per claim: what each run decided, and

- ``agree``: both decided it the same way;
- ``contradict``: both decided it, differently (better vs worse, or a difference vs equivalence);
- ``one-sided``: one run decided it, the other left it undecided; the decided verdict is ``consistent`` with
  the other run's interval (its interval does not exclude the claim) or ``inconsistent``;
- ``compared in one run only``: a "vs the best" comparison whose best setting the other run did not find best.

Exit code 1 when any claim contradicts or a decided claim lies outside the other run's interval. The settings of the two runs must be the same study apart from seeds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from lkscale.comparisons import decide
from lkscale.report.make import confidence_of, known_intervals
from lkscale.report.scaling import kernel_scalings
from lkscale.rundir import candidates, load_run


def _k(setting) -> str:
    return "-".join(str(k) for k in setting)


def claims(run_dir: str) -> dict[str, dict]:
    """{claim: {verdict, diff, low, high, margin}} of one run record (accuracy in points); under
    ``"<family line>: replicates"`` the line's {setting: {replicate: accuracy}} and its alpha and margin."""
    run = load_run(run_dir)
    level = confidence_of(run)
    cands = dataclasses.replace(run, trials=known_intervals(candidates(run.trials, level)))
    out: dict[str, dict] = {}
    for sc in kernel_scalings(cands, level):
        family = "/".join(sorted(set(sc["base"]["blocks"])))
        for rep, line in sc["lines"].items():
            name = f"{family} ({rep})"
            comps = [(f"{_k(s['from'])} -> {_k(s['to'])}", s) for s in line.get("steps") or []]
            best = line.get("vs_best") or {}
            comps += [(f"{_k(c['from'])} vs the best, {_k(c['to'])}", c) for c in best.get("comparisons") or []]
            for label, c in comps:
                out[f"{name}: {label}"] = {"verdict": c["verdict"], "diff": 100 * c["diff"], "low": 100 * c["low"],
                                           "high": 100 * c["high"], "margin": c["margin"], "n": c.get("n")}
            for key in ("gains_stop_at", "gains_to"):
                v = line.get(key)
                out[f"{name}: {key.replace('_', ' ')}"] = {"verdict": "undecided" if v is None else _k(v)}
            out[f"{name}: best"] = {"verdict": "information", "setting": _k(best["best"]) if best.get("best") else None}
            reps = {_k(r["kernels"]): r["replicates"] for r in sc["rows"] if r["reparam"] == rep and r["replicates"]}
            out[f"{name}: replicates"] = {"verdict": "information", "replicates": reps, "alpha": line["alpha"],
                                          "margin": line["margin"]}
    return out


def consistent(verdict: str, other: dict) -> bool:
    """Does a decided ``verdict`` fit the other run's interval (the other run did not decide)?"""
    if "low" not in other:
        return True
    low, high, m = other["low"], other["high"], other["margin"]
    if verdict == "better":
        return high > 0
    if verdict == "worse":
        return low < 0
    if verdict == "equivalent":
        return low < m and high > -m
    return True


def same_pair(key: str, run: dict[str, dict]) -> dict | None:
    """The comparison ``key`` ("<line>: A vs the best, B") decided in ``run`` by itself (no Holm), or None."""
    line, pair = key.rsplit(": ", 1)
    a, b = pair.split(" vs the best, ")
    rec = run.get(f"{line}: replicates")
    if not rec or a not in rec["replicates"] or b not in rec["replicates"]:
        return None
    reps = rec["replicates"]
    d = decide({r: 100 * v for r, v in reps[b].items()}, {r: 100 * v for r, v in reps[a].items()}, rec["margin"],
               rec["alpha"])
    return {"verdict": f"(alone) {d.verdict}", "diff": d.diff, "low": d.low, "high": d.high, "margin": d.margin, "n": d.n}


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict:
    rows = []
    missing = {"verdict": "not compared"}
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing)["verdict"], b.get(key, missing)["verdict"]
        if "information" in (va, vb):
            continue
        if "not compared" in (va, vb):  # "vs the best" where the runs' best settings differ
            ra, rb = a.get(key, missing), b.get(key, missing)
            decided, other = (ra, b) if va not in ("undecided", "not compared") else (rb, a)
            status = "compared in one run only"
            if decided["verdict"] not in ("undecided", "not compared"):
                pair = same_pair(key, other)  # the same two settings in the other run, tested alone
                if pair is not None:
                    ra, rb = (ra, pair) if decided is ra else (pair, rb)
                status += ", decided there" + ("" if pair is None else
                                               ", consistent" if consistent(decided["verdict"], pair) else
                                               ", inconsistent") + " with the other run's same pair"
            rows.append({"claim": key, "a": ra, "b": rb, "status": status})
            continue
        da, db = va != "undecided", vb != "undecided"
        if da and db:
            status = "agree" if va == vb else "contradict"
        elif da or db:
            v, other = (va, b[key]) if da else (vb, a[key])
            status = "one-sided, " + ("consistent" if consistent(v, other) else "inconsistent")
        else:
            status = "neither decided"
        rows.append({"claim": key, "a": a[key], "b": b[key], "status": status})
    count = lambda s: sum(r["status"].startswith(s) for r in rows)  # noqa: E731
    made = lambda c: c["verdict"] not in ("undecided", "not compared") and not c["verdict"].startswith("(")  # noqa: E731
    return {"claims": len(rows), "decided_a": sum(made(r["a"]) for r in rows),
            "decided_b": sum(made(r["b"]) for r in rows), "agree": count("agree"),
            "one_run_only": count("compared in one run only"),
            "one_run_only_inconsistent": sum(r["status"].endswith("inconsistent with the other run's same pair")
                                             for r in rows),
            "contradict": count("contradict"), "one_sided_consistent": count("one-sided, consistent"),
            "one_sided_inconsistent": count("one-sided, inconsistent"), "neither": count("neither"),
            "best_a": {k: v["setting"] for k, v in a.items() if k.endswith(": best")},
            "best_b": {k: v["setting"] for k, v in b.items() if k.endswith(": best")}, "rows": rows}


def _fmt(c: dict) -> str:
    if "low" not in c:
        return c["verdict"]
    return f"{c['verdict']} {c['diff']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}] n={c['n']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = ap.parse_args(argv)
    res = compare(claims(args.run_a), claims(args.run_b))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"A = {args.run_a}\nB = {args.run_b}")
        for r in res["rows"]:
            print(f"{r['claim']:<48} A: {_fmt(r['a']):<42} B: {_fmt(r['b']):<42} {r['status']}")
        print(f"\n{res['claims']} claims: A decided {res['decided_a']}, B decided {res['decided_b']}; "
              f"agree {res['agree']}, contradict {res['contradict']}, decided by one run only "
              f"{res['one_sided_consistent'] + res['one_sided_inconsistent']} "
              f"({res['one_sided_inconsistent']} of them outside the other run's interval), neither {res['neither']}; "
              f"{res['one_run_only']} compared in one run only (against a best setting the other run did not find best; "
              f"{res['one_run_only_inconsistent']} decided ones outside the other run's interval for the same pair)")
        print(f"best setting per line: A {res['best_a']}; B {res['best_b']}")
    return 1 if res["contradict"] or res["one_sided_inconsistent"] or res["one_run_only_inconsistent"] else 0


if __name__ == "__main__":
    sys.exit(main())
