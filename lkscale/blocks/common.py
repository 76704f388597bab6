"""Pieces shared by block families: conv-BN pairs and the re-parameterisable depthwise conv.

Fusion rules (all exact in eval mode):
- BN after a conv:  w' = w * s,  b' = (b - mean) * s + beta,  s = gamma / sqrt(var + eps)
- BN before a 1x1 conv (no padding, so no border effect):  W' = W * s_in,  b' = b + W @ (beta - mean * s_in)
- a branch k x k with dilation d equals a (d(k-1)+1)^2 kernel with taps every d pixels; centred,
  zero-padded to the large size K and added, since every branch uses 'same' padding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from lkscale.ops import DWConv2d


def trunc_normal_init(m: nn.Module, types: tuple = (nn.Conv2d, nn.Linear)) -> None:
    """timm's convention (ConvNeXt, InternImage): trunc-normal(0.02) weights and zero biases."""
    if isinstance(m, types):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) with bn(x) == x * scale + shift in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias equal to ``bn(conv(x))``; keeps DWConv2d for depthwise convs."""
    scale, shift = bn_scale_shift(bn)
    if isinstance(conv, DWConv2d):
        fused = DWConv2d(conv.in_channels, conv.kernel_size[0], conv.dilation[0], bias=True)
    else:
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(bias * scale + shift)
    return fused.to(conv.weight.device)


@torch.no_grad()
def fold_bn_into_next_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """A 1x1 conv equal to ``conv(bn(x))`` (exact only for 1x1, unpadded, ungrouped convs)."""
    assert conv.kernel_size == (1, 1) and conv.groups == 1 and conv.padding == (0, 0)
    scale, shift = bn_scale_shift(bn)
    w = conv.weight[:, :, 0, 0]
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, bias=True).to(conv.weight.device)
    fused.weight.copy_((w * scale[None, :])[:, :, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=w.device)
    fused.bias.copy_(bias + w @ shift)
    return fused


@torch.no_grad()
def fold_bn_into_next_linear(bn: nn.Module, fc: nn.Linear) -> nn.Linear:
    """A linear layer equal to ``fc(bn(x))`` for a per-feature affine ``bn`` (BatchNorm1d/2d in eval)."""
    scale, shift = bn_scale_shift(bn)
    fused = nn.Linear(fc.in_features, fc.out_features, bias=True).to(fc.weight.device)
    fused.weight.copy_(fc.weight * scale[None, :])
    bias = fc.bias if fc.bias is not None else torch.zeros(fc.out_features, device=fc.weight.device)
    fused.bias.copy_(bias + fc.weight @ shift)
    return fused


class ConvBN(nn.Sequential):
    """conv (no bias) -> BN [-> activation]; ``reparameterize`` folds the BN into the conv."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act() if act is not None else nn.Identity()

    def reparameterize(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()


def dilated_to_dense(weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """(C,1,k,k) kernel with dilation d -> equivalent dense (C,1,d(k-1)+1,...) kernel."""
    if dilation == 1:
        return weight
    c, one, k, _ = weight.shape
    span = dilation * (k - 1) + 1
    dense = weight.new_zeros(c, one, span, span)
    dense[:, :, ::dilation, ::dilation] = weight
    return dense


def pad_to(weight: torch.Tensor, size: int) -> torch.Tensor:
    p = (size - weight.shape[-1]) // 2
    return F.pad(weight, (p, p, p, p)) if p else weight


class ReparamDWConv(nn.Module):
    """Depthwise K x K conv-BN plus parallel small/dilated depthwise conv-BN branches, summed.

    Train form (RepLKNet's ReparamLargeKernelConv, UniRepLKNet's dilated branches):
    ``bn(lk(x)) + sum_i bn_i(branch_i(x))``. ``reparameterize`` turns it into one K x K conv with bias.
    """

    def __init__(self, channels: int, kernel: int, branches: Sequence = ()):
        super().__init__()
        self.kernel = kernel
        self.lk = DWConv2d(channels, kernel, bias=False)
        self.lk_bn = nn.BatchNorm2d(channels)
        self.branches = nn.ModuleList()
        self.branch_bns = nn.ModuleList()
        self.branch_specs = branch_pairs(branches)
        for k, d in self.branch_specs:
            self.branches.append(DWConv2d(channels, k, d, bias=False))
            self.branch_bns.append(nn.BatchNorm2d(channels))
        self.deployed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return self.lk(x)
        out = self.lk_bn(self.lk(x))
        for conv, bn in zip(self.branches, self.branch_bns):
            out = out + bn(conv(x))
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        fused = fuse_conv_bn(self.lk, self.lk_bn)
        w, b = fused.weight.clone(), fused.bias.clone()
        for conv, bn, (_k, dilation) in zip(self.branches, self.branch_bns, self.branch_specs):
            f = fuse_conv_bn(conv, bn)
            w += pad_to(dilated_to_dense(f.weight, dilation), self.kernel)
            b += f.bias
        fused.weight.copy_(w)
        fused.bias.copy_(b)
        self.lk = fused
        del self.lk_bn, self.branches, self.branch_bns
        self.deployed = True


def branch_pairs(branches: Sequence) -> tuple[tuple[int, int], ...]:
    """Re-param branches as ``(kernel, dilation)`` pairs, from pairs or from objects with ``kernel`` and
    ``dilation`` (``lkscale.spec.Branch``)."""
    return tuple((int(b.kernel), int(b.dilation)) if hasattr(b, "kernel") else (int(b[0]), int(b[1]))
                 for b in branches)


def depthwise(channels: int, kernel: int, branches: Sequence = (), bias_when_plain: bool = True) -> nn.Module:
    """A plain depthwise conv when there are no branches, else a ReparamDWConv."""
    if branches:
        return ReparamDWConv(channels, kernel, branches)
    return DWConv2d(channels, kernel, bias=bias_when_plain)


class PoolHead(nn.Module):
    """Base of the family heads (timm's classifier-head contract): ``pre_pool`` -> global average pool ->
    ``post_pool`` -> dropout -> ``fc``. ``forward(x, pre_logits=True)`` stops before ``fc``;
    ``reset(num_classes, global_pool)`` replaces ``fc`` (``num_classes=0``: no classifier) and sets the
    pooling (``'avg'``, or ``''`` for none, which leaves the NCHW map and needs ``num_classes=0``)."""

    def __init__(self, hidden_size: int, drop_rate: float):
        """Subclasses create their layers, then call ``self.reset(num_classes, global_pool)`` (so ``fc``
        comes last, as in the reference heads: same parameter order, same random init)."""
        super().__init__()
        self.hidden_size = hidden_size
        self.global_pool = "avg"
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Identity()

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def post_pool(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_pool(x)
        if self.global_pool == "avg":
            x = self.post_pool(x.mean((2, 3), keepdim=True)).flatten(1)
        else:
            x = self.post_pool(x)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def reset(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool {global_pool!r} not supported; use 'avg' or '' (no pooling)")
            self.global_pool = global_pool
        if self.global_pool == "" and num_classes > 0:
            raise ValueError("global_pool='' leaves a feature map: it needs num_classes=0")
        device = next((p.device for p in self.parameters()), None)
        self.fc = nn.Linear(self.hidden_size, num_classes, device=device) if num_classes > 0 else nn.Identity()
