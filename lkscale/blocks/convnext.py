"""ConvNeXt family (Liu et al., "A ConvNet for the 2020s", CVPR 2022).

Block: depthwise KxK -> LayerNorm -> 1x1 (ffn_ratio x) -> GELU -> 1x1 -> layer scale -> drop path,
with the same parameter names as timm's ``ConvNeXtBlock`` so a timm ConvNeXt state dict loads as is.
With re-param branches the depthwise conv becomes conv-BN + small-kernel conv-BN branches (merged
into one conv with bias for deployment). Stem: KxK stride-K patchify conv + LayerNorm (K = stem
stride; stride 1 uses a 3x3 conv). Transition: LayerNorm + 2x2 stride-2 conv. Head: pool -> LN -> fc.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from timm.layers import DropPath, LayerNorm, LayerNorm2d, Mlp
from torch import nn

from lkscale.blocks.common import PoolHead, depthwise, trunc_normal_init

if TYPE_CHECKING:  # the make_blocks adapter reads a StageSpec; the block classes take plain arguments
    from lkscale.spec import ArchSpec, StageSpec


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's Block; ``reparam``: ``(kernel, dilation)`` branches beside the depthwise conv;
    ``ls_init_value`` 0 leaves layer scale out."""

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 4.0, reparam: Sequence = (),
                 drop_path: float = 0.0, ls_init_value: float = 1e-6):
        super().__init__()
        self.conv_dw = depthwise(dim, kernel_size, reparam)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(round(mlp_ratio * dim)), act_layer=nn.GELU)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x).permute(0, 2, 3, 1)
        x = self.mlp(self.norm(x))
        if self.gamma is not None:
            x = x * self.gamma
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


init_part = trunc_normal_init  # timm's ConvNeXt init: trunc-normal(0.02) convs and linears


def make_blocks(stage: StageSpec, drop_path: list[float], spec: ArchSpec) -> list[nn.Module]:
    return [ConvNeXtBlock(stage.width, stage.kernel, stage.ffn_ratio, stage.reparam, dp, spec.layer_scale)
            for dp in drop_path]


def make_stem(in_chans: int, out_chans: int, stride: int) -> nn.Module:
    conv = (nn.Conv2d(in_chans, out_chans, 3, 1, 1) if stride == 1
            else nn.Conv2d(in_chans, out_chans, stride, stride))
    return nn.Sequential(conv, LayerNorm2d(out_chans, eps=1e-6))


def make_downsample(in_chans: int, out_chans: int) -> nn.Module:
    return nn.Sequential(LayerNorm2d(in_chans, eps=1e-6), nn.Conv2d(in_chans, out_chans, 2, 2))


class PoolNormHead(PoolHead):
    """Global average pool -> LayerNorm -> dropout -> fc (timm's NormMlpClassifierHead layout)."""

    def __init__(self, in_chans: int, num_classes: int, drop_rate: float, global_pool: str = "avg"):
        super().__init__(in_chans, drop_rate)
        self.norm = LayerNorm2d(in_chans, eps=1e-6)
        self.reset(num_classes, global_pool)

    def post_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def make_head(in_chans: int, num_classes: int, drop_rate: float) -> nn.Module:
    return PoolNormHead(in_chans, num_classes, drop_rate)
