"""Multiply-adds (fvcore, with explicit rules for every op our blocks emit) and parameter counts.

``flops`` are **multiply-adds (MACs)** of the *deploy* form (``lkscale.reparameterize``) for one
image, counted by fvcore's ``FlopCountAnalysis`` (one fused multiply-add = one FLOP, as in timm's
published GMACs). fvcore's own handlers are kept as they are (conv/linear/matmul/einsum/bmm =
multiply-adds, layer/group norm 5 per element, eval batch norm 2 per element, adaptive average
pool 1 per input element, bilinear upsample 4 per output element). fvcore silently drops every op it
has no handler for; here every op our blocks emit has an explicit, documented rule:

- reductions (``mean``, ``sum``, ``softmax``, ``log_softmax``, ``avg_pool2d``): one accumulate per
  input element read (``mean`` = global average pool, same as fvcore's ``adaptive_avg_pool2d``;
  softmax's exp and divide are elementwise maps, free below). ``avg_pool2d``: kh*kw per output element.
- ``grid_sampler`` / ``grid_sampler_2d``: multiply-adds of the interpolation per output element
  and channel: bilinear 4 (fvcore's own rule for ``grid_sampler``), nearest 1 (like fvcore's nearest
  upsample), bicubic 16. The corner weights are computed once per output location and shared by all
  channels (about 1/C of the above); like fvcore and InternImage's ``dcnv3_flops`` (5 per sample and
  channel = 4 bilinear + 1 for the mask-weighted sum, which is exactly what the ``sum`` rule gives),
  they are not counted.
- ``affine_grid_generator``: the (H*W, 3) x (3, 2) matmul it is: 3 multiply-adds per output
  coordinate (4 in 3-D).
- ``baddbmm``: as ``bmm``.
- elementwise maps (activations, add/sub/mul/div, exp, ...) are 0 MACs, as in fvcore and timm; they
  are not dropped silently, though: their element counts are reported in ``elementwise_ops``.
- data movement (pad, repeat, flip, linspace, meshgrid, ...) is 0 and explicitly ignored.

Counting runs in eval mode with the full nominal kernels (``DWConv2d`` traces as ``F.conv2d``).
Any op still without a rule is listed in ``CostReport.uncounted_ops`` (tests keep it empty for every
family's proxy, train and deploy forms); ``register_flop_handle`` adds a rule (e.g. for a custom
autograd Function used by ``ops/``, which traces as ``prim::PythonOp.<Name>``).

Cross-check: on a model made of convs, linears and the ops above, fvcore's conv + linear/matmul
total equals ``torch.utils.flop_counter.FlopCounterMode``'s total / 2 (it counts 2 FLOPs per MAC and
only matmul/conv-like ops).

``useful_flops`` subtracts the conv multiply-adds that only ever read padding zeros (exact, from the
conv geometry, all ``nn.Conv2d``, see ``kernels.padding_macs``): on maps smaller than a large kernel
most taps are wasted, and the cropping depthwise path in ``lkscale.ops`` skips them.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

FLOPS_UNIT = "multiply-adds (MACs, fvcore convention: one fused multiply-add = one FLOP)"

# --------------------------------------------------------------------------------------- FLOP rules


def _shape(val: Any) -> list[int] | None:
    return val.type().sizes() if val.isCompleteTensor() else None


def _numel(val: Any) -> int:
    s = _shape(val)
    return int(math.prod(s)) if s is not None else 0


def _const(val: Any, default: Any = None) -> Any:
    try:
        v = val.toIValue()
    except RuntimeError:
        return default
    return default if v is None else v


def _reduction_handle(inputs: list, outputs: list) -> int:
    """One accumulate per input element (mean/sum/softmax/log_softmax)."""
    return _numel(inputs[0])


def _avg_pool2d_handle(inputs: list, outputs: list) -> int:
    k = _const(inputs[1], [1, 1])
    k = list(k) * 2 if len(k) == 1 else list(k)
    return _numel(outputs[0]) * int(k[0]) * int(k[1])


_GRID_MACS = {0: 4, 1: 1, 2: 16}  # interpolation_mode: bilinear, nearest, bicubic


def _grid_sampler_handle(inputs: list, outputs: list) -> int:
    mode = int(_const(inputs[2], 0))
    return _numel(outputs[0]) * _GRID_MACS.get(mode, 4)


def _affine_grid_handle(inputs: list, outputs: list) -> int:
    theta = _shape(inputs[0])  # (N, 2, 3) or (N, 3, 4)
    return _numel(outputs[0]) * (int(theta[-1]) if theta else 3)


def _baddbmm_handle(inputs: list, outputs: list) -> int:
    a, b = _shape(inputs[1]), _shape(inputs[2])
    return int(a[0] * a[1] * a[2] * b[2])


# Extra rules on top of fvcore's defaults. Values: handle(inputs, outputs) -> MACs.
FLOP_HANDLES: dict[str, Callable] = {
    "aten::mean": _reduction_handle,
    "aten::sum": _reduction_handle,
    "aten::softmax": _reduction_handle,
    "aten::_softmax": _reduction_handle,
    "aten::log_softmax": _reduction_handle,
    "aten::avg_pool2d": _avg_pool2d_handle,
    "aten::grid_sampler": _grid_sampler_handle,
    "aten::grid_sampler_2d": _grid_sampler_handle,
    "aten::affine_grid_generator": _affine_grid_handle,
    "aten::baddbmm": _baddbmm_handle,
}

# Elementwise maps: 0 MACs (fvcore/timm convention); their output elements are tallied.
ELEMENTWISE_OPS: tuple[str, ...] = tuple(
    f"aten::{n}{s}" for n in (
        "add", "sub", "rsub", "mul", "div", "neg", "reciprocal", "pow", "sqrt", "rsqrt", "exp", "log",
        "abs", "sign", "square", "erf", "tanh", "sigmoid", "silu", "gelu", "hardswish", "hardsigmoid",
        "hardtanh", "relu6", "leaky_relu", "elu", "mish", "softplus", "clamp_min", "clamp_max", "maximum",
        "minimum", "where", "addcmul", "addcdiv", "lerp", "max_pool2d", "floor", "ceil", "round",
        "lt", "le", "logical_and", "logical_or", "sin", "cos",
    ) for s in ("", "_")
)

# Data movement / bookkeeping: 0, explicitly ignored (fvcore already ignores view, permute, cat, ...).
IGNORED_OPS: tuple[str, ...] = (
    "aten::pad", "aten::repeat", "aten::repeat_interleave", "aten::tile", "aten::expand_as",
    "aten::flip", "aten::linspace", "aten::meshgrid", "aten::clone", "aten::new_ones", "aten::ones_like",
    "aten::empty_like", "aten::rand_like", "aten::randn_like", "aten::index_select", "aten::_to_copy",
    "aten::unflatten", "aten::view_as", "aten::reshape_as", "aten::movedim", "aten::tensor_split",
    "aten::unfold", "aten::im2col", "aten::pixel_shuffle", "aten::pixel_unshuffle", "aten::channel_shuffle",
    "aten::feature_dropout", "aten::alpha_dropout", "aten::dropout_", "aten::broadcast_tensors",
    "aten::scatter", "aten::zero_", "aten::fill_", "aten::detach_", "aten::lift_fresh", "aten::bernoulli_",
    "aten::div_floor", "aten::tensor", "aten::scalar_tensor", "aten::numel", "aten::dim", "aten::len",
    "aten::contiguous", "aten::as_strided", "aten::constant_pad_nd", "aten::reflection_pad2d",
    "aten::replicate_pad2d", "aten::replication_pad2d", "aten::masked_fill_", "aten::clamp",
    "prim::NumToTensor", "prim::ListUnpack", "prim::TupleUnpack",
)

_EXTRA_HANDLES: dict[str, Callable] = {}


def register_flop_handle(op_name: str, handle: Callable | None) -> None:
    """Add (or replace) the MAC rule for a traced op, e.g. ``prim::PythonOp.MyDWConvFn``.

    ``handle(inputs, outputs) -> int`` gets fvcore's ``torch._C.Value`` lists; ``None`` ignores the op.
    """
    _EXTRA_HANDLES[op_name] = handle


def _analysis(model: nn.Module, x: torch.Tensor, elementwise: dict[str, int]):
    from collections import Counter

    from fvcore.nn import FlopCountAnalysis

    def tally(name: str) -> Callable:
        short = name.split("::", 1)[-1]

        def handle(inputs: list, outputs: list) -> Any:
            elementwise[short] = elementwise.get(short, 0) + (_numel(outputs[0]) if outputs else 0)
            return Counter()  # 0 MACs

        return handle

    fa = FlopCountAnalysis(model, (x,))
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    fa.set_op_handle(**FLOP_HANDLES)
    fa.set_op_handle(**{name: tally(name) for name in ELEMENTWISE_OPS})
    fa.set_op_handle(**{name: None for name in IGNORED_OPS})
    fa.set_op_handle(**_EXTRA_HANDLES)
    return fa


def _count(model: nn.Module, input_size: int, in_chans: int) -> tuple[int, dict, list, dict]:
    from collections import Counter

    elementwise: dict[str, int] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            fa = _analysis(model, torch.zeros(1, in_chans, input_size, input_size), elementwise)
            by_op = {k: int(round(v)) for k, v in sorted(fa.by_operator().items()) if v}
            unsupported = sorted(Counter(fa.unsupported_ops()))
    finally:
        model.train(was_training)
    return sum(by_op.values()), by_op, unsupported, dict(sorted(elementwise.items()))


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def count_flops(model: nn.Module, input_size: int, in_chans: int = 3) -> tuple[int, dict, list]:
    """(total MACs, MACs by op, ops with no rule) for one ``in_chans x input_size x input_size`` image.

    Counts ``model`` as given: pass the deploy form (``lkscale.reparameterize``) for deployed cost.
    """
    total, by_op, unsupported, _ = _count(model, input_size, in_chans)
    return total, by_op, unsupported
