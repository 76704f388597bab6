"""Which proxy of equal cost ranks like high fidelity? (issue 13, item 4, at the main study's full scale)

Runs of the main study's grid at several proxy settings (epochs x training images per class, the same
2,000 validation images: the validation split is carved first, so it does not move with the training
size) are compared with one high-fidelity truth: ``lkscale fidelity``'s retrains of the main run
(``fidelity.csv``). For each run and each replicate (one seed of the whole grid), the statistics
``lkscale fidelity`` reports (Kendall tau, Spearman rho, top-3 recall, proxy front kept at high
fidelity, hypervolume ratio; 95% bootstrap intervals over candidates) on the retrained candidates.
Replicates of one setting show how much of a difference between settings is seed noise.

    .venv/bin/python benchmarks/proxy_settings.py runs/kernel_size runs/ks_e6x400 runs/ks_e2x1200 \
        --truth runs/kernel_size [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from lkscale.fidelity.stats import fidelity_statistics
from lkscale.rundir import load_run, read_fidelity


def setting(run) -> str:
    d, p = run.study.get("data") or {}, run.study.get("proxy") or {}
    return f"{p.get('epochs')} ep x {d.get('train_per_class')}/class"


def compare(run_dir: str, truth: dict[str, float], latency: dict[str, float], reference: tuple[float, float]) -> list[dict]:
    """One line of statistics per replicate of ``run_dir``. Latency: the truth run's measurement of each network
    (the same networks), so every setting is judged against the same latencies."""
    run = load_run(run_dir)
    out = []
    done = [t for t in run.trials if t.state == "complete" and t.name in truth]
    for r in sorted({int(t.get("replicate") or 0) for t in done}):
        rows = [{"state": "complete", "proxy_acc": t.val_acc, "high_acc": truth[t.name], "latency_ms": latency[t.name]}
                for t in done if int(t.get("replicate") or 0) == r]
        st = fidelity_statistics(rows, reference, k=3, n_resamples=2000)
        out.append({"run": os.path.basename(run_dir.rstrip("/")), "setting": setting(run), "replicate": r, **st})
    return out


def _iv(d: dict | None) -> str:
    if not d or d.get("estimate") is None:
        return "n/a"
    return f"{d['estimate']:+.2f} [{d['low']:+.2f},{d['high']:+.2f}]"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--truth", required=True, help="a run folder whose fidelity.csv gives high-fidelity accuracy")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    rows = [r for r in read_fidelity(a.truth) if r.get("state") == "complete"]
    truth = {r["name"]: float(r["high_acc"]) for r in rows}
    budget = (load_run(a.truth).budgets or {}).get("max_latency_ms")
    reference = (0.0, float(budget) if budget else 1.5 * max(float(r["latency_ms"]) for r in rows))
    latency = {r["name"]: float(r["latency_ms"]) for r in rows}
    out = [x for run in a.runs for x in compare(run, truth, latency, reference)]
    e = rows[0]
    print(f"high fidelity: {len(truth)} candidates, {e['epochs']} epochs x {e['train_per_class']}/class, augmented "
          f"(from {a.truth}/fidelity.csv); 95% bootstrap intervals over candidates")
    print(f"{'run':>18} {'proxy setting':>22} {'rep':>3} {'n':>3} {'Kendall tau':>22} {'Spearman rho':>22} {'top-3':>6} "
          f"{'front kept':>11} {'HV ratio':>9}")
    for x in out:
        print(f"{x['run']:>18} {x['setting']:>22} {x['replicate']:>3} {x['n']:>3} {_iv(x.get('kendall_tau')):>22} "
              f"{_iv(x.get('spearman_rho')):>22} {x.get('top3_recall', {}).get('estimate', float('nan')):>6.2f} "
              f"{x.get('front_kept', {}).get('estimate', float('nan')):>11.2f} "
              f"{x.get('hv_ratio', {}).get('estimate', float('nan')):>9.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
