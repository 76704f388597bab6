"""build_model(spec): stem -> stages (transition + blocks) -> head, from the block registry.

``LKNet`` follows timm's model contract (as ``timm.models.convnext.ConvNeXt``), so a network found by a
search plugs into timm-based detectors and segmenters: ``feature_info`` (one entry per stage),
``forward_features`` / ``forward_head(x, pre_logits)``, ``forward_intermediates``,
``prune_intermediate_layers``, ``get_classifier`` / ``reset_classifier``, ``no_weight_decay``, and
``features_only=True`` through ``timm.create_model`` (``lkscale.register_timm``).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from lkscale.blocks import get_family
from lkscale.presets import get_preset
from lkscale.spec import ArchSpec


class Stage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class LKNet(nn.Module):
    """A 3- or 4-stage network described by an ArchSpec (or its dict, as timm's ``model_args`` hold it).

    ``drop_path_rate`` (when given) overrides the spec's; ``global_pool`` is ``'avg'`` or ``''``.
    """

    def __init__(self, spec: ArchSpec | Mapping[str, Any], num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float | None = None, global_pool: str = "avg",
                 device: Any = None, dtype: Any = None):
        super().__init__()
        if not isinstance(spec, ArchSpec):
            spec = ArchSpec.from_dict(spec)
        if drop_path_rate is not None:
            spec = spec.replace(drop_path_rate=float(drop_path_rate))
        spec.validate()
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.deployed = False
        widths = spec.widths
        self.stem = _init(spec.stem.family, get_family(spec.stem.family).make_stem(in_chans, widths[0], spec.stem.stride))
        total = sum(spec.depths)
        rates = [spec.drop_path_rate * i / (total - 1) for i in range(total)] if total > 1 else [0.0] * total
        stages, k = [], 0
        self.feature_info = []
        for i, st in enumerate(spec.stages):
            ds = _init(spec.downsample, get_family(spec.downsample).make_downsample(widths[i - 1], st.width)) \
                if i else nn.Identity()
            blocks = [_init(st.block, b) for b in get_family(st.block).make_blocks(st, rates[k:k + st.depth], spec)]
            stages.append(Stage(ds, blocks))
            self.feature_info.append(dict(num_chs=st.width, reduction=spec.stem.stride * 2 ** i, module=f"stages.{i}"))
            k += st.depth
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.head = _init(spec.head, get_family(spec.head).make_head(widths[-1], num_classes, drop_rate))
        if global_pool != "avg":
            self.head.reset(num_classes, global_pool)
        self.head_hidden_size = self.head.hidden_size
        for m in self.modules():  # family-specific init (e.g. DCNv3's zero offset/mask projections), timm's convention
            if m is not self and callable(getattr(m, "init_weights", None)):
                m.init_weights()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ classifier
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new (randomly initialised) classifier for ``num_classes`` (0: none, ``forward`` gives features)."""
        self.head.reset(num_classes, global_pool)
        self.num_classes = num_classes

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Layer-scale and learned per-channel scale parameters (as the reference recipes exclude them)."""
        return {n for n, _ in self.named_parameters()
                if n.endswith(("gamma", "gamma1", "gamma2", "layer_scale_1", "layer_scale_2", "sigma.scale"))}

    # ------------------------------------------------------------------ forward
    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (timm's API): the last ``indices`` stages if an int, those listed if a list, all if
        None. ``norm`` has no effect (the final norm belongs to the head in every family)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} not supported; only 'NCHW'")
        take, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:max_index + 1] if stop_early and not torch.jit.is_scripting() else self.stages
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last one in ``indices`` (and the classifier); returns the kept indices."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        self.feature_info = self.feature_info[:max_index + 1]
        if prune_end:  # the head is sized for the last stage: it goes, features end at the last kept stage
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.head = nn.Identity()
            self.num_classes = 0
        elif prune_head:
            self.reset_classifier(0, "")
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def feature_take_indices(num_stages: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """timm's convention: None -> every stage, an int n -> the last n, a sequence -> those (negative from the
    end). Returns the sorted indices and the largest."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"take the last {indices} of {num_stages} stages: need 1..{num_stages}")
        take = list(range(num_stages - indices, num_stages))
    else:
        take = []
        for i in indices:
            j = num_stages + i if i < 0 else i
            if not 0 <= j < num_stages:
                raise ValueError(f"stage index {i} out of range for {num_stages} stages")
            take.append(j)
        take = sorted(set(take))
    return take, max(take)


def _init(family: str, part: nn.Module) -> nn.Module:
    """Initialise a part the way its family's reference does (``init_part`` in the family module; PyTorch's
    default init when a family has none, as RepLKNet uses). A family's init matters: with BN-heavy blocks, a
    too-small conv init leaves BN running statistics far from the activations after a short proxy run."""
    fn = getattr(get_family(family), "init_part", None)
    if fn is not None:
        part.apply(fn)
    return part


def first_conv(model: LKNet) -> str:
    """Name of the first convolution (timm's ``pretrained_cfg['first_conv']``, adapted for other ``in_chans``)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name
    raise ValueError("model has no convolution")


def build_model(spec: ArchSpec | str, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> LKNet:
    """Build the network for ``spec`` (an ArchSpec or a preset name)."""
    if isinstance(spec, str):
        spec = get_preset(spec)
    return LKNet(spec, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
