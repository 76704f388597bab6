"""``lkscale fidelity RUN_DIR``: does the proxy rank like longer training? Retrain a sample, print the rank statistics."""
from __future__ import annotations

import argparse
import json
import math
import sys

from lkscale.cli import UsageError
from lkscale.fidelity.replay import fmt_range

_DESCRIPTION = """\
Retrain a stratified sample of a finished search (its proxy front, plus candidates spread over the rest of
the accuracy and latency range) at a higher fidelity — more epochs, more training images, augmentation, a
larger input size where the data has it — with Ray Tune, as the search trains (parallel; --address for a
cluster). Prints, with 95% bootstrap intervals over candidates: Kendall tau and Spearman rho between proxy
and high-fidelity accuracy, top-k recall, the share of the proxy front still non-dominated at high
fidelity, and the hypervolume of the proxy front at high fidelity over the best front in the sample;
then the same rank statistics for each pruning rung against the final proxy accuracy (from the run's
learning curves). A warning names a ranking whose Kendall tau (point estimate) is below --warn-tau.
Resumable: finished retrains are kept in RUN_DIR/fidelity.csv and a re-run only trains what is missing.
Results also go to summary.json ("fidelity") and RUN_DIR/fidelity.png."""


def add_parser(subparsers) -> None:
    from lkscale.config import FidelityConfig

    d = FidelityConfig()
    p = subparsers.add_parser("fidelity", help="check that the proxy ranks candidates like longer training",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `lkscale search`")
    p.add_argument("--sample", type=int, default=d.sample, metavar="N", help=f"candidates to retrain (default {d.sample})")
    p.add_argument("--epochs", type=int, default=d.epochs, metavar="N", help=f"high-fidelity epochs (default {d.epochs})")
    p.add_argument("--train-per-class", type=int, default=None, metavar="N",
                   help="high-fidelity training images per class (default: the study's)")
    p.add_argument("--val-per-class", type=int, default=None, metavar="N",
                   help="validation images per class (default: the study's, the same images)")
    p.add_argument("--input-size", type=int, default=None, metavar="PX", help="input size (default: the study's)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment,
                   help=f"random crop + flip in the retrains (default {'on' if d.augment else 'off'})")
    p.add_argument("--concurrency", type=int, default=d.concurrency, metavar="N",
                   help=f"retrains at a time (default {d.concurrency})")
    p.add_argument("--seed", type=int, default=d.seed, metavar="N", help=f"sample, data and init seed (default {d.seed})")
    p.add_argument("--top-k", type=int, default=d.top_k, metavar="K", help=f"top-k recall (default {d.top_k})")
    p.add_argument("--warn-tau", type=float, default=d.warn_tau, metavar="X",
                   help=f"warn when Kendall tau is below this (default {d.warn_tau:g})")
    p.add_argument("--address", metavar="ADDR", help="a Ray cluster to run on (e.g. auto)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON on stdout")


def _config(args: argparse.Namespace):
    from lkscale.config import ConfigError, FidelityConfig, build

    raw = {k: getattr(args, k) for k in ("sample", "epochs", "train_per_class", "val_per_class", "input_size",
                                         "augment", "concurrency", "seed", "top_k", "warn_tau")}
    try:
        return build(FidelityConfig, {k: v for k, v in raw.items() if v is not None}, "fidelity")
    except ConfigError as e:
        raise UsageError(f"--{e.field_path.split('.', 1)[1].replace('_', '-')}: {str(e).split(': ', 1)[1]}") from None


def _iv(d: dict | None, pct: bool = False) -> str:
    if not d or d.get("estimate") is None:
        return "n/a"
    f = (lambda x: f"{100 * x:5.1f}%") if pct else (lambda x: f"{x:+.3f}")
    lo, hi = d.get("low"), d.get("high")
    ok = lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi)
    return f"{f(d['estimate'])}  [{f(lo)}, {f(hi)}]" if ok else f(d["estimate"])


def print_text(out: dict) -> None:
    st, s = out["proxy_vs_high"], out["settings"]
    print(f"proxy ({s['proxy_epochs']} epochs, {s['proxy_train_per_class'] or 'all'}/class) vs high fidelity "
          f"({s['epochs']} epochs, {s['high_train_per_class'] or 'all'}/class, augment "
          f"{'on' if s['augment'] else 'off'}, {s['high_input_size']} px): {st['n']} candidates, 95% bootstrap intervals")
    k = st.get("k", 3)
    for key, label, pct in (("kendall_tau", "Kendall tau", False), ("spearman_rho", "Spearman rho", False),
                            (f"top{k}_recall", f"top-{k} recall", True), ("front_kept", "proxy front kept", True),
                            ("hv_ratio", "hypervolume ratio", False)):
        if key in st:
            ref = f"   (reference: accuracy 0, {st['reference'][1]:.3g} ms)" if key == "hv_ratio" and st.get("reference") else ""
            print(f"  {label:<18} {_iv(st[key], pct)}{ref}")
    if st.get("warning"):
        print(st["warning"])
    if out["rungs"] and not str(out.get("pruning", "")).startswith(("moasha", "asha")):
        print(f"(this run did not prune: pruning {out.get('pruning')}; the rung statistics say what pruning would do)")
    for r in out["rungs"]:
        if "kendall_tau" not in r:
            print(f"rung {r['rung']}: {r.get('warning')}")
            continue
        line = (f"rung {r['rung']} of {r['epochs']} vs final proxy accuracy ({r['n']} complete trials): "
                f"tau {_iv(r['kendall_tau'])}, rho {_iv(r['spearman_rho'])}, final top-{r['k']} kept {100 * r['kept_topk']:.0f}%")
        if r.get("kernel_vs_gain"):
            line += f"; kernel size vs gain after the rung: tau {_iv(r['kernel_vs_gain'])}"
        print(line)
        if r.get("warning"):
            print(r["warning"])
    print_replay(out.get("pruning_replay") or {})


def print_replay(rp: dict) -> None:
    """The pruning rules replayed on the run's own complete learning curves (``fidelity.replay.replay_rules``)."""
    if not rp:
        return
    print(f"pruning rules replayed on this run's learning curves ({rp['replicates']} replicate(s) x {rp['orders']} "
          f"arrival orders, {rp['concurrency']} at a time; gN: first rung at epoch N, halving "
          f"{rp['reduction_factor']:g}); mean (range over replicates):")
    print(f"  {'rule':<10} {'cost':>16} {'proxy front kept':>20} {'high-fid. front kept':>22} {'high-fid. hypervolume':>24}")
    for rule, row in rp["rules"].items():
        print(f"  {rule:<10} {fmt_range(row.get('cost')):>16} {fmt_range(row.get('proxy_front_kept')):>20} "
              f"{fmt_range(row.get('hf_front_kept')):>22} {fmt_range(row.get('hf_hv_ratio'), False):>24}")


def run(args: argparse.Namespace) -> int:
    from lkscale.fidelity.run import run_fidelity

    cfg = _config(args)
    out = run_fidelity(args.run_dir, cfg, address=args.address, say=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        json.dump(out, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_text(out)
    n, want = out["proxy_vs_high"]["n"], min(cfg.sample, len(out["sample"]))
    if n < want:
        print(f"lkscale fidelity: failed: {want - n} of {want} retrains did not finish (see {args.run_dir}/fidelity.csv)",
              file=sys.stderr)
        return 1
    return 0


__all__ = ["add_parser", "run"]
