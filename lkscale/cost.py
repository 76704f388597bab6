"""What a candidate costs: parameters, multiply-adds, useful kernel size, and deployed latency.

FLOPs
-----
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
conv geometry, all ``nn.Conv2d``): on maps smaller than a large kernel most taps are wasted, and the
cropping depthwise path in ``lkscale.ops`` skips them.

Effective kernel
----------------
On an H x W map a stride-1 'same' K x K kernel only ever touches the image with its central
(2H-1) x (2W-1) taps; the others multiply padding zeros and never receive a gradient. Per stage we
report the map size, the nominal kernel, the effective kernel (the taps of the stage's stride-1
K x K depthwise conv that ever read a pixel: ``min(K, 2H-1)`` per dimension without dilation; fewer
for a dilated kernel such as MogaNet's 7x7 dilation 3) and the number of dead parameters, counted
exactly (stride, padding and dilation included) over every depthwise conv of the stage (its
stride-2 transition included) in the *train* form (re-param branches included). Depthwise convs
are found with forward hooks on ``nn.Conv2d`` modules with ``groups == in_channels``, so this works
for every family.

Latency
-------
The deploy form, eval, ``torch.inference_mode()``, channels_last, a fixed thread count (restored
afterwards), warm-up iterations, then timed repeats (``time.perf_counter``); median, p25, p75 and min
in ms (timm's ``benchmark.py`` reports the mean step time of 50 steps after 10 warm-up steps; a median
with its spread is more robust on a shared CPU). The optional train step (forward + backward + SGD
step, lr 1e-4 and random targets as in timm's ``TrainBenchmarkRunner``) uses the train form.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from lkscale.spec import ArchSpec

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------------- effective kernel
@dataclass
class StageCost:
    index: int
    block: str
    map_hw: tuple[int, int]  # spatial size the stage's blocks run at
    kernel: int  # nominal (spec) kernel
    effective_kernel: tuple[int, int]  # taps of the K x K kernel that touch the image: min(K, 2H-1) if undilated
    dead_params: int  # depthwise-conv weights that never touch the image (never get a gradient)
    dw_params: int = 0  # all depthwise-conv weights of the stage (dead_params is a part of these)


def _live_taps(size: int, out: int, k: int, stride: int, pad: int, dil: int) -> int:
    """Number of kernel taps (one dimension) that read a real pixel for at least one output."""
    live = 0
    for t in range(k):
        off = t * dil - pad  # input index = o * stride + off
        # exists o in [0, out) with 0 <= o*stride + off < size
        lo = max(0, math.ceil(-off / stride))
        hi = min(out - 1, (size - 1 - off) // stride)
        live += lo <= hi
    return live


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == m.in_channels and m.in_channels > 1


def _pads(conv: nn.Conv2d) -> list[int]:
    if isinstance(conv.padding, str):  # 'same' / 'valid'
        return [(conv.dilation[i] * (conv.kernel_size[i] - 1)) // 2 if conv.padding == "same" else 0 for i in (0, 1)]
    return list(conv.padding)


def dead_conv_params(conv: nn.Conv2d, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """Weights of ``conv`` that only ever multiply padding on an ``in_hw`` input (exact)."""
    pads = _pads(conv)
    live = 1
    for i in (0, 1):
        live *= _live_taps(in_hw[i], out_hw[i], conv.kernel_size[i], conv.stride[i], pads[i], conv.dilation[i])
    per_tap = conv.out_channels * (conv.in_channels // conv.groups)
    return conv.weight.numel() - per_tap * live


def _useful_taps(size: int, out: int, k: int, stride: int, pad: int, dil: int) -> int:
    """Sum over outputs (one dimension) of the kernel taps that read a real pixel."""
    total = 0
    for o in range(out):
        start = o * stride - pad
        total += sum(0 <= start + t * dil < size for t in range(k))
    return total


def padding_macs(model: nn.Module, input_size: int, in_chans: int | None = None) -> int:
    """Multiply-adds of every ``nn.Conv2d`` that only multiply padding zeros, for one image (exact).

    ``flops - padding_macs`` are the *useful* multiply-adds: on maps smaller than the kernel most
    taps of a large kernel fall on padding (and a cropping implementation skips them).
    """
    in_chans = in_chans or getattr(model, "in_chans", 3)
    wasted = [0]

    def hook(conv, args, out):
        x = args[0]
        pads = _pads(conv)
        (h, w), (ho, wo) = x.shape[-2:], out.shape[-2:]
        per_pair = x.shape[0] * conv.out_channels * (conv.in_channels // conv.groups)
        nominal = per_pair * conv.kernel_size[0] * conv.kernel_size[1] * ho * wo
        useful = per_pair * (_useful_taps(h, ho, conv.kernel_size[0], conv.stride[0], pads[0], conv.dilation[0])
                             * _useful_taps(w, wo, conv.kernel_size[1], conv.stride[1], pads[1], conv.dilation[1]))
        wasted[0] += nominal - useful

    _probe(model, [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)],
           in_chans, input_size)
    return int(wasted[0])


def _probe(model: nn.Module, hooks: list, in_chans: int, input_size: int) -> None:
    """One eval-mode forward pass of a blank image with ``hooks`` installed; the hooks are removed after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


