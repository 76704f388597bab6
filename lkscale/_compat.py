"""Import-time fixes that must run before timm (and so torchvision) is imported.

The one fix: on machines where the registry's torchvision is a CUDA build but torch is the CPU
build, torchvision's compiled ops (``torchvision._C``) cannot load, and ``import torchvision``
then dies in ``torchvision/_meta_registrations.py`` with
``RuntimeError: operator torchvision::nms does not exist`` because it registers fake kernels for
``torchvision::nms`` / ``torchvision::qnms`` unconditionally. ``import timm`` imports torchvision,
so timm fails too.

When (and only when) those ops are missing, we define their schemas so the registrations succeed.
The ops themselves stay unimplemented (calling ``torchvision.ops.nms`` would raise), which is fine:
lkscale never calls them. This runs from ``lkscale/__init__.py``, so every process that imports
lkscale — including Ray workers unpickling a trainable — gets it before timm.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY = None  # kept alive: a torch.library.Library unregisters its ops when collected


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def ensure_torchvision_importable() -> bool:
    """Define torchvision's missing op schemas if its compiled ops cannot load.

    Returns True when a patch was applied, False when nothing was needed.
    """
    global _LIBRARY
    if "torchvision" in sys.modules or _LIBRARY is not None:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    if _has_op("nms"):
        return False
    # Try the compiled ops the way torchvision itself would; if they load, nothing to do.
    for lib in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            torch.ops.load_library(lib)
        except (OSError, RuntimeError):
            continue
        if _has_op("nms"):
            return False
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _SCHEMAS.items():
        if not _has_op(name):
            _LIBRARY.define(schema)
    return True


PATCHED = ensure_torchvision_importable()
