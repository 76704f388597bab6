"""DCNv3 core (InternImage, Wang et al. CVPR 2023) in pure PyTorch: ``F.grid_sample`` based.

Runs on CPU and GPU without a compiled extension, has autograd through ``grid_sample``, and exports
to ONNX (``GridSample`` needs opset >= 16). Semantics follow InternImage's ``dcnv3_core_pytorch`` /
CUDA kernel exactly:

- ``value`` is channels-last ``(N, H, W, C)``; its ``C`` channels are split into ``groups`` groups of
  ``C // groups`` channels, and each group has its own ``P = K*K`` sampling points per output pixel.
- output pixel ``(i, j)`` of group ``g`` is ``sum_p mask[p] * bilinear(value_g, x_p, y_p)`` with, in
  pixel units of the (unpadded) input,

      x_p = j*stride - pad + c + (kx*dilation - c)*offset_scale + offset_x[p]*offset_scale
      y_p = i*stride - pad + c + (ky*dilation - c)*offset_scale + offset_y[p]*offset_scale

  where ``c = dilation*(K-1) // 2`` and point ``p = kx*K + ky`` (x is the *outer* index, as in the
  reference's ``meshgrid`` and CUDA loops). Samples outside the image read zeros (the reference zero-pads
  by ``pad`` and then samples with zero padding, which is the same thing).
- ``offset`` is ``(N, Ho, Wo, G*P*2)`` laid out ``[g][p][x, y]``; ``mask`` is ``(N, Ho, Wo, G*P)``
  laid out ``[g][p]``. The softmax over the ``P`` points of a group is the caller's job (the module).

Operators emitted when traced (``torch.jit.trace``), per call, for FLOP counting: index arithmetic on
Python ints (``aten::size/Int/add/sub/floor_divide``), ``aten::arange`` x4 and small
``aten::mul/add/sub/div/view/expand/reshape/stack/permute`` building the sampling grid (one pass over
``N*Ho*Wo*G*P*2`` numbers), ``aten::to`` (no-op casts for fp32/fp64 inputs), then the three that
carry the cost:

- ``aten::grid_sampler`` -- input ``(N*G, C/G, H, W)``, grid ``(N*G, Ho*Wo, P, 2)``,
  output ``(N*G, C/G, Ho*Wo, P)``: bilinear, 4 multiply-adds per output element;
- ``aten::mul`` -- that output times the mask broadcast from ``(N*G, 1, Ho*Wo, P)``;
- ``aten::sum`` over the last dim -> ``(N*G, C/G, Ho*Wo)``;

plus reshapes/permutes (``aten::view``, ``aten::permute``, ``aten::reshape``/``aten::contiguous``).
InternImage counts the core as ``5 * Ho*Wo * K*K * C`` multiply-adds per image (``dcnv3_flops`` in its
``detection/get_flops.py``): 4 for the bilinear tap weights and 1 for the mask, i.e.
``5 * numel(grid_sampler output)``. fvcore's default rule for ``aten::grid_sampler`` counts the 4.

On the CPU the aggregation itself runs by default as one fused C++ loop (``lkscale.ops.dcnv3_cpu``:
the same sampling positions and bilinear taps, equal to this path within float rounding, gradients
included; 5-8x faster per call, ``benchmarks/study_rate.py dcn``); the definition above and the traced
operators are this module's ``grid_sample`` path.

Half/bfloat16 inputs are sampled in float32 (positions need sub-pixel precision) and returned in the
input dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lkscale.ops import dcnv3_cpu


def dcnv3_output_size(size: int, kernel: int, stride: int = 1, padding: int | None = None, dilation: int = 1) -> int:
    """Output length of a DCNv3 along one axis (the conv formula)."""
    if padding is None:
        padding = dilation * (kernel - 1) // 2
    return (size + 2 * padding - (dilation * (kernel - 1) + 1)) // stride + 1


def _base_locations(ho: int, wo: int, kernel: int, stride: int, padding: int, dilation: int,
                    offset_scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zero-offset sampling locations in input pixel units, ``(Ho, Wo, P, 2)`` as ``(x, y)``."""
    c = dilation * (kernel - 1) // 2
    ys = torch.arange(ho, dtype=dtype, device=device) * stride + (c - padding)
    xs = torch.arange(wo, dtype=dtype, device=device) * stride + (c - padding)
    taps = (torch.arange(kernel, dtype=dtype, device=device) * dilation - c) * offset_scale
    # point p = kx * K + ky: x varies slowest
    tx = taps.view(kernel, 1).expand(kernel, kernel).reshape(-1)
    ty = taps.view(1, kernel).expand(kernel, kernel).reshape(-1)
    p = kernel * kernel
    bx = xs.view(1, wo, 1) + tx.view(1, 1, p)  # (1, Wo, P)
    by = ys.view(ho, 1, 1) + ty.view(1, 1, p)  # (Ho, 1, P)
    return torch.stack((bx.expand(ho, wo, p), by.expand(ho, wo, p)), dim=-1)


