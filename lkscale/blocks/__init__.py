"""Block factory: a registry of block families, one module each.

A family module provides four builders (see ``lkscale/blocks/replk.py`` for the reference):

- ``make_blocks(stage: StageSpec, drop_path: list[float], spec: ArchSpec) -> list[nn.Module]``
- ``make_stem(in_chans: int, out_chans: int, stride: int) -> nn.Module``
- ``make_downsample(in_chans: int, out_chans: int) -> nn.Module``   (stride 2)
- ``make_head(in_chans: int, num_classes: int, drop_rate: float) -> nn.Module``  (NCHW -> logits)

Modules that have a deploy form implement ``reparameterize()`` (in place); ``lkscale.reparameterize``
calls it on every module, children first. Adding a family is one module and one line below.
This file imports no torch, so the spec layer can read the family names cheaply.
"""
from __future__ import annotations

import importlib
from types import ModuleType

REGISTRY: dict[str, str] = {
    "replk": "lkscale.blocks.replk",
    "convnext": "lkscale.blocks.convnext",
    "dcnv3": "lkscale.blocks.dcnv3",
    "moga": "lkscale.blocks.moga",
}


def get_family(name: str) -> ModuleType:
    try:
        path = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown block family {name!r}; known: {', '.join(REGISTRY)}") from None
    return importlib.import_module(path)


__all__ = ["REGISTRY", "get_family"]
