"""Load a model folder back: an export (``lkscale export``) or a ``lkscale train --save`` folder."""
from __future__ import annotations

import json
import os

import torch

from lkscale.export.layout import ExportDir
from lkscale.export.safety import ExportError
from lkscale.export.timm_cfg import meta_cfg, pretrained_cfg
from lkscale.model import LKNet
from lkscale.reparam import reparameterize
from lkscale.spec import ArchSpec
from lkscale.weights import WeightsError, read_weights


def read_export(path: str) -> dict:
    """The ``export.json`` record of an export folder."""
    p = ExportDir(path).export_json
    if not os.path.isfile(p):
        raise ExportError(f"{path}: not an lkscale export folder (no export.json)")
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def load(path: str, deploy: bool = False) -> torch.nn.Module:
    """Rebuild the model of a folder holding ``spec.yaml`` and ``model.safetensors`` (an export, or
    ``lkscale train --save``): train form, or ``deploy`` form (``deploy.safetensors`` when the folder has
    one, else the train weights re-parameterised). Weights loaded strictly, eval mode, timm
    ``pretrained_cfg`` set from the weights' metadata."""
    if not os.path.isdir(path):
        raise ExportError(f"{path}: no such export folder")
    d = ExportDir(path)
    spec_path, train_w = d.spec_yaml, d.model_weights
    for p in (spec_path, train_w):
        if not os.path.isfile(p):
            raise ExportError(f"{path}: not an lkscale export folder (missing {os.path.basename(p)})")
    deploy_w = d.deploy_weights
    wpath = deploy_w if deploy and os.path.isfile(deploy_w) else train_w
    spec = ArchSpec.load(spec_path)
    try:
        state, meta = read_weights(wpath)
    except WeightsError as e:
        raise ExportError(str(e)) from None
    if meta.spec is not None and meta.spec.name != spec.name:
        raise ExportError(f"{wpath}: holds weights of {meta.spec.name}, but spec.yaml is {spec.name}")
    model = LKNet(spec, num_classes=meta.num_classes, in_chans=meta.in_chans)
    if meta.form == "deploy":
        model = reparameterize(model, inplace=True)
    model.load_state_dict(state, strict=True)
    if deploy and meta.form != "deploy":
        model = reparameterize(model, inplace=True)
    model.eval()
    cfg = pretrained_cfg(spec, meta.num_classes, meta.in_chans, meta.input_size or 224)
    model.pretrained_cfg = {**cfg, **meta_cfg(meta), "architecture": spec.name}
    return model