def effective_kernels(model: nn.Module, input_size: int, in_chans: int | None = None) -> list[StageCost]:
    """Per stage: map size, nominal and effective kernel, dead depthwise parameters (train form).

    ``model`` is an LKNet (``model.stages``, ``model.spec``); other models with a ``stages``
    sequence work too (the nominal kernel is then the largest stride-1 depthwise kernel).
    """
    stages = getattr(model, "stages", None)
    if stages is None:
        return []
    spec: ArchSpec | None = getattr(model, "spec", None)
    in_chans = in_chans or getattr(model, "in_chans", 3)
    stage_of: dict[int, int] = {}
    for i, st in enumerate(stages):
        for m in st.modules():
            if _is_depthwise(m):
                stage_of.setdefault(id(m), i)
    maps: dict[int, tuple[int, int]] = {}
    convs: list[tuple[int, nn.Conv2d, tuple[int, int], tuple[int, int]]] = []
    hooks = []

    def stage_hook(i: int):
        def hook(mod, args):
            maps.setdefault(i, tuple(args[0].shape[-2:]))
        return hook

    def conv_hook(mod, args, out):
        convs.append((stage_of[id(mod)], mod, tuple(args[0].shape[-2:]), tuple(out.shape[-2:])))

    for i, st in enumerate(stages):
        target = getattr(st, "blocks", st)
        hooks.append(target.register_forward_pre_hook(stage_hook(i)))
        for m in st.modules():
            if id(m) in stage_of:
                hooks.append(m.register_forward_hook(conv_hook))
    _probe(model, hooks, in_chans, input_size)
    seen: set[int] = set()
    dead = [0] * len(stages)
    dw = [0] * len(stages)
    largest = [1] * len(stages)
    for i, conv, in_hw, out_hw in convs:
        if conv.stride == (1, 1):
            largest[i] = max(largest[i], conv.kernel_size[0])
        if id(conv) in seen:  # a conv called twice is counted once
            continue
        seen.add(id(conv))
        dead[i] += dead_conv_params(conv, in_hw, out_hw)
        dw[i] += conv.weight.numel()
    out = []
    for i in range(len(stages)):
        h, w = maps.get(i, (0, 0))
        k = spec.stages[i].kernel if spec is not None else largest[i]
        block = spec.stages[i].block if spec is not None else type(stages[i]).__name__
        eff = (min(k, 2 * h - 1), min(k, 2 * w - 1))
        # the stage's own large kernel: a stride-1 depthwise K x K conv (the most dilated one if several)
        mains = [(c.dilation[0], c, ih, oh) for j, c, ih, oh in convs
                 if j == i and c.stride == (1, 1) and c.kernel_size == (k, k)]
        if mains:
            _, c, ih, oh = max(mains, key=lambda t: t[0])
            pads = _pads(c)
            eff = tuple(_live_taps(ih[d], oh[d], k, 1, pads[d], c.dilation[d]) for d in (0, 1))
        out.append(StageCost(i, block, (int(h), int(w)), int(k), (int(eff[0]), int(eff[1])),
                             int(dead[i]), int(dw[i])))
    return out


