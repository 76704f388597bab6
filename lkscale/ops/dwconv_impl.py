"""Fast stride-1 'same' depthwise convolution for CPU training with large kernels.

Why: PyTorch's CPU backward of a large depthwise conv costs 20-70x its forward (grad-weight goes
through a grouped-conv path), and NCHW forward at K >= 15 is ~30x slower than channels_last.

What this module does, all exact (same arithmetic up to float rounding):

* **Kernel cropping.** With stride 1 and 'same' padding, a tap at vertical offset ``|dy| >= H``
  never meets the image (it only ever multiplies padding), so a K x K kernel on an H x W map
  acts exactly like its centred ``min(K, 2H-1) x min(K, 2W-1)`` crop. We run the cropped kernel; the
  gradient of the cut taps is exactly 0 (autograd's slice backward fills it in).
* **Layout.** The forward and grad-input convs run in channels_last (a measured rule: oneDNN's
  ``brdgmm_dw`` kernel serves channels_last at every K, while NCHW falls to im2col+gemm from K=15,
  30-40x slower); the output and grad-input are returned in the layout the caller gave.
* **grad-input** is a depthwise conv of the output gradient with the flipped kernel.
* **grad-weight** ``dW[c,i,j] = sum_{b,y,x} xpad[b,c,y+i,x+j] * gy[b,c,y,x]`` is computed by the
  fastest of a few candidates, chosen per shape by a small autotuner:

  - ``dwloop<g>``: depthwise convs in which the output gradient is the *kernel* and the input the
    image -- channels are (sample, channel) pairs, g samples per call, batch 1, implicit 'same'
    padding so oneDNN skips the padded taps -- then a sum over the samples. It runs on the same fast
    ``brdgmm_dw`` kernel as the forward. (All B*C pairs in one call, ``dw``, is 3-4x slower on maps
    of 16x16: the channels_last pixel stride becomes a multiple of 4 KiB.)
  - ``fft`` (maps of 32x32 and more): rfft2 of x and gy at size ``>= H + pad`` (no aliasing of the
    lags we need: x and gy both have H rows, so their correlation has only 2H-1 lags), products
    summed over the batch *in the frequency domain*, so only C inverse transforms are needed.
    Measured 2-5x slower than ``dwloop`` on the proxy shapes (16x16 and less).
  - ``native_cl``: PyTorch's own ``convolution_backward`` (grad-weight only), channels_last, on the
    cropped kernel; competitive only for small kernels, so timed only up to K=13.
  - ``unfold``, ``native``, ``dw``: kept for tests and experiments, never timed by default.

The autotuner (:mod:`lkscale.ops.autotune`) is keyed on (op, B, C, H, W, Kh, Kw, dtype, layout, threads) and
decides each key once per machine, so the same seed trains the same network in every process.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lkscale.ops.autotune import TUNER, Autotuner  # noqa: F401  (Autotuner: re-exported for tests)

log = logging.getLogger(__name__)

_CL = torch.channels_last


# ----------------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------------

def effective_kernel(kernel: int, size: int) -> int:
    """Size of the centred crop of an odd ``kernel`` that is all that touches a map of ``size``."""
    return min(kernel, 2 * size - 1)


def crop_weight(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centred crop of a (C, 1, K, K) odd kernel to the taps that can meet an H x W image."""
    kh, kw = weight.shape[-2:]
    eh, ew = effective_kernel(kh, height), effective_kernel(kw, width)
    if (eh, ew) == (kh, kw):
        return weight
    oh, ow = (kh - eh) // 2, (kw - ew) // 2
    return weight[:, :, oh:oh + eh, ow:ow + ew]


def _is_cl(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=_CL) and not x.is_contiguous()


