"""``lkscale export RUN_DIR (--top N | --pareto) --out DIR``: winners as spec + safetensors + ONNX + model card."""
from __future__ import annotations

import argparse
import json
import sys

from lkscale.cli import UsageError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export the winners of a search run (spec, weights, deploy form, ONNX, model card)",
        description="For each winner, a folder OUT/<name> with spec.yaml, model.safetensors (train form), "
                    "deploy.safetensors and model.onnx (re-parameterised; ONNX checked against PyTorch with "
                    "onnxruntime), config.json (timm local-dir), export.json and card.md. "
                    "Load one with lkscale.load(folder), or with timm.create_model('local-dir:<folder>', "
                    "pretrained=True) after lkscale.register_timm().")
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `lkscale search`")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--top", type=int, metavar="N", help="the N complete trials with the best validation accuracy")
    which.add_argument("--pareto", action="store_true", help="the accuracy / deploy-latency Pareto front")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the winners into")
    p.add_argument("--retrain-epochs", type=int, default=0, metavar="N",
                   help="retrain each winner from scratch for N epochs (study's data and proxy settings) and "
                        "report its test accuracy; default 0 exports the proxy-trained weights")
    p.add_argument("--no-onnx", action="store_true", help="skip model.onnx")
    p.add_argument("--json", action="store_true", help="print the exported folders and their metrics as JSON")


def run(args: argparse.Namespace) -> int:
    from lkscale.export import ExportError, export_winners, read_export
    from lkscale.report import RunDirError

    if args.top is not None and args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    if args.retrain_epochs < 0:
        raise UsageError(f"--retrain-epochs must be >= 0, got {args.retrain_epochs}")
    try:
        paths = export_winners(args.run_dir, args.out, top=args.top, pareto=args.pareto,
                               retrain_epochs=args.retrain_epochs, onnx=not args.no_onnx,
                               progress=lambda m: print(m, file=sys.stderr))
    except (RunDirError, ExportError) as e:
        raise UsageError(str(e)) from None
    records = [read_export(p) for p in paths]
    if args.json:
        out = [{"folder": p, "name": r["name"], "timm_name": r["timm_name"], "metrics": r["metrics"],
                "costs": r["costs"], "checks": r["checks"]} for p, r in zip(paths, records)]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for p, r in zip(paths, records):
            m, o = r["metrics"], (r["checks"].get("onnx") or {})
            acc = m.get("test_acc") if m.get("test_acc") is not None else m.get("val_acc")
            kind = "test" if m.get("test_acc") is not None else "val"
            diff = f", ONNX diff {o['max_abs_diff']:.1e}" if o else ""
            print(f"{p}  ({kind} acc {acc:.3f}{diff})")
    return 0