# ------------------------------------------------------------------------------------------- latency
def _summary(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1e3
    return {"median_ms": float(np.median(ms)), "p25_ms": float(np.percentile(ms, 25)),
            "p75_ms": float(np.percentile(ms, 75)), "min_ms": float(ms.min()), "mean_ms": float(ms.mean()),
            "n": int(ms.size)}


def _timed(step: Callable[[], Any], warmup: int, repeats: int, min_seconds: float, max_repeats: int) -> list[float]:
    for _ in range(warmup):
        step()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < max_repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def measure_latency(model: nn.Module, input_size: int, batch_size: int = 1, threads: int = 1, warmup: int = 5,
                    repeats: int = 20, min_seconds: float = 0.1, in_chans: int | None = None,
                    deploy: bool = True, max_repeats: int = 1000) -> dict:
    """Forward latency of the deploy form (ms): median, p25, p75, min, mean and the number of runs.

    With ``deploy`` a model that is not yet deployed is re-parameterised (a copy); the model timed is
    put in eval mode and channels_last. Runs ``repeats`` timed iterations, more (up to
    ``max_repeats``) until ``min_seconds`` have passed.
    """
    if batch_size < 1 or threads < 1 or repeats < 1 or input_size < 1:
        raise ValueError("batch_size, threads, repeats and input_size must be >= 1")
    if deploy and not getattr(model, "deployed", False):
        from lkscale.reparam import reparameterize

        model = reparameterize(model)
    in_chans = in_chans or getattr(model, "in_chans", 3)
    model.eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, in_chans, input_size, input_size).contiguous(memory_format=torch.channels_last)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            times = _timed(lambda: model(x), warmup, repeats, min_seconds, max_repeats)
    finally:
        torch.set_num_threads(prev)
    return {**_summary(times), "batch_size": batch_size, "threads": threads, "input_size": input_size}


def measure_train_step(model: nn.Module, input_size: int, batch_size: int = 2, threads: int = 1, warmup: int = 2,
                       repeats: int = 5, min_seconds: float = 0.0, in_chans: int | None = None,
                       num_classes: int | None = None) -> dict:
    """Train-form step time (ms): forward + cross-entropy + backward + SGD step, on a copy of ``model``."""
    if batch_size < 1 or threads < 1 or repeats < 1 or input_size < 1:
        raise ValueError("batch_size, threads, repeats and input_size must be >= 1")
    model = copy.deepcopy(model).train().to(memory_format=torch.channels_last)
    in_chans = in_chans or getattr(model, "in_chans", 3)
    x = torch.randn(batch_size, in_chans, input_size, input_size).contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        target = torch.randint(0, num_classes or out.shape[-1], (out.shape[0],))
        loss_fn(out, target).backward()
        opt.step()

    try:
        times = _timed(step, warmup, repeats, min_seconds, max(repeats, 1000))
    finally:
        torch.set_num_threads(prev)
    return {**_summary(times), "batch_size": batch_size, "threads": threads, "input_size": input_size}


