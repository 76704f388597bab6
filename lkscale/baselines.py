"""Baselines: the networks a researcher would have used anyway, trained beside a study's candidates.

A study's ``baselines:`` section names timm models (``resnet10t``, ``mobilenetv3_small_050``) and lkscale
presets (``replk_proxy``); ``timm:NAME`` / ``preset:NAME`` say which where a name is both. Each is built
for the study's data the way timm itself adapts a model — ``num_classes``, ``in_chans`` and, for models
with a fixed input size (ViTs), ``img_size`` — never by resizing the images; a model that does not run
at the study's input size is one clear error naming it (:func:`check_runs`). An unknown name is an
error when the study loads (:func:`parse_baselines`).

The search trains them with the study's proxy settings and replicates, with the same common random
numbers as the candidates (``lkscale.search.trainable``: the seed of replicate r is set before the
model is built, so the initial weights, data subset and batch order are the ones the candidates got);
their latency is measured side by side with the candidates (a ``Baseline`` looks like an ArchSpec to
the latency code: ``name``, ``without_reparam()``, ``build()``). Their rows in ``trials.csv`` have
``role: baseline`` and are never part of a front.
"""
from __future__ import annotations

import difflib
import importlib
import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import nn

from lkscale.model import build_model
from lkscale.presets import all_presets, get_preset
from lkscale.spec import ArchSpec

KINDS = ("timm", "preset")
ROLE = "baseline"           # trials.csv ``role`` of a baseline's rows (candidates: "" or "candidate")


def _timm() -> ModuleType:
    """timm, imported where a baseline needs it: importing it costs ~1.5 s (torchvision, dynamo), which every
    Tune trial paid at start through the trainable's import of this module, baselines in the study or not."""
    return importlib.import_module("timm")


class BaselineError(ValueError):
    """A baseline that cannot be used; ``field_path`` names the study field (``baselines[1]``)."""

    def __init__(self, path: str, message: str):
        self.field_path = path
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class Baseline:
    """One named reference network: ``kind`` timm or preset, ``model`` its timm / preset name."""
    kind: str
    model: str

    @property
    def name(self) -> str:
        """The name in trials.csv, the report and the latency cache (``timm:`` / ``preset:`` prefixed)."""
        return f"{self.kind}:{self.model}"

    @property
    def label(self) -> str:
        return self.model

    def spec(self) -> ArchSpec | None:
        """The ArchSpec of a preset baseline (None for a timm model)."""
        return get_preset(self.model) if self.kind == "preset" else None

    def without_reparam(self) -> "Baseline":
        """Duck-typed like ``ArchSpec.without_reparam``: a baseline is its own deploy form's key."""
        return self

    def build(self, num_classes: int = 10, in_chans: int = 3, input_size: int | None = None) -> nn.Module:
        """The network, freshly initialised from torch's current random state (seed before calling)."""
        if self.kind == "preset":
            return build_model(get_preset(self.model), num_classes=num_classes, in_chans=in_chans)
        kw: dict[str, Any] = {"pretrained": False, "num_classes": num_classes, "in_chans": in_chans}
        timm = _timm()
        cfg = timm.models.get_pretrained_cfg(self.model)
        if input_size and cfg is not None and getattr(cfg, "fixed_input_size", False):
            kw["img_size"] = input_size  # timm's own adaptation (position embeddings sized for it)
        return timm.create_model(self.model, **kw)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model": self.model, "name": self.name}

    def to_json(self) -> str:
        """As ``ArchSpec.to_json`` (what travels to a remote latency measurement); :func:`spec_from_json`."""
        return json.dumps({"baseline": self.name})


def spec_from_json(text: str) -> ArchSpec | Baseline:
    """An ArchSpec or a Baseline from its ``to_json`` text."""
    obj = json.loads(text)
    return from_name(obj["baseline"]) if isinstance(obj, dict) and set(obj) == {"baseline"} else \
        ArchSpec.from_json(text)


def parse_one(raw: Any, path: str) -> Baseline:
    """``resnet10t`` | ``timm:resnet10t`` | ``preset:replk_proxy`` -> Baseline; BaselineError otherwise."""
    if not isinstance(raw, str) or not raw.strip():
        raise BaselineError(path, f"{raw!r}: give a timm model name or an lkscale preset name")
    text = raw.strip()
    kind, _, model = text.partition(":") if ":" in text else ("", "", text)
    presets = all_presets()
    if kind and kind not in KINDS:
        raise BaselineError(path, f"{text!r}: prefix {kind!r} unknown; allowed: timm:NAME, preset:NAME")
    timm = _timm()
    in_timm, in_presets = timm.is_model(model), model in presets
    if kind == "timm" and not in_timm or kind == "preset" and not in_presets or not (in_timm or in_presets):
        pool = timm.list_models() if kind != "preset" else []
        pool += list(presets) if kind != "timm" else []
        close = difflib.get_close_matches(model, pool, n=3, cutoff=0.75)
        what = {"timm": "a timm model", "preset": "an lkscale preset"}.get(kind, "a timm model or an lkscale preset")
        hint = f"; did you mean {', '.join(close)}?" if close else \
            " (timm.list_models() lists timm's; `lkscale cost --help` the presets)"
        raise BaselineError(path, f"{model!r} is not {what}{hint}")
    if not kind:
        if in_timm and in_presets:
            raise BaselineError(path, f"{model!r} is both a timm model and an lkscale preset: write timm:{model} "
                                      f"or preset:{model}")
        kind = "timm" if in_timm else "preset"
    return Baseline(kind, model)


def parse_baselines(raw: Any, path: str = "baselines") -> tuple[Baseline, ...]:
    """The ``baselines:`` section (a list of names; None: none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BaselineError(path, f"expected a list of model names, got {type(raw).__name__}")
    out = tuple(parse_one(r, f"{path}[{i}]") for i, r in enumerate(raw))
    names = [b.name for b in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise BaselineError(path, f"{dup} is named twice")
    return out


def check_runs(b: Baseline, num_classes: int, in_chans: int, input_size: int, path: str = "baselines") -> None:
    """One forward pass at the study's input: a model that cannot take it is an error naming the model."""
    model = b.build(num_classes=num_classes, in_chans=in_chans, input_size=input_size).eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, in_chans, input_size, input_size))
    except Exception as e:  # noqa: BLE001 - any failure is the same answer: it does not run here
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise BaselineError(path, f"{b.model} does not run on {input_size} px, {in_chans}-channel images ({first}); "
                                  f"lkscale never resizes the data for a baseline: remove it or change "
                                  f"data.input_size") from None
    if tuple(out.shape) != (1, num_classes):
        raise BaselineError(path, f"{b.model} gives an output of shape {tuple(out.shape)} on {input_size} px "
                                  f"images, not (1, {num_classes})")


def build_seeded(b: Baseline, seed: int, num_classes: int, in_chans: int, input_size: int | None) -> nn.Module:
    """The baseline's initial weights from the replicate's seed only (as the candidates' are)."""
    torch.manual_seed(seed)
    return b.build(num_classes=num_classes, in_chans=in_chans, input_size=input_size)


def from_name(name: str) -> Baseline:
    """The Baseline of a trials.csv name (``timm:resnet10t``)."""
    return parse_one(name, "baseline")


__all__ = ["Baseline", "BaselineError", "ROLE", "parse_one", "parse_baselines", "check_runs", "build_seeded",
           "from_name", "spec_from_json"]
