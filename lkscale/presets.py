"""Named architectures: published ones (sizes checked against the papers) and proxy-sized ones.

Each family module may define ``PRESETS: dict[str, dict]`` (spec dicts); they are collected here.
"""
from __future__ import annotations

import importlib
from functools import lru_cache

from lkscale.blocks import REGISTRY
from lkscale.spec import ArchSpec, SpecError


def _stages(block, depths, widths, kernels, **extra):
    out = []
    for i, (d, w, k) in enumerate(zip(depths, widths, kernels)):
        st = {"block": block, "depth": d, "width": w, "kernel": k}
        for key, val in extra.items():
            st[key] = val[i] if isinstance(val, (list, tuple)) and len(val) == len(depths) else val
        out.append(st)
    return out


_COMMON: dict[str, dict] = {
    # RepLKNet (Ding et al. 2022), Table 6 / official repo: 31B 79M params, 31L 172M (1000 classes).
    "replknet_31b": {"stages": _stages("replk", [2, 2, 18, 2], [128, 256, 512, 1024], [31, 29, 27, 13], reparam=[5]),
                     "drop_path_rate": 0.5},
    "replknet_31l": {"stages": _stages("replk", [2, 2, 18, 2], [192, 384, 768, 1536], [31, 29, 27, 13], reparam=[5]),
                     "drop_path_rate": 0.5},
    # ConvNeXt (Liu et al. 2022): T 28.6M, S 50.2M, B 88.6M.
    "convnext_tiny": {"stages": _stages("convnext", [3, 3, 9, 3], [96, 192, 384, 768], [7] * 4), "drop_path_rate": 0.1},
    "convnext_small": {"stages": _stages("convnext", [3, 3, 27, 3], [96, 192, 384, 768], [7] * 4), "drop_path_rate": 0.4},
    "convnext_base": {"stages": _stages("convnext", [3, 3, 27, 3], [128, 256, 512, 1024], [7] * 4), "drop_path_rate": 0.5},
    # Proxy-sized (CIFAR-scale, stem stride 2 so a 32 px input leaves 16/8/4/2 maps).
    "replk_proxy": {"stem": {"stride": 2},
                    "stages": _stages("replk", [1, 1, 2, 1], [32, 64, 128, 256], [13, 13, 7, 3],
                                       reparam=[[5], [5], [3], []])},
    # layer scale 1.0: ConvNeXt's 1e-6 nearly switches blocks off in a 2-4 epoch proxy run (measured: 2 epochs on
    # 10k CIFAR-10 images, 41.5% -> 46.4% validation accuracy).
    "convnext_proxy": {"stem": {"stride": 2}, "layer_scale": 1.0,
                       "stages": _stages("convnext", [2, 2, 4, 2], [32, 64, 128, 256], [7] * 4)},
}

# Published parameter counts (1000 classes) used by tests and README: name -> (params, source).
PUBLISHED = {
    "replknet_31b": (79_864_168, "official weights converted in open-mmlab/mmpretrain configs/replknet/metafile.yml (paper: 79M)"),
    "replknet_31l": (172_671_016, "official weights converted in open-mmlab/mmpretrain configs/replknet/metafile.yml (paper: 172M)"),
    "convnext_tiny": (28_589_128, "timm convnext_tiny (exact); paper: 28.6M"),
    "convnext_small": (50_223_688, "timm convnext_small (exact); paper: 50.2M"),
    "convnext_base": (88_591_464, "timm convnext_base (exact); paper: 88.6M"),
}


@lru_cache(maxsize=None)
def all_presets() -> dict[str, dict]:
    table = dict(_COMMON)
    for path in REGISTRY.values():
        try:
            mod = importlib.import_module(path)
        except ModuleNotFoundError:
            continue
        table.update(getattr(mod, "PRESETS", {}))
    return table


def published() -> dict[str, tuple[float, str]]:
    table = dict(PUBLISHED)
    for path in REGISTRY.values():
        try:
            table.update(getattr(importlib.import_module(path), "PUBLISHED", {}))
        except ModuleNotFoundError:
            continue
    return table


def preset_names() -> list[str]:
    return sorted(all_presets())


def get_preset(name: str) -> ArchSpec:
    table = all_presets()
    if name not in table:
        raise SpecError("preset", f"unknown preset {name!r}; known: {', '.join(sorted(table))}")
    return ArchSpec.from_dict(table[name], where=f"preset {name}")