# -------------------------------------------------------------------------------------------- report
@dataclass
class CostReport:
    name: str
    params: int  # train form
    deploy_params: int  # deploy form (BN folded, branches merged)
    flops: int  # multiply-adds of the deploy form, one image
    flops_by_op: dict
    uncounted_ops: list  # traced ops with no MAC rule (should be empty)
    input_size: int
    batch_size: int
    threads: int
    latency_ms: float | None = None  # median forward latency of the deploy form, or None
    latency_p25_ms: float | None = None
    latency_p75_ms: float | None = None
    latency_min_ms: float | None = None
    train_step_ms: float | None = None  # median train-form step (fwd + bwd + SGD), or None
    stages: list = field(default_factory=list)  # list[StageCost]
    elementwise_ops: dict = field(default_factory=dict)  # op -> output elements, counted as 0 MACs
    train_batch_size: int | None = None
    num_classes: int | None = None
    latency_runs: int | None = None
    seconds: float | None = None  # wall time of the estimate itself
    useful_flops: int | None = None  # flops minus conv multiply-adds that only read padding
    flops_unit: str = FLOPS_UNIT

    @property
    def dead_params(self) -> int:
        return sum(s.dead_params for s in self.stages)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stages"] = [{**s, "map_hw": list(s["map_hw"]), "effective_kernel": list(s["effective_kernel"])}
                       for s in d["stages"]]
        d["dead_params"] = self.dead_params
        return d


def estimate(spec: ArchSpec, input_size: int = 32, num_classes: int = 10, batch_size: int = 1, threads: int = 1,
             latency: bool = True, train_step: bool = False, repeats: int = 20, warmup: int = 5,
             min_seconds: float = 0.1, in_chans: int = 3,
             progress: Callable[[str], None] | None = None) -> CostReport:
    """Build ``spec`` and measure what it costs (see the module docstring for the conventions)."""
    from lkscale.model import build_model
    from lkscale.reparam import reparameterize

    t0 = time.perf_counter()
    say = progress or (lambda msg: log.info(msg))
    if input_size < 1 or batch_size < 1 or threads < 1 or repeats < 1:
        raise ValueError("input_size, batch_size, threads and repeats must be >= 1")
    stride = spec.stem.stride * 2 ** (len(spec.stages) - 1)
    if input_size < stride:
        raise ValueError(f"input size {input_size} is smaller than the network's total stride {stride}")
    say(f"building {spec.name}")
    model = build_model(spec, num_classes=num_classes, in_chans=in_chans)
    deployed = reparameterize(model)
    say("counting multiply-adds (fvcore)")
    flops, by_op, uncounted, elementwise = _count(deployed, input_size, in_chans)
    stages = effective_kernels(model, input_size, in_chans)
    report = CostReport(name=spec.name, params=count_params(model), deploy_params=count_params(deployed),
                        flops=flops, flops_by_op=by_op, uncounted_ops=uncounted, input_size=input_size,
                        batch_size=batch_size, threads=threads, stages=stages, elementwise_ops=elementwise,
                        num_classes=num_classes,
                        useful_flops=flops - padding_macs(deployed, input_size, in_chans))
    if latency:
        say(f"timing the deploy form (batch {batch_size}, {threads} thread(s))")
        lat = measure_latency(deployed, input_size, batch_size, threads, warmup=warmup, repeats=repeats,
                              min_seconds=min_seconds, in_chans=in_chans, deploy=False)
        report.latency_ms, report.latency_p25_ms = lat["median_ms"], lat["p25_ms"]
        report.latency_p75_ms, report.latency_min_ms, report.latency_runs = lat["p75_ms"], lat["min_ms"], lat["n"]
    if train_step:
        tb = max(batch_size, 2)  # train-mode BN needs more than one value per channel
        say(f"timing a train step (batch {tb})")
        ts = measure_train_step(model, input_size, tb, threads, warmup=2, repeats=max(3, repeats // 4),
                                in_chans=in_chans, num_classes=num_classes)
        report.train_step_ms, report.train_batch_size = ts["median_ms"], tb
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["StageCost", "CostReport", "count_params", "count_flops", "effective_kernels", "padding_macs",
           "measure_latency",
           "measure_train_step", "estimate", "register_flop_handle", "dead_conv_params", "FLOP_HANDLES",
           "ELEMENTWISE_OPS", "IGNORED_OPS", "FLOPS_UNIT"]
