"""Effective kernels, dead depthwise parameters and padding multiply-adds (exact, from conv geometry).

On an H x W map a stride-1 'same' K x K kernel only ever touches the image with its central
(2H-1) x (2W-1) taps; the others multiply padding zeros and never receive a gradient. Per stage we
report the map size, the nominal kernel, the effective kernel (the taps of the stage's stride-1
K x K depthwise conv that ever read a pixel: ``min(K, 2H-1)`` per dimension without dilation; fewer
for a dilated kernel such as MogaNet's 7x7 dilation 3) and the number of dead parameters, counted
exactly (stride, padding and dilation included) over every depthwise conv of the stage (its
stride-2 transition included) in the *train* form (re-param branches included). Depthwise convs
are found with forward hooks on ``nn.Conv2d`` modules with ``groups == in_channels``, so this works
for every family.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lkscale.spec import ArchSpec

@dataclass
class StageCost:
    index: int
    block: str
    map_hw: tuple[int, int]  # spatial size the stage's blocks run at
    kernel: int  # nominal (spec) kernel
    effective_kernel: tuple[int, int]  # taps of the K x K kernel that touch the image: min(K, 2H-1) if undilated
    dead_params: int  # depthwise-conv weights that never touch the image (never get a gradient)
    dw_params: int = 0  # all depthwise-conv weights of the stage (dead_params is a part of these)


def _live_taps(size: int, out: int, k: int, stride: int, pad: int, dil: int) -> int:
    """Number of kernel taps (one dimension) that read a real pixel for at least one output."""
    live = 0
    for t in range(k):
        off = t * dil - pad  # input index = o * stride + off
        # exists o in [0, out) with 0 <= o*stride + off < size
        lo = max(0, math.ceil(-off / stride))
        hi = min(out - 1, (size - 1 - off) // stride)
        live += lo <= hi
    return live


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == m.in_channels and m.in_channels > 1


def _pads(conv: nn.Conv2d) -> list[int]:
    if isinstance(conv.padding, str):  # 'same' / 'valid'
        return [(conv.dilation[i] * (conv.kernel_size[i] - 1)) // 2 if conv.padding == "same" else 0 for i in (0, 1)]
    return list(conv.padding)


def dead_conv_params(conv: nn.Conv2d, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """Weights of ``conv`` that only ever multiply padding on an ``in_hw`` input (exact)."""
    pads = _pads(conv)
    live = 1
    for i in (0, 1):
        live *= _live_taps(in_hw[i], out_hw[i], conv.kernel_size[i], conv.stride[i], pads[i], conv.dilation[i])
    per_tap = conv.out_channels * (conv.in_channels // conv.groups)
    return conv.weight.numel() - per_tap * live


def _useful_taps(size: int, out: int, k: int, stride: int, pad: int, dil: int) -> int:
    """Sum over outputs (one dimension) of the kernel taps that read a real pixel."""
    total = 0
    for o in range(out):
        start = o * stride - pad
        total += sum(0 <= start + t * dil < size for t in range(k))
    return total


def padding_macs(model: nn.Module, input_size: int, in_chans: int | None = None) -> int:
    """Multiply-adds of every ``nn.Conv2d`` that only multiply padding zeros, for one image (exact).

    ``flops - padding_macs`` are the *useful* multiply-adds: on maps smaller than the kernel most
    taps of a large kernel fall on padding (and a cropping implementation skips them).
    """
    in_chans = in_chans or getattr(model, "in_chans", 3)
    wasted = [0]

    def hook(conv, args, out):
        x = args[0]
        pads = _pads(conv)
        (h, w), (ho, wo) = x.shape[-2:], out.shape[-2:]
        per_pair = x.shape[0] * conv.out_channels * (conv.in_channels // conv.groups)
        nominal = per_pair * conv.kernel_size[0] * conv.kernel_size[1] * ho * wo
        useful = per_pair * (_useful_taps(h, ho, conv.kernel_size[0], conv.stride[0], pads[0], conv.dilation[0])
                             * _useful_taps(w, wo, conv.kernel_size[1], conv.stride[1], pads[1], conv.dilation[1]))
        wasted[0] += nominal - useful

    _probe(model, [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)],
           in_chans, input_size)
    return int(wasted[0])


def _probe(model: nn.Module, hooks: list, in_chans: int, input_size: int) -> None:
    """One eval-mode forward pass of a blank image with ``hooks`` installed; the hooks are removed after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


def effective_kernels(model: nn.Module, input_size: int, in_chans: int | None = None) -> list[StageCost]:
    """Per stage: map size, nominal and effective kernel, dead depthwise parameters (train form).

    ``model`` is an LKNet (``model.stages``, ``model.spec``); other models with a ``stages``
    sequence work too (the nominal kernel is then the largest stride-1 depthwise kernel).
    """
    stages = getattr(model, "stages", None)
    if stages is None:
        return []
    spec: ArchSpec | None = getattr(model, "spec", None)
    in_chans = in_chans or getattr(model, "in_chans", 3)
    stage_of: dict[int, int] = {}
    for i, st in enumerate(stages):
        for m in st.modules():
            if _is_depthwise(m):
                stage_of.setdefault(id(m), i)
    maps: dict[int, tuple[int, int]] = {}
    convs: list[tuple[int, nn.Conv2d, tuple[int, int], tuple[int, int]]] = []
    hooks = []

    def stage_hook(i: int):
        def hook(mod, args):
            maps.setdefault(i, tuple(args[0].shape[-2:]))
        return hook

    def conv_hook(mod, args, out):
        convs.append((stage_of[id(mod)], mod, tuple(args[0].shape[-2:]), tuple(out.shape[-2:])))

    for i, st in enumerate(stages):
        target = getattr(st, "blocks", st)
        hooks.append(target.register_forward_pre_hook(stage_hook(i)))
        for m in st.modules():
            if id(m) in stage_of:
                hooks.append(m.register_forward_hook(conv_hook))
    _probe(model, hooks, in_chans, input_size)
    seen: set[int] = set()
    dead = [0] * len(stages)
    dw = [0] * len(stages)
    largest = [1] * len(stages)
    for i, conv, in_hw, out_hw in convs:
        if conv.stride == (1, 1):
            largest[i] = max(largest[i], conv.kernel_size[0])
        if id(conv) in seen:  # a conv called twice is counted once
            continue
        seen.add(id(conv))
        dead[i] += dead_conv_params(conv, in_hw, out_hw)
        dw[i] += conv.weight.numel()
    out = []
    for i in range(len(stages)):
        h, w = maps.get(i, (0, 0))
        k = spec.stages[i].kernel if spec is not None else largest[i]
        block = spec.stages[i].block if spec is not None else type(stages[i]).__name__
        eff = (min(k, 2 * h - 1), min(k, 2 * w - 1))
        # the stage's own large kernel: a stride-1 depthwise K x K conv (the most dilated one if several)
        mains = [(c.dilation[0], c, ih, oh) for j, c, ih, oh in convs
                 if j == i and c.stride == (1, 1) and c.kernel_size == (k, k)]
        if mains:
            _, c, ih, oh = max(mains, key=lambda t: t[0])
            pads = _pads(c)
            eff = tuple(_live_taps(ih[d], oh[d], k, 1, pads[d], c.dilation[d]) for d in (0, 1))
        out.append(StageCost(i, block, (int(h), int(w)), int(k), (int(eff[0]), int(eff[1])),
                             int(dead[i]), int(dw[i])))
    return out


