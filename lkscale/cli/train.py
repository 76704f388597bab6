"""``lkscale train``: proxy-train one architecture on an image dataset and report validation accuracy."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

from lkscale.cli import UsageError
from lkscale.config import DATASETS, PRECISIONS, DataConfig, TrainConfig

_DESCRIPTION = """\
Train one architecture (a preset or a spec file) for a few epochs on an image dataset held in
memory, and print its validation accuracy (the validation split is carved from the training images;
--test also reports the held-out test split). Data: --data PATH (an image folder or .tar.gz with
train/<class>/* and test/<class>/*), else $LKSCALE_DATA, else ../shared/data/cifar10-jpg.tar.gz or
data/cifar10-jpg.tar.gz. The first run decodes the images and caches them under $LKSCALE_CACHE
(default ~/.cache/lkscale)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    d, dd = TrainConfig(), DataConfig()  # the defaults; a flag given is laid over them
    p = subparsers.add_parser("train", help="proxy-train one architecture and report its accuracy",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", metavar="NAME", help="a named architecture (see lkscale.presets)")
    src.add_argument("--spec", metavar="FILE", help="an ArchSpec file (.yaml or .json)")
    p.add_argument("--data", metavar="PATH", help="dataset location (folder, .tar.gz, or IDX/CIFAR folder)")
    p.add_argument("--dataset", choices=DATASETS, help=f"dataset format (default {dd.dataset})")
    p.add_argument("--epochs", type=float, metavar="N", help=f"epochs (default {d.epochs:g})")
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="training images per class (default: all left after the validation split)")
    p.add_argument("--val", type=int, metavar="N", help=f"validation images per class (default {dd.val_per_class})")
    p.add_argument("--input-size", type=int, metavar="PX", help=f"input size in px (default {dd.input_size})")
    p.add_argument("--batch-size", type=int, metavar="N", help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, metavar="X", help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--warmup", type=float, metavar="EPOCHS",
                   help=f"linear warm-up in epochs (default {d.warmup_epochs:g})")
    p.add_argument("--weight-decay", type=float, metavar="X",
                   help=f"AdamW weight decay (default {d.weight_decay:g})")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="random crop (padding 4) + horizontal flip of training images "
                        f"(default {'on' if dd.augment else 'off'}: 2-epoch proxies learn faster without)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    p.add_argument("--device", metavar="DEV",
                   help=f"auto (a visible GPU, else the CPU), cpu, cuda or cuda:N (default {d.device})")
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"autocast precision (default {d.precision}; fp16 needs a GPU; bf16 on CPU is slower, measured)")
    p.add_argument("--seed", type=int, metavar="N", help=f"seed for subsets, init and batches (default {d.seed})")
    p.add_argument("--save", metavar="DIR", help="write model.safetensors and spec.yaml into DIR")
    p.add_argument("--test", action="store_true", help="also report accuracy on the test split")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check(args: argparse.Namespace) -> None:
    for name, minimum in (("batch_size", 1), ("val", 1), ("input_size", 8), ("subset", 1), ("threads", 1)):
        v = getattr(args, name)
        if v is not None and v < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}, got {v}")
    if args.epochs is not None and (not (args.epochs > 0) or not math.isfinite(args.epochs)):
        raise UsageError(f"--epochs must be > 0, got {args.epochs:g}")
    if args.lr is not None and (not (args.lr > 0) or not math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number, got {args.lr:g}")
    if (args.warmup is not None and args.warmup < 0) or (args.weight_decay is not None and args.weight_decay < 0):
        raise UsageError("--warmup and --weight-decay must be >= 0")


def configs(args: argparse.Namespace) -> tuple[DataConfig, TrainConfig]:
    """The data and training settings: the config defaults with the flags given laid over them."""
    def over(base, flags: dict):
        return dataclasses.replace(base, **{k: v for k, v in flags.items() if v is not None})

    dcfg = over(DataConfig(), {"dataset": args.dataset, "root": args.data, "train_per_class": args.subset,
                               "val_per_class": args.val, "input_size": args.input_size, "seed": args.seed,
                               "augment": args.augment})
    tcfg = over(TrainConfig(), {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                                "warmup_epochs": args.warmup, "weight_decay": args.weight_decay,
                                "threads": args.threads, "seed": args.seed, "device": args.device,
                                "precision": args.precision})
    return dcfg, tcfg


def save_model(model, spec, out_dir: str, splits=None, extra: dict | None = None) -> list[str]:
    """``model.safetensors`` (weights; spec, class count, classes and normalisation in its metadata, see
    ``lkscale.weights``) and ``spec.yaml``: a folder ``lkscale.load`` rebuilds (``lkscale.export.layout``)."""
    import os

    from lkscale.export.layout import ExportDir
    from lkscale.weights import save_trained, save_weights

    os.makedirs(out_dir, exist_ok=True)
    d = ExportDir(out_dir)
    if splits is not None:
        save_trained(d.model_weights, model, spec, splits, extra=extra)
    else:
        save_weights(d.model_weights, model, spec, num_classes=model.num_classes, in_chans=model.in_chans, extra=extra)
    spec.save(d.spec_yaml)
    return [d.model_weights, d.spec_yaml]


def run(args: argparse.Namespace) -> int:
    _check(args)
    import lkscale
    from lkscale.data import load_splits
    from lkscale.spec import ArchSpec
    from lkscale.train import check_precision, evaluate, resolve_device, torch_threads, train_model

    spec = lkscale.get_preset(args.preset) if args.preset else ArchSpec.load(args.spec)
    dcfg, tcfg = configs(args)
    try:
        check_precision(tcfg.precision, resolve_device(tcfg.device))
    except ValueError as e:
        raise UsageError(f"--device/--precision: {e}") from None
    with torch_threads(args.threads):
        splits = load_splits(dcfg)
        import torch

        torch.manual_seed(tcfg.seed)
        model = lkscale.build_model(spec, num_classes=len(splits.classes), in_chans=splits.in_chans)
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=None, unit="step", file=sys.stderr, desc=spec.name, dynamic_ncols=True, leave=False)

        def on_step(step: int, total: int, loss: float) -> None:
            if bar is not None:
                bar.total = total
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                bar.update(1)

        def on_epoch(m: dict) -> None:
            if bar is not None:
                bar.write(f"epoch {m['epoch']}: train loss {m['train_loss']:.4f}  val loss {m['val_loss']:.4f}  "
                          f"val acc {m['val_acc']:.4f}  {m['epoch_seconds']:.1f} s  "
                          f"{m['images_per_s']:.0f} img/s", file=sys.stderr)

        try:
            res = train_model(model, splits, tcfg, callback=on_epoch, on_step=on_step)
        finally:
            if bar is not None:
                bar.close()
        test = None
        if args.test and res.status == "ok":
            if splits.test is None:
                raise UsageError(f"--test: {splits.source} has no test split")
            test = evaluate(res.model, splits.test, tcfg.eval_batch_size)
    out = {
        "spec": spec.name, "status": res.status, "message": res.message,
        "dataset": dcfg.dataset, "data": splits.source, "classes": len(splits.classes),
        "train_images": len(splits.train), "val_images": len(splits.val),
        "epochs": res.epochs_done, "val_acc": res.val_acc, "val_loss": res.val_loss,
        "seconds": round(res.seconds, 2), "images_per_s": round(res.images_per_s, 1),
        "threads": args.threads, "seed": tcfg.seed, "device": res.device, "precision": res.precision,
        "history": res.history,
    }
    if test is not None:
        out.update(test_loss=test[0], test_acc=test[1], test_images=len(splits.test))
    if args.save and res.status == "ok":
        out["saved"] = save_model(res.model, spec, args.save, splits,
                                  extra={"val_acc": res.val_acc, "epochs": res.epochs_done})
    if args.json:
        print(json.dumps(out, indent=2))
    if res.status != "ok":
        print(f"lkscale train: failed: {res.message}", file=sys.stderr)
        return 1
    line = (f"{spec.name}: val acc {res.val_acc:.4f} ({len(splits.val)} images)"
            + (f", test acc {test[1]:.4f} ({len(splits.test)} images)" if test is not None else "")
            + f", {res.epochs_done} epochs on {len(splits.train)} images in {res.seconds:.1f} s"
            + f", {res.images_per_s:.0f} img/s")
    if args.save:
        line += f"; saved to {args.save}"
    print(line, file=sys.stderr if args.json else sys.stdout)
    return 0
