"""Names and pretrained cfgs of lkscale models in timm (no registration here: see timm_registry)."""
from __future__ import annotations

import re
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from lkscale.blocks import get_family
from lkscale.spec import ArchSpec
from lkscale.weights import WeightsMeta

GENERIC = "lkscale_spec"  # the timm entry point that takes the architecture as spec=


def timm_name(name: str) -> str:
    """timm registry name of an lkscale architecture or preset: ``lkscale_`` + name with ``.-+=`` as ``_``."""
    return "lkscale_" + re.sub(r"[^A-Za-z0-9_]", "_", name).lower()


def first_conv_name(spec: ArchSpec, in_chans: int = 3) -> str:
    """timm's ``first_conv``: the stem's first convolution (adapted when ``in_chans`` differs)."""
    with torch.device("meta"):  # the stem alone, without allocating it
        stem = get_family(spec.stem.family).make_stem(in_chans, spec.widths[0], spec.stem.stride)
    return next(f"stem.{n}" for n, m in stem.named_modules() if isinstance(m, torch.nn.Conv2d))


def pretrained_cfg(spec: ArchSpec | None, num_classes: int = 1000, in_chans: int = 3, input_size: int = 224,
                   mean: tuple | list | None = None, std: tuple | list | None = None, file: str | None = None,
                   label_names: list | tuple | None = None) -> dict:
    """A timm pretrained cfg (dict) for an lkscale model; ImageNet mean/std when none are known."""
    cfg = {"num_classes": int(num_classes), "input_size": (int(in_chans), int(input_size), int(input_size)),
           "mean": tuple(mean) if mean else IMAGENET_DEFAULT_MEAN, "std": tuple(std) if std else IMAGENET_DEFAULT_STD,
           "interpolation": "bicubic", "crop_pct": 1.0, "classifier": "head.fc",
           "first_conv": first_conv_name(spec, in_chans) if spec is not None else "stem.0"}
    if file:
        cfg["file"] = file
    if label_names:
        cfg["label_names"] = tuple(label_names)
    return cfg


def meta_cfg(meta: WeightsMeta) -> dict:
    """The parts of a pretrained cfg that describe a weights file."""
    cfg: dict[str, Any] = {"num_classes": meta.num_classes}
    if meta.input_size:
        cfg["input_size"] = (meta.in_chans, meta.input_size, meta.input_size)
    if meta.mean and meta.std:
        cfg.update(mean=tuple(meta.mean), std=tuple(meta.std))
    if meta.classes:
        cfg["label_names"] = tuple(meta.classes)
    return cfg


def timm_config(record: dict) -> dict:
    """timm ``config.json`` for ``timm.create_model("local-dir:<folder>")`` (generic ``lkscale_spec`` entry point)."""
    spec = ArchSpec.from_dict(record["spec"])
    n = record["normalisation"]
    pcfg = pretrained_cfg(spec, record["num_classes"], record["in_chans"], record["input_size"], n.get("mean"),
                          n.get("std"), label_names=record.get("classes"))
    pcfg["input_size"] = list(pcfg["input_size"])
    pcfg["mean"], pcfg["std"] = list(pcfg["mean"]), list(pcfg["std"])
    if "label_names" in pcfg:
        pcfg["label_names"] = list(pcfg["label_names"])
    return {"architecture": GENERIC, "num_classes": record["num_classes"],
            "num_features": record["spec"]["stages"][-1]["width"],
            "model_args": {"spec": record["spec"], "num_classes": record["num_classes"], "in_chans": record["in_chans"]},
            "pretrained_cfg": pcfg}
