"""``lkscale latency``: measure deploy-form latency with its error, or calibrate a predictor table."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from lkscale.cli import UsageError
from lkscale.config import COST_CLASSES, RUNTIMES, LatencyConfig

_DESCRIPTION = """\
Latency of the deploy form, measured with its error: every network gets a runner in the chosen
runtime (onnxruntime by default: the ONNX model a CPU user deploys), then interleaved rounds visit
all networks in a fresh random order and time a block of calls each. Reported per network: the
median over rounds, a 95% interval for it (order statistics), the robust CV of the rounds; a network
whose CV stays above --max-cv after extra rounds is flagged NOISY. A quiet-machine check (reference
workload against its best time, load average) runs first; --wait-quiet waits for a quiet moment.

With --calibrate OUT.json: time every distinct part (stem, transitions, blocks at their shapes,
head) of the networks given (a --study's whole space), fit the per-network overhead on --fit whole
networks, report the error (MAPE) on --holdout others, and write the table a study can use
(budgets.latency.source: predicted, budgets.latency.table: OUT.json) on another machine."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("latency", help="measure latency with its error, or calibrate a predictor table",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", metavar="NAME", action="append", help="a named architecture (repeatable)")
    src.add_argument("--spec", metavar="FILE", action="append", help="an ArchSpec file (repeatable)")
    src.add_argument("--study", metavar="FILE", help="a study file: every network of its space")
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="where to run (default: the study's budgets.latency.runtime, else onnxruntime)")
    p.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: the study's, else 1)")
    p.add_argument("--batch-size", type=int, metavar="N", help="batch size (default: the study's, else 1)")
    p.add_argument("--input-size", type=int, default=None, metavar="N",
                   help="square input in px (default: the study's latency or data input size, else 32)")
    p.add_argument("--rounds", type=int, metavar="N", help="interleaved rounds (default: the study's, else 7)")
    p.add_argument("--repeats", type=int, metavar="N", help="timed calls per network per round (default 10)")
    p.add_argument("--max-cv", type=float, metavar="X", help="spread above which rounds are added (default 0.1)")
    p.add_argument("--num-classes", type=int, default=COST_CLASSES, metavar="N",
                   help=f"classifier outputs (default {COST_CLASSES})")
    p.add_argument("--samples", type=int, default=16, metavar="N",
                   help="networks sampled from a study space that is not a finite grid (default 16)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a quiet machine before measuring (default: check only)")
    p.add_argument("--calibrate", metavar="OUT.json", help="calibrate a per-block table and write it here")
    p.add_argument("--fit", type=int, default=4, metavar="N", help="networks the overhead is fitted on")
    p.add_argument("--holdout", type=int, default=8, metavar="N", help="networks held out to score the table")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    return p


def _specs(args: argparse.Namespace):
    """The networks asked for and the latency settings (the study's, overridden by the flags given)."""
    import lkscale
    from lkscale.space import distinct_specs, expand
    from lkscale.spec import ArchSpec

    base, data_size, study = LatencyConfig(), None, None
    if args.study:
        from lkscale.study import load_study

        study = load_study(args.study)
        base = getattr(study.budgets, "latency", base)
        data_size = getattr(study.data, "input_size", None)
    flags = {"runtime": args.runtime, "threads": args.threads, "batch_size": args.batch_size,
             "rounds": args.rounds, "repeats": args.repeats, "max_cv": args.max_cv,
             "input_size": args.input_size or base.input_size or data_size or 32}
    cfg = dataclasses.replace(base, **{k: v for k, v in flags.items() if v is not None})
    if args.preset:
        return [lkscale.get_preset(n) for n in args.preset], cfg
    if args.spec:
        return [ArchSpec.load(f) for f in args.spec], cfg
    specs = distinct_specs(expand(study.space, cfg.input_size, samples=args.samples), deploy=True)
    if not specs:
        raise UsageError("no point of the study's space builds a valid network")
    return list(specs.values()), cfg


