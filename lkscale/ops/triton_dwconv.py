"""Large-kernel depthwise conv for GPUs in Triton: forward, grad-input and grad-weight.

Why: PyTorch's own CUDA path for a large depthwise kernel is slow (RepLKNet's authors measured a 31x31
depthwise conv about 20x slower than their implicit-GEMM kernel, pytorch#74363). This module gives
one direct kernel for the three sub-ops of a stride-1 'same' depthwise conv with an odd kernel that
the caller has already cropped to the taps its map can use (``dwconv_impl.crop_weight``):

* forward: each program computes a block of output pixels of one (sample, channel) plane; per kernel
  row it gathers a (kernel columns x pixels) tile of the input and multiplies by the kernel row;
  fp32 accumulation, any input strides (NCHW or channels_last, no layout copies);
* grad-input: the forward kernel applied to the output gradient with the flipped kernel;
* grad-weight: one program per (channel, kernel row, batch slice) reduces
  ``x[b, c, y+i-p, x+j-p] * gy[b, c, y, x]`` over its samples and all pixels into one kernel row;
  the batch slices' partial sums are added in PyTorch (deterministic: no atomics).

With ``TRITON_INTERPRET=1`` set before Triton is first imported, the kernels run on CPU tensors in
Triton's interpreter (the same code, executed with numpy: how the tests check them on machines
without a GPU); otherwise they are compiled for CUDA tensors. ``available()`` says whether Triton can
be imported; nothing here needs a GPU to import.
"""
import math

import torch

try:
    import triton
    import triton.language as tl
    _IMPORT_ERROR = None
except Exception as e:  # ImportError, or a Triton build that cannot load here
    triton = None
    _IMPORT_ERROR = f"{type(e).__name__}: {e}"

    class tl:  # noqa: N801 - placeholder: the kernels below are defined but never decorated or run
        constexpr = object


def available() -> bool:
    """Whether Triton imported (kernels can run: compiled on CUDA, interpreted on CPU)."""
    return triton is not None


def unavailable_reason() -> str | None:
    return _IMPORT_ERROR


# ------------------------------------------------------------------------------------------ kernels
# Compile-time parameters are annotated ``tl.constexpr`` literally (Triton's interpreter reads the
# source text), and this module has no postponed annotations.
_jit = triton.jit if triton is not None else (lambda fn: fn)



@_jit
def _dw_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W, KH, KW,
                   sxb, sxc, sxh, sxw, syb, syc, syh, syw,
                   HAS_BIAS: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_P: tl.constexpr):
    pid_bc = tl.program_id(0)
    pid_p = tl.program_id(1)
    b = pid_bc // C
    c = pid_bc % C
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < H * W
    oy = p // W
    ox = p % W
    j = tl.arange(0, BLOCK_J)
    jm = j < KW
    ix = ox[None, :] + j[:, None] - KW // 2                       # (J, P) input columns
    col_ok = jm[:, None] & pm[None, :] & (ix >= 0) & (ix < W)
    x_base = x_ptr + b * sxb + c * sxc
    acc = tl.zeros([BLOCK_J, BLOCK_P], dtype=tl.float32)
    for i in range(0, KH):
        iy = oy + i - KH // 2
        m = col_ok & ((iy >= 0) & (iy < H))[None, :]
        xv = tl.load(x_base + iy[None, :] * sxh + ix * sxw, mask=m, other=0.0).to(tl.float32)
        wv = tl.load(w_ptr + c * KH * KW + i * KW + j, mask=jm, other=0.0).to(tl.float32)
        acc += xv * wv[:, None]
    out = tl.sum(acc, axis=0)
    if HAS_BIAS:
        out += tl.load(b_ptr + c).to(tl.float32)
    tl.store(y_ptr + b * syb + c * syc + oy * syh + ox * syw, out.to(y_ptr.dtype.element_ty), mask=pm)


