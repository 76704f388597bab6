"""build_model(spec): stem -> stages (transition + blocks) -> head, from the block registry."""
from __future__ import annotations

import torch
from torch import nn

from lkscale.blocks import get_family
from lkscale.spec import ArchSpec


class Stage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class LKNet(nn.Module):
    """A 3- or 4-stage network described by an ArchSpec."""

    def __init__(self, spec: ArchSpec, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0):
        super().__init__()
        spec.validate()
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.deployed = False
        widths = spec.widths
        self.stem = _init(spec.stem.family, get_family(spec.stem.family).make_stem(in_chans, widths[0], spec.stem.stride))
        total = sum(spec.depths)
        rates = [spec.drop_path_rate * i / (total - 1) for i in range(total)] if total > 1 else [0.0] * total
        stages, k = [], 0
        for i, st in enumerate(spec.stages):
            ds = _init(spec.downsample, get_family(spec.downsample).make_downsample(widths[i - 1], st.width)) \
                if i else nn.Identity()
            blocks = [_init(st.block, b) for b in get_family(st.block).make_blocks(st, rates[k:k + st.depth], spec)]
            stages.append(Stage(ds, blocks))
            k += st.depth
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.head = _init(spec.head, get_family(spec.head).make_head(widths[-1], num_classes, drop_rate))
        for m in self.modules():  # family-specific init (e.g. DCNv3's zero offset/mask projections), timm's convention
            if m is not self and callable(getattr(m, "init_weights", None)):
                m.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _init(family: str, part: nn.Module) -> nn.Module:
    """Initialise a part the way its family's reference does (``init_part`` in the family module; PyTorch's
    default init when a family has none, as RepLKNet uses). A family's init matters: with BN-heavy blocks, a
    too-small conv init leaves BN running statistics far from the activations after a short proxy run."""
    fn = getattr(get_family(family), "init_part", None)
    if fn is not None:
        part.apply(fn)
    return part


def build_model(spec: ArchSpec | str, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> LKNet:
    """Build the network for ``spec`` (an ArchSpec or a preset name)."""
    if isinstance(spec, str):
        from lkscale.presets import get_preset

        spec = get_preset(spec)
    return LKNet(spec, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
