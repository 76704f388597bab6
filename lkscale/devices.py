"""Where and in what precision a network trains: the device a trial may use, precision checks and autocast,
data moved to the device once, and torch's thread count.

- :func:`pick_device` (pure: tested without a GPU) / :func:`resolve_device`: ``auto`` | ``cpu`` | ``cuda`` |
  ``cuda:N`` from what this process can see (Ray sets ``CUDA_VISIBLE_DEVICES`` per trial).
- :func:`check_precision`, :func:`autocast`: fp32 | bf16 | fp16 (fp16 on CUDA only, with a gradient scaler).
- :func:`to_device`: a TensorSet's decoded uint8 images on the device (batches are then made there).
- :func:`torch_threads`: torch's intra-op thread count for a block.

Used by ``lkscale.train`` (which re-exports these names) and the benchmarks.
"""
from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from torch import nn

from lkscale.data import TensorSet


def pick_device(name: str, cuda_available: bool, device_count: int, visible: str | None) -> str:
    """The device a trial trains on, as a string (pure: tested without a GPU).

    ``visible`` is ``$CUDA_VISIBLE_DEVICES``: Ray sets it to the GPUs it assigned to a trial (several
    trials given a fraction of one GPU all see that GPU as ``cuda:0``) and to ``""`` for a trial with
    none, so ``auto`` gives the first GPU the trial may use, else the CPU. Raises ValueError for a
    device that is not there.
    """
    name = (name or "auto").strip().lower()
    usable = device_count if cuda_available else 0
    if visible is not None and not visible.strip():
        usable = 0
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return "cuda:0" if usable > 0 else "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        idx = 0 if name == "cuda" else name[5:]
        if not str(idx).isdigit():
            raise ValueError(f"device {name!r}: expected cuda or cuda:N")
        if usable == 0:
            why = "CUDA_VISIBLE_DEVICES is empty" if visible is not None and not visible.strip() else (
                "this torch build has no CUDA" if not cuda_available else "no GPU visible")
            raise ValueError(f"device {name!r} asked for, but no CUDA device is usable here ({why}); use --device cpu")
        if int(idx) >= usable:
            raise ValueError(f"device {name!r}: only {usable} CUDA device(s) visible")
        return f"cuda:{int(idx)}"
    raise ValueError(f"device {name!r} unknown; allowed: auto, cpu, cuda, cuda:N")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch.device, from what this process can see."""
    avail = torch.cuda.is_available()
    return torch.device(pick_device(name, avail, torch.cuda.device_count() if avail else 0,
                                    os.environ.get("CUDA_VISIBLE_DEVICES")))


def check_precision(precision: str, device: torch.device) -> None:
    """Raise ValueError for a precision the device cannot train in."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device (it trains with a gradient scaler); use bf16 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp16")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision {precision!r} unknown; allowed: fp32, bf16, fp16")


def autocast(precision: str, device: torch.device):
    """The autocast context for a precision (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def to_device(tensorset: TensorSet, device: torch.device) -> TensorSet:
    """The same images (uint8), labels and normalisation on ``device`` (one copy; none when already there).

    ``TensorSet.batches`` then gathers, augments and normalises on that device (the shuffling order is
    drawn on the CPU generator, so a seed gives the same batches on every device)."""
    if tensorset.x.device == device:
        return tensorset
    return dataclasses.replace(tensorset, x=tensorset.x.to(device), y=tensorset.y.to(device),
                               mean=tensorset.mean.to(device), std=tensorset.std.to(device))


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the block (Ray sets OMP_NUM_THREADS=1 in trials)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


__all__ = ["pick_device", "resolve_device", "check_precision", "autocast", "to_device", "model_device", "torch_threads"]