@_jit
def _dw_gw_kernel(x_ptr, g_ptr, part_ptr, B, C, H, W, KH, KW, BPS,
                  sxb, sxc, sxh, sxw, sgb, sgc, sgh, sgw,
                  BLOCK_J: tl.constexpr, BLOCK_P: tl.constexpr):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    c = pid // KH
    i = pid % KH
    j = tl.arange(0, BLOCK_J)
    jm = j < KW
    acc = tl.zeros([BLOCK_J, BLOCK_P], dtype=tl.float32)
    for bb in range(0, BPS):
        b = split * BPS + bb
        n_pix = tl.where(b < B, H * W, 0)            # samples past the batch contribute nothing
        for p0 in range(0, H * W, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            pm = p < n_pix
            oy = p // W
            ox = p % W
            g = tl.load(g_ptr + b * sgb + c * sgc + oy * sgh + ox * sgw, mask=pm, other=0.0).to(tl.float32)
            iy = oy + i - KH // 2
            ix = ox[None, :] + j[:, None] - KW // 2
            m = jm[:, None] & (pm & (iy >= 0) & (iy < H))[None, :] & (ix >= 0) & (ix < W)
            xv = tl.load(x_ptr + b * sxb + c * sxc + iy[None, :] * sxh + ix * sxw, mask=m, other=0.0)
            acc += xv.to(tl.float32) * g[None, :]
    row = tl.sum(acc, axis=1)
    tl.store(part_ptr + split * C * KH * KW + c * KH * KW + i * KW + j, row, mask=jm)


def interpreted() -> bool:
    """Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when Triton was imported)."""
    if triton is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(_dw_fwd_kernel, InterpretedFunction)


def _check(x: torch.Tensor, w: torch.Tensor) -> None:
    if not available():
        raise RuntimeError(f"Triton is not available: {_IMPORT_ERROR}")
    kh, kw = w.shape[-2:]
    if x.dim() != 4 or w.shape[0] != x.shape[1] or w.shape[1] != 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"depthwise conv with odd kernels only: x {tuple(x.shape)}, weight {tuple(w.shape)}")


def _block_p(h: int, w: int, block_j: int) -> int:
    """Pixels per program: a (kernel columns x pixels) tile of about 4096 fp32 accumulators."""
    return max(16, min(triton.next_power_of_2(h * w), 4096 // block_j, 256))


# ------------------------------------------------------------------------------------------ sub-ops
def conv_fwd(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = depthwise_conv(x, w) + bias, stride 1, 'same' padding; ``y`` has ``x``'s layout and dtype."""
    _check(x, w)
    b, c, h, wd = x.shape
    kh, kw = w.shape[-2:]
    y = torch.empty_like(x)
    wc = w.contiguous()
    bj = triton.next_power_of_2(kw)
    bp = _block_p(h, wd, bj)
    grid = (b * c, triton.cdiv(h * wd, bp))
    _dw_fwd_kernel[grid](
        x, wc, bias if bias is not None else wc, y, c, h, wd, kh, kw, *x.stride(), *y.stride(),
        HAS_BIAS=bias is not None, BLOCK_J=bj, BLOCK_P=bp)
    return y


def conv_grad_input(gy: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. the input: the forward conv of ``gy`` with the flipped kernel."""
    return conv_fwd(gy, w.flip(-2, -1))


def conv_grad_weight(x: torch.Tensor, gy: torch.Tensor, kh: int, kw: int,
                     splits: int | None = None) -> torch.Tensor:
    """dW[c, 0, i, j] = sum over samples and pixels of x[b, c, y+i-p, x+j-p] * gy[b, c, y, x] (fp32 sums)."""
    _check(x, x.new_empty(x.shape[1], 1, kh, kw))
    b, c, h, wd = x.shape
    if splits is None:  # enough programs to fill a GPU (~2k), each over a slice of the batch
        splits = max(1, min(b, math.ceil(2048 / (c * kh))))
    bps = math.ceil(b / splits)
    splits = math.ceil(b / bps)
    part = torch.empty(splits, c, kh, kw, device=x.device, dtype=torch.float32)
    bj = triton.next_power_of_2(kw)
    bp = _block_p(h, wd, bj)
    _dw_gw_kernel[(c * kh, splits)](
        x, gy, part, b, c, h, wd, kh, kw, bps, *x.stride(), *gy.stride(), BLOCK_J=bj, BLOCK_P=bp)
    return part.sum(0).unsqueeze(1)


def _is_cl(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class TritonDepthwiseConvFn(torch.autograd.Function):
    """y = depthwise_conv(x, w) + b through the Triton kernels (odd, already cropped kernel).

    The kernels read pixels along rows, so they run on NCHW copies of channels_last tensors (for the
    large kernels this path serves, a copy costs two memory passes against K*K multiply-adds per
    element); results come back in the caller's layout."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.cl = _is_cl(x)
        x = x.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = conv_fwd(x, weight, bias)
        return y.contiguous(memory_format=torch.channels_last) if ctx.cl else y

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        gy = gy.contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = conv_grad_input(gy, weight)
            gx = gx.contiguous(memory_format=torch.channels_last) if ctx.cl else gx
        if ctx.needs_input_grad[1]:
            gw = conv_grad_weight(x, gy, *weight.shape[-2:]).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3)).to(weight.dtype)
        return gx, gw, gb


def depthwise_conv2d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable stride-1 'same' depthwise conv of an odd, cropped kernel via Triton.

    Under CUDA autocast the inputs are cast to the autocast dtype (as ``F.conv2d`` would be) and the
    kernels run with autocast off; their sums are fp32 either way."""
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
        with torch.autocast("cuda", enabled=False):
            return TritonDepthwiseConvFn.apply(x.to(dt), weight.to(dt), None if bias is None else bias.to(dt))
    return TritonDepthwiseConvFn.apply(x, weight, bias)
