"""Train form vs deploy form: eval outputs agree to 1e-5 (relative to the output scale, fp32)."""
import importlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import lkscale
from lkscale.blocks import REGISTRY
from lkscale.blocks.common import ReparamDWConv
from lkscale.spec import ArchSpec

FAMILIES = [f for f in REGISTRY if importlib.util.find_spec(REGISTRY[f]) is not None]


@st.composite
def stage_specs(draw, family, width):
    kernel = draw(st.sampled_from([7, 9, 11, 13] if family == "moga" else [1, 3, 5, 7, 9, 13, 17]))
    st_ = {"block": family, "depth": draw(st.integers(1, 2)), "width": width, "kernel": kernel,
           "ffn_ratio": draw(st.sampled_from([1.0, 2.0, 4.0]))}
    if family == "dcnv3":
        st_["dcn_groups"] = draw(st.sampled_from([g for g in (1, 2, 4, 8) if width % g == 0]))
    if family in ("replk", "convnext") and kernel > 3:
        cands = [b for b in (3, 5, "3d2", "3d3", "5d2") if (int(str(b)[0]) - 1) * (int(str(b)[2]) if "d" in str(b) else 1) + 1 < kernel]
        st_["reparam"] = draw(st.lists(st.sampled_from(cands), max_size=3, unique=True))
    return st_


@st.composite
def arch_specs(draw):
    n = draw(st.sampled_from([3, 4]))
    fams = [draw(st.sampled_from(FAMILIES)) for _ in range(n)]
    widths = [8 * draw(st.integers(1, 3)) * (2 ** i) // (2 if i else 1) or 8 for i in range(n)]
    widths = [max(8, w - w % 8) for w in widths]
    stages = [draw(stage_specs(f, w)) for f, w in zip(fams, widths)]
    return ArchSpec.from_dict({
        "stem": {"family": draw(st.sampled_from(FAMILIES)), "stride": draw(st.sampled_from([1, 2, 4]))},
        "downsample": draw(st.sampled_from(FAMILIES)),
        "head": draw(st.sampled_from(FAMILIES)),
        "layer_scale": draw(st.sampled_from([0.0, 0.5])),
        "stages": stages,
    })


def randomise_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters so folding is actually exercised."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)


def assert_equivalent(spec: ArchSpec, seed: int, size: int = 32) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = lkscale.build_model(spec, num_classes=7)
    randomise_norms(model, gen)
    model.eval()
    x = torch.randn(2, 3, size, size, generator=gen)
    deploy = lkscale.reparameterize(model)
    with torch.no_grad():
        y, z = model(x), deploy(x)
    scale = y.abs().max().item()
    err = (y - z).abs().max().item()
    assert err <= 1e-5 * max(scale, 1e-3), f"{spec.name}: max err {err:.3g} vs output scale {scale:.3g}"
    return deploy


@settings(max_examples=110, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(spec=arch_specs(), seed=st.integers(0, 2**16))
def test_reparam_equivalence_random_specs(spec, seed):
    deploy = assert_equivalent(spec, seed)
    # Deploy form: no BN left after a conv, and every large-kernel layer is a single conv.
    for m in deploy.modules():
        assert not (isinstance(m, ReparamDWConv) and not m.deployed)


def test_replknet_block_is_one_conv_per_large_kernel():
    spec = lkscale.get_preset("replk_proxy")
    deploy = assert_equivalent(spec, 0)
    lks = [m for m in deploy.modules() if isinstance(m, ReparamDWConv)]
    assert lks and all(m.deployed and isinstance(m.lk, nn.Conv2d) and m.lk.bias is not None for m in lks)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deploy.modules())
    # reparameterize leaves the original untouched
    model = lkscale.build_model(spec, num_classes=7)
    lkscale.reparameterize(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_dilated_branch_merges_exactly():
    from lkscale.spec import Branch

    torch.manual_seed(0)
    m = ReparamDWConv(4, 11, (Branch(5, 1), Branch(3, 3), Branch(5, 2))).eval()
    randomise_norms(m, torch.Generator().manual_seed(1))
    x = torch.randn(1, 4, 9, 13)
    y = m(x)
    m.reparameterize()
    assert m.lk.weight.shape[-1] == 11
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["replknet_31b", "convnext_tiny"])
def test_published_presets_reparam(name):
    """Full-size presets fold exactly too (one image at 64 px keeps it quick)."""
    assert_equivalent(lkscale.get_preset(name), 3, size=64)


def test_blocks_take_plain_arguments():
    """Each family's block class is built from plain arguments (like ConvNeXt's Block); make_blocks only
    unpacks the StageSpec: the same seed gives the same parameters, and re-parameterisation stays exact."""
    from lkscale.blocks import convnext, dcnv3, moga, replk

    spec = lkscale.ArchSpec.from_dict({"stem": {"stride": 2}, "layer_scale": 0.5, "stages": [
        {"block": "convnext", "depth": 1, "width": 16, "kernel": 9, "reparam": [5, "3d2"], "ffn_ratio": 2}] * 3})
    st = spec.stages[0]
    plain = {
        convnext: lambda: convnext.ConvNeXtBlock(16, kernel_size=9, mlp_ratio=2, reparam=[(5, 1), (3, 2)],
                                                 drop_path=0.0, ls_init_value=0.5),
        replk: lambda: replk.RepLKBlock(16, kernel_size=9, reparam=[(5, 1), (3, 2)], drop_path=0.0),
    }
    for fam, build in plain.items():
        torch.manual_seed(3)
        ref = fam.make_blocks(st, [0.0], spec)[0]
        torch.manual_seed(3)
        blk = build()
        assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), blk.state_dict().values()))
        assert list(ref.state_dict()) == list(blk.state_dict())
        blk.eval()
        for m in blk.modules():  # BN statistics away from the identity, so the fold is tested
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, 16, 12, 12)
        with torch.no_grad():
            want = blk(x)
            torch.testing.assert_close(lkscale.reparameterize(blk)(x), want, rtol=1e-4, atol=1e-4)
    # the other families take their knobs the same way
    assert dcnv3.InternImageLayer(16, kernel_size=3, groups=4, mlp_ratio=2, drop_path=0.1).dcn.groups == 4
    assert moga.MogaBlock(16, kernel_size=9, mlp_ratio=2).attn.value.DW_conv2.kernel_size == (9, 9)
