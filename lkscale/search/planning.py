"""``lkscale plan``: what a study will do and cost, before anything trains.

The study is validated, its space expanded (grid: every point; sampled spaces: a seeded sample), the
points that build the same network are named as duplicates, each distinct network is costed (params,
FLOPs and — as the study measures it — deploy latency, side by side), over-budget ones are listed, the
resources are checked against this machine, and the wall time is estimated from a short measured probe
of training throughput (train steps of the cheapest and the costliest network, interpolated by FLOPs).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

from lkscale.cost import estimate, measure_train_step
from lkscale.cost.measure import latency_of
from lkscale.comparisons import min_detectable_effect, replicates_needed
from lkscale.model import build_model
from lkscale.noise import NOISE_JSON, paired_sd, replicate_spread
from lkscale.rundir import read_trials
from lkscale.search.checks import check_data, check_resources, space_points
from lkscale.search.memory import peak_rss_mb
from lkscale.search.objective import budget_violations
from lkscale.study import Study

EVAL_OVERHEAD = 1.25   # per-epoch cost of BN recalibration + validation + the optimiser, over fwd+bwd steps
TRIAL_OVERHEAD_S = 4.0  # Tune's start of one trial process (measured here: 3-5 s)
RAY_START_S = 10.0


def expand(study: Study, samples: int = 64) -> dict:
    """Points of the space -> distinct networks; duplicates and invalid points named."""
    cands = space_points(study, samples)
    how = "every grid point" if study.search.sampler == "grid" else \
        f"{samples} random draws (the space is sampled, not enumerated)"
    distinct: dict[str, dict] = {}
    invalid = []
    for params, c in cands:
        if c.spec is None:
            invalid.append({"params": params, "error": c.error})
            continue
        d = distinct.setdefault(c.name, {"spec": c.spec, "points": [], "notes": sorted(set(c.notes))})
        d["points"].append(params)
    # different parameter sets that build the same network (a branch dropped, a kernel clipped)
    dups = {}
    for n, d in distinct.items():
        uniq = {json.dumps(p, sort_keys=True) for p in d["points"]}
        if len(uniq) > 1:
            dups[n] = sorted(uniq)
    return {"how": how, "points": len(cands), "distinct": distinct, "duplicates": dups, "invalid": invalid}


def probe_throughput(study: Study, specs: list, say: Callable[[str], None]) -> dict:
    """Seconds per proxy epoch, measured on the cheapest and the costliest network, by FLOPs."""
    threads = max(1, int(study.resources.cpus_per_trial))
    bs, size = study.proxy.batch_size, study.data.input_size
    out = {}
    for spec in specs:
        model = build_model(spec, num_classes=10)
        r = measure_train_step(model, size, batch_size=bs, threads=threads, warmup=2, repeats=4)
        out[spec.name] = r["median_ms"] / 1e3
        say(f"probe: {spec.name} train step {1e3 * out[spec.name]:.0f} ms at batch {bs}, {threads} thread(s)")
    return out


def make_plan(study: Study, latency: bool = True, probe: bool = True,
              say: Callable[[str], None] = lambda m: None) -> dict:
    t0 = time.time()
    check_resources(study)
    data = check_data(study, say)
    ex = expand(study)
    specs = {n: d["spec"] for n, d in ex["distinct"].items()}
    say(f"costing {len(specs)} distinct networks")
    costs = {n: estimate(s, input_size=study.latency.input_size, num_classes=10, latency=False) for n, s in specs.items()}
    lat = {}
    if latency and specs:
        say(f"latency of the deploy forms ({study.latency.source}, {study.latency.runtime})")
        lat = _measure(study, list(specs.values()))
    limits = study.budgets.limits()
    rows = []
    for n, s in specs.items():
        c = costs[n]
        row = {"name": n, "params": c.params, "flops": c.flops, "kernels": list(s.kernels), "blocks": list(s.blocks),
               "points": len(ex["distinct"][n]["points"]), "notes": ex["distinct"][n]["notes"]}
        if n in lat:
            row.update(lat[n])
        over = budget_violations({k: row.get(k, 0.0) or 0.0 for k in limits}, limits)
        row["over_budget"] = sorted(k for k, v in over.items() if v > 0 and row.get(k) is not None)
        rows.append(row)
    feasible = [r for r in rows if not r["over_budget"]]
    est = _estimate(study, feasible, ex, say) if probe and feasible else None
    return {"study": study.name, "mode": study.search.mode, "sampler": study.search.sampler,
            "expanded": ex["how"], "points": ex["points"], "distinct": len(specs),
            "duplicates": {n: len(p) for n, p in ex["duplicates"].items()}, "invalid": ex["invalid"][:5],
            "networks": rows, "over_budget": [r["name"] for r in rows if r["over_budget"]],
            "data": {"dataset": data.dataset, "root": data.root}, "resources": {
                "cpus_per_trial": study.resources.cpus_per_trial, "gpus_per_trial": study.resources.gpus_per_trial,
                "concurrency": study.search.concurrency},
            "pruning": pruning_plan(study), "estimate": est, "power": power_plan(study),
            "plan_seconds": round(time.time() - t0, 1)}


def power_plan(study: Study, classes: int = 10) -> dict | None:
    """What the study's replicates can show: the minimum detectable effect (paired, two-sided, at
    ``analysis.alpha`` and ``analysis.power``) and the replicates equivalence within ``analysis.margin``
    needs, at the paired sd of a noise record (``lkscale noise``, rescaled to the study's validation size)
    or else of the replicate spread of a run already in the study's output folder. None without either."""
    an = getattr(study, "analysis", None)
    margin, alpha, power = (float(getattr(an, k, d)) for k, d in (("margin", 1.0), ("alpha", 0.05), ("power", 0.8)))
    n_val = study.data.val_per_class * classes
    path = os.path.join(study.output, NOISE_JSON)
    sd, source = float("nan"), ""
    if os.path.isfile(path):
        try:
            with open(path) as f:
                rec = json.load(f)
            sd = paired_sd(rec, n_val)
            source = (f"noise record {path} ({rec['a']} vs {rec['b']}, {rec['epochs']:g} epochs x "
                      f"{rec['train_per_class']}/class, rescaled to {n_val} validation images)")
        except (OSError, ValueError, KeyError, ZeroDivisionError):
            sd = float("nan")
    if not sd == sd:
        sd, pairs = replicate_spread([t.row for t in read_trials(study.output) if (t.get("role") or "candidate") == "candidate"])
        source = f"the replicate spread of {pairs} pairs of settings in {study.output}" if pairs else ""
    if not sd == sd:
        return None
    reps = study.search.replicates
    ad = study.search.adaptive
    mde = min_detectable_effect(sd, reps, alpha, power)
    need = replicates_needed(sd, margin, alpha, power, 0.0, "equivalence")
    text = (f"power: paired sd {sd:.2f} points ({source}): with {reps} replicates the minimum detectable effect is "
            f"{mde:.2f} points (alpha {alpha:g}, power {power:.0%}); equivalence within +-{margin:g} needs {need} "
            f"replicates per setting" + (f" (adaptive: up to {ad.max_replicates} where undecided)" if ad.enabled else ""))
    return {"paired_sd": sd, "source": source, "replicates": reps, "mde": mde, "margin": margin, "alpha": alpha,
            "power": power, "replicates_for_equivalence": need, "text": text}


def pruning_plan(study: Study) -> dict:
    """Which rule prunes, at which epochs, and a sentence for the plan (also when nothing can be pruned)."""
    pr, epochs = study.search.pruning, int(study.proxy.epochs)
    if study.search.mode == "scaling" or pr.scheduler == "none":
        why = "a scaling study trains every point to the end" if study.search.mode == "scaling" else "pruning: none"
        return {"scheduler": "none", "rungs": [], "text": f"pruning: none ({why})"}
    median = pr.scheduler == "optuna" and pr.pruner == "median"  # decides at every epoch from grace_epochs on
    rungs = list(range(pr.grace_epochs, epochs)) if median else pr.rungs(epochs)
    name = pr.scheduler + (f" ({pr.pruner})" if pr.scheduler == "optuna" else "")
    if not rungs:
        return {"scheduler": pr.scheduler, "rungs": [],
                "text": f"pruning: {name}, but a {epochs}-epoch proxy has no rung before its last epoch "
                        f"(grace_epochs {pr.grace_epochs}): nothing will be pruned"}
    return {"scheduler": pr.scheduler, "rungs": rungs,
            "text": f"pruning: {name} at epoch(s) {', '.join(map(str, rungs))} of {epochs}, keeping the best "
                    f"1/{pr.reduction_factor:g} at each"}


def _measure(study: Study, specs: list) -> dict:
    res = latency_of(specs, study.latency)
    return {n: {"latency_ms": r.median_ms, "latency_low_ms": r.ci_low_ms, "latency_high_ms": r.ci_high_ms,
                "latency_noisy": r.noisy} for n, r in res.items()}


def _estimate(study: Study, feasible: list, ex: dict, say: Callable[[str], None]) -> dict:
    """Wall time: trial-epochs x seconds per epoch (probe, interpolated by FLOPs) / trials at a time."""
    lo, hi = min(feasible, key=lambda r: r["flops"]), max(feasible, key=lambda r: r["flops"])
    step_s = probe_throughput(study, [ex["distinct"][lo["name"]]["spec"], ex["distinct"][hi["name"]]["spec"]], say)
    memory = peak_memory(study, peak_rss_mb())  # right after the probe: its peak is the costliest train step's
    steps = math.ceil(study.data.train_per_class * 10 / study.proxy.batch_size) if study.data.train_per_class \
        else None
    if steps is None:
        return {"note": "train_per_class is null (all images): no estimate without the dataset size", "memory": memory}

    def epoch_s(r):
        f0, f1 = lo["flops"], hi["flops"]
        s0, s1 = step_s[lo["name"]], step_s[hi["name"]]
        s = s0 if f1 == f0 else s0 + (s1 - s0) * (r["flops"] - f0) / (f1 - f0)
        return steps * s * EVAL_OVERHEAD

    n = len(feasible) if study.search.sampler == "grid" else min(study.search.trials, len(feasible))
    n = min(n, study.search.trials)
    reps = study.search.replicates
    ordered = sorted(feasible, key=lambda r: r["flops"])
    pick = ordered if n >= len(ordered) else [ordered[round(i * (len(ordered) - 1) / max(1, n - 1))] for i in range(n)]
    epochs = int(study.proxy.epochs)
    work = sum(epoch_s(r) * epochs + TRIAL_OVERHEAD_S for r in pick) * reps
    conc = max(1, study.search.concurrency)
    wall = RAY_START_S + work / conc
    pruned = study.search.mode == "front" and study.search.pruning.scheduler != "none"
    load = _load_per_cpu()
    busy = (f"the machine was busy during the probe (load {load:.1f} per core): pessimistic"
            if load is not None and load > 1.0 else "probed with the machine quiet: trials sharing cores run slower")
    return {"trials": n * reps, "trial_epochs": n * reps * epochs, "seconds_per_epoch": {
        r["name"]: round(epoch_s(r), 1) for r in (lo, hi)}, "wall_seconds": round(wall),
        "probe_load_per_cpu": load, "memory": memory,
        "note": ("an upper bound: pruning stops some trials early; " if pruned else "") + busy}


def peak_memory(study: Study, probe_peak_mb: float) -> dict:
    """Peak memory a trial is expected to reach: the probe process's peak resident memory (the interpreter,
    torch and the costliest network's train step at the proxy's batch size, measured with ``getrusage``) plus
    the trial's images held in memory as uint8 (training and validation). Ray's own worker process adds to
    it (not measured here). ``resources.memory_per_trial_mb`` limits a trial's growth past its start."""
    n = None if study.data.train_per_class is None else \
        (study.data.train_per_class + (study.data.val_per_class or 0)) * 10  # images per trial (10 classes assumed)
    size = study.data.input_size
    images_mb = None if n is None else n * 3 * size * size / 2 ** 20
    total = probe_peak_mb + (images_mb or 0.0)
    limit = study.resources.memory_per_trial_mb
    text = (f"memory: about {total:.0f} MiB per trial at peak (measured: {probe_peak_mb:.0f} MiB for torch and the "
            f"costliest train step at batch {study.proxy.batch_size}" +
            (f", plus {images_mb:.0f} MiB of images" if images_mb is not None else ", plus the images (count unknown)")
            + "; Ray's worker adds its own)" +
            (f"; per-trial limit {limit:g} MiB of growth" if limit else "; no per-trial limit "
             "(resources.memory_per_trial_mb)"))
    return {"probe_peak_mb": round(probe_peak_mb, 1), "images_mb": None if images_mb is None else round(images_mb, 1),
            "per_trial_mb": round(total, 1), "limit_mb": limit, "text": text}


def _load_per_cpu() -> float | None:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0]) / (os.cpu_count() or 1)
    except (OSError, ValueError):
        return None
