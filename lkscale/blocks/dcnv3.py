"""DCNv3 family: InternImage (Wang et al., "InternImage: Exploring Large-Scale Vision Foundation Models
with Deformable Convolutions", CVPR 2023), structure as in OpenGVLab/InternImage ``classification/``.

- DCNv3 module (channels-last inside): ``input_proj`` Linear on the value path; on the input, a depthwise
  KxK conv -> LayerNorm -> GELU, then ``offset`` Linear (G*K*K*2) and ``mask`` Linear (G*K*K, softmax
  over the K*K points of each group); the deformable aggregation (``lkscale.ops.dcnv3.dcnv3_core``);
  ``output_proj`` Linear. K = ``stage.kernel`` (also the depthwise kernel), G = ``stage.dcn_groups``.
- Layer: ``x + drop_path(dcn(norm1(x)))`` then ``x + drop_path(mlp(norm2(x)))``, MLP hidden
  ``int(C * ffn_ratio)``, pre-norm LayerNorms (eps 1e-6).
- Layer scale: the reference's ``layer_scale`` argument is the init value of per-channel gammas or None
  (InternImage-T/S/B: None). Here ``spec.layer_scale > 0`` adds gammas initialised to that value and
  ``spec.layer_scale == 0`` leaves them out; the ``internimage_t`` preset sets 0 to match the reference.
- A stage ends with a LayerNorm (the reference's ``InternImageBlock.norm``), so ``make_blocks`` returns
  ``depth`` layers followed by one ``LayerNorm2d``.
- Stem (``StemLayer``): 3x3 conv (C/2) -> LN -> GELU -> 3x3 conv (C) -> LN; strides (2, 2) for stem
  stride 4, (2, 1) for 2, (1, 1) for 1. Transition: 3x3 stride-2 conv (no bias) -> LN.
- Head: 1x1 conv (no bias) to ``int(C * 1.5)`` -> BatchNorm -> GELU -> global average pool -> dropout
  -> fc. The conv-BN pair is a ``ConvBN``, so ``lkscale.reparameterize`` folds the BN.

Every module takes and returns NCHW tensors; the layers permute to channels-last internally (after the
first layer the tensors are channels-last in memory, so the permutes are free views).

Initialisation: ``DCNv3.init_weights()`` zeroes the offset/mask projections and gives input/output
projections Xavier-uniform weights, as InternImage's ``_reset_parameters``. It runs in ``__init__``;
a model-wide re-initialisation (``LKNet`` applies trunc-normal to every Linear) must call it again
afterwards, as InternImage's ``_init_deform_weights`` does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm, LayerNorm2d, Mlp
from torch import nn

from lkscale.blocks.common import ConvBN, PoolHead, trunc_normal_init
from lkscale.ops import DWConv2d
from lkscale.ops.dcnv3 import dcnv3_core

if TYPE_CHECKING:  # the make_blocks adapter reads a StageSpec; the block classes take plain arguments
    from lkscale.spec import ArchSpec, StageSpec

LN_EPS = 1e-6
CLS_SCALE = 1.5  # InternImage's head widens the last stage by this factor


class DCNv3(nn.Module):
    """DCNv3 operator with its projections; input and output ``(N, H, W, C)`` channels-last."""

    def __init__(self, channels: int, kernel: int = 3, groups: int = 4, offset_scale: float = 1.0,
                 dilation: int = 1):
        super().__init__()
        if channels % groups:
            raise ValueError(f"DCNv3: channels {channels} not divisible by groups {groups}")
        self.channels, self.kernel, self.groups = channels, kernel, groups
        self.dilation, self.offset_scale = dilation, offset_scale
        points = kernel * kernel
        self.dw_conv = DWConv2d(channels, kernel, bias=True)
        self.dw_norm = LayerNorm(channels, eps=LN_EPS)
        self.dw_act = nn.GELU()
        self.offset = nn.Linear(channels, groups * points * 2)
        self.mask = nn.Linear(channels, groups * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """InternImage's init: zero offsets and a uniform mask at start, Xavier projections."""
        for lin in (self.offset, self.mask):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        for lin in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        value = self.input_proj(x)
        feat = self.dw_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        feat = self.dw_act(self.dw_norm(feat))
        offset = self.offset(feat)
        mask = F.softmax(self.mask(feat).view(n, h, w, self.groups, -1), dim=-1).view(n, h, w, -1)
        out = dcnv3_core(value, offset, mask, self.kernel, self.groups, dilation=self.dilation,
                         offset_scale=self.offset_scale)
        return self.output_proj(out)


class InternImageLayer(nn.Module):
    """Pre-norm DCNv3 + MLP residual layer (NCHW in and out)."""

    def __init__(self, dim: int, kernel_size: int = 3, groups: int = 4, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, ls_init_value: float = 0.0):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=LN_EPS)
        self.dcn = DCNv3(dim, kernel_size, groups)
        self.norm2 = LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        if ls_init_value > 0:
            self.gamma1 = nn.Parameter(ls_init_value * torch.ones(dim))
            self.gamma2 = nn.Parameter(ls_init_value * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        y = self.dcn(self.norm1(x))
        if self.gamma1 is not None:
            y = y * self.gamma1
        x = x + self.drop_path(y)
        y = self.mlp(self.norm2(x))
        if self.gamma2 is not None:
            y = y * self.gamma2
        x = x + self.drop_path(y)
        return x.permute(0, 3, 1, 2)


def init_part(m: nn.Module) -> None:
    """InternImage's init: trunc-normal(0.02) linears (convs keep PyTorch's default); DCNv3's own
    ``init_weights`` hook then resets its offset/mask projections."""
    trunc_normal_init(m, types=(nn.Linear,))


def make_blocks(stage: StageSpec, drop_path: list[float], spec: ArchSpec) -> list[nn.Module]:
    layers: list[nn.Module] = [InternImageLayer(stage.width, stage.kernel, stage.dcn_groups, stage.ffn_ratio, dp,
                                                spec.layer_scale) for dp in drop_path]
    layers.append(LayerNorm2d(stage.width, eps=LN_EPS))  # end-of-stage norm, as InternImageBlock.norm
    return layers


def make_stem(in_chans: int, out_chans: int, stride: int) -> nn.Module:
    s1, s2 = {4: (2, 2), 2: (2, 1), 1: (1, 1)}[stride]
    mid = max(out_chans // 2, 1)
    return nn.Sequential(
        nn.Conv2d(in_chans, mid, 3, s1, 1),
        LayerNorm2d(mid, eps=LN_EPS),
        nn.GELU(),
        nn.Conv2d(mid, out_chans, 3, s2, 1),
        LayerNorm2d(out_chans, eps=LN_EPS),
    )


def make_downsample(in_chans: int, out_chans: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_chans, out_chans, 3, 2, 1, bias=False), LayerNorm2d(out_chans, eps=LN_EPS))


class InternImageHead(PoolHead):
    """1x1 conv-BN-GELU to ``int(C * 1.5)`` -> global average pool -> dropout -> fc."""

    def __init__(self, in_chans: int, num_classes: int, drop_rate: float, global_pool: str = "avg"):
        hidden = int(in_chans * CLS_SCALE)
        super().__init__(hidden, drop_rate)
        self.conv_head = ConvBN(in_chans, hidden, 1, act=nn.GELU)
        self.reset(num_classes, global_pool)

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(x)


def make_head(in_chans: int, num_classes: int, drop_rate: float) -> nn.Module:
    return InternImageHead(in_chans, num_classes, drop_rate)
