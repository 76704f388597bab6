"""Latency predictor error on held-out networks: per-block table vs a FLOPs-only linear model, per runtime.

    python benchmarks/latency_predictor.py                      # a few minutes
    python benchmarks/latency_predictor.py --studies kernel_size --runtimes onnxruntime

For each study in studies/*.yaml (its space at its input size; a space larger than --per-study
networks is sampled) and each runtime: ``lkscale.cost.predictor.calibrate`` times every distinct part
(stem, transitions, blocks at their shapes, head) of those networks, then --fit whole networks
(round-robin over skeletons) to fit the per-skeleton overhead, and --holdout other whole networks
that are used for nothing but scoring. Side by side on the same networks and the same measurements:
a FLOPs-only model, latency = a + b * MACs, least squares on the same fit networks. Reported: mean
absolute percentage error (MAPE) and the largest error on the held-out networks.

What "held out" means here: the held-out networks' whole-network timings never enter a fit; their
parts are in the table (the table covers the shapes of the networks given -- that is what a table
calibrated for a study's space is).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def evaluate(study_path: str, runtime: str, per_study: int, fit: int, holdout: int, seed: int) -> dict:
    import lkscale
    from lkscale.space import distinct_specs, expand
    from lkscale.config import LatencyConfig
    from lkscale.cost import count_flops
    from lkscale.cost.predictor import calibrate, fit_linear, mape
    from lkscale.study import load_study

    st = load_study(study_path)
    size = st.data.input_size
    specs = list(distinct_specs(expand(st.space, size, samples=per_study, seed=seed), deploy=True).values())
    if len(specs) > per_study:
        rng = np.random.default_rng(seed)
        specs = [specs[i] for i in sorted(rng.choice(len(specs), per_study, replace=False))]
    fit = min(fit, max(1, len(specs) // 3))  # a small space (smoke: 3 networks) still keeps some held out
    t0 = time.perf_counter()
    table = calibrate(specs, LatencyConfig(runtime=runtime, input_size=size), fit=fit, holdout=holdout, seed=seed)
    seconds = time.perf_counter() - t0
    by_name = {s.name: s for s in specs}
    flops = {r["name"]: count_flops(lkscale.reparameterize(lkscale.build_model(by_name[r["name"]], num_classes=10)),
                                    size)[0] for r in table.fit + table.holdout}
    fx, fy = [flops[r["name"]] for r in table.fit], [r["measured_ms"] for r in table.fit]
    if len(set(fx)) >= 2:
        a, b = fit_linear(fx, fy)
    else:  # one fit point: latency proportional to MACs
        a, b = 0.0, float(np.mean(np.divide(fy, fx)))
    held = table.holdout
    meas = [r["measured_ms"] for r in held]
    table_pred = [r["predicted_ms"] for r in held]
    flops_pred = [a + b * flops[r["name"]] for r in held]
    ape = lambda p: [abs(x - y) / y * 100 for x, y in zip(p, meas)]  # noqa: E731
    return {"study": st.name, "runtime": runtime, "networks": len(specs), "parts": len(table.parts),
            "fit": len(table.fit), "holdout": len(held), "calibration_s": seconds,
            "table_mape": mape(table_pred, meas), "table_max_ape": max(ape(table_pred)),
            "flops_mape": mape(flops_pred, meas), "flops_max_ape": max(ape(flops_pred)),
            "measured_ms": [min(meas), max(meas)], "rows": [
                {**r, "flops_pred_ms": f} for r, f in zip(held, flops_pred)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", nargs="*", default=None, help="study names (default: all in studies/)")
    ap.add_argument("--runtimes", nargs="*", default=["onnxruntime", "torch"])
    ap.add_argument("--per-study", type=int, default=24, help="networks per study (sampled if the space is larger)")
    ap.add_argument("--fit", type=int, default=4)
    ap.add_argument("--holdout", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(ROOT, "studies", "*.yaml")))
    if args.studies:
        paths = [p for p in paths if os.path.splitext(os.path.basename(p))[0] in args.studies]
    results = []
    for p in paths:
        for rt in args.runtimes:
            print(f"{os.path.basename(p)} / {rt} ...", file=sys.stderr, flush=True)
            results.append(evaluate(p, rt, args.per_study, args.fit, args.holdout, args.seed))
            r = results[-1]
            print(f"  table {r['table_mape']:.1f}%  FLOPs-linear {r['flops_mape']:.1f}%", file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
    print(f"\nHeld-out mean absolute percentage error (max in brackets); batch 1, 1 thread, deploy form; "
          f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'study':<12} {'runtime':<12} {'nets':>4} {'parts':>5} {'fit':>3} {'held':>4} {'calib s':>7}  "
          f"{'table MAPE':>16}  {'FLOPs-linear MAPE':>18}  measured range")
    for r in results:
        print(f"{r['study']:<12} {r['runtime']:<12} {r['networks']:>4} {r['parts']:>5} {r['fit']:>3} {r['holdout']:>4} "
              f"{r['calibration_s']:>7.1f}  {r['table_mape']:>6.1f}% [{r['table_max_ape']:>5.1f}%]  "
              f"{r['flops_mape']:>8.1f}% [{r['flops_max_ape']:>5.1f}%]  "
              f"{r['measured_ms'][0]:.3f}-{r['measured_ms'][1]:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
