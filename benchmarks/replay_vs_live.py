"""Does the pruning replay predict what a live search prunes? (the check behind benchmarks/pruning_rules.py)

A live front search of the main study's grid (one trial at a time, so the arrival order is the trial order)
prunes with a rule. Replaying the same rule over the live curves (a stopped trial continued by a scaling run's
replicate 0 of the same network: common random numbers, same seed, data subset, batch order and init), in the
live trial order, with the latency the live scheduler saw (``latency_search_ms``), must stop the same trials at
the same epochs. The script also says how many live curves equal the reference's first epochs (all of them,
once the dwconv autotuner decides once per machine; before, RepLK's large-kernel curves differed run to run).

    .venv/bin/python benchmarks/replay_vs_live.py LIVE_RUN --curves runs/kernel_size [--rule moasha]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from lkscale.config import PruningConfig, from_dict
from lkscale.fidelity.replay import Curve, replay
from lkscale.rundir import load_run, read_trials


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("live")
    ap.add_argument("--curves", required=True, help="a run that trained every candidate to the end (replicate 0 used)")
    a = ap.parse_args(argv)
    run = load_run(a.live)
    pr = from_dict(PruningConfig, (run.study.get("search") or {}).get("pruning") or {})
    live = sorted([t for t in run.trials if t.state in ("complete", "pruned")], key=lambda t: int(t.number))
    full = {t.name: t for t in read_trials(a.curves) if t.state == "complete" and int(t.get("replicate") or 0) == 0}
    same = [np.allclose(t.val_acc_epochs, full[t.name].val_acc_epochs[: len(t.val_acc_epochs)]) for t in live]
    print(f"{a.live}: {len(live)} trials, rule {pr.scheduler} (first rung at epoch {pr.grace_epochs}, halving "
          f"{pr.reduction_factor:g}); live curves equal to the reference's first epochs: {sum(same)}/{len(same)}")
    # what the live scheduler saw (the live curve), continued by the reference after a stop: a stopped trial's
    # later epochs never reach a rule that replays it the same way, so only the decisions are under test
    curves = [Curve(t.name, tuple(list(t.val_acc_epochs) + list(full[t.name].val_acc_epochs[len(t.val_acc_epochs):])),
                    float(t.latency_search_ms or t.latency_ms), float(np.mean(t.kernels))) for t in live]
    rule = pr.scheduler
    kw = {"pruner": pr.pruner} if rule == "optuna" else {}
    got = replay(rule, curves, list(range(len(curves))), grace=pr.grace_epochs,
                 reduction_factor=pr.reduction_factor, concurrency=1, **kw)
    agree = 0
    for t in live:
        e_live, e_replay = int(t.epochs_done), got[t.name]
        agree += e_live == e_replay
        print(f"  #{int(t.number):>2} {t.name[:44]:<44} live {t.state:>8} after {e_live}  replay {e_replay}"
              + ("" if e_live == e_replay else "   <-- differs"))
    print(f"replay agrees with the live search on {agree}/{len(live)} trials")
    return 0 if agree == len(live) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
