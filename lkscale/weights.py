"""The one safetensors reader/writer of lkscale, with one metadata schema.

Every weights file lkscale writes (search trials, ``lkscale train --save``, exports) is a safetensors
file whose string metadata holds:

========================  =====================================================================
``format``                ``lkscale-weights/1``
``spec``                  the architecture, ``ArchSpec.to_json()``
``num_classes``           classifier outputs (int)
``in_chans``              input channels (int)
``form``                  ``train`` or ``deploy`` (re-parameterised)
``classes``               JSON list of class names, or ``null``
``mean`` / ``std``        JSON lists (input normalisation), or ``null``
``input_size``            input side in px (int), or empty
``extra``                 JSON object of free-form values (metrics, provenance, versions)
========================  =====================================================================

Files are written atomically (a temporary file beside the target, then ``os.replace``). Weights are
never pickled, and only ``.safetensors`` paths are read. :func:`read_meta` also reads the three schemas
used before this module existed (search trials, exports ``lkscale-export/1``, ``lkscale train --save``
``format=lkscale`` which has no spec and no class count: the class count then comes from ``classes``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lkscale.spec import ArchSpec, SpecError

FORMAT = "lkscale-weights/1"
_OLD_FORMATS = {"lkscale-export/1", "lkscale", ""}  # exports, `lkscale train --save`, search trials (no tag)
_KNOWN = {"format", "spec", "num_classes", "in_chans", "form", "classes", "mean", "std", "input_size", "extra"}


class WeightsError(ValueError):
    """A weights file that cannot be read or written as asked (missing, not safetensors, bad metadata)."""


@dataclass(frozen=True)
class WeightsMeta:
    """What a weights file says about itself. ``spec`` is None only for old ``lkscale train`` files."""

    spec: ArchSpec | None
    num_classes: int
    in_chans: int = 3
    form: str = "train"
    classes: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def to_metadata(self) -> dict[str, str]:
        """The safetensors metadata (all strings) for this record."""
        return {"format": FORMAT, "spec": self.spec.to_json() if self.spec is not None else "",
                "num_classes": str(int(self.num_classes)), "in_chans": str(int(self.in_chans)), "form": self.form,
                "classes": json.dumps(list(self.classes) if self.classes is not None else None),
                "mean": json.dumps(list(self.mean) if self.mean is not None else None),
                "std": json.dumps(list(self.std) if self.std is not None else None),
                "input_size": "" if self.input_size is None else str(int(self.input_size)),
                "extra": json.dumps(dict(self.extra), default=str)}


def _floats(v: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if v is None else tuple(float(x) for x in v)


def make_meta(spec: ArchSpec | None, *, num_classes: int, in_chans: int = 3, form: str = "train",
              classes: Sequence[str] | None = None, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, input_size: int | None = None,
              extra: Mapping[str, Any] | None = None) -> WeightsMeta:
    if form not in ("train", "deploy"):
        raise WeightsError(f"form must be 'train' or 'deploy', got {form!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise WeightsError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    return WeightsMeta(spec=spec, num_classes=num_classes, in_chans=int(in_chans), form=form,
                       classes=None if classes is None else tuple(str(c) for c in classes), mean=_floats(mean),
                       std=_floats(std), input_size=None if input_size is None else int(input_size),
                       extra=dict(extra or {}))


def save_weights(path: str, model_or_state: torch.nn.Module | Mapping[str, torch.Tensor], spec: ArchSpec, *,
                 num_classes: int, in_chans: int = 3, form: str = "train", classes: Sequence[str] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 input_size: int | None = None, extra: Mapping[str, Any] | None = None) -> WeightsMeta:
    """Write ``model_or_state`` (a module or a state dict) and its metadata to ``path`` atomically."""
    if not str(path).endswith(".safetensors"):
        raise WeightsError(f"{path}: weights are written as .safetensors only")
    meta = make_meta(spec, num_classes=num_classes, in_chans=in_chans, form=form, classes=classes, mean=mean,
                     std=std, input_size=input_size, extra=extra)
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        save_file(tensors, tmp, metadata=meta.to_metadata())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # like the other files of a run (safetensors writes 0600)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return meta


def _check_path(path: str) -> None:
    if not str(path).endswith(".safetensors"):
        raise WeightsError(f"{path}: only .safetensors weights are read (no pickle)")
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: no such weights file")


def _json(raw: Mapping[str, str], key: str, path: str) -> Any:
    text = raw.get(key)
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: metadata {key!r} is not JSON ({e})") from None


def parse_metadata(raw: Mapping[str, str], path: str = "weights") -> WeightsMeta:
    """A :class:`WeightsMeta` from safetensors metadata of this schema or one of the three older ones."""
    fmt = raw.get("format", "")
    if fmt != FORMAT and fmt not in _OLD_FORMATS:
        raise WeightsError(f"{path}: unknown weights format {fmt!r} (expected {FORMAT})")
    spec = None
    if raw.get("spec"):
        try:
            spec = ArchSpec.from_json(raw["spec"])
        except SpecError as e:
            raise WeightsError(f"{path}: its spec metadata does not parse ({e})") from None
    classes = _json(raw, "classes", path)
    if raw.get("num_classes"):
        num_classes = int(raw["num_classes"])
    elif classes is not None:  # old `lkscale train --save` files: no count, but the class names
        num_classes = len(classes)
    else:
        raise WeightsError(f"{path}: metadata has neither num_classes nor classes; cannot size the classifier")
    extra = _json(raw, "extra", path) if fmt == FORMAT else {k: v for k, v in raw.items() if k not in _KNOWN}
    return WeightsMeta(spec=spec, num_classes=num_classes, in_chans=int(raw.get("in_chans") or 3),
                       form=raw.get("form") or "train", classes=None if classes is None else tuple(classes),
                       mean=_floats(_json(raw, "mean", path)), std=_floats(_json(raw, "std", path)),
                       input_size=int(raw["input_size"]) if raw.get("input_size") else None,
                       extra=dict(extra or {}), format=fmt)


def read_meta(path: str) -> WeightsMeta:
    """The metadata of a weights file (no tensors read)."""
    _check_path(path)
    with safe_open(path, framework="pt") as f:
        raw = dict(f.metadata() or {})
    return parse_metadata(raw, path)


def read_weights(path: str) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """The state dict (on CPU) and metadata of a weights file."""
    meta = read_meta(path)
    return load_file(path, device="cpu"), meta

def save_trained(path: str, model: torch.nn.Module, spec: ArchSpec, splits: Any,
                 extra: Mapping[str, Any] | None = None) -> WeightsMeta:
    """``save_weights`` of a model trained on ``splits`` (``lkscale.data.Splits``): its class count, channels,
    class names, normalisation and input size go into the metadata (search trials, ``lkscale train --save``)."""
    return save_weights(path, model, spec, num_classes=splits.num_classes, in_chans=splits.in_chans,
                        classes=list(splits.classes), mean=[float(v) for v in splits.mean],
                        std=[float(v) for v in splits.std], input_size=splits.input_size, extra=extra)


__all__ = ["FORMAT", "WeightsError", "WeightsMeta", "make_meta", "parse_metadata", "read_meta", "read_weights",
           "save_weights", "save_trained"]
