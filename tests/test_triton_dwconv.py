"""Triton depthwise conv (forward, grad-input, grad-weight) exact against F.conv2d.

On a machine without a GPU the kernels run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1,
set here before Triton is first imported; small shapes); with a GPU they are compiled and run on it.
Skipped cleanly where Triton is not installed."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")   # must precede Triton's first import

from lkscale.ops import dwconv as dwmod  # noqa: E402
from lkscale.ops import dwconv_impl as impl  # noqa: E402
from lkscale.ops import triton_dwconv as tdw  # noqa: E402

if not tdw.available():
    pytest.skip(f"triton not importable ({tdw.unavailable_reason()}); pip install lkscale[gpu]",
                allow_module_level=True)
DEV = "cuda" if HAS_CUDA else "cpu"
if DEV == "cpu" and not tdw.interpreted():
    pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set: run this file on its own",
                allow_module_level=True)
gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")


@pytest.fixture(autouse=True)
def _no_tf32():
    """The F.conv2d reference in full fp32 (cuDNN may use TF32 for convolutions by default)."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


def _reference(x, w, b, gy):
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    br = b.detach().clone().requires_grad_() if b is not None else None
    yr = F.conv2d(xr, wr, br, 1, w.shape[-1] // 2, 1, w.shape[0])
    grads = torch.autograd.grad(yr, [t for t in (xr, wr, br) if t is not None], gy)
    return yr, grads


@pytest.mark.parametrize("b,c,h,w,k,bias,cl", [
    (2, 3, 6, 5, 5, True, False),     # non-square map, bias
    (2, 4, 5, 5, 3, False, True),     # channels_last input, no bias
    (3, 2, 4, 4, 7, True, False),     # kernel = 2H-1: every tap meets the map somewhere
])
def test_sub_ops_match_conv2d(b, c, h, w, k, bias, cl):
    g = torch.Generator().manual_seed(b * 100 + k)
    x = torch.randn(b, c, h, w, generator=g).to(DEV)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(c, 1, k, k, generator=g).to(DEV)
    bb = torch.randn(c, generator=g).to(DEV) if bias else None
    gy = torch.randn(b, c, h, w, generator=g).to(DEV)
    yr, grads = _reference(x, wt, bb, gy)
    y = tdw.conv_fwd(x, wt, bb)
    assert y.shape == yr.shape and y.is_contiguous(memory_format=torch.channels_last) == cl
    assert _rel(y, yr) < 1e-5
    assert _rel(tdw.conv_grad_input(gy, wt), grads[0]) < 1e-5
    for splits in (1, 2):            # batch split across programs, with a partial last slice when B=3
        assert _rel(tdw.conv_grad_weight(x, gy, k, k, splits=splits), grads[1]) < 1e-5


def test_autograd_with_cropped_kernel_matches_full_conv():
    """A 9x9 kernel on a 3x3 map: cropped to 5x5 (the CPU op's rule), forward and all three gradients exact."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 3, 3, generator=g).to(DEV)
    wt = torch.randn(3, 1, 9, 9, generator=g).to(DEV)
    bb = torch.randn(3, generator=g).to(DEV)
    gy = torch.randn(2, 3, 3, 3, generator=g).to(DEV)
    yr, (gxr, gwr, gbr) = _reference(x, wt, bb, gy)
    for cl in (False, True):
        xo, wo, bo = (t.detach().clone().requires_grad_() for t in (x, wt, bb))
        xin = xo.contiguous(memory_format=torch.channels_last) if cl else xo
        w_eff = impl.crop_weight(wo, 3, 3)
        assert tuple(w_eff.shape[-2:]) == (5, 5)
        y = tdw.depthwise_conv2d_triton(xin, w_eff, bo)
        assert y.is_contiguous(memory_format=torch.channels_last) == cl      # the caller's layout back
        gx, gw, gb = torch.autograd.grad(y, (xo, wo, bo), gy)
        assert _rel(y, yr) < 1e-5 and _rel(gx, gxr) < 1e-5 and _rel(gb, gbr) < 1e-5
        assert _rel(gw, gwr) < 1e-5
        assert gw[:, :, :2].abs().max() == 0 and gw[:, :, :, -2:].abs().max() == 0   # taps never meeting the map


def test_bad_shapes_and_modes(monkeypatch):
    with pytest.raises(ValueError, match="odd"):
        tdw.conv_fwd(torch.zeros(1, 2, 4, 4, device=DEV), torch.zeros(2, 1, 4, 4, device=DEV))
    monkeypatch.setenv("LKSCALE_DWCONV_CUDA", "cudnn")
    with pytest.raises(ValueError, match="LKSCALE_DWCONV_CUDA"):
        dwmod.cuda_dwconv_mode()
    monkeypatch.setenv("LKSCALE_DWCONV_CUDA", "Triton")
    assert dwmod.cuda_dwconv_mode() == "triton"


@gpu
@pytest.mark.parametrize("mode,want", [("triton", "TritonDepthwiseConvFn"), ("torch", "Convolution"),
                                       ("auto", "TritonDepthwiseConvFn")])
def test_cuda_dispatch(monkeypatch, mode, want):
    monkeypatch.setenv("LKSCALE_DWCONV_CUDA", mode)
    x = torch.randn(4, 16, 16, 16, device="cuda", requires_grad=True)
    wt = torch.randn(16, 1, 31, 31, device="cuda", requires_grad=True)
    y = dwmod.depthwise_conv2d(x, wt, None, 15)
    assert want in type(y.grad_fn).__name__
    yr = F.conv2d(x, wt, None, 1, 15, 1, 16)
    assert _rel(y, yr) < 1e-4


@gpu
def test_cuda_autocast_and_large_shapes():
    x = torch.randn(8, 64, 56, 56, device="cuda")
    wt = torch.randn(64, 1, 13, 13, device="cuda") * 0.05
    gy = torch.randn_like(x)
    yr, grads = _reference(x, wt, None, gy)
    xo, wo = x.clone().requires_grad_(), wt.clone().requires_grad_()
    y = tdw.depthwise_conv2d_triton(xo, wo)
    gx, gw = torch.autograd.grad(y, (xo, wo), gy)
    assert _rel(y, yr) < 1e-4 and _rel(gx, grads[0]) < 1e-4 and _rel(gw, grads[1]) < 1e-4
    with torch.autocast("cuda", dtype=torch.bfloat16):
        yb = tdw.depthwise_conv2d_triton(x, wt)
    assert yb.dtype == torch.bfloat16 and _rel(yb.float(), yr) < 2e-2
