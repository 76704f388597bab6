"""Block factory: a registry of block families, one module each.

A family module provides four builders (see ``lkscale/blocks/replk.py`` for the reference):

- ``make_blocks(stage: StageSpec, drop_path: list[float], spec: ArchSpec) -> list[nn.Module]``
- ``make_stem(in_chans: int, out_chans: int, stride: int) -> nn.Module``
- ``make_downsample(in_chans: int, out_chans: int) -> nn.Module``   (stride 2)
- ``make_head(in_chans: int, num_classes: int, drop_rate: float) -> nn.Module``  (NCHW -> logits)

Block classes take plain arguments (``dim``, ``kernel_size``, ``drop_path``, ``ls_init_value``, ...), as
ConvNeXt's reference ``Block`` does; ``make_blocks`` is the adapter that reads a ``StageSpec``.
Modules that have a deploy form implement ``reparameterize()`` (in place); ``lkscale.reparameterize``
calls it on every module, children first. Adding a family is one module and its name in
``lkscale.spec.KNOWN_BLOCKS``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from lkscale.spec import KNOWN_BLOCKS

REGISTRY: dict[str, str] = {name: f"lkscale.blocks.{name}" for name in KNOWN_BLOCKS}


def get_family(name: str) -> ModuleType:
    try:
        path = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown block family {name!r}; known: {', '.join(REGISTRY)}") from None
    return importlib.import_module(path)


__all__ = ["REGISTRY", "get_family"]
