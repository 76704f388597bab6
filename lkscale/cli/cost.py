"""``lkscale cost``: parameters, multiply-adds, useful kernel sizes and deployed latency of one network."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from lkscale.cli import UsageError
from lkscale.config import RUNTIMES, LatencyConfig

_DESCRIPTION = """\
Cost of one architecture (a preset or a spec file): parameters of the train and deploy forms,
multiply-adds of the deploy form (fvcore convention: one multiply-add = one FLOP), per-stage map
size / nominal kernel / effective kernel min(K, 2H-1) / parameters that never touch the image, and
the latency of the deploy form with its error: median over interleaved rounds, 95% interval, robust
CV, in the runtime given (onnxruntime by default; torch eager, torch.compile, CUDA). See also
`lkscale latency` to measure several networks side by side or calibrate a predictor table.
Published ImageNet presets default to 224 px and 1000 classes; other presets and spec files to
32 px and 10 classes."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("cost", help="parameters, MACs, effective kernels and latency of a network",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", metavar="NAME", help="a named architecture (see lkscale.presets)")
    src.add_argument("--spec", metavar="FILE", help="an ArchSpec file (.yaml or .json)")
    p.add_argument("--input-size", type=int, default=None, metavar="N", help="square input size in px")
    d = LatencyConfig()  # the defaults; a flag given is laid over them
    p.add_argument("--batch-size", type=int, metavar="N", help=f"batch size for latency (default {d.batch_size})")
    p.add_argument("--threads", type=int, metavar="N", help=f"torch threads for latency (default {d.threads})")
    p.add_argument("--num-classes", type=int, default=None, metavar="N", help="classifier outputs")
    p.add_argument("--repeats", type=int, metavar="N", help=f"timed calls per round (default {d.repeats})")
    p.add_argument("--rounds", type=int, metavar="N", help=f"rounds of timed calls (default {d.rounds})")
    p.add_argument("--runtime", choices=RUNTIMES, help=f"where the deploy form runs (default {d.runtime})")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--train-step", action="store_true", help="also time a train step (fwd + bwd + SGD)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    return p


def _positive(args: argparse.Namespace, name: str, minimum: int = 1) -> None:
    v = getattr(args, name)
    if v is not None and v < minimum:
        raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}, got {v}")


def _si(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3f} {suffix}"
    return f"{n:.0f} "


def format_report(r) -> str:
    lines = [f"{r.name}  ({r.input_size}x{r.input_size} px, {r.num_classes} classes)",
             f"  params        train {r.params:,}  deploy {r.deploy_params:,}",
             f"  MACs          {_si(r.flops)}MACs per image (deploy form)"]
    ops = ", ".join(f"{k} {_si(v)}" for k, v in sorted(r.flops_by_op.items(), key=lambda kv: -kv[1]))
    lines.append(f"                {ops}")
    if r.useful_flops is not None:
        lines.append(f"  useful MACs   {_si(r.useful_flops)}MACs ({100 * r.useful_flops / max(r.flops, 1):.1f}%; "
                     f"without conv taps that only read padding)")
    if r.uncounted_ops:
        lines.append(f"  NOT COUNTED   {', '.join(r.uncounted_ops)}")
    if r.latency_ms is not None:
        lat = r.latency or {}
        flag = "  NOISY: spread above max_cv, do not trust" if lat.get("noisy") else ""
        lines.append(f"  latency       {r.latency_ms:.3f} ms median, 95% interval [{lat.get('ci_low_ms', 0):.3f}-"
                     f"{lat.get('ci_high_ms', 0):.3f}], cv {100 * lat.get('cv', 0):.1f}%{flag}")
        lines.append(f"                {lat.get('runtime', '?')}, batch {r.batch_size}, {r.threads} thread(s), "
                     f"{r.latency_runs} interleaved rounds, deploy form; {lat.get('throughput_ips', 0):.0f} img/s")
    if r.train_step_ms is not None:
        lines.append(f"  train step    {r.train_step_ms:.2f} ms median (batch {r.train_batch_size}, fwd+bwd+SGD)")
    lines.append("")
    lines.append("  stage  block      map      kernel  effective  dead params / depthwise params")
    for s in r.stages:
        hw = f"{s.map_hw[0]}x{s.map_hw[1]}"
        eff = f"{s.effective_kernel[0]}x{s.effective_kernel[1]}"
        lines.append(f"  {s.index:<5}  {s.block:<9}  {hw:<7}  {s.kernel:<6}  {eff:<9}  "
                     f"{s.dead_params:,} / {s.dw_params:,}")
    lines.append("")
    lines.append("FLOPs are multiply-adds (fvcore convention); elementwise ops count 0.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import lkscale
    from lkscale.presets import published
    from lkscale.spec import ArchSpec

    for name in ("input_size", "batch_size", "threads", "num_classes", "repeats", "rounds"):
        _positive(args, name)
    if args.preset is not None:
        spec = lkscale.get_preset(args.preset)
        imagenet = args.preset in published()
    else:
        spec = ArchSpec.load(args.spec)
        imagenet = False
    input_size = args.input_size or (224 if imagenet else 32)
    num_classes = args.num_classes or (1000 if imagenet else 10)
    stride = spec.stem.stride * 2 ** (len(spec.stages) - 1)
    if input_size < stride:
        raise UsageError(f"--input-size {input_size} is smaller than the network's total stride {stride}")

    from lkscale.cost import estimate

    flags = {"runtime": args.runtime, "batch_size": args.batch_size, "threads": args.threads, "rounds": args.rounds,
             "repeats": args.repeats, "input_size": input_size}
    cfg = dataclasses.replace(LatencyConfig(), **{k: v for k, v in flags.items() if v is not None})
    if cfg.runtime == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--runtime cuda needs a GPU; torch.cuda.is_available() is False here")

    def progress(msg: str) -> None:
        print(f"lkscale cost: {msg}", file=sys.stderr, flush=True)

    report = estimate(spec, input_size=input_size, num_classes=num_classes, latency=not args.no_latency,
                      train_step=args.train_step, progress=progress, latency_config=cfg)
    if args.json:
        out = report.to_dict()
        if args.preset:
            out["preset"] = args.preset
        print(json.dumps(out, indent=2))
    else:
        print(format_report(report))
    return 0
