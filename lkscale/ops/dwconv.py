"""Depthwise convolution used by every block family.

``DWConv2d`` is an ``nn.Conv2d`` (so state dicts, fvcore and ONNX see a plain conv) whose forward
goes through ``depthwise_conv2d``; that function picks the implementation:

* ``F.conv2d`` exactly as written (caller's layout, full kernel) whenever something may be
  watching the graph: ``torch.jit`` tracing/scripting (fvcore traces with it), ONNX export,
  ``torch.compile``, any ``TorchDispatchMode``/``TorchFunctionMode`` (``FlopCounterMode``), or when
  ``LKSCALE_DWCONV=torch`` forces PyTorch's own path (the "before" figure in benchmarks);
* otherwise the large-kernel path of :mod:`lkscale.ops.dwconv_impl`: the kernel cropped to the
  ``min(K, 2H-1)`` taps that can meet the map (exact), the conv run in the measured-faster layout
  and returned in the caller's layout, and -- when a gradient is needed -- a custom autograd
  Function whose grad-weight is computed by a per-shape autotuned method (FFT / batched depthwise /
  unfold / PyTorch's own);
* small effective kernels (``< LARGE_KERNEL_MIN`` taps across, chosen by measurement with
  ``benchmarks/dwconv.py``) keep PyTorch's conv and autograd, of the cropped kernel.

Dilated convs (re-param branches) and dtypes other than float32/float64 use ``F.conv2d``; under CPU
autocast the conv runs in float32 through the paths above (its output is float32).

On CUDA tensors (:func:`_cuda_path`) the kernel is cropped the same way; effective kernels of
``TRITON_MIN_KERNEL`` taps and more go through the Triton kernels of :mod:`lkscale.ops.triton_dwconv`
when Triton is importable, smaller ones through cuDNN (``F.conv2d`` of the cropped kernel).
``LKSCALE_DWCONV_CUDA=torch`` (or ``LKSCALE_DWCONV=torch``) forces cuDNN with the full kernel;
``=triton`` forces Triton at every kernel size.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from lkscale.ops import dwconv_impl as impl

try:  # FlopCounterMode and other tracing modes are TorchDispatchMode / TorchFunctionMode
    from torch.overrides import _get_current_function_mode_stack
    from torch.utils._python_dispatch import _get_current_dispatch_mode
except ImportError:  # pragma: no cover
    _get_current_dispatch_mode = _get_current_function_mode_stack = None

#: effective kernel size (after cropping to the map) from which the lkscale path is used
LARGE_KERNEL_MIN = 5

_MODES = ("auto", "torch", "lk")

#: effective kernel size from which CUDA tensors use the Triton kernels (auto mode). Not yet measured
#: on a GPU: ``benchmarks/device_check.py`` prints Triton vs cuDNN at K = 7, 13, 31 to set it.
TRITON_MIN_KERNEL = 13
_CUDA_MODES = ("auto", "torch", "triton")


def cuda_dwconv_mode() -> str:
    """``LKSCALE_DWCONV_CUDA``: ``auto`` (default), ``torch`` (cuDNN), ``triton`` (always Triton)."""
    mode = os.environ.get("LKSCALE_DWCONV_CUDA", "auto").strip().lower() or "auto"
    if mode not in _CUDA_MODES:
        raise ValueError(f"LKSCALE_DWCONV_CUDA must be one of {', '.join(_CUDA_MODES)}, got {mode!r}")
    return mode


def _triton_module():
    """lkscale.ops.triton_dwconv, imported on first use (importing Triton costs about a second), or None."""
    from lkscale.ops import triton_dwconv

    return triton_dwconv if triton_dwconv.available() else None


def _cuda_path(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Depthwise conv of a CUDA tensor: the cropped kernel through Triton (large) or cuDNN (small)."""
    mode = cuda_dwconv_mode()
    c = weight.shape[0]
    kh, kw = weight.shape[-2:]
    if mode == "torch" or kh != kw or kh % 2 == 0 or padding != kh // 2 or x.dim() != 4:
        return F.conv2d(x, weight, bias, 1, padding, 1, c)
    w_eff = impl.crop_weight(weight, *x.shape[-2:])
    tdw = _triton_module() if (mode == "triton" or max(w_eff.shape[-2:]) >= TRITON_MIN_KERNEL) else None
    if tdw is None:
        return F.conv2d(x, w_eff, bias, 1, (w_eff.shape[-2] // 2, w_eff.shape[-1] // 2), 1, c)
    return tdw.depthwise_conv2d_triton(x, w_eff, bias)


def dwconv_mode() -> str:
    """``LKSCALE_DWCONV``: ``auto`` (default), ``torch`` (always PyTorch's path), ``lk`` (always ours)."""
    mode = os.environ.get("LKSCALE_DWCONV", "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(f"LKSCALE_DWCONV must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode


def _graph_observed() -> bool:
    """True when a tracer, exporter, compiler or dispatch/function mode may be watching."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    try:
        if torch.onnx.is_in_onnx_export():
            return True
    except Exception:  # pragma: no cover - onnx import problems
        pass
    try:
        if torch.compiler.is_compiling():
            return True
    except AttributeError:  # pragma: no cover
        pass
    if _get_current_dispatch_mode is None:  # pragma: no cover - private helpers moved: be safe
        return True
    return _get_current_dispatch_mode() is not None or bool(_get_current_function_mode_stack())


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # pragma: no cover - older torch
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     padding: int, dilation: int = 1) -> torch.Tensor:
    """Stride-1 'same' depthwise conv: ``weight`` is (C, 1, K, K), ``padding == dilation*(K-1)//2``."""
    mode = dwconv_mode()
    if mode == "torch" or dilation != 1 or _graph_observed():
        return F.conv2d(x, weight, bias, 1, padding, dilation, weight.shape[0])
    if x.is_cuda:
        return _cuda_path(x, weight, bias, padding)
    if x.device.type == "cpu" and _autocast_on("cpu"):
        # bf16 autocast on CPU: a depthwise conv is memory-bound and oneDNN's bf16 depthwise path is slow
        # at large kernels (a K=31 RepLK step measured 3.6x slower under bf16): run ours in fp32
        with torch.autocast("cpu", enabled=False):
            return depthwise_conv2d(x.float(), weight.float(), None if bias is None else bias.float(), padding)
    kh, kw = weight.shape[-2:]
    if (x.dim() != 4 or x.device.type != "cpu" or kh % 2 == 0 or padding != kh // 2 or kh != kw
            or x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype
            or _autocast_on("cpu")):
        return F.conv2d(x, weight, bias, 1, padding, dilation, weight.shape[0])
    h, w = x.shape[-2:]
    w_eff = impl.crop_weight(weight, h, w)
    if mode == "auto" and max(w_eff.shape[-2:]) < LARGE_KERNEL_MIN:
        # PyTorch's own conv and autograd, of the cropped kernel (a 31x31 kernel on a 2x2 map is a
        # 3x3 one); in the caller's layout, except on maps under 4x4, where channels_last measured
        # 2-4x faster for NCHW callers (on larger maps the two copies cost more than they save)
        pad = (w_eff.shape[-2] // 2, w_eff.shape[-1] // 2)
        if min(h, w) >= 4 or impl._is_cl(x):
            return F.conv2d(x, w_eff, bias, 1, pad, 1, weight.shape[0])
        y = F.conv2d(x.contiguous(memory_format=torch.channels_last), w_eff, bias, 1, pad, 1, weight.shape[0])
        return y.contiguous()
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                              or (bias is not None and bias.requires_grad))
    if not needs_grad:
        y = impl.conv_same(x, w_eff)
        return y if bias is None else y + bias.view(1, -1, 1, 1)
    return impl.DepthwiseConvFn.apply(x, w_eff, bias)


class DWConv2d(nn.Conv2d):
    """Stride-1, same-padding depthwise conv (channels -> channels)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1, bias: bool = True):
        super().__init__(channels, channels, kernel_size, stride=1, padding=dilation * (kernel_size - 1) // 2,
                         dilation=dilation, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, self.padding[0], self.dilation[0])
