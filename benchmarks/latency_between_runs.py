"""How far apart two measurement runs of the same network are: the between-run part of a latency's error.

    python benchmarks/latency_between_runs.py                       # 8 specs of studies/pareto.yaml, 2 runs each
    python benchmarks/latency_between_runs.py --busy --out benchmarks/results/latency_between_runs.json

Each network is measured by ``lkscale cost --spec F --json`` in a fresh process (export, runtime, warm-up,
interleaved rounds: the protocol the search uses), once in a first pass over all specs and again in a
second pass, so the two measurements of a spec are minutes apart. ``--busy`` keeps one core busy with a
spinning process during both passes (a shared machine; killed at the end).

Per spec: the log ratio d = ln(m1 / m2) of the two medians and the within-run standard errors s1, s2 of
ln(m) from each run's 95% interval (half width / 1.96 / median). Over specs:

- ``between_run_cv``: sqrt(max(0, mean(d^2) / 2 - mean((s1^2 + s2^2) / 2))) -- the relative sd a run adds
  beyond its own interval (method of moments: E[d^2] = 2 between^2 + s1^2 + s2^2);
- ``disjoint``: how many specs got intervals that do not overlap;
- ``z``: d / sqrt(s1^2 + s2^2) per spec; under "the interval covers across runs" |z| > 1.96 about 5% of the time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from lkscale.space import distinct_specs, expand
from lkscale.study import load_study

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def specs_of(study_path: str, n: int, seed: int) -> list:
    sys.path.insert(0, ROOT)
    study = load_study(study_path)
    size = study.latency.input_size or study.data.input_size or 32
    specs = list(distinct_specs(expand(study.space, size, samples=4 * n, seed=seed), deploy=True).values())
    pick = np.random.default_rng(seed).choice(len(specs), min(n, len(specs)), replace=False)
    return [specs[i] for i in sorted(pick)]


def measure(spec_file: str, lkscale: str) -> dict:
    out = subprocess.run([lkscale, "cost", "--spec", spec_file, "--json"], capture_output=True, text=True, check=True)
    lat = json.loads(out.stdout)["latency"]
    return {k: lat[k] for k in ("median_ms", "ci_low_ms", "ci_high_ms", "cv", "rounds", "noisy")}


def summarize(rows: list[dict]) -> dict:
    d, s2, z, disjoint = [], [], [], 0
    for r in rows:
        a, b = r["runs"]
        sa = (math.log(a["ci_high_ms"]) - math.log(a["ci_low_ms"])) / (2 * 1.96)
        sb = (math.log(b["ci_high_ms"]) - math.log(b["ci_low_ms"])) / (2 * 1.96)
        di = math.log(a["median_ms"] / b["median_ms"])
        d.append(di)
        s2.append((sa ** 2 + sb ** 2) / 2)
        z.append(di / math.sqrt(sa ** 2 + sb ** 2) if sa + sb > 0 else math.inf)
        disjoint += a["ci_high_ms"] < b["ci_low_ms"] or b["ci_high_ms"] < a["ci_low_ms"]
    d, s2 = np.array(d), np.array(s2)
    between2 = float(np.mean(d ** 2) / 2 - np.mean(s2))
    return {"specs": len(rows), "disjoint": int(disjoint), "abs_log_ratio_median": float(np.median(np.abs(d))),
            "abs_log_ratio_max": float(np.max(np.abs(d))), "within_run_se_rms": float(np.sqrt(np.mean(s2))),
            "between_run_cv": float(math.sqrt(max(0.0, between2))),
            "z": [float(x) for x in z], "abs_z_over_1.96": int(np.sum(np.abs(z) > 1.96))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", default=os.path.join(ROOT, "studies", "pareto.yaml"))
    ap.add_argument("--specs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--busy", action="store_true", help="keep one core busy during the measurements")
    ap.add_argument("--out", default=None, help="write the record (JSON) here")
    args = ap.parse_args(argv)
    lkscale = os.path.join(os.path.dirname(sys.executable), "lkscale")
    specs = specs_of(args.study, args.specs, args.seed)
    busy = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if args.busy else None
    rows: list[dict] = []
    t0 = time.time()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for i, s in enumerate(specs):
                f = os.path.join(tmp, f"spec{i}.json")
                with open(f, "w", encoding="utf-8") as fh:
                    fh.write(s.to_json())
                files.append(f)
                rows.append({"name": s.name, "runs": []})
            for p in range(2):
                for f, row in zip(files, rows):
                    row["runs"].append(measure(f, lkscale))
                    print(f"pass {p + 1}: {row['name']}: {row['runs'][-1]['median_ms']:.3f} ms "
                          f"[{row['runs'][-1]['ci_low_ms']:.3f}-{row['runs'][-1]['ci_high_ms']:.3f}]", file=sys.stderr)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    rec = {"command": "python benchmarks/latency_between_runs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "study": os.path.relpath(args.study, ROOT), "busy_core": args.busy, "seconds": round(time.time() - t0, 1),
           "summary": summarize(rows), "rows": rows}
    text = json.dumps(rec, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(json.dumps(rec["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
