"""DCNv3 core and the dcnv3 (InternImage) block family."""
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lkscale
from lkscale.blocks import dcnv3 as fam
from lkscale.ops import dcnv3_cpu
from lkscale.ops.dcnv3 import dcnv3_core, dcnv3_output_size
from lkscale.presets import get_preset, published
from lkscale.spec import ArchSpec


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one thread avoids OpenMP hand-off costs (20x slower on a loaded 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- slow reference
def _bilinear_zero_pad(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """img (H, W, C) sampled at pixel coordinate (y, x); taps outside the image read 0."""
    h, w, _ = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = torch.zeros(img.shape[-1], dtype=img.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[yy, xx]
    return out


def slow_dcnv3(value, offset, mask, kernel, groups, stride=1, pad=None, dilation=1, offset_scale=1.0):
    """Loop-by-loop DCNv3 as InternImage defines it: point p = kx*K + ky, offsets (x, y) per point."""
    n_, h, w, c = value.shape
    pad = dilation * (kernel - 1) // 2 if pad is None else pad
    ho = (h + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    gc, pts, centre = c // groups, kernel * kernel, dilation * (kernel - 1) // 2
    out = torch.zeros(n_, ho, wo, c, dtype=value.dtype)
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                for g in range(groups):
                    img = value[n, :, :, g * gc:(g + 1) * gc]
                    for kx in range(kernel):
                        for ky in range(kernel):
                            p = g * pts + kx * kernel + ky
                            ox, oy = offset[n, i, j, 2 * p].item(), offset[n, i, j, 2 * p + 1].item()
                            x = j * stride - pad + centre + (kx * dilation - centre + ox) * offset_scale
                            y = i * stride - pad + centre + (ky * dilation - centre + oy) * offset_scale
                            out[n, i, j, g * gc:(g + 1) * gc] += mask[n, i, j, p] * _bilinear_zero_pad(img, y, x)
    return out


def _inputs(n, h, w, c, kernel, groups, stride=1, pad=None, dilation=1, offset_std=2.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pad = dilation * (kernel - 1) // 2 if pad is None else pad
    ho, wo = (dcnv3_output_size(s, kernel, stride, pad, dilation) for s in (h, w))
    p = groups * kernel * kernel
    value = torch.randn(n, h, w, c, generator=gen, dtype=torch.float64)
    offset = torch.randn(n, ho, wo, 2 * p, generator=gen, dtype=torch.float64) * offset_std
    mask = torch.rand(n, ho, wo, p, generator=gen, dtype=torch.float64)
    return value, offset, mask


# ----------------------------------------------------------------------------- core
@pytest.mark.parametrize("kernel,groups,stride,pad,dilation,offset_scale", [
    (3, 2, 1, None, 1, 1.0),
    (5, 1, 1, None, 1, 1.0),
    (3, 3, 2, 1, 1, 1.0),
    (3, 1, 1, None, 2, 0.5),
    (1, 2, 1, None, 1, 1.0),
    (2, 2, 1, 0, 1, 1.5),   # even kernel, no padding
])
@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_core_matches_slow_reference(kernel, groups, stride, pad, dilation, offset_scale, impl):
    if impl == "fused":
        _fused_or_skip()
    value, offset, mask = _inputs(2, 5, 6, 2 * groups, kernel, groups, stride, pad, dilation)
    got = dcnv3_core(value, offset, mask, kernel, groups, stride, pad, dilation, offset_scale, impl=impl)
    want = slow_dcnv3(value, offset, mask, kernel, groups, stride, pad, dilation, offset_scale)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    # large offsets send many samples off the image: the zero padding is exercised
    assert (offset.abs() > 3).any()


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 1), (3, 2)])
def test_zero_offsets_uniform_mask_is_neighbourhood_average(kernel, dilation):
    n, h, w, c, g = 2, 7, 9, 8, 4
    value = torch.randn(n, h, w, c, dtype=torch.float64)
    pts = kernel * kernel
    offset = torch.zeros(n, h, w, 2 * g * pts, dtype=torch.float64)
    mask = torch.full((n, h, w, g * pts), 1.0 / pts, dtype=torch.float64)
    got = dcnv3_core(value, offset, mask, kernel, g, dilation=dilation)
    x = value.permute(0, 3, 1, 2)
    box = torch.full((c, 1, kernel, kernel), 1.0 / pts, dtype=torch.float64)
    want = F.conv2d(x, box, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=c)
    if dilation == 1:  # and the same as avg-pooling with zero padding counted
        pooled = F.avg_pool2d(x, kernel, 1, kernel // 2, count_include_pad=True)
        assert torch.allclose(want, pooled)
    assert torch.allclose(got, want.permute(0, 2, 3, 1), atol=1e-12)


def test_one_hot_mask_picks_one_tap_per_group():
    """Point p = kx*K + ky reads input pixel (i + ky - c, j + kx - c): a depthwise one-hot conv."""
    n, h, w, c, g, k = 1, 6, 7, 6, 3, 3
    value = torch.randn(n, h, w, c, dtype=torch.float64)
    offset = torch.zeros(n, h, w, 2 * g * k * k, dtype=torch.float64)
    taps = [(0, 2), (1, 1), (2, 0)]  # (kx, ky) chosen for each group
    mask = torch.zeros(n, h, w, g * k * k, dtype=torch.float64)
    weight = torch.zeros(c, 1, k, k, dtype=torch.float64)
    for gi, (kx, ky) in enumerate(taps):
        mask[..., gi * k * k + kx * k + ky] = 1.0
        weight[gi * (c // g):(gi + 1) * (c // g), 0, ky, kx] = 1.0
    got = dcnv3_core(value, offset, mask, k, g)
    want = F.conv2d(value.permute(0, 3, 1, 2), weight, padding=1, groups=c).permute(0, 2, 3, 1)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)  # exact up to the grid normalisation round trip


def test_integer_offset_shifts_the_sample():
    n, h, w, c, k = 1, 5, 5, 2, 3
    value = torch.randn(n, h, w, c, dtype=torch.float64)
    offset = torch.zeros(n, h, w, 2 * k * k, dtype=torch.float64)
    mask = torch.zeros(n, h, w, k * k, dtype=torch.float64)
    centre = 4  # kx = ky = 1
    mask[..., centre] = 1.0
    offset[..., 2 * centre] = 2.0   # x + 2
    offset[..., 2 * centre + 1] = -1.0  # y - 1
    got = dcnv3_core(value, offset, mask, k, 1)
    want = torch.zeros_like(value)
    want[:, 1:, :3] = value[:, :-1, 2:]  # out[i, j] = in[i - 1, j + 2], zero where that is off the image
    assert torch.allclose(got, want, rtol=0, atol=1e-12)  # exact up to the grid normalisation round trip


def _fused_or_skip():
    if dcnv3_cpu.load() is None:
        pytest.skip("the fused DCNv3 CPU kernel cannot be built here (no g++/ninja)")


@pytest.mark.parametrize("kernel,groups,stride,pad,dilation,offset_scale", [
    (3, 2, 1, None, 1, 1.0), (5, 1, 2, 1, 1, 1.0), (3, 3, 1, None, 2, 0.5), (2, 2, 1, 0, 1, 1.5)])
def test_fused_equals_reference_forward_and_gradients(kernel, groups, stride, pad, dilation, offset_scale):
    """The fused C++ loop against the grid_sample path: output and all three gradients, float64, with
    offsets large enough to send taps off the image (zero padding) from both sides."""
    _fused_or_skip()
    value, offset, mask = _inputs(3, 7, 6, 4 * groups, kernel, groups, stride, pad, dilation, offset_std=3.0, seed=11)
    outs, grads = [], []
    for impl in ("reference", "fused"):
        args = [t.clone().requires_grad_(True) for t in (value, offset, mask)]
        out = dcnv3_core(*args, kernel, groups, stride, pad, dilation, offset_scale, impl=impl)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        outs.append(out.detach())
        grads.append([a.grad for a in args])
    assert torch.allclose(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    for g_ref, g_fused, name in zip(*grads, ("value", "offset", "mask")):
        assert torch.allclose(g_ref, g_fused, rtol=1e-9, atol=1e-11), name
    assert grads[0][1].abs().sum() > 0  # offsets do get gradient


def test_fused_float32_module_matches_reference_within_float_tolerance(monkeypatch):
    """A DCNv3 layer in float32 (the training dtype): both paths agree to float rounding, gradients too."""
    _fused_or_skip()
    gen = torch.Generator().manual_seed(2)
    layer = fam.DCNv3(16, kernel=3, groups=4)
    with torch.no_grad():
        for lin in (layer.offset, layer.mask):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.3)
    x = torch.randn(4, 6, 7, 16, generator=gen)
    core, res = fam.dcnv3_core, {}
    for impl in ("reference", "fused"):
        monkeypatch.setattr(fam, "dcnv3_core", lambda *a, _impl=impl, **k: core(*a, impl=_impl, **k))
        layer.zero_grad()
        out = layer(x)
        out.square().sum().backward()
        res[impl] = (out.detach(), [p.grad.clone() for p in layer.parameters()])
    (o_r, g_r), (o_f, g_f) = res["reference"], res["fused"]
    assert torch.allclose(o_r, o_f, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_r, g_f):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_fused_gradcheck():
    _fused_or_skip()
    value, offset, mask = _inputs(2, 4, 5, 4, 3, 2, offset_std=1.3, seed=4)
    args = [t.clone().requires_grad_(True) for t in (value, offset, mask)]
    assert torch.autograd.gradcheck(lambda v, o, m: dcnv3_core(v, o, m, 3, 2, impl="fused"), args, eps=1e-6, atol=1e-6)


def test_core_gradcheck():
    value, offset, mask = _inputs(1, 3, 4, 4, 3, 2, offset_std=0.7, seed=3)
    args = [t.clone().requires_grad_(True) for t in (value, offset, mask)]
    assert torch.autograd.gradcheck(lambda v, o, m: dcnv3_core(v, o, m, 3, 2), args, eps=1e-6, atol=1e-6)


def test_core_low_precision_keeps_sub_pixel_positions():
    """bf16 inputs: positions are resolved in fp32 (bf16 alone rounds x=50.3 to 50.25)."""
    value, offset, mask = (t.float() for t in _inputs(1, 64, 64, 4, 3, 2, offset_std=0.3, seed=5))
    want = dcnv3_core(value, offset, mask, 3, 2)
    got = dcnv3_core(value.bfloat16(), offset.bfloat16(), mask.bfloat16(), 3, 2)
    assert got.dtype == torch.bfloat16
    # the only differences left come from rounding the inputs and the output to bf16
    want_rounded = dcnv3_core(value.bfloat16().float(), offset.bfloat16().float(), mask.bfloat16().float(), 3, 2)
    assert torch.allclose(got.float(), want_rounded, rtol=8e-3, atol=8e-3)
    assert (got.float() - want).abs().mean() < 0.02


def test_core_rejects_bad_shapes():
    value, offset, mask = _inputs(1, 4, 4, 4, 3, 2)
    with pytest.raises(ValueError, match="divisible"):
        dcnv3_core(value, offset, mask, 3, 3)
    with pytest.raises(ValueError, match="offset shape"):
        dcnv3_core(value, offset[..., :-2], mask, 3, 2)
    with pytest.raises(ValueError, match="mask shape"):
        dcnv3_core(value, offset, mask[..., :-1], 3, 2)
    with pytest.raises(ValueError, match="4-D"):
        dcnv3_core(value[0], offset, mask, 3, 2)


def test_core_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    layer = fam.DCNv3(16, kernel=3, groups=4).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial offsets and masks
        for lin in (layer.offset, layer.mask):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.3)
    x = torch.randn(2, 6, 7, 16, generator=gen)
    path = str(tmp_path / "dcnv3.onnx")
    torch.onnx.export(layer, (x,), path, opset_version=16, dynamo=False)
    sess = ort.InferenceSession(path)
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    ref = layer(x).detach()
    assert torch.allclose(torch.from_numpy(out), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


# ----------------------------------------------------------------------------- module and layer
def test_dcnv3_module_init_is_neighbourhood_average_of_the_projection():
    """Zero offset/mask projections at init: uniform mask over the KxK grid, as in InternImage."""
    layer = fam.DCNv3(12, kernel=5, groups=3).double()
    assert not layer.offset.weight.any() and not layer.mask.weight.any()
    x = torch.randn(2, 6, 8, 12, dtype=torch.float64)
    v = layer.input_proj(x).permute(0, 3, 1, 2)
    avg = F.avg_pool2d(v, 5, 1, 2, count_include_pad=True).permute(0, 2, 3, 1)
    assert torch.allclose(layer(x), layer.output_proj(avg), atol=1e-12)


def test_layer_scale_follows_spec():
    spec = get_preset("dcnv3_proxy")
    assert spec.layer_scale == 0
    blocks = fam.make_blocks(spec.stages[0], [0.0], spec)
    assert blocks[0].gamma1 is None
    assert len(blocks) == 2 and isinstance(blocks[-1], fam.LayerNorm2d)  # depth layers + end-of-stage norm
    ls = spec.replace(layer_scale=0.25)
    blk = fam.make_blocks(ls.stages[0], [0.0], ls)[0]
    assert torch.equal(blk.gamma1, torch.full((32,), 0.25)) and torch.equal(blk.gamma2, blk.gamma1)


@pytest.mark.parametrize("stride,expected", [(4, 8), (2, 16), (1, 32)])
def test_stem_strides(stride, expected):
    stem = fam.make_stem(3, 24, stride)
    assert stem(torch.randn(1, 3, 32, 32)).shape == (1, 24, expected, expected)
    assert fam.make_downsample(24, 48)(torch.randn(1, 24, 8, 8)).shape == (1, 48, 4, 4)


# ----------------------------------------------------------------------------- presets
def reference_internimage_params(channels, depths, groups, kernel=3, mlp_ratio=4.0, cls_scale=1.5, num_classes=1000):
    """Parameter count of OpenGVLab/InternImage's classification ``InternImage`` (T/S/B settings),
    counted from its layer list: StemLayer, per level [InternImageLayer x depth, LN, DownsampleLayer],
    conv_head (1x1 no bias + BN + act), head Linear."""
    ln = lambda c: 2 * c  # noqa: E731
    conv = lambda cin, cout, k, bias=True: cin * cout * k * k + (cout if bias else 0)  # noqa: E731
    linear = lambda cin, cout: cin * cout + cout  # noqa: E731
    total = conv(3, channels // 2, 3) + ln(channels // 2) + conv(channels // 2, channels, 3) + ln(channels)
    for i, (depth, g) in enumerate(zip(depths, groups)):
        c = channels * 2 ** i
        dcn = (c * kernel * kernel + c) + ln(c) + linear(c, g * kernel * kernel * 2) + linear(c, g * kernel * kernel) \
            + 2 * linear(c, c)
        mlp = linear(c, int(c * mlp_ratio)) + linear(int(c * mlp_ratio), c)
        total += depth * (ln(c) + dcn + ln(c) + mlp) + ln(c)
        if i < len(depths) - 1:
            total += conv(c, 2 * c, 3, bias=False) + ln(2 * c)
    feat = channels * 2 ** (len(depths) - 1)
    head = int(feat * cls_scale)
    return total + conv(feat, head, 1, bias=False) + 2 * head + linear(head, num_classes)


def test_internimage_t_parameter_count():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = lkscale.build_model("internimage_t")
    ours = sum(p.numel() for p in model.parameters())
    assert ours == reference_internimage_params(64, [4, 4, 18, 4], [4, 8, 16, 32])
    pub, source = published()["internimage_t"]
    assert abs(ours - pub) / pub < 0.01 and "InternImage" in source
    assert abs(ours - 30e6) / 30e6 < 0.01  # the paper / model zoo: 30M
    assert not any(n.endswith("gamma1") for n, _ in model.named_parameters())  # T has no layer scale


def _dcnv3_specs():
    rng = random.Random(7)
    specs = []
    for kernel, stride in [(3, 2), (5, 1), (1, 4), (7, 2)]:
        n = rng.choice([3, 4])
        widths = [8 * 2 ** i for i in range(n)]
        stages = [{"block": "dcnv3", "depth": rng.randint(1, 2), "width": w, "kernel": kernel,
                   "dcn_groups": rng.choice([g for g in (1, 2, 4, 8) if w % g == 0]),
                   "ffn_ratio": rng.choice([1.0, 2.0, 4.0])} for w in widths]
        specs.append(ArchSpec.from_dict({"stem": {"stride": stride}, "stages": stages,
                                         "drop_path_rate": 0.1, "layer_scale": rng.choice([0.0, 0.5])}))
    return specs


@pytest.mark.parametrize("spec", ["dcnv3_proxy", *_dcnv3_specs()], ids=str)
def test_build_forward_backward(spec):
    model = lkscale.build_model(spec, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    F.cross_entropy(out, torch.tensor([1, 2])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the deformable part learns: offset and mask projections get gradient
    offsets = [m.offset.weight.grad for m in model.modules() if isinstance(m, fam.DCNv3)]
    assert offsets and all(g.abs().sum() > 0 for g in offsets)


def test_tiny_dcnv3_net_learns_a_batch():
    torch.manual_seed(0)
    spec = ArchSpec.from_dict({"stem": {"stride": 2}, "stages": [
        {"block": "dcnv3", "depth": 1, "width": w, "kernel": 3, "dcn_groups": 2} for w in (8, 16, 32)]})
    model = lkscale.build_model(spec, num_classes=4)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("spec", ["dcnv3_proxy", *_dcnv3_specs()[:2]], ids=str)
def test_reparameterize_keeps_eval_outputs(spec):
    gen = torch.Generator().manual_seed(0)
    model = lkscale.build_model(spec, num_classes=7)
    for m in model.modules():  # non-trivial BN statistics so that folding is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.5, 0.5, generator=gen)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        want = model(x)
        deployed = lkscale.reparameterize(model)
        got = deployed(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_built_model_keeps_internimage_init():
    model = lkscale.build_model("dcnv3_proxy")
    for m in model.modules():
        if isinstance(m, fam.DCNv3):
            assert not m.offset.weight.any() and not m.mask.weight.any()