def _like(y: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return y.contiguous(memory_format=_CL) if channels_last else y.contiguous()


def _good_fft_size(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3 and 5."""
    m = max(n, 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


# ----------------------------------------------------------------------------------------------
# candidates (all take the *cropped* kernel size; x, gy are (B, C, H, W))
# ----------------------------------------------------------------------------------------------

def _conv(x: torch.Tensor, w: torch.Tensor, pad: tuple[int, int], channels_last: bool) -> torch.Tensor:
    x = _like(x, channels_last)
    return F.conv2d(x, w, None, 1, pad, 1, w.shape[0])


def _gw_native(x, gy, kh, kw, cl: bool):
    c = x.shape[1]
    x, gy = _like(x, cl), _like(gy, cl)
    w_shape = x.new_empty(c, 1, kh, kw)
    return torch.ops.aten.convolution_backward(
        gy, x, w_shape, None, (1, 1), (kh // 2, kw // 2), (1, 1), False, (0, 0), c,
        [False, True, False])[1]


def _gw_fft(x, gy, kh, kw):
    b, c, h, w = x.shape
    ph, pw = kh // 2, kw // 2
    nh, nw = _good_fft_size(h + ph), _good_fft_size(w + pw)
    xf = torch.fft.rfft2(x.contiguous(), s=(nh, nw))
    gf = torch.fft.rfft2(gy.contiguous(), s=(nh, nw))
    prod = (xf * gf.conj()).sum(0)
    r = torch.fft.irfft2(prod, s=(nh, nw))              # r[c, l] = sum x[y + l] gy[y]  (mod n)
    r = torch.roll(r, (ph, pw), (1, 2))[:, :kh, :kw]   # dW[i] = r[i - p]
    return r.unsqueeze(1).contiguous()


def _gw_dw(x, gy, kh, kw):
    b, c, h, w = x.shape
    # image: (1, B*C, H, W) in channels_last memory (H, W, B*C); kernel: gy as (B*C, 1, H, W)
    buf = x.permute(2, 3, 0, 1).reshape(h, w, b * c).contiguous()
    img = buf.as_strided((1, b * c, h, w), (h * w * b * c, 1, w * b * c, b * c))
    ker = gy.contiguous().view(b * c, 1, h, w)
    out = F.conv2d(img, ker, None, 1, (kh // 2, kw // 2), 1, b * c)
    return out.reshape(b, c, kh, kw).sum(0).unsqueeze(1)


def _gw_dwloop(x, gy, kh, kw, group: int = 0):
    """grad-weight as depthwise convs, one per group of samples: gy[b] is the kernel, x[b] the image.

    A single conv over all B*C channels would put the channels 4 KiB apart in channels_last memory
    (cache-set aliasing makes oneDNN ~30x slower); groups of about 256 channels run at full speed.
    """
    b, c, h, w = x.shape
    g = min(b, group or max(1, 256 // c))
    gyc = gy.contiguous()                             # gy[s:s+n] as (n*c, 1, h, w) kernels: views
    pad = (kh // 2, kw // 2)
    acc = x.new_zeros(kh * kw, c)
    for s0, n, imgs in _sample_groups(x, g):
        for t, img in enumerate(imgs):
            s = s0 + t * n
            ker = gyc[s:s + n].reshape(n * c, 1, h, w)
            o = F.conv2d(img, ker, None, 1, pad, 1, n * c)      # (1, n*c, kh, kw), channels_last
            o = o[0].permute(1, 2, 0).reshape(kh * kw, n, c)   # a view of that memory
            acc += o.sum(1) if n > 1 else o[:, 0]
    return acc.t().reshape(c, 1, kh, kw)


def _sample_groups(x: torch.Tensor, g: int):
    """Yield (first sample, n, images): x regrouped as batch-1 channels_last images of n*C channels.

    One copy for all full groups of g samples (and one for the remainder): memory (groups, H, W, g, C),
    so every group is a contiguous (H, W, g*C) block, given to oneDNN with an explicit batch stride
    (a batch-1 tensor whose batch stride is not H*W*C is handed over as plain NCHW, its slow path).
    """
    b, c, h, w = x.shape
    full = b - b % g
    for s0, n, count in ((0, g, full // g), (full, b - full, 1)):
        if n == 0 or count == 0:
            continue
        if n == 1:
            xs = x[s0:s0 + count].contiguous(memory_format=_CL)
            yield s0, 1, [xs[t:t + 1] for t in range(count)]
            continue
        blk = x[s0:s0 + n * count].reshape(count, n, c, h, w).permute(0, 3, 4, 1, 2).contiguous()
        size, stride = (1, n * c, h, w), (h * w * n * c, 1, w * n * c, n * c)
        yield s0, n, [blk[t].as_strided(size, stride, blk[t].storage_offset()) for t in range(count)]


_UNFOLD_BYTES = 64 << 20


def _gw_unfold(x, gy, kh, kw):
    b, c, h, w = x.shape
    per_sample = c * kh * kw * h * w * x.element_size()
    step = max(1, _UNFOLD_BYTES // max(per_sample, 1))
    out = x.new_zeros(c, kh * kw)
    for s in range(0, b, step):
        xs, gs = x[s:s + step].contiguous(), gy[s:s + step].contiguous()
        n = xs.shape[0]
        cols = F.unfold(xs, (kh, kw), padding=(kh // 2, kw // 2)).view(n, c, kh * kw, h * w)
        out += torch.einsum("nckl,ncl->ck", cols, gs.view(n, c, h * w))
    return out.view(c, 1, kh, kw)


def gw_candidates(x: torch.Tensor, kh: int, kw: int) -> dict[str, Callable]:
    """grad-weight candidates worth timing for this shape (pruned by measured rules).

    Measured here (B=64, 1-2 threads): ``dwloop`` beats ``fft`` by 2-5x at every proxy shape up to 16x16;
    ``fft`` is kept for maps of 32x32 and more, where its cost grows as H*W*log(H*W) instead of
    H*W*K^2. PyTorch's own grad-weight (``native_cl``) is competitive only for small kernels
    (it is 5x slower at K=13 and 10x+ at K >= 15), so it is timed only up to K=13.
    """
    b, c, h, w = x.shape
    cands: dict[str, Callable] = {}
    groups = sorted({max(1, min(b, t // c)) for t in (256, 1024, 4096)})
    for g in groups:
        cands[f"dwloop{g}"] = lambda x, gy, kh, kw, g=g: _gw_dwloop(x, gy, kh, kw, g)
    if h * w >= 32 * 32:
        cands["fft"] = _gw_fft
    if max(kh, kw) <= 13:
        cands["native_cl"] = lambda x, gy, kh, kw: _gw_native(x, gy, kh, kw, True)
    return cands


def _named_gw(name: str) -> Callable:
    """Any candidate by name (tests and benchmarks): dwloop<g>, fft, unfold, native_cl, native, dw."""
    if name.startswith("dwloop"):
        g = int(name[6:] or 0)
        return lambda x, gy, kh, kw: _gw_dwloop(x, gy, kh, kw, g)
    return {"fft": _gw_fft, "unfold": _gw_unfold, "dw": _gw_dw,
            "native_cl": lambda x, gy, kh, kw: _gw_native(x, gy, kh, kw, True),
            "native": lambda x, gy, kh, kw: _gw_native(x, gy, kh, kw, False)}[name]




def _key(x: torch.Tensor, kh: int, kw: int) -> str:
    b, c, h, w = x.shape
    layout = "cl" if _is_cl(x) else "nchw"
    return f"{b}x{c}x{h}x{w}|k{kh}x{kw}|{str(x.dtype).replace('torch.', '')}|{layout}|t{torch.get_num_threads()}"


# ----------------------------------------------------------------------------------------------
# the three sub-ops, each tuned
# ----------------------------------------------------------------------------------------------

def conv_layout(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether to run the depthwise conv in channels_last: always, by a measured rule.

    oneDNN (torch 2.13 CPU) runs a channels_last depthwise conv with its ``brdgmm_dw`` kernel at
    every kernel size, but an NCHW one with ``jit_dw`` only up to K=13 and with the im2col
    ``gemm:jit`` path from K=15 (30-40x slower: 1197 ms vs 32 ms at K=31, B=64 C=128 16x16); up to
    K=13 the two layouts are within noise of each other, and converting costs one copy.
    """
    return True


def conv_same(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Depthwise 'same' conv (no bias) in the faster layout; result in ``x``'s layout."""
    cl = conv_layout(x, w)
    y = _conv(x, w, (w.shape[-2] // 2, w.shape[-1] // 2), cl)
    return _like(y, _is_cl(x))


def grad_weight(x: torch.Tensor, gy: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    forced = TUNER.forced.get("gw")
    if forced:
        return _named_gw(forced)(x, gy, kh, kw)
    cands = {n: (lambda f=f: f(x, gy, kh, kw)) for n, f in gw_candidates(x, kh, kw).items()}
    name, gw = TUNER.pick("gw", _key(x, kh, kw), cands)
    if gw is None:
        gw = cands[name]()
    return gw


class DepthwiseConvFn(torch.autograd.Function):
    """y = depthwise_conv(x, w) + b, stride 1, 'same' padding, odd (already cropped) kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        kh, kw = weight.shape[-2:]
        x_cl = _is_cl(x)
        xin = _like(x, conv_layout(x, weight))
        y = F.conv2d(xin, weight, None, 1, (kh // 2, kw // 2), 1, weight.shape[0])
        y = _like(y, x_cl)
        if bias is not None:
            y = y + bias.view(1, -1, 1, 1)
        ctx.save_for_backward(xin, weight)   # the converted input: grad-weight wants channels_last
        ctx.has_bias = bias is not None
        ctx.x_cl = x_cl
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        kh, kw = weight.shape[-2:]
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _like(conv_same(gy, weight.flip(-2, -1)), ctx.x_cl)
        if ctx.needs_input_grad[1]:
            gw = grad_weight(x, gy, kh, kw).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb
