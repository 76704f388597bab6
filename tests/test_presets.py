"""Every published preset matches its reference parameter count (1000 classes) within 1%."""
import pytest
import timm
import torch

import lkscale
from lkscale.presets import preset_names, published

REQUIRED = ["replknet_31b", "replknet_31l", "convnext_tiny", "convnext_small", "convnext_base",
            "internimage_t", "moganet_s"]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", REQUIRED)
def test_required_presets_exist_and_match_published(name):
    table = published()
    assert name in preset_names(), f"preset {name} missing"
    assert name in table, f"no published size recorded for {name}"
    with torch.device("meta"):  # counts without allocating 170M parameters
        ours = n_params(lkscale.build_model(name, num_classes=1000))
    ref, source = table[name]
    assert abs(ours / ref - 1) <= 0.01, f"{name}: {ours:,} vs published {ref:,.0f} ({source})"


def test_convnext_tiny_is_timm_convnext_tiny():
    ref = timm.create_model("convnext_tiny").eval()
    ours = lkscale.build_model("convnext_tiny").eval()
    assert n_params(ours) == n_params(ref) == 28_589_128
    ours.load_state_dict(ref.state_dict(), strict=True)  # same names, same shapes
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in preset_names() if n.endswith("_proxy")])
def test_proxy_presets_train_step(name):
    model = lkscale.build_model(name, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_presets_live_in_one_place():
    import importlib

    from lkscale.blocks import REGISTRY

    for path in REGISTRY.values():  # no family module keeps its own table any more
        mod = importlib.import_module(path)
        assert not hasattr(mod, "PRESETS") and not hasattr(mod, "PUBLISHED"), path
    # the 13 presets of before (5 common + 2 DCNv3 + 4 MogaNet + 2 proxies), every published size among them
    assert len(preset_names()) == 13 and set(published()) <= set(preset_names()) and len(published()) == 9
