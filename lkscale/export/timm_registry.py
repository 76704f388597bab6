"""lkscale models in timm's registry, on an explicit call (nothing is registered at import time).

- :func:`register_timm` registers the generic entry point ``lkscale_spec`` (the architecture passed as
  ``spec=``, as ``config.json`` of an export does for ``timm.create_model("local-dir:<folder>")``) and
  every preset as ``lkscale_<preset>``.
- :func:`register_export` registers an export folder as ``lkscale_<name>``; ``pretrained=True`` loads its
  ``model.safetensors``.

Every entry point builds through ``timm.models.build_model_with_cfg`` (as ``timm/models/convnext.py``
does), so timm's own machinery applies: ``pretrained_cfg`` (``mean``/``std``/``input_size``/
``num_classes``/``first_conv``/``classifier``), ``pretrained_cfg_overlay=dict(file=...)``,
``features_only=True`` / ``out_indices`` (``FeatureListNet`` over the flattened stages), classifier and
input-channel adaptation of pretrained weights. Pretrained weights are read from ``.safetensors`` only;
the cfg of a weights file (class count, normalisation, input size) comes from its metadata.

timm names cannot contain ``.`` (it separates a pretrained tag), so an export ``rep-k13.7.3-d1...`` is
registered as ``lkscale_rep_k13_7_3_d1...`` (:func:`timm_name`).
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import torch
from timm.models import build_model_with_cfg, register_model

from lkscale.export.layout import ExportDir
from lkscale.export.load import read_export
from lkscale.export.timm_cfg import GENERIC, first_conv_name, meta_cfg, pretrained_cfg, timm_name
from lkscale.model import LKNet
from lkscale.presets import get_preset, preset_names
from lkscale.spec import ArchSpec
from lkscale.weights import read_meta

default_cfgs: dict[str, dict] = {}  # timm.models.register_model reads the cfgs of this module's entry points
_SPECS: dict[str, ArchSpec | None] = {}


def _cfg_get(cfg: Any, key: str) -> Any:
    if cfg is None or isinstance(cfg, str):
        return None
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)


def _weights_file(name: str, cfg: Any, overlay: dict | None) -> str:
    f = (overlay or {}).get("file") or _cfg_get(cfg, "file") or default_cfgs.get(name, {}).get("file")
    if not f:
        raise RuntimeError(f"no pretrained weights for {name}: pass pretrained_cfg_overlay=dict(file="
                           f"'<export>/model.safetensors'), use 'local-dir:<export folder>', or register_export(folder)")
    f = str(f)
    if os.path.isdir(f):
        f = ExportDir(f).model_weights
    if not f.endswith(".safetensors") or not os.path.isfile(f):
        raise RuntimeError(f"{f}: pretrained weights must be an existing .safetensors file (no pickle)")
    return f


def _create(name: str, pretrained: bool = False, spec: Any = None, pretrained_cfg: Any = None,
            pretrained_cfg_overlay: dict | None = None, **kwargs) -> torch.nn.Module:
    spec = spec if spec is not None else _SPECS.get(name)
    if spec is None:
        raise TypeError(f"{name}: pass spec=<ArchSpec or dict> (or use local-dir:<export folder>)")
    if not isinstance(spec, ArchSpec):
        spec = ArchSpec.from_dict(spec)
    if pretrained:  # the cfg describes the weights: class count, normalisation and size from their metadata
        meta = read_meta(_weights_file(name, pretrained_cfg, pretrained_cfg_overlay))
        if meta.form != "train":
            raise RuntimeError(f"{name}: deploy-form weights; timm builds the train form, use model.safetensors")
        pretrained_cfg_overlay = {**meta_cfg(meta), **(pretrained_cfg_overlay or {})}
        kwargs.setdefault("in_chans", meta.in_chans)
    pretrained_cfg_overlay = {"first_conv": first_conv_name(spec), **(pretrained_cfg_overlay or {})}
    feature_cfg = dict(out_indices=tuple(range(len(spec.stages))), flatten_sequential=True)
    return build_model_with_cfg(LKNet, name, pretrained, pretrained_cfg=pretrained_cfg,
                                pretrained_cfg_overlay=pretrained_cfg_overlay, feature_cfg=feature_cfg, spec=spec,
                                **kwargs)


def _register(name: str, spec: ArchSpec | None, cfg: dict) -> str:
    def entry(pretrained: bool = False, **kwargs) -> torch.nn.Module:
        return _create(name, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"lkscale model {name} (lkscale.register_timm / register_export)."
    default_cfgs[name] = cfg
    _SPECS[name] = spec
    setattr(sys.modules[__name__], name, entry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # registering again (a re-exported folder) overwrites quietly
        register_model(entry)
    return name


def register_timm() -> list[str]:
    """Register ``lkscale_spec`` and every preset (``lkscale_<preset>``, random init) with timm; returns
    the names. Published presets get 224 px ImageNet cfgs, ``*_proxy`` presets 32 px ones."""
    names = [_register(GENERIC, None, pretrained_cfg(None))]
    for p in preset_names():
        spec = get_preset(p)
        names.append(_register(timm_name(p), spec, pretrained_cfg(spec, input_size=32 if p.endswith("_proxy") else 224)))
    return names


def register_export(path: str) -> str:
    """Register an export folder with timm under :func:`timm_name` of its architecture; returns that name.

    ``timm.create_model(name)`` then builds it, and ``pretrained=True`` loads the folder's ``model.safetensors``.
    """
    read_export(path)  # checks it is an export folder
    spec = ArchSpec.load(ExportDir(path).spec_yaml)
    wfile = os.path.realpath(ExportDir(path).model_weights)
    meta = read_meta(wfile)
    cfg = pretrained_cfg(spec, meta.num_classes, meta.in_chans, meta.input_size or 224, meta.mean, meta.std,
                         file=wfile, label_names=meta.classes)
    return _register(timm_name(spec.name), spec, cfg)


__all__ = ["register_timm", "register_export", "GENERIC"]