def _check_shapes(value, offset, mask, groups, out_shape) -> None:
    if value.shape[-1] % groups:
        raise ValueError(f"dcnv3_core: channels {value.shape[-1]} not divisible by groups {groups}")
    n, ho, wo, gp = out_shape
    if tuple(offset.shape) != (n, ho, wo, gp * 2):
        raise ValueError(f"dcnv3_core: offset shape {tuple(offset.shape)} != {(n, ho, wo, gp * 2)}")
    if tuple(mask.shape) != (n, ho, wo, gp):
        raise ValueError(f"dcnv3_core: mask shape {tuple(mask.shape)} != {(n, ho, wo, gp)}")


def _use_fused(value: torch.Tensor, impl: str) -> bool:
    if impl not in ("auto", "fused", "reference"):
        raise ValueError(f"dcnv3_core: impl {impl!r} unknown; allowed: auto, fused, reference")
    if impl == "reference" or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return False
    if value.device.type != "cpu":
        if impl == "fused":
            raise ValueError("dcnv3_core: the fused kernel is CPU-only")
        return False
    ok = dcnv3_cpu.load() is not None
    if impl == "fused" and not ok:
        raise RuntimeError("dcnv3_core: the fused CPU kernel could not be built (see the log)")
    return ok


def dcnv3_core(value: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel: int, groups: int,
               stride: int = 1, padding: int | None = None, dilation: int = 1,
               offset_scale: float = 1.0, impl: str = "auto") -> torch.Tensor:
    """Deformable aggregation of DCNv3 (see the module docstring for the exact definition).

    Args:
        value: ``(N, H, W, C)`` channels-last features (after InternImage's ``input_proj``).
        offset: ``(N, Ho, Wo, G*K*K*2)`` offsets in pixels, ``(x, y)`` per point.
        mask: ``(N, Ho, Wo, G*K*K)`` modulation weights (already softmaxed per group by the caller).
        kernel: K (odd or even; InternImage uses 3).
        groups: G; ``C`` must be divisible by it.
        stride, padding, dilation: as for a conv; ``padding`` defaults to ``dilation*(K-1)//2`` ("same").
        offset_scale: scales both the regular grid and the learned offsets, as in the reference.
        impl: ``auto`` (the fused C++ kernel of ``lkscale.ops.dcnv3_cpu`` for CPU tensors where it
            builds, else ``grid_sample``), ``fused`` or ``reference`` (``grid_sample``; always taken when
            tracing or exporting, so the ONNX graph and the FLOP count see the operators listed above).

    Returns:
        ``(N, Ho, Wo, C)``, contiguous.
    """
    if value.dim() != 4 or offset.dim() != 4 or mask.dim() != 4:
        raise ValueError("dcnv3_core: value, offset and mask must be 4-D channels-last (N, H, W, C) tensors")
    n, h, w, ch = value.shape
    if padding is None:
        padding = dilation * (kernel - 1) // 2
    ho = dcnv3_output_size(h, kernel, stride, padding, dilation)
    wo = dcnv3_output_size(w, kernel, stride, padding, dilation)
    p = kernel * kernel
    gc = ch // groups
    if not torch.jit.is_tracing():  # shapes are fixed in a trace; skip the Python-side checks there
        _check_shapes(value, offset, mask, groups, (n, ho, wo, groups * p))
    # sampling positions need more than half precision (bf16 resolves 0.25 px at x=50): work in >= fp32,
    # as the reference CUDA kernel does (opmath), and return the input's dtype
    dtype = torch.promote_types(value.dtype, torch.float32)

    base = _base_locations(ho, wo, kernel, stride, padding, dilation, offset_scale, dtype, value.device)
    loc = base.view(1, ho, wo, 1, p, 2) + offset.reshape(n, ho, wo, groups, p, 2).to(dtype) * offset_scale
    if _use_fused(value, impl):  # same positions, same taps; no (P x output) intermediate
        out = dcnv3_cpu.aggregate(value.to(dtype), loc, mask.reshape(n, ho, wo, groups, p).to(dtype), groups)
        return out.to(value.dtype)
    # pixel coordinate -> grid_sample's [-1, 1] (align_corners=False): g = (2 * loc + 1) / size - 1
    size = w + (h - w) * torch.arange(2, dtype=dtype, device=value.device)  # [w, h], traceable
    grid = (loc * 2 + 1) / size - 1
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * groups, ho * wo, p, 2)

    v = value.reshape(n, h * w, groups, gc).permute(0, 2, 3, 1).reshape(n * groups, gc, h, w).to(dtype)
    sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = mask.reshape(n, ho * wo, groups, p).permute(0, 2, 1, 3).reshape(n * groups, 1, ho * wo, p).to(dtype)
    out = (sampled * m).sum(-1)  # (N*G, C/G, Ho*Wo)
    return out.view(n, groups, gc, ho, wo).permute(0, 3, 4, 1, 2).reshape(n, ho, wo, ch).to(value.dtype)


__all__ = ["dcnv3_core", "dcnv3_output_size"]
