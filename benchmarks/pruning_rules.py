"""Which pruning rule keeps the high-fidelity front at the least cost, on real learning curves? (issue 13, item 5)

Replays each rule (``lkscale.fidelity.replay``: the search's own Tune schedulers, fed epoch by epoch, two
trials at a time, in many random arrival orders) over the complete learning curves of finished runs that
trained every candidate to the end (scaling studies, or searches without pruning). One *world* is one
replicate of one run (its 10 or so candidates); a rule's figure is the mean over arrival orders within a
world, and the interval is a 95% t-interval over worlds. Reports per rule:

  cost            trial-epochs spent, as a share of no pruning
  proxy front     share of the run's final proxy front (accuracy vs latency) trained to the end
  hf front        share of the high-fidelity front (``lkscale fidelity``'s retrains) trained to the end
  hf hv           hypervolume, at high fidelity, of the kept candidates over that of all retrained ones
  stop small/large  share of candidates with mean kernel < 9 / >= 9 stopped early
  excess stop     the same, minus the share the rule stops when every epoch already shows the final
                  accuracy (same arrival orders): what early epochs add; > 0 for large kernels only = bias

Then, do large kernels learn slower in the first epochs? For each block, kernel setting and world, the
accuracy gap to the kernel-3 network of the same block after each epoch (paired: the same replicate shares
data subset, batch order and init), mean and 95% t-interval over worlds; and the same from the 12-epoch
high-fidelity curves when ``--fidelity`` has them (one seed: no interval).

    .venv/bin/python benchmarks/pruning_rules.py runs/kernel_size runs/kernel_size_seed3 \
        --fidelity runs/kernel_size [--orders 200] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from scipy import stats as sst

from lkscale.fidelity.replay import Curve, curves_by_replicate, replay_many
from lkscale.rundir import read_fidelity, read_trials

BASE_RULES = [("none", {}), ("asha", {}), ("moasha", {}), ("optuna-sha", {"pruner": "successive_halving"}),
              ("optuna-hyperband", {"pruner": "hyperband"}), ("optuna-median", {"pruner": "median"})]
RULES = [(f"{name} g{g}" if name != "none" else name, {**kw, "grace": g})
         for g in (1, 2) for name, kw in BASE_RULES if name != "none" or g == 1]  # grace: first rung's epoch
LARGE = 9.0  # mean kernel size from which a network counts as large-kernel


def worlds(run_dirs: list[str]) -> list[tuple[str, list[Curve], dict]]:
    """(label, curves, group by key) per run and replicate (``curves_by_replicate``); a group is the
    architecture but for its kernels (block, depths, widths), so a kernel's gap is measured within one."""
    out = []
    for run in run_dirs:
        trials = read_trials(run)
        groups = {t.name: f"{t.blocks[0]} d{'.'.join(map(str, t.depths))} w{'.'.join(map(str, t.widths))}"
                  for t in trials}
        for r in sorted({int(t.get("replicate") or 0) for t in trials}):
            for curves in curves_by_replicate([t for t in trials if int(t.get("replicate") or 0) == r]):
                out.append((f"{os.path.basename(run.rstrip('/'))}/r{r}", curves, groups))
    return out


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval; with fewer than 3 values, the mean and their range (a t-interval on one
    degree of freedom is too wide to say anything)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else float("nan"), float("nan"), float("nan"))
    if len(v) < 3:
        return float(v.mean()), float(v.min()), float(v.max())
    low, high = sst.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=sst.sem(v)) if v.std() > 0 else (v.mean(),) * 2
    return float(v.mean()), float(low), float(high)


def _clip(key: str, iv: tuple[float, float, float]) -> tuple[float, float, float]:
    """Shares live in [0, 1]: a t-interval reaching past either end is cut there (excess rates can be < 0)."""
    return iv if key.startswith("excess") else tuple(float(np.clip(x, 0.0, 1.0)) for x in iv)


def _stop_rates(res: list[dict], curves: list[Curve]) -> tuple[float, float]:
    """Share of small (mean kernel < LARGE) and of large candidates stopped early, over replays."""
    by_k = {k: float(np.mean([x["stopped_by_kernel"][k] for x in res])) for k in res[0]["stopped_by_kernel"]}
    small = [by_k[f"{c.kernel:g}"] for c in curves if c.kernel < LARGE]
    large = [by_k[f"{c.kernel:g}"] for c in curves if c.kernel >= LARGE]
    return (float(np.mean(small)) if small else float("nan"), float(np.mean(large)) if large else float("nan"))


def rule_table(ws, truth: dict, orders: int, seed: int) -> dict:
    """Per rule, each figure as (mean, low, high) over worlds. ``excess_stop_*``: the share stopped minus the
    share the same rule stops when every epoch already shows the final accuracy (an oracle curve, same
    arrival orders): positive for large kernels only = the rule is biased against them."""
    table = {}
    for name, kw in RULES:
        per_world = []
        for _, curves, _ in ws:
            rule = name.split()[0].split("-")[0]
            res = replay_many(rule, curves, orders=orders, seed=seed, truth=truth, **kw)
            flat = [Curve(c.key, (c.accs[-1],) * len(c.accs), c.latency_ms, c.kernel) for c in curves]
            oracle = replay_many(rule, flat, orders=orders, seed=seed, **kw)
            row = {k: float(np.mean([x[k] for x in res])) for k in ("cost", "proxy_front_kept")}
            if truth:
                row.update({k: float(np.nanmean([x[k] for x in res])) for k in ("hf_front_kept", "hf_hv_ratio")})
            (s, lg), (os_, ol) = _stop_rates(res, curves), _stop_rates(oracle, flat)
            row.update({"stop_small": s, "stop_large": lg, "excess_stop_small": s - os_, "excess_stop_large": lg - ol})
            per_world.append(row)
        table[name] = {k: _clip(k, t_interval([w[k] for w in per_world])) for k in per_world[0]}
    return table


