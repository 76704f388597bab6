"""MogaNet family: reference sizes, the kernel knob, forward/backward and the exact deploy form."""
import random

import pytest
import torch
from torch import nn

import lkscale
from lkscale.blocks import moga
from lkscale.presets import published
from lkscale.spec import ArchSpec


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reference_count(dims, depths, ratios, kernels=None, stem_stride=4, num_classes=1000, ls=True) -> int:
    """Parameter count of Westlake-AI/MogaNet models/moganet.py, written out layer by layer."""
    kernels = kernels or [7] * len(dims)

    def conv(cin, cout, k, groups=1):
        return cout * (cin // groups) * k * k + cout  # every reference conv has a bias

    def block(c, r, k):
        h, c1, c2 = int(c * r), int(3 / 8 * c), int(4 / 8 * c)
        attn = (3 * conv(c, c, 1) + conv(c, c, 5, c) + conv(c1, c1, 5, c1) + conv(c2, c2, k, c2)
                + conv(c, c, 1) + c)  # proj_1, gate, proj_2, DW_conv0/1/2, PW_conv, sigma
        mlp = conv(c, h, 1) + conv(h, h, 3, h) + conv(h, c, 1) + conv(h, 1, 1) + h
        return 2 * 2 * c + attn + mlp + (2 * c if ls else 0)  # norm1, norm2, layer scales

    n = conv(3, dims[0] // 2, 3) + 2 * (dims[0] // 2) + conv(dims[0] // 2, dims[0], 3) + 2 * dims[0]
    for i, (c, d, r, k) in enumerate(zip(dims, depths, ratios, kernels)):
        if i:
            n += conv(dims[i - 1], c, 3) + 2 * c  # ConvPatchEmbed
        n += d * block(c, r, k) + 2 * c  # blocks + the stage's closing norm
    return n + dims[-1] * num_classes + num_classes


@pytest.mark.parametrize("name,dims,depths", [
    ("moganet_s", [64, 128, 320, 512], [2, 3, 12, 2]),
    ("moganet_tiny", [32, 64, 128, 256], [3, 3, 12, 2]),
    ("moganet_xtiny", [32, 64, 96, 192], [3, 3, 10, 2]),
])
def test_published_sizes(name, dims, depths):
    with torch.device("meta"):
        ours = n_params(lkscale.build_model(name, num_classes=1000))
    assert ours == reference_count(dims, depths, [8, 8, 4, 4])
    ref, source = published()[name]
    assert abs(ours / ref - 1) <= 0.01, f"{name}: {ours:,} vs {ref:,.0f} ({source})"


def test_proxy_forward_backward():
    model = lkscale.build_model("moga_proxy", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"


@pytest.mark.parametrize("kernel", [7, 11])
def test_kernel_knob_sets_the_dilation3_branch_and_receptive_field(kernel):
    """Output (centre pixel) depends on exactly the inputs within 2 + 3 (K - 1) / 2 px."""
    torch.manual_seed(0)
    m = moga.MultiOrderDWConv(8, kernel)
    assert (m.DW_conv2.kernel_size, m.DW_conv2.dilation) == ((kernel, kernel), (3, 3))
    assert (m.DW_conv0.kernel_size, m.DW_conv1.kernel_size, m.DW_conv1.dilation) == ((5, 5), (5, 5), (2, 2))
    assert m.dims == (1, 3, 4)
    size = 2 * (2 + 3 * (kernel - 1) // 2) + 9
    x = torch.randn(1, 8, size, size, requires_grad=True)
    c = size // 2
    m(x)[0, :, c, c].sum().backward()
    rows = x.grad[0].abs().sum(0).sum(1).nonzero().flatten()
    radius = 2 + 3 * (kernel - 1) // 2
    assert (rows.min().item(), rows.max().item()) == (c - radius, c + radius)


def test_block_matches_reference_formulas():
    """One MogaBlock against the reference equations, written with plain tensor ops."""
    torch.manual_seed(0)
    blk = moga.MogaBlock(16, kernel_size=9, mlp_ratio=2, drop_path=0.0, ls_init_value=0.3).eval()
    for p in blk.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randn(2, 16, 12, 12)
    a, f = blk.attn, blk.mlp
    F = torch.nn.functional

    def conv(t, c, dil=1):
        return F.conv2d(t, c.weight, c.bias, 1, dil * (c.kernel_size[0] // 2), dil, c.groups)

    n1 = blk.norm1(x)
    y = conv(n1, a.proj_1)
    y = F.silu(y + a.sigma.scale * (y - y.mean((2, 3), keepdim=True)))
    v0 = conv(y, a.value.DW_conv0)
    v = torch.cat([v0[:, :2], conv(v0[:, 2:8], a.value.DW_conv1, 2), conv(v0[:, 8:], a.value.DW_conv2, 3)], 1)
    v = conv(v, a.value.PW_conv)
    attn = conv(F.silu(conv(y, a.gate)) * F.silu(v), a.proj_2) + n1
    x1 = x + blk.layer_scale_1 * attn
    h = F.gelu(conv(conv(blk.norm2(x1), f.fc1), f.dwconv))
    h = h + f.sigma.scale * (h - F.gelu(conv(h, f.decompose)))
    expected = x1 + blk.layer_scale_2 * conv(h, f.fc2)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), expected, rtol=1e-5, atol=1e-5)


def random_moga_spec(rng: random.Random, stem_stride: int, layer_scale: float) -> ArchSpec:
    n = rng.choice([3, 4])
    widths = [8 * rng.randint(1, 3) * 2 ** i for i in range(n)]
    return ArchSpec.from_dict({
        "stem": {"stride": stem_stride},
        "layer_scale": layer_scale,
        "drop_path_rate": rng.choice([0.0, 0.2]),
        "stages": [{"block": "moga", "depth": rng.randint(1, 2), "width": w, "kernel": rng.choice(range(7, 16, 2)),
                    "ffn_ratio": rng.choice([1.0, 2.0, 4.0, 8.0])} for w in widths],
    })


def randomise(model: nn.Module, gen: torch.Generator) -> None:
    """Trained-looking BN statistics, feature-decomposition scales and layer scales.

    Conv/linear weights are first set to a small scale (trunc-normal 0.02): with MogaNet's kaiming-scale init,
    random layer scales of ~0.5 and multiplicative gating, activations reach ~1e36, where float32 round-off
    alone exceeds the 1e-5 relative tolerance. Exactness of the folding does not depend on the weight scale.
    """
    from lkscale.blocks.common import trunc_normal_init

    model.apply(trunc_normal_init)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    for name, p in model.named_parameters():
        if "sigma" in name or "layer_scale" in name:
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.mark.parametrize("seed,stem_stride,layer_scale", [(0, 4, 0.0), (1, 2, 1e-5), (2, 1, 0.5), (3, 4, 0.5),
                                                          (4, 2, 0.0)])
def test_random_specs_build_run_and_reparam_exactly(seed, stem_stride, layer_scale):
    """Random widths (multiples of 8), depths, kernels 7..15 and FFN ratios; every stem stride."""
    rng = random.Random(seed)
    spec = random_moga_spec(rng, stem_stride, layer_scale)
    model = lkscale.build_model(spec, num_classes=7)
    ls = spec.layer_scale > 0
    assert n_params(model) == reference_count(spec.widths, spec.depths, [s.ffn_ratio for s in spec.stages],
                                              spec.kernels, num_classes=7, ls=ls)
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()  # train mode, drop path on
    gen = torch.Generator().manual_seed(seed)
    randomise(model, gen)
    model.eval()
    deploy = lkscale.reparameterize(model)
    with torch.no_grad():
        y, z = model(x), deploy(x)
    err, scale = (y - z).abs().max().item(), y.abs().max().item()
    assert err <= 1e-5 * max(scale, 1e-3), f"{spec.name}: err {err:.3g} at output scale {scale:.3g}"
    # Deploy form: the only BNs left are the transitions' leading norms (before a padded 3x3 conv).
    bns = [name for name, m in deploy.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns == [f"stages.{i}.downsample.norm" for i in range(1, len(spec.stages))]
    for blk in deploy.modules():
        if isinstance(blk, moga.MogaBlock):
            assert blk.layer_scale_1 is None and blk.attn.kappa is not None and blk.mlp.neg_u is not None
    assert n_params(deploy) < n_params(model)


def test_stem_strides():
    x = torch.randn(1, 3, 32, 32)
    for stride, size in [(4, 8), (2, 16), (1, 32)]:
        assert moga.make_stem(3, 16, stride)(x).shape == (1, 16, size, size)
    assert moga.make_downsample(16, 24)(torch.randn(1, 16, 9, 9)).shape == (1, 24, 5, 5)
