"""Search efficiency: hypervolume reached per trial-epoch, side by side in one run.

Compares, at equal trial-epochs (the unit of proxy-training cost):
  random   random sampling, no pruning (every trial trains for the full budget)
  tpe+mo   Optuna's multi-objective TPE + lkscale's multi-objective successive halving
  nsga2+mo Optuna's NSGA-II + the same pruning
  tpe+asha multi-objective TPE + single-metric ASHA on accuracy (Ray's default way)

The objective is a cheap analytic surrogate of a kernel-size study (so the benchmark runs in about a
minute): an architecture (block family, per-stage kernel pattern, re-param branch, width, depth) has a
deploy latency and a learning curve ``acc(e) = a * (1 - exp(-e / tau))`` whose ceiling ``a`` grows
with capacity and kernel size (with diminishing returns) and whose time constant ``tau`` (1.1 to 2.5
epochs) grows with model size: small fast models learn quickly but saturate low, big ones start slower.
The tau range is calibrated on real proxy runs of studies/kernel_size.yaml (validation accuracy after
epoch 1 about 0.36, after epoch 4 about 0.50, i.e. tau near 2); with much slower curves (tau up to 8)
early accuracy no longer predicts the final one and every pruning rule loses to no pruning. Seeded
noise per architecture and epoch. The pruning decisions are the real ones (``lkscale.pruning.keep_top`` and
ASHA's top-1/rf on accuracy), run sequentially (one trial at a time).

Prints, averaged over seeds: hypervolume at several trial-epoch budgets, and the trial-epochs each
method needs to reach the hypervolume random search reaches with its whole budget (target: <= 0.5x).
    python benchmarks/search_efficiency.py [--budget 600] [--seeds 5] [--epochs 8]
"""
from __future__ import annotations

import argparse
import math
import random
import time
import zlib

import numpy as np
import optuna

from lkscale.pareto import hypervolume_2d
from lkscale.pruning import keep_top

KERNELS = [(3, 3, 3, 3), (5, 5, 5, 3), (7, 7, 7, 3), (9, 9, 7, 3), (13, 13, 7, 3), (25, 15, 7, 3), (31, 15, 7, 3)]
WIDTHS = [0.5, 0.75, 1.0, 1.5, 2.0]
REF = (0.0, 12.0)  # hypervolume reference: accuracy 0 and a 12 ms latency budget (candidates span 0.7-58 ms)


def sample(trial) -> tuple:
    return (trial.suggest_categorical("block", ["replk", "convnext"]),
            trial.suggest_categorical("kernels", list(range(len(KERNELS)))),
            trial.suggest_categorical("reparam", [0, 1]),
            trial.suggest_categorical("width", WIDTHS),
            trial.suggest_int("depth", 1, 3))


def latency(arch) -> float:
    block, k, rep, w, d = arch
    ks = KERNELS[k]
    kfac = sum(x * x for x in ks) / (4 * 9)
    return 0.4 + 1.1 * w * w * d * (1 + 0.08 * kfac) * (1.15 if block == "replk" else 1.0)


def curve(arch, epoch: int, seed: int) -> float:
    block, k, rep, w, d = arch
    ks = KERNELS[k]
    capacity = math.log1p(w * w * d * 4)
    reach = math.log(sum(ks) / 12)  # bigger effective kernels help, with diminishing returns
    a = 0.35 + 0.12 * capacity + 0.06 * reach + 0.02 * rep + (0.01 if block == "convnext" else 0.0)
    a = min(a, 0.92)
    tau = 1.0 + 0.25 * w * d  # big models converge more slowly: tau 1.1..2.5 epochs, as measured (see module doc)
    rng = random.Random(zlib.crc32(repr((arch, epoch, seed)).encode()))  # stable across processes
    return max(0.0, a * (1 - math.exp(-epoch / tau)) + rng.gauss(0, 0.006))


def run(method: str, budget: int, max_t: int, seed: int, grace: int = 1, rf: float = 2.0):
    sampler = {"random": optuna.samplers.RandomSampler(seed=seed),
               "nsga2+mo": optuna.samplers.NSGAIISampler(seed=seed, population_size=12)}.get(
        method, optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    rungs, r = [], grace
    while r < max_t:
        rungs.append(r)
        r = math.ceil(r * rf)
    recorded = {r: {} for r in rungs}
    used, points, trace = 0, [], []  # trace: (trial-epochs used, hypervolume so far)
    while used < budget:
        trial = study.ask()
        arch = sample(trial)
        lat = latency(arch)
        stopped = False
        for e in range(1, max_t + 1):
            if used >= budget:
                stopped = True
                break
            used += 1
            acc = curve(arch, e, seed)
            if method != "random" and e in recorded:
                seen = recorded[e]
                seen[trial.number] = (acc, lat)
                if len(seen) >= rf:
                    if method.endswith("+mo"):
                        keep = trial.number in keep_top(seen, 1 / rf)
                    else:  # ASHA: top 1/rf by accuracy only
                        cut = np.quantile([a for a, _ in seen.values()], 1 - 1 / rf)
                        keep = acc >= cut
                    if not keep:
                        stopped = True
                        break
        if stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [acc, lat])
            points.append((acc, lat))
        trace.append((used, hypervolume_2d(points, REF) if points else 0.0))
    return trace


def hv_at(trace, epochs: int) -> float:
    best = 0.0
    for used, hv in trace:
        if used > epochs:
            break
        best = hv
    return best


def epochs_to(trace, target: float) -> float:
    for used, hv in trace:
        if hv >= target - 1e-12:
            return used
    return math.inf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=600, help="trial-epochs per method and seed")
    ap.add_argument("--epochs", type=int, default=8, help="proxy epochs per trial (max_t)")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    methods = ["random", "tpe+mo", "nsga2+mo", "tpe+asha"]
    t0 = time.time()
    traces = {m: [run(m, args.budget, args.epochs, s) for s in range(args.seeds)] for m in methods}
    marks = [args.budget // 4, args.budget // 2, args.budget]
    print(f"surrogate kernel-size study, {args.epochs} epochs per trial, {args.seeds} seeds, "
          f"hypervolume reference (acc 0, {REF[1]} ms); {time.time() - t0:.0f} s")
    print(f"{'method':<10}" + "".join(f"  HV@{m:>4} ep" for m in marks) + "   trial-epochs to random's final HV"
          "      ratio")
    for m in methods:
        hvs = [np.mean([hv_at(t, mark) for t in traces[m]]) for mark in marks]
        need = [epochs_to(t, hv_at(r, args.budget)) for t, r in zip(traces[m], traces["random"])]
        reached = [n for n in need if np.isfinite(n)]
        med = float(np.median(need))  # inf when fewer than half the seeds reach it
        print(f"{m:<10}" + "".join(f"  {h:>10.3f}" for h in hvs)
              + f"   median {med:>6.0f} ({len(reached)}/{len(need)} seeds reach it)   {med / args.budget:>6.2f}x")
    print("ratio: trial-epochs needed / random search's budget (target <= 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
