"""RepLKNet family (Ding et al., "Scaling Up Your Kernels to 31x31", CVPR 2022).

Per depth unit: a RepLK block then a ConvFFN block, as in the reference implementation:
- RepLK block: BN -> 1x1 conv-BN-ReLU -> depthwise KxK conv-BN (+ parallel small-kernel conv-BN
  branches) -> ReLU -> 1x1 conv-BN, shortcut with drop path.
- ConvFFN: BN -> 1x1 conv-BN to ffn_ratio x -> GELU -> 1x1 conv-BN, shortcut with drop path.
Stem: 3x3 s2 conv-BN-ReLU -> dw 3x3 -> 1x1 -> dw 3x3 s2 (stride 4; the strides are dropped for
stem stride 2 or 1). Transition: 1x1 conv-BN-ReLU then dw 3x3 s2 conv-BN-ReLU. Head: BN -> pool -> fc.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from timm.layers import DropPath
from torch import nn

from lkscale.blocks.common import ConvBN, PoolHead, ReparamDWConv, fold_bn_into_next_conv, fold_bn_into_next_linear
if TYPE_CHECKING:  # the make_blocks adapter reads a StageSpec; the block classes take plain arguments
    from lkscale.spec import ArchSpec, StageSpec


class RepLKBlock(nn.Module):
    """RepLKNet's RepLKBlock; ``reparam``: ``(kernel, dilation)`` branches beside the large kernel."""

    def __init__(self, dim: int, kernel_size: int, reparam: Sequence = (), drop_path: float = 0.0):
        super().__init__()
        self.prebn = nn.BatchNorm2d(dim)
        self.pw1 = ConvBN(dim, dim, 1, act=nn.ReLU)
        self.large_kernel = ReparamDWConv(dim, kernel_size, reparam)
        self.lk_act = nn.ReLU()
        self.pw2 = ConvBN(dim, dim, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.lk_act(self.large_kernel(self.pw1(self.prebn(x)))))
        return x + self.drop_path(out)

    def reparameterize(self) -> None:
        if isinstance(self.prebn, nn.BatchNorm2d):  # children (pw1's BN) are already fused
            self.pw1.conv = fold_bn_into_next_conv(self.prebn, self.pw1.conv)
            self.prebn = nn.Identity()


class ConvFFN(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.prebn = nn.BatchNorm2d(dim)
        self.pw1 = ConvBN(dim, hidden, 1)
        self.act = nn.GELU()
        self.pw2 = ConvBN(hidden, dim, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.pw2(self.act(self.pw1(self.prebn(x)))))

    def reparameterize(self) -> None:
        if isinstance(self.prebn, nn.BatchNorm2d):
            self.pw1.conv = fold_bn_into_next_conv(self.prebn, self.pw1.conv)
            self.prebn = nn.Identity()


def make_blocks(stage: StageSpec, drop_path: list[float], spec: ArchSpec) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    for dp in drop_path:
        blocks.append(RepLKBlock(stage.width, stage.kernel, stage.reparam, dp))
        blocks.append(ConvFFN(stage.width, stage.ffn_ratio, dp))
    return blocks


def make_stem(in_chans: int, out_chans: int, stride: int) -> nn.Module:
    s1, s2 = {4: (2, 2), 2: (2, 1), 1: (1, 1)}[stride]
    return nn.Sequential(
        ConvBN(in_chans, out_chans, 3, s1, act=nn.ReLU),
        ConvBN(out_chans, out_chans, 3, 1, groups=out_chans, act=nn.ReLU),
        ConvBN(out_chans, out_chans, 1, act=nn.ReLU),
        ConvBN(out_chans, out_chans, 3, s2, groups=out_chans, act=nn.ReLU),
    )


def make_downsample(in_chans: int, out_chans: int) -> nn.Module:
    return nn.Sequential(
        ConvBN(in_chans, out_chans, 1, act=nn.ReLU),
        ConvBN(out_chans, out_chans, 3, 2, groups=out_chans, act=nn.ReLU),
    )


class BNPoolHead(PoolHead):
    """BN -> global average pool -> dropout -> fc; the BN folds into the fc in the deploy form."""

    def __init__(self, in_chans: int, num_classes: int, drop_rate: float, global_pool: str = "avg"):
        super().__init__(in_chans, drop_rate)
        self.norm = nn.BatchNorm2d(in_chans)
        self.reset(num_classes, global_pool)

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def reparameterize(self) -> None:
        # BN then average pool == average pool then BN (per-channel affine), which folds into fc.
        if isinstance(self.norm, nn.BatchNorm2d) and isinstance(self.fc, nn.Linear) and self.global_pool == "avg":
            self.fc = fold_bn_into_next_linear(self.norm, self.fc)
            self.norm = nn.Identity()


def make_head(in_chans: int, num_classes: int, drop_rate: float) -> nn.Module:
    return BNPoolHead(in_chans, num_classes, drop_rate)
