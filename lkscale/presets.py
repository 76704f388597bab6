"""Named architectures, all in this one table: published ones (sizes checked against the papers and
reference code, ``published()``) and proxy-sized ones (``*_proxy``, CIFAR-scale). Spec dicts only: this
module sits beside ``spec`` and imports no block code.
"""
from __future__ import annotations

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


# --- DCNv3 / InternImage
def _dcn_stages(depths, widths, groups, kernel=3, ffn_ratio=4.0):
    return [{"block": "dcnv3", "depth": d, "width": w, "kernel": kernel, "dcn_groups": g, "ffn_ratio": ffn_ratio}
            for d, w, g in zip(depths, widths, groups)]


_DCNV3: dict[str, dict] = {
    # InternImage-T: classification/configs/internimage_t_1k_224.yaml (channels 64, depths 4-4-18-4,
    # groups 4-8-16-32, offset_scale 1, mlp_ratio 4, drop_path 0.2 (0.1 in with_lr_decay/), no layer scale).
    "internimage_t": {"stem": {"stride": 4}, "stages": _dcn_stages([4, 4, 18, 4], [64, 128, 256, 512], [4, 8, 16, 32]),
                      "drop_path_rate": 0.2, "layer_scale": 0.0},
    # CIFAR-scale proxy: stem stride 2 so 32 px inputs leave 16/8/4/2 maps; 16 channels per DCN group.
    "dcnv3_proxy": {"stem": {"stride": 2}, "stages": _dcn_stages([1, 1, 2, 1], [32, 64, 128, 256], [2, 4, 8, 16]),
                    "drop_path_rate": 0.1, "layer_scale": 0.0},
}

# Exact count of the reference structure (OpenGVLab/InternImage classification/models/intern_image.py,
# InternImage(channels=64, depths=[4,4,18,4], groups=[4,8,16,32], num_classes=1000)), counted layer by
# layer in tests/test_dcnv3.py::reference_internimage_params; the model zoo / paper give "30M".
_DCNV3_PUBLISHED: dict[str, tuple[float, str]] = {
    "internimage_t": (29_918_424, "count of the official InternImage-T structure (OpenGVLab/InternImage "
                                  "classification/models/intern_image.py); README model zoo / paper: 30M params, 5G FLOPs"),
}


# --- MogaNet
def _moga_stages(depths, widths, ffn_ratios, kernel=7):
    return [{"block": "moga", "depth": d, "width": w, "kernel": kernel, "ffn_ratio": r}
            for d, w, r in zip(depths, widths, ffn_ratios)]


_MOGA: dict[str, dict] = {
    # Reference arch_zoo (models/moganet.py); drop path as in its TRAINING.md. MogaNet-S is
    # 64-128-320-512 (64-160-320-512 is MogaNet-B's width, 26.0M params at these depths).
    "moganet_xtiny": {"stages": _moga_stages([3, 3, 10, 2], [32, 64, 96, 192], [8, 8, 4, 4]),
                      "drop_path_rate": 0.05, "layer_scale": 1e-5},
    "moganet_tiny": {"stages": _moga_stages([3, 3, 12, 2], [32, 64, 128, 256], [8, 8, 4, 4]),
                     "drop_path_rate": 0.1, "layer_scale": 1e-5},
    "moganet_s": {"stages": _moga_stages([2, 3, 12, 2], [64, 128, 320, 512], [8, 8, 4, 4]),
                  "drop_path_rate": 0.1, "layer_scale": 1e-5},
    # CIFAR-scale proxy: stem stride 2 so a 32 px input leaves 16/8/4/2 px maps.
    "moga_proxy": {"stem": {"stride": 2}, "stages": _moga_stages([1, 1, 2, 1], [32, 64, 128, 256], [8, 8, 4, 4]),
                   "layer_scale": 1e-5},
}

# Published parameter counts (1000 classes): name -> (params, source).
_MOGA_PUBLISHED: dict[str, tuple[float, str]] = {
    "moganet_xtiny": (2.97e6, "Westlake-AI/MogaNet README, ImageNet-1K table: MogaNet-XT 2.97M, 0.80 GFLOPs"),
    "moganet_tiny": (5.20e6, "Westlake-AI/MogaNet README, ImageNet-1K table: MogaNet-T 5.20M, 1.10 GFLOPs"),
    "moganet_s": (25.3e6, ("Westlake-AI/MogaNet README / paper: MogaNet-S 25.3M, 4.97 GFLOPs at 224 "
                             "(mmpretrain configs/moganet/README: 25.35M, 4.94G; exact count of the reference "
                             "models/moganet.py: 25,335,675)")),
}


_PRESETS: dict[str, dict] = {**_COMMON, **_DCNV3, **_MOGA}
_PUBLISHED: dict[str, tuple[float, str]] = {**PUBLISHED, **_DCNV3_PUBLISHED, **_MOGA_PUBLISHED}


def all_presets() -> dict[str, dict]:
    """Every preset: name -> spec dict."""
    return dict(_PRESETS)


def published() -> dict[str, tuple[float, str]]:
    """Published parameter counts (1000 classes): name -> (params, source)."""
    return dict(_PUBLISHED)


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> ArchSpec:
    if name not in _PRESETS:
        raise SpecError("preset", f"unknown preset {name!r}; known: {', '.join(sorted(_PRESETS))}")
    return ArchSpec.from_dict(_PRESETS[name], where=f"preset {name}")
