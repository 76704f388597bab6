"""MogaNet family (Li et al., "Efficient Multi-order Gated Aggregation Network", ICLR 2024).

Structure and widths follow the reference ``Westlake-AI/MogaNet`` ``models/moganet.py``, with the
same parameter names inside a block (``norm1``, ``attn.proj_1``, ``attn.value.DW_conv2``, ...):

- ``MogaBlock``: ``x + drop_path(layer_scale_1 * attn(norm1(x)))`` then
  ``x + drop_path(layer_scale_2 * mlp(norm2(x)))``, BatchNorm norms.
- ``attn`` (MultiOrderGatedAggregation): proj_1 (1x1) -> feature decomposition
  ``y + sigma * (y - GAP(y))`` -> SiLU; gate = 1x1 conv, value = MultiOrderDWConv;
  ``proj_2(SiLU(gate) * SiLU(value))`` plus the attention input (the reference's inner shortcut).
- MultiOrderDWConv: 5x5 depthwise (dilation 1) on all channels, then the channels split 1:3:4 into
  identity / 5x5 depthwise dilation 2 / **K x K depthwise dilation 3**, concat, 1x1 conv.
- ``mlp`` (ChannelAggregationFFN): 1x1 fc1 (to ``ffn_ratio`` x) -> 3x3 depthwise -> GELU ->
  ``h + sigma * (h - GELU(decompose(h)))`` (decompose: 1x1 conv to one channel) -> 1x1 fc2.

**The search knob.** A stage's ``kernel`` K is the kernel of the largest, dilation-3 branch
(``DW_conv2``; the reference uses K = 7, a 19 px span). Its span is ``3 (K - 1) + 1``; the 5x5 and
5x5-dilation-2 convs are fixed. ``ffn_ratio`` is the FFN expansion (MogaNet uses 8, 8, 4, 4).
``spec.layer_scale`` is the layer-scale init (the reference uses 1e-5; 0 disables layer scale).

Stem (reference StackConvPatchEmbed): 3x3 conv (in -> C/2) + BN + GELU + 3x3 conv (C/2 -> C) + BN,
strides (2, 2) for stem stride 4, (2, 1) for 2, (1, 1) for 1. Transition: the reference ends every
stage with a BN and starts the next with a 3x3 stride-2 conv + BN (ConvPatchEmbed); here the
transition is BN(in) -> 3x3 s2 conv -> BN(out), and the head holds the last stage's BN:
BN -> global average pool -> dropout -> fc. So a moga network computes exactly the reference
function, and every norm is applied once.

Re-parameterisation (exact in eval mode): conv + BN pairs in the stem and transitions are fused;
``norm1`` folds into ``attn.proj_1`` (the attention's inner shortcut becomes a per-channel scale),
``norm2`` into ``mlp.fc1``, the layer scales into ``attn.proj_2`` / ``mlp.fc2``, the head BN into the
fc. Both feature decompositions are linear in the learned ``sigma`` and fold too: the attention's
becomes ``y - kappa * GAP(y)`` (one broadcast op instead of three), the FFN's moves from the hidden
width (4-8x) to the output width (``fc2'(h) - u * GELU(decompose(h))``). The transition's leading BN
stays (a BN before a zero-padded 3x3 conv does not fold exactly).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from lkscale.blocks.common import ConvBN, bn_scale_shift, fold_bn_into_next_conv, trunc_normal_init
from lkscale.blocks.replk import BNPoolHead
from lkscale.ops import DWConv2d

if TYPE_CHECKING:  # the make_blocks adapter reads a StageSpec; the block classes take plain arguments
    from lkscale.spec import ArchSpec, StageSpec

SIGMA_INIT = 1e-5  # the reference's init for both feature-decomposition scales


class ElementScale(nn.Module):
    """Learned per-channel scale, (1, C, 1, 1) like the reference's ``ElementScale``."""

    def __init__(self, channels: int, init_value: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def split_channels(channels: int) -> tuple[int, int, int]:
    """The reference's 1:3:4 split: (identity, 5x5 dilation-2, K x K dilation-3) channel counts."""
    c1 = int(3 / 8 * channels)
    c2 = int(4 / 8 * channels)
    return channels - c1 - c2, c1, c2


class MultiOrderDWConv(nn.Module):
    """5x5 dw on all channels, then identity / 5x5 d2 / KxK d3 dw on a 1:3:4 split, concat, 1x1."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.channels = channels
        self.dims = split_channels(channels)
        _, c1, c2 = self.dims
        self.DW_conv0 = DWConv2d(channels, 5, dilation=1)
        self.DW_conv1 = DWConv2d(c1, 5, dilation=2)
        self.DW_conv2 = DWConv2d(c2, kernel, dilation=3)
        self.PW_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c0, c1, _ = self.dims
        x0 = self.DW_conv0(x)
        x = torch.cat([x0[:, :c0], self.DW_conv1(x0[:, c0:c0 + c1]), self.DW_conv2(x0[:, c0 + c1:])], dim=1)
        return self.PW_conv(x)


class MultiOrderGatedAggregation(nn.Module):
    """The Moga spatial mixer; its output includes its input (the reference's inner shortcut).

    Deploy form (``reparameterize`` and the folds called by ``MogaBlock.reparameterize``):
    proj_1 absorbs ``1 + sigma`` so the decomposition is one broadcast subtraction
    ``y - kappa * GAP(y)`` with ``kappa = sigma / (1 + sigma)``; the inner shortcut becomes a
    per-channel scale ``x * shortcut_scale`` once norm1 and layer scale are folded (the affine's
    shift goes into proj_2's bias).
    """

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.value = MultiOrderDWConv(channels, kernel)
        self.proj_2 = nn.Conv2d(channels, channels, 1)
        self.act_value = nn.SiLU()
        self.act_gate = nn.SiLU()
        self.sigma = ElementScale(channels, SIGMA_INIT)
        self.register_buffer("kappa", None)  # deploy form of the decomposition
        self.register_buffer("shortcut_scale", None)  # deploy form of the shortcut (its shift is in proj_2)

    def feat_decompose(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_1(x)
        if self.kappa is not None:
            x = x - self.kappa * F.adaptive_avg_pool2d(x, 1)
        else:
            x = x + self.sigma(x - F.adaptive_avg_pool2d(x, 1))
        return self.act_value(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.shortcut_scale is not None:
            shortcut = x * self.shortcut_scale
        x = self.feat_decompose(x)
        x = self.proj_2(self.act_gate(self.gate(x)) * self.act_gate(self.value(x)))
        return x + shortcut

    @torch.no_grad()
    def reparameterize(self) -> None:
        """``y + s (y - m)`` = ``(1 + s) y - s m``: scale proj_1 by ``1 + s``; GAP commutes with it."""
        if self.kappa is not None:
            return
        one_plus = 1.0 + self.sigma.scale.reshape(-1)
        if one_plus.abs().min() < 1e-3:  # the fold would divide by ~0: keep the train form
            return
        self.proj_1 = _scale_outputs(self.proj_1, one_plus)
        self.kappa = (self.sigma.scale / one_plus.reshape(1, -1, 1, 1)).clone()
        self.sigma = None

    @torch.no_grad()
    def fold_input_bn(self, bn: nn.BatchNorm2d) -> None:
        """Absorb a BN on this module's input: into proj_1, and (shortcut) a scale + proj_2's bias."""
        scale, shift = bn_scale_shift(bn)
        self.proj_1 = fold_bn_into_next_conv(bn, self.proj_1)
        old = self.shortcut_scale.reshape(-1) if self.shortcut_scale is not None else torch.ones_like(scale)
        self.proj_2 = _add_bias(self.proj_2, old * shift)  # a (s x + t) = (a s) x + a t
        self.shortcut_scale = (old * scale).reshape(1, -1, 1, 1).clone()

    @torch.no_grad()
    def scale_output(self, scale: torch.Tensor) -> None:
        """Multiply the output by a per-channel ``scale`` (folds a layer scale)."""
        scale = scale.reshape(-1)
        self.proj_2 = _scale_outputs(self.proj_2, scale)
        old = self.shortcut_scale.reshape(-1) if self.shortcut_scale is not None else torch.ones_like(scale)
        self.shortcut_scale = (old * scale).reshape(1, -1, 1, 1).clone()


class ChannelAggregationFFN(nn.Module):
    """1x1 -> 3x3 dw -> GELU -> channel aggregation ``h + sigma (h - GELU(decompose(h)))`` -> 1x1.

    Deploy form: ``fc2(h + s (h - g))`` = ``fc2'(h) - u g`` with ``fc2' = W diag(1 + s)`` and
    ``u = W s``; the hidden-width elementwise ops become one output-width ``addcmul``.
    """

    def __init__(self, channels: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = DWConv2d(hidden, 3)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.decompose = nn.Conv2d(hidden, 1, 1)
        self.sigma = ElementScale(hidden, SIGMA_INIT)
        self.decompose_act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.register_buffer("neg_u", None)  # deploy form: -W @ sigma, (1, C, 1, 1)

    def feat_decompose(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma(x - self.decompose_act(self.decompose(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        if self.neg_u is not None:
            out = torch.addcmul(self.fc2(x), self.neg_u, self.decompose_act(self.decompose(x)))
        else:
            out = self.fc2(self.feat_decompose(x))
        return self.drop(out)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.neg_u is not None:
            return
        s = self.sigma.scale.reshape(-1)
        w = self.fc2.weight[:, :, 0, 0]
        self.neg_u = -(w @ s).reshape(1, -1, 1, 1)
        fused = nn.Conv2d(self.fc2.in_channels, self.fc2.out_channels, 1, bias=True).to(w.device)
        fused.weight.copy_((w * (1.0 + s)[None, :])[:, :, None, None])
        fused.bias.copy_(self.fc2.bias if self.fc2.bias is not None else torch.zeros_like(fused.bias))
        self.fc2 = fused
        self.sigma = None

    @torch.no_grad()
    def fold_input_bn(self, bn: nn.BatchNorm2d) -> None:
        self.fc1 = fold_bn_into_next_conv(bn, self.fc1)

    @torch.no_grad()
    def scale_output(self, scale: torch.Tensor) -> None:
        self.fc2 = _scale_outputs(self.fc2, scale.reshape(-1))
        if self.neg_u is not None:
            self.neg_u = self.neg_u * scale.reshape(1, -1, 1, 1)


class MogaBlock(nn.Module):
    """``kernel_size``: the dilation-3 branch of the value path; ``ls_init_value`` 0 leaves layer scale out."""

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 ls_init_value: float = 1e-5):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = MultiOrderGatedAggregation(dim, kernel_size)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ChannelAggregationFFN(dim, int(dim * mlp_ratio))
        if ls_init_value > 0:
            self.layer_scale_1 = nn.Parameter(torch.full((1, dim, 1, 1), float(ls_init_value)))
            self.layer_scale_2 = nn.Parameter(torch.full((1, dim, 1, 1), float(ls_init_value)))
        else:
            self.layer_scale_1 = self.layer_scale_2 = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.norm1(x))
        if self.layer_scale_1 is not None:
            y = self.layer_scale_1 * y
        x = x + self.drop_path(y)
        y = self.mlp(self.norm2(x))
        if self.layer_scale_2 is not None:
            y = self.layer_scale_2 * y
        return x + self.drop_path(y)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold norm1/norm2 into the first 1x1 convs and the layer scales into the last ones."""
        if isinstance(self.norm1, nn.BatchNorm2d):
            self.attn.fold_input_bn(self.norm1)
            self.norm1 = nn.Identity()
        if isinstance(self.norm2, nn.BatchNorm2d):
            self.mlp.fold_input_bn(self.norm2)
            self.norm2 = nn.Identity()
        if self.layer_scale_1 is not None:
            self.attn.scale_output(self.layer_scale_1)
            self.mlp.scale_output(self.layer_scale_2)
            self.layer_scale_1 = self.layer_scale_2 = None


@torch.no_grad()
def _scale_outputs(conv: nn.Conv2d, scale: torch.Tensor) -> nn.Conv2d:
    """A 1x1 conv equal to ``scale[c] * conv(x)[c]``."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=True).to(conv.weight.device)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    fused.bias.copy_(bias * scale)
    return fused


@torch.no_grad()
def _add_bias(conv: nn.Conv2d, shift: torch.Tensor) -> nn.Conv2d:
    """The same conv with ``shift`` added to its output (a bias is created if it had none)."""
    if conv.bias is None:
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True).to(conv.weight.device)
        fused.weight.copy_(conv.weight)
        fused.bias.zero_()
        conv = fused
    conv.bias.add_(shift)
    return conv


def _conv_bn(cin: int, cout: int, stride: int, act: type[nn.Module] | None = None) -> ConvBN:
    """3x3 conv + BN [+ act]; the conv keeps a bias as in the reference (so its counts match)."""
    m = ConvBN(cin, cout, 3, stride, act=act)
    m.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=True)
    return m


class MogaDownsample(nn.Module):
    """BN (the previous stage's closing norm) -> 3x3 stride-2 conv -> BN."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_chans)
        self.proj = _conv_bn(in_chans, out_chans, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


def init_part(m: nn.Module) -> None:
    """MogaNet's init: trunc-normal(0.02) linears, convs normal(0, sqrt(2 / fan_out)), zero biases."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    else:
        trunc_normal_init(m, types=(nn.Linear,))


def make_blocks(stage: StageSpec, drop_path: list[float], spec: ArchSpec) -> list[nn.Module]:
    return [MogaBlock(stage.width, stage.kernel, stage.ffn_ratio, dp, spec.layer_scale) for dp in drop_path]


def make_stem(in_chans: int, out_chans: int, stride: int) -> nn.Module:
    s1, s2 = {4: (2, 2), 2: (2, 1), 1: (1, 1)}[stride]
    return nn.Sequential(
        _conv_bn(in_chans, out_chans // 2, s1, act=nn.GELU),
        _conv_bn(out_chans // 2, out_chans, s2),
    )


def make_downsample(in_chans: int, out_chans: int) -> nn.Module:
    return MogaDownsample(in_chans, out_chans)


def make_head(in_chans: int, num_classes: int, drop_rate: float) -> nn.Module:
    """The last stage's BN -> global average pool -> dropout -> fc (the BN folds into the fc)."""
    return BNPoolHead(in_chans, num_classes, drop_rate)