def early_gaps(ws) -> dict:
    """{block: {kernel: [(mean, low, high) per epoch]}}: accuracy minus the same block's kernel-3 network's."""
    gaps: dict = {}
    for _, curves, blocks in ws:  # blocks: the group (architecture but for kernels) of each key
        for block in sorted(set(blocks.values())):
            mine = {c.kernel: c for c in curves if blocks[c.key] == block}
            if 3.0 not in mine:
                continue
            for k, c in mine.items():
                if k != 3.0:
                    gaps.setdefault(block, {}).setdefault(f"{k:g}", []).append(np.subtract(c.accs, mine[3.0].accs))
    return {b: {k: [t_interval(col) for col in np.array(v).T] for k, v in sorted(d.items(), key=lambda kv: float(kv[0]))}
            for b, d in gaps.items()}


def fidelity_world(run_dir: str) -> tuple[list[Curve], dict] | None:
    rows = [r for r in read_fidelity(run_dir) if r.get("state") == "complete" and r.get("val_acc_epochs")]
    if len(rows) < 3:
        return None
    full = max(len(r["val_acc_epochs"]) for r in rows)
    rows = [r for r in rows if len(r["val_acc_epochs"]) == full]
    curves = [Curve(r["name"], tuple(map(float, r["val_acc_epochs"])), float(r["latency_ms"]),
                    float(np.mean(r["kernels"]))) for r in rows]
    return curves, {r["name"]: r["name"].split("-")[0] + " " + "-".join(r["name"].split("-")[2:4]) for r in rows}


SHORT = {"cost": "cost", "proxy_front_kept": "proxy front", "hf_front_kept": "hf front", "hf_hv_ratio": "hf hv",
         "stop_small": "stop small", "stop_large": "stop large", "excess_stop_small": "excess small",
         "excess_stop_large": "excess large"}


def fmt(iv: tuple[float, float, float]) -> str:
    """Percent, with the 95% interval over worlds where there is one."""
    m, lo, hi = iv
    return f"{100 * m:.0f} [{100 * lo:.0f},{100 * hi:.0f}]" if np.isfinite(lo) else f"{100 * m:.0f}"


def print_table(title: str, table: dict) -> None:
    cols = list(next(iter(table.values())))
    print(f"\n{title}; percent, mean [95% t-interval over worlds; with 2 worlds: their range]\n{'rule':20s}"
          + "".join(f"{SHORT.get(c, c):>14s}" for c in cols))
    for name, row in table.items():
        print(f"{name:20s}" + "".join(f"{fmt(row[c]):>14s}" for c in cols))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--fidelity", help="a run folder whose fidelity.csv gives the high-fidelity truth")
    ap.add_argument("--orders", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    ws = worlds(a.runs)
    truth = {r["name"]: float(r["high_acc"]) for r in read_fidelity(a.fidelity)
             if r.get("state") == "complete"} if a.fidelity else {}
    print(f"{len(ws)} worlds ({', '.join(w[0] for w in ws)}), {a.orders} arrival orders each, 2 trials at a time; "
          f"high-fidelity truth for {len(truth)} candidates")
    out = {"worlds": [w[0] for w in ws], "orders": a.orders, "proxy": rule_table(ws, truth, a.orders, a.seed),
           "early_gaps": early_gaps(ws)}
    print_table(f"proxy curves ({len(ws[0][1][0].accs)} epochs; rungs at epochs 1, 2)", out["proxy"])
    fw = fidelity_world(a.fidelity) if a.fidelity else None
    if fw:
        curves, blocks = fw
        long_truth = {c.key: c.accs[-1] for c in curves}
        out["high_fidelity"] = rule_table([("fidelity", curves, blocks)], long_truth, a.orders, a.seed)
        out["high_fidelity_gaps"] = early_gaps([("fidelity", curves, blocks)])
        print_table(f"high-fidelity curves ({len(curves[0].accs)} epochs, {len(curves)} candidates, one seed; truth = "
                    "their own last epoch)", out["high_fidelity"])
    for key in ("early_gaps", "high_fidelity_gaps"):
        for block, ks in out.get(key, {}).items():
            print(f"\n{key}: {block}, accuracy minus {block} kernel 3, after each epoch (points; 95% t-interval over worlds; 2 worlds: their range)")
            for k, ivs in ks.items():
                print(f"  mean kernel {k:>5s}: " + "  ".join(f"{100 * m:+.1f}" + (f" [{100 * lo:+.1f},{100 * hi:+.1f}]"
                                                                                    if np.isfinite(lo) else "")
                                                        for m, lo, hi in ivs))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
