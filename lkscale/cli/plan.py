"""``lkscale plan STUDY.yaml``: validate a study and say what it will train and cost, before training."""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="check a study and estimate what it costs, without training anything",
                       description="Validate STUDY.yaml, expand its space into distinct networks (duplicates and "
                                   "clipped kernels named), cost each (params, FLOPs, deploy latency as the study "
                                   "measures it), list what is over budget, check resources, and estimate the wall "
                                   "time from a short measured training probe. Nothing is trained.")
    p.add_argument("study", help="study file (YAML), e.g. studies/kernel_size.yaml")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement (faster)")
    p.add_argument("--no-probe", action="store_true", help="skip the training-throughput probe (no time estimate)")
    p.add_argument("--download", action="store_true", help="allow fetching CIFAR-10 when no local dataset is found")
    p.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")


def _fmt_s(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 120 else f"{s:.0f} s"


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from lkscale.reachability import unreachable
    from lkscale.search.baselines import baseline_costs
    from lkscale.search.planning import make_plan
    from lkscale.study import load_study

    study = load_study(args.study)
    if args.download:
        study = dataclasses.replace(study, data=dataclasses.replace(study.data, download=True))
    plan = make_plan(study, latency=not args.no_latency, probe=not args.no_probe,
                     say=lambda m: print(m, file=sys.stderr, flush=True))
    reach = unreachable(study)  # a block family or choice no point builds: the search refuses to start
    plan["unreachable"] = [{"knob": u.knob, "value": u.value, "points": u.points, "reason": u.reason,
                            "text": u.describe()} for u in reach.unreachable]
    plan["baselines"] = baseline_costs(study, latency=not args.no_latency)  # references: cost, latency
    if args.json:
        print(json.dumps(plan, indent=2, default=str))
        return 0
    out = [f"study {plan['study']} ({plan['mode']} mode, {plan['sampler']} sampler): {plan['expanded']}: "
           f"{plan['points']} points -> {plan['distinct']} distinct networks"]
    for name, k in plan["duplicates"].items():
        out.append(f"  duplicate: {k} points build {name}")
    for bad in plan["invalid"]:
        out.append(f"  invalid point {bad['params']}: {bad['error']}")
    for u in reach.unreachable:
        out.append(f"  warning: {u.describe()}" + ("" if reach.exhaustive else f" (in {reach.how})")
                   + (": `lkscale search` refuses this space" if reach.exhaustive and not u.by_reject else ""))
    out.append(f"\n{'network':<52} {'kernels':<14} {'params':>8} {'MACs':>8} {'latency ms':>17}  budget")
    for r in sorted(plan["networks"], key=lambda r: r["flops"]):
        lat = f"{r['latency_ms']:.3f} [{r['latency_low_ms']:.3f}-{r['latency_high_ms']:.3f}]" if "latency_ms" in r \
            else "-"
        out.append(f"{r['name']:<52} {'/'.join(map(str, r['kernels'])):<14} {r['params'] / 1e6:>7.2f}M "
                   f"{r['flops'] / 1e6:>7.1f}M {lat:>17}  {'OVER: ' + ', '.join(r['over_budget']) if r['over_budget'] else 'ok'}")
    for b in plan["baselines"]:
        if "params" in b:
            lat = f"{b['latency_ms']:.3f} [{b['latency_low_ms']:.3f}-{b['latency_high_ms']:.3f}]" \
                if b.get("latency_ms") is not None else "-"
            out.append(f"{'baseline ' + b['name']:<52} {'':<14} {b['params'] / 1e6:>7.2f}M {b['flops'] / 1e6:>7.1f}M "
                       f"{lat:>17}  {'OVER: ' + ', '.join(b['over_budget']) if b['over_budget'] else 'ok'} (reference)")
    res = plan["resources"]
    out.append(f"\nover budget: {len(plan['over_budget'])} of {plan['distinct']}; resources: "
               f"{res['cpus_per_trial']:g} CPU(s) + {res['gpus_per_trial']:g} GPU(s) per trial, "
               f"{res['concurrency']} at a time (fits this machine)")
    out.append(plan["pruning"]["text"])
    est = plan.get("estimate")
    if est and "wall_seconds" in est:
        out.append(f"estimate: {est['trials']} trials, {est['trial_epochs']} trial-epochs, about "
                   f"{_fmt_s(est['wall_seconds'])} of wall time ({est['note']})")
    elif est:
        out.append(f"estimate: {est['note']}")
    if est and est.get("memory"):
        out.append(est["memory"]["text"])
    if plan.get("power"):
        out.append(plan["power"]["text"])
    print("\n".join(out))
    return 0