def _check(args: argparse.Namespace) -> None:
    for name in ("threads", "batch_size", "input_size", "rounds", "repeats", "num_classes", "samples"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.fit < 1 or args.holdout < 0 or (args.max_cv is not None and args.max_cv <= 0) or args.wait_quiet < 0:
        raise UsageError("--fit must be >= 1, --holdout >= 0, --max-cv > 0 and --wait-quiet >= 0")
    if args.runtime == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--runtime cuda needs a GPU; torch.cuda.is_available() is False here")


def run(args: argparse.Namespace) -> int:
    from lkscale.cost.quiet import wait_for_quiet

    _check(args)
    specs, cfg = _specs(args)

    def progress(msg: str) -> None:
        print(f"lkscale latency: {msg}", file=sys.stderr, flush=True)

    quiet = wait_for_quiet(args.wait_quiet, poll_s=min(5.0, max(args.wait_quiet, 0.1)), progress=progress)
    progress(f"machine {'quiet' if quiet.quiet else 'BUSY: ' + quiet.reason} (reference {quiet.ratio:.2f}x "
             f"its best; load/CPU {quiet.load_per_cpu if quiet.load_per_cpu is not None else 'n/a'})")
    if args.calibrate:
        return _calibrate(args, specs, cfg, quiet, progress)
    return _measure(args, specs, cfg, quiet, progress)


def _measure(args, specs, cfg, quiet, progress) -> int:
    import lkscale
    from lkscale.cost import count_flops, measure_interleaved

    models = {s.name: lkscale.reparameterize(lkscale.build_model(s, num_classes=args.num_classes)) for s in specs}
    progress(f"measuring {len(models)} network(s): {cfg.runtime}, batch {cfg.batch_size}, {cfg.threads} "
             f"thread(s), {cfg.input_size} px, {cfg.rounds} rounds of {cfg.repeats}")
    res = measure_interleaved(models, cfg, progress=progress)
    noisy = [n for n, r in res.items() if r.noisy]
    if noisy:
        progress(f"{len(noisy)} measurement(s) still too wide (cv > {cfg.max_cv:g}), flagged noisy: {', '.join(noisy)}")
    if args.json:
        out = {"config": dataclasses.asdict(cfg), "quiet": dataclasses.asdict(quiet),
               "results": {n: {**r.to_dict(), "flops": count_flops(models[n], cfg.input_size)[0]}
                           for n, r in res.items()}}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'network':<44} {'median ms':>9}  {'95% interval':>17}  {'cv':>6}  {'rounds':>6}  {'img/s':>7}")
    for n, r in sorted(res.items(), key=lambda kv: kv[1].median_ms):
        flag = "  NOISY" if r.noisy else ""
        print(f"{n:<44} {r.median_ms:>9.3f}  [{r.ci_low_ms:>7.3f}-{r.ci_high_ms:>7.3f}]  {100 * r.cv:>5.1f}%  "
              f"{r.rounds:>6}  {r.throughput_ips:>7.0f}{flag}")
    first = next(iter(res.values()))
    print(f"\nruntime {first.runtime} ({first.note}); batch {cfg.batch_size}, {cfg.threads} thread(s), "
          f"{cfg.input_size} px; deploy form; machine {'quiet' if quiet.quiet else 'busy: ' + quiet.reason}")
    return 0


def _calibrate(args, specs, cfg, quiet, progress) -> int:
    from lkscale.cost.predictor import calibrate

    table = calibrate(specs, cfg, num_classes=args.num_classes, fit=args.fit, holdout=args.holdout,
                      progress=progress)
    table.host["quiet"] = dataclasses.asdict(quiet)
    table.save(args.calibrate)
    if args.json:
        print(json.dumps({"table": args.calibrate, "parts": len(table.parts), "overheads_ms": table.overheads,
                          "error_pct": table.error_pct, "holdout": table.holdout, "fit": table.fit}, indent=2))
        return 0
    err = f"{table.error_pct:.1f}%" if table.error_pct is not None else "n/a (no network held out)"
    print(f"wrote {args.calibrate}: {len(table.parts)} parts, {cfg.runtime}, batch {cfg.batch_size}, "
          f"{cfg.threads} thread(s), {cfg.input_size} px")
    print(f"held-out error (MAPE over {len(table.holdout)} networks): {err}")
    for r in table.holdout:
        print(f"  {r['name']:<44} measured {r['measured_ms']:.3f} ms  predicted {r['predicted_ms']:.3f} ms")
    return 0
