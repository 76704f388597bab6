"""Replicates of one network trained as one stacked (R-fold widened) model vs R separate trainings (issue 22, item 2).

    python benchmarks/stack_replicates.py                                  # 4 networks, R = 2 and 3, ~3-4 min
    python benchmarks/stack_replicates.py --networks replk:31 --replicates 3 --rounds 3 --steps 2
    python benchmarks/stack_replicates.py --profile --networks convnext:3 --replicates 2   # per-op breakdown

Networks: the study's own candidates (``studies/kernel_size.yaml`` expanded by ``lkscale.space.expand``:
its blocks, stem/transition/head families, clipping to 31-15-7-3, the 5x5 re-param branch where the kernel
is larger). Replicates of one architecture differ only in their seeds (lkscale's common random numbers:
replicate r draws its training subset, initial weights and batch order with seed ``proxy.seed + r``, as
``lkscale.search.trainable.replicate_configs`` sets them; the data are the study's, via ``load_splits``).
Here the R replicates become one network R times as wide in which replicate r owns channels
``[r*C, (r+1)*C)`` of every layer:

* every conv ``Conv2d(cin, cout, groups=g)`` becomes ``Conv2d(R*cin, R*cout, groups=R*g)`` with the R
  weights concatenated (a depthwise conv stays a ``DWConv2d`` of R*C channels, so lkscale's large-kernel
  path and its autotuner serve it); a BatchNorm over R*C channels is exactly R per-replicate BatchNorms
  (statistics are per channel), running statistics included; LayerNorm is applied per replicate (over the
  replicate's C channels, its own affine); a Linear becomes R matmuls (see ``--pointwise``; the head's is
  one ``torch.bmm``); a block's own parameters (ConvNeXt's layer scale) are concatenated. The blocks'
  forward code is the model's own: nothing in it mixes channels.
* ``--pointwise``: how the R-fold pointwise layers run. ``conv``: 1x1 convs as oneDNN grouped convs, and
  the Linears of ConvNeXt's MLP (on channels-last maps) as grouped 1x1 convs of the same memory; ``bmm``:
  both as ``torch.bmm`` over the replicates (layout copies in and out). Both are timed when both are named.
* Input: the R batches concatenated along channels (B, 3R, H, W); output (B, R*classes).
* Step (``lkscale.train.train_step`` per replicate): forward, the sum over replicates of each one's
  label-smoothed cross-entropy (so each replicate's gradient is its own, not divided by R), backward,
  gradient-norm clipping **per replicate** (the norm over the replicate's slices of every gradient, as
  ``clip_grad_norm_`` computes it), fused AdamW (element-wise, so one AdamW over the stacked parameters is
  R AdamWs; weight decay on the same parameters: every widened weight keeps ndim > 1).

Why widening rather than ``torch.func.stack_module_state`` + ``vmap``: vmap's batching rule for a conv with
batched weights is this same grouped conv, so the arithmetic is the same, but lkscale's large-kernel
depthwise conv is a custom ``autograd.Function`` without a vmap rule, and BatchNorm's in-place running
statistics need the buffers stacked and batched too; widening keeps the project's modules and ops as
they are and adds no vmap dispatch per op.

Separate: R models (``step_state`` + ``train_step`` of ``lkscale.train``), each on its own batch, one
after another. Stacked: one widened model on the R batches at once. One thread. Equivalence: from the
same initial weights and batches, ``--equiv-steps`` steps of both: the first step's gradients, then the
largest absolute difference per replicate of the losses, the parameters and the BN running statistics;
beside it a control, the separate training against itself started one float32 ulp away (how far rounding
alone carries the network in as many steps). Speed: images/s (all replicates' images) per core, steps of
the paths interleaved (A B A B ...) over ``--rounds`` rounds of ``--steps`` steps in one process; median
and min-max over rounds, and the ratio stacked/separate per round. ``os.getloadavg()`` is recorded before
and after each network. The dwconv autotuner's choices are read from the machine's cache but new (wide)
shapes are decided in a private copy, so the shared cache is not changed.
Results: ``benchmarks/results/stack_replicates.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from lkscale.config import default_cache_dir
from lkscale.data import TensorSet, load_splits
from lkscale.data.split import stratified_split
from lkscale.data.tensors import channel_stats
from lkscale.ops import DWConv2d
from lkscale.search.trainable import build_seeded, init_seed, replicate_configs
from lkscale.space import expand
from lkscale.spec import ArchSpec
from lkscale.study import load_study
from lkscale.train import TrainConfig, step_state, train_step
from timm.layers import LayerNorm2d  # noqa: E402,I001  (after lkscale, which readies torchvision for timm)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_step import op_profile  # noqa: E402  (the per-op profile printout the step benchmark uses)

STUDY = os.path.join(HERE, "..", "studies", "kernel_size.yaml")
NETWORKS = {"convnext:3": ("convnext", [3, 3, 3, 3]), "convnext:31": ("convnext", [31, 29, 27, 13]),
            "replk:3": ("replk", [3, 3, 3, 3]), "replk:31": ("replk", [31, 29, 27, 13]),
            "replk:13": ("replk", [13, 13, 13, 13]), "convnext:13": ("convnext", [13, 13, 13, 13])}
# leaf/container modules whose forward is the same per channel (or structural): kept as they are
PASS = (nn.Sequential, nn.ModuleList, nn.Identity, nn.ReLU, nn.GELU, nn.Dropout)


# ---------------------------------------------------------------------------------------------- wide modules
class WideLayerNorm(nn.Module):
    """R LayerNorms over the last dim (``nchw``: over channels of an NCHW tensor, as timm's LayerNorm2d)."""

    def __init__(self, parts: list[nn.LayerNorm], nchw: bool):
        super().__init__()
        self.r, self.c, self.eps, self.nchw = len(parts), parts[0].normalized_shape[0], parts[0].eps, nchw
        self.weight = nn.Parameter(torch.cat([p.weight.detach() for p in parts]))
        self.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nchw:
            x = x.permute(0, 2, 3, 1)
        shape = x.shape
        y = F.layer_norm(x.reshape(*shape[:-1], self.r, self.c), (self.c,), None, None, self.eps)
        y = torch.addcmul(self.bias.view(self.r, self.c), y, self.weight.view(self.r, self.c)).reshape(shape)
        return y.permute(0, 3, 1, 2) if self.nchw else y


class WideLinear(nn.Module):
    """R Linears on the last dim: weight (R, out, in), bias (R*out). ``as_conv``: a 4-d (B, H, W, R*in) input
    (ConvNeXt's MLP on channels-last maps) goes through one grouped 1x1 conv of its NCHW view (oneDNN, no
    layout copies); otherwise one ``torch.bmm`` over the replicates."""

    def __init__(self, parts: list[nn.Linear], as_conv: bool = False):
        super().__init__()
        self.r, self.cin, self.cout, self.as_conv = len(parts), parts[0].in_features, parts[0].out_features, as_conv
        self.weight = nn.Parameter(torch.stack([p.weight.detach() for p in parts]))
        self.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts])) if parts[0].bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.as_conv and x.dim() == 4:
            w = self.weight.reshape(self.r * self.cout, self.cin, 1, 1)
            return F.conv2d(x.permute(0, 3, 1, 2), w, self.bias, groups=self.r).permute(0, 2, 3, 1)
        lead = x.shape[:-1]
        xv = x.reshape(-1, self.r, self.cin).transpose(0, 1)                      # (R, N, in)
        w = self.weight.transpose(1, 2)
        y = torch.bmm(xv, w) if self.bias is None else torch.baddbmm(self.bias.view(self.r, 1, self.cout), xv, w)
        return y.transpose(0, 1).reshape(*lead, self.r * self.cout)


class WidePointwise(nn.Module):
    """R 1x1 convs (stride 1) of an NCHW tensor as one ``torch.bmm`` on its channels-last memory:
    weight (R*out, in, 1, 1) as the grouped conv holds it (so the replicate slices stay along dim 0)."""

    def __init__(self, parts: list[nn.Conv2d]):
        super().__init__()
        self.r, self.cin, self.cout = len(parts), parts[0].in_channels, parts[0].out_channels
        self.weight = nn.Parameter(torch.cat([p.weight.detach() for p in parts]))
        self.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts])) if parts[0].bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        xv = x.permute(0, 2, 3, 1).reshape(-1, self.r, self.cin).transpose(0, 1)  # (R, N, in)
        wt = self.weight.view(self.r, self.cout, self.cin).transpose(1, 2)
        y = torch.bmm(xv, wt) if self.bias is None else torch.baddbmm(self.bias.view(self.r, 1, self.cout), xv, wt)
        return y.transpose(0, 1).reshape(b, h, w, self.r * self.cout).permute(0, 3, 1, 2)


def _wide_conv(parts: list[nn.Conv2d], pointwise: str) -> nn.Module:
    c0, r = parts[0], len(parts)
    if pointwise == "bmm" and c0.kernel_size == (1, 1) and c0.stride == (1, 1) and c0.groups == 1 \
            and c0.padding == (0, 0):
        return WidePointwise(parts)
    if isinstance(c0, DWConv2d):
        m = DWConv2d(r * c0.in_channels, c0.kernel_size[0], c0.dilation[0], bias=c0.bias is not None)
    else:
        m = nn.Conv2d(r * c0.in_channels, r * c0.out_channels, c0.kernel_size, c0.stride, c0.padding, c0.dilation,
                      r * c0.groups, bias=c0.bias is not None, padding_mode=c0.padding_mode)
    with torch.no_grad():
        m.weight.copy_(torch.cat([p.weight for p in parts]))
        if m.bias is not None:
            m.bias.copy_(torch.cat([p.bias for p in parts]))
    return m


def _wide_bn(parts: list[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    b0 = parts[0]
    m = nn.BatchNorm2d(len(parts) * b0.num_features, b0.eps, b0.momentum, b0.affine, b0.track_running_stats)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(m, name).copy_(torch.cat([getattr(p, name) for p in parts]))
        m.num_batches_tracked.copy_(b0.num_batches_tracked)
    return m


def widen(models: list[nn.Module], pointwise: str = "conv") -> nn.Module:
    """One network computing the R (identically built) ``models`` side by side; see the module docstring.
    Every parameter and BN buffer of the result holds the replicates' tensors concatenated along dim 0 (or
    stacked: WideLinear), so ``tensor.reshape(R, -1)[r]`` is replicate r's, flattened."""
    wide = copy.deepcopy(models[0])
    tables = [dict(m.named_modules()) for m in models]
    for name, m0 in models[0].named_modules():
        parts = [t[name] for t in tables]
        if isinstance(m0, nn.Conv2d):
            new = _wide_conv(parts, pointwise)
        elif isinstance(m0, nn.BatchNorm2d):
            new = _wide_bn(parts)
        elif isinstance(m0, nn.LayerNorm):     # timm's LayerNorm (last dim) and LayerNorm2d (channels of NCHW)
            new = WideLayerNorm(parts, nchw=isinstance(m0, LayerNorm2d))
        elif isinstance(m0, nn.Linear):
            new = WideLinear(parts, as_conv=pointwise == "conv")
        else:
            if not list(m0.children()) and not isinstance(m0, PASS):
                raise TypeError(f"{name}: no widening rule for {type(m0).__name__}")
            own = wide.get_submodule(name) if name else wide
            for pname, _ in m0.named_parameters(recurse=False):  # a block's own parameters (layer scale)
                setattr(own, pname, nn.Parameter(torch.cat([getattr(p, pname).detach() for p in parts])))
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(wide.get_submodule(parent) if parent else wide, leaf, new)
    return wide


def replicate_tensors(model: nn.Module, r: int, reps: int) -> dict[str, torch.Tensor]:
    """Replicate r's parameters and BN running statistics (flattened) from a widened model."""
    out = {n: p.detach().reshape(reps, -1)[r].clone() for n, p in model.named_parameters()}  # copies, not views
    out.update({n: b.reshape(reps, -1)[r].clone() for n, b in model.named_buffers()
                if not n.endswith("num_batches_tracked")})
    return out


def own_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.detach().reshape(-1).clone() for n, p in model.named_parameters()}
    out.update({n: b.reshape(-1).clone() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")})
    return out


# ---------------------------------------------------------------------------------------------- the two paths
@dataclasses.dataclass
class Replicate:
    train: TensorSet
    init: int       # initial-weight seed
    order: int      # batch-order seed
    subset: int     # training-subset seed


def replicates(study, reps: int, pool: TensorSet | None = None) -> list[Replicate]:
    """The R replicates' training sets and seeds as the search's trainable derives them
    (``replicate_configs``): the study's data through ``load_splits`` (``pool`` None), or the same seeded
    stratified subsets of a synthetic ``pool`` of the study's image shape."""
    out = []
    for r in range(reps):
        data, proxy = replicate_configs(study.data, study.proxy, r, threads=1)
        if pool is None:
            train = load_splits(data).train
        else:
            (idx,) = stratified_split(pool.y.numpy(), [data.train_per_class], data.seed, 10)
            x = pool.x[torch.from_numpy(idx)]
            train = TensorSet(x, pool.y[torch.from_numpy(idx)], *channel_stats(x))
        if train.augment:
            raise SystemExit("the study augments: this benchmark draws batches without augmentation")
        out.append(Replicate(train, init_seed(proxy), proxy.seed, data.seed))
    return out


class Batches:
    """Endless batches as ``train_model`` draws them (shuffled with the replicate's order seed, drop_last)."""

    def __init__(self, rep: Replicate, batch: int, channels_last: bool = True):
        self.rep, self.batch, self.cl = rep, batch, channels_last
        self.gen = torch.Generator().manual_seed(rep.order)
        self.it = iter(())

    def __next__(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = self.rep.train.batches(self.batch, shuffle=True, generator=self.gen, drop_last=True,
                                             channels_last=self.cl)
            return next(self.it)


def clip_per_replicate_(params: list[torch.Tensor], reps: int, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` of each replicate's slices: the norm of the per-parameter norms, then the same
    clamped coefficient ``max_norm / (norm + 1e-6)``. Returns the R total norms."""
    grads = [p.grad.unflatten(0, (reps, -1)) for p in params if p.grad is not None]  # views, any memory format
    norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dim=tuple(range(1, g.ndim)))
                                                  for g in grads]), dim=0)
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(reps, *[1] * (g.ndim - 1)))
    return norms


class Separate:
    """R replicates trained one after another, each by ``lkscale.train.train_step``."""

    def __init__(self, models: list[nn.Module], reps: list[Replicate], cfg: TrainConfig, batch: int):
        self.runs = [step_state(m, dataclasses.replace(cfg, seed=rp.order)) for m, rp in zip(models, reps)]
        for run in self.runs:
            run.model.train()
        self.data = [Batches(rp, batch) for rp in reps]

    def step(self) -> list[float]:
        return [train_step(run, *next(d))[0] for run, d in zip(self.runs, self.data)]


class Stacked:
    """The R replicates as one widened model; the step is ``train_step``'s, per replicate (see the docstring)."""

    def __init__(self, models: list[nn.Module], reps: list[Replicate], cfg: TrainConfig, batch: int, pointwise: str):
        self.r = len(models)
        self.run = step_state(widen(models, pointwise), cfg)
        self.run.model.train()
        self.params = [p for p in self.run.model.parameters() if p.requires_grad]
        self.data = [Batches(rp, batch) for rp in reps]

    def step(self) -> list[float]:
        run, cfg = self.run, self.run.cfg
        bs = [next(d) for d in self.data]
        x = torch.cat([b[0] for b in bs], 1).contiguous(memory_format=torch.channels_last)
        out = run.model(x)
        out = out.view(out.shape[0], self.r, -1)
        losses = [F.cross_entropy(out[:, r].float(), b[1], label_smoothing=cfg.label_smoothing)
                  for r, b in enumerate(bs)]
        lv = [float(v.detach()) for v in losses]
        if not all(math.isfinite(v) for v in lv):
            return lv  # lkscale stops a diverged run; a stacked trainable would stop that replicate's row
        run.opt.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        if cfg.clip_grad:
            clip_per_replicate_(self.params, self.r, cfg.clip_grad)
        run.opt.step()
        return lv


def build(spec: ArchSpec, reps: list[Replicate]) -> list[nn.Module]:
    return [build_seeded(spec, rp.init, 10, 3) for rp in reps]


# ---------------------------------------------------------------------------------------------- measurements
def _compare(mine: dict, theirs: dict, start: dict, loss_a: list[float], loss_b: list[float]) -> dict:
    """Largest absolute differences between two trainings of one replicate (flattened tensors by name)."""
    assert mine.keys() == theirs.keys()
    pd = {n: float((mine[n] - theirs[n]).abs().max()) for n in mine}
    diff = torch.cat([mine[n] - theirs[n] for n in mine])
    change = torch.cat([mine[n] - start[n] for n in mine])
    ld = max(abs(a - b) for a, b in zip(loss_a, loss_b))
    pmax = max(pd.values())
    return {"loss_max_abs_diff": ld, "param_max_abs_diff": pmax, "worst_tensor": max(pd, key=pd.get),
            "max_abs_change_in_training": float(change.abs().max()), "elements": diff.numel(),
            "share_over_1e-6": float((diff.abs() > 1e-6).float().mean()),
            "share_over_1e-4": float((diff.abs() > 1e-4).float().mean()),
            "rel_l2_diff_vs_change": float(diff.norm() / change.norm().clamp_min(1e-30)),
            "bit_identical": ld == 0.0 and pmax == 0.0}


@torch.no_grad()
def _nudge_(model: nn.Module) -> nn.Module:
    """Every parameter moved by one float32 ulp (towards +inf): a rounding-sized perturbation."""
    for p in model.parameters():
        p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))
    return model


def equivalence(spec: ArchSpec, reps: list[Replicate], cfg: TrainConfig, batch: int, steps: int,
                pointwise: str) -> dict:
    """Both paths from the same initial weights and batches for ``steps`` steps: the largest absolute
    difference per replicate (losses of every step; parameters and BN statistics at the end). Control:
    the separate training against itself started one ulp away (``_nudge_``), i.e. how far float rounding
    alone carries this network in as many steps: a stacked difference of that order is rounding."""
    models = build(spec, reps)
    stacked = Stacked([copy.deepcopy(m) for m in models], reps, cfg, batch, pointwise)
    control = Separate([_nudge_(copy.deepcopy(m)) for m in models], reps, cfg, batch)
    start = [replicate_tensors(stacked.run.model, r, len(reps)) for r in range(len(reps))]
    init_diff = max(float((start[r][n] - t).abs().max()) for r, m in enumerate(models)
                    for n, t in own_tensors(m).items())
    sep = Separate(models, reps, cfg, batch)
    loss_sep, loss_st, loss_ctl = [], [], []
    grad_rel = []
    for i in range(steps):
        loss_sep.append(sep.step())
        loss_st.append(stacked.step())
        loss_ctl.append(control.step())
        if i == 0:  # the first step's (clipped) gradients, still in .grad
            for r in range(len(reps)):
                g_st = {n: p.grad.reshape(len(reps), -1)[r] for n, p in stacked.run.model.named_parameters()}
                g_sep = {n: p.grad.reshape(-1) for n, p in sep.runs[r].model.named_parameters()}
                per = {n: float((g - g_st[n]).abs().max() / g.abs().max().clamp_min(1e-30)) for n, g in g_sep.items()}
                d = torch.cat([g - g_st[n] for n, g in g_sep.items()])
                w = max(per, key=per.get)
                grad_rel.append({"first_step_grad_rel_l2_diff": float(d.norm() / torch.cat(list(g_sep.values())).norm()),
                                 "first_step_grad_worst_tensor": w, "first_step_grad_worst_tensor_rel_diff": per[w],
                                 "first_step_grad_worst_tensor_max_abs": float(g_sep[w].abs().max())})
    out = []
    for r in range(len(reps)):
        mine = own_tensors(sep.runs[r].model)
        ls, lt, lc = [v[r] for v in loss_sep], [v[r] for v in loss_st], [v[r] for v in loss_ctl]
        row = {"replicate": r, "seed": reps[r].init, **grad_rel[r],
               **_compare(mine, replicate_tensors(stacked.run.model, r, len(reps)), start[r], ls, lt),
               "losses_separate": ls, "losses_stacked": lt,
               "control_one_ulp": _compare(mine, own_tensors(control.runs[r].model), start[r], ls, lc)}
        out.append(row)
    return {"steps": steps, "pointwise": pointwise, "initial_weights_max_abs_diff": init_diff, "replicates": out}


def speed(spec: ArchSpec, reps: list[Replicate], cfg: TrainConfig, batch: int, rounds: int, steps: int,
          pointwise: list[str]) -> dict:
    models = build(spec, reps)
    paths = {"separate": Separate([copy.deepcopy(m) for m in models], reps, cfg, batch)}
    for pw in pointwise:
        paths[f"stacked_{pw}"] = Stacked([copy.deepcopy(m) for m in models], reps, cfg, batch, pw)
    for _ in range(2):                      # warm-up (dwconv autotuning of new shapes, allocator)
        for p in paths.values():
            p.step()
    ips = {k: [] for k in paths}
    for _ in range(rounds):
        t = {k: 0.0 for k in paths}
        for _ in range(steps):
            for k, p in paths.items():
                t0 = time.perf_counter()
                p.step()
                t[k] += time.perf_counter() - t0
        for k in paths:
            ips[k].append(len(reps) * batch * steps / t[k])
    ratios = {k: [s / b for s, b in zip(ips[k], ips["separate"])] for k in paths if k != "separate"}
    return {"images_per_s": ips, "ratio_vs_separate": ratios}


def profile(spec: ArchSpec, reps: list[Replicate], cfg: TrainConfig, batch: int, pointwise: list[str],
            steps: int = 3, top: int = 10) -> None:
    """Per-op self time per step of each path (torch.profiler), printed: where the stacked step's time goes."""
    models = build(spec, reps)
    paths = {"separate": Separate([copy.deepcopy(m) for m in models], reps, cfg, batch)}
    for pw in pointwise:
        paths[f"stacked_{pw}"] = Stacked([copy.deepcopy(m) for m in models], reps, cfg, batch, pw)
    for name, p in paths.items():
        op_profile(p.step, steps, f"{spec.name} R={len(reps)} {name}", top, warmup=2)


def fake_pool(per_class: int, size: int) -> TensorSet:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat_interleave(per_class)
    return TensorSet(torch.randint(0, 256, (len(y), 3, size, size), generator=g, dtype=torch.uint8), y)


def private_autotune_cache() -> str:
    """A copy of the machine's dwconv autotune choices in a temporary cache directory ($LKSCALE_CACHE)."""
    src = os.path.join(default_cache_dir(), "dwconv_autotune.json")
    d = tempfile.mkdtemp(prefix="lkscale-stack-")
    if os.path.isfile(src):
        shutil.copyfile(src, os.path.join(d, "dwconv_autotune.json"))
    os.environ["LKSCALE_CACHE"] = d
    return d


def print_equivalence(eq: dict) -> None:
    e, c = eq["replicates"], [x["control_one_ulp"] for x in eq["replicates"]]
    worst = max(e, key=lambda x: x["param_max_abs_diff"])
    g = max(e, key=lambda x: x["first_step_grad_worst_tensor_rel_diff"])
    print(f"{'':<49} equivalence, {eq['steps']} steps, {eq['pointwise']}: first-step gradient |diff|/|grad| <= "
          f"{max(x['first_step_grad_rel_l2_diff'] for x in e):.1e} (worst tensor "
          f"{g['first_step_grad_worst_tensor']}: {g['first_step_grad_worst_tensor_rel_diff']:.1e} of its largest, "
          f"{g['first_step_grad_worst_tensor_max_abs']:.1e})"
          f"; loss diff <= "
          f"{max(x['loss_max_abs_diff'] for x in e):.2e}; param diff <= {worst['param_max_abs_diff']:.2e} "
          f"({worst['worst_tensor']}; elements > 1e-4: {max(x['share_over_1e-4'] for x in e):.1e}; |diff|/|change| "
          f"{max(x['rel_l2_diff_vs_change'] for x in e):.1e}); bit-identical: {all(x['bit_identical'] for x in e)}")
    print(f"{'':<49} control, separate vs itself one ulp away: loss diff <= "
          f"{max(x['loss_max_abs_diff'] for x in c):.2e}; param diff <= {max(x['param_max_abs_diff'] for x in c):.2e} "
          f"(elements > 1e-4: {max(x['share_over_1e-4'] for x in c):.1e}; |diff|/|change| "
          f"{max(x['rel_l2_diff_vs_change'] for x in c):.1e})")


def spread(v: list[float], d: int = 1) -> str:
    return f"{statistics.median(v):.{d}f} [{min(v):.{d}f}-{max(v):.{d}f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default="convnext:3,convnext:31,replk:3,replk:31",
                    help=f"comma list of {', '.join(NETWORKS)} (31: [31,29,27,13] clipped to 31-15-7-3)")
    ap.add_argument("--replicates", default="2,3", help="comma list of R")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2, help="steps per path per round")
    ap.add_argument("--equiv-steps", type=int, default=3)
    ap.add_argument("--pointwise", default="conv,bmm", help="stacked 1x1 convs as: conv (grouped), bmm, or both")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the study's proxy.batch_size")
    ap.add_argument("--data", choices=("study", "synthetic"), default="study",
                    help="the study's images (load_splits per replicate) or random uint8 images of that shape")
    ap.add_argument("--profile", action="store_true", help="print each path's per-op breakdown instead (no JSON)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "stack_replicates.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    study = load_study(STUDY)
    pool = fake_pool(study.data.train_per_class + 100, study.data.input_size) if a.data == "synthetic" else None
    all_reps = replicates(study, max(int(r) for r in a.replicates.split(",")), pool)  # before the cache moves
    cache = private_autotune_cache()
    cfg = dataclasses.replace(study.proxy, device="cpu", threads=1)
    batch = a.batch_size or cfg.batch_size
    pointwise = [p for p in a.pointwise.split(",") if p]
    reps_list = [int(r) for r in a.replicates.split(",")]
    grid = {(c.params["block"], c.params["kernels"]): c.spec
            for _, c in expand(study.space, study.data.input_size, True) if c.spec is not None}
    print(f"torch {torch.__version__}, 1 thread, batch {batch} per replicate, {study.data.input_size} px, "
          f"{study.data.train_per_class * 10} training images per replicate ({a.data}), "
          f"autotune cache copy in {cache}", file=sys.stderr)
    script = os.path.relpath(__file__, os.path.join(HERE, ".."))
    res = {"command": "python " + " ".join([script] + (argv or sys.argv[1:])),
           "torch": torch.__version__, "threads": 1, "batch_per_replicate": batch,
           "input_size": study.data.input_size, "rounds": a.rounds, "steps_per_round": a.steps,
           "equiv_steps": a.equiv_steps, "data": a.data, "pointwise": pointwise, "study": "studies/kernel_size.yaml",
           "proxy": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "label_smoothing": cfg.label_smoothing,
                     "clip_grad": cfg.clip_grad, "fused_optimizer": cfg.fused_optimizer},
           "method": "R-fold widened network: grouped convs, BN over R*C channels, per-replicate LayerNorm, "
                     "linears as bmm (pointwise conv: ConvNeXt MLP as grouped 1x1 convs), per-replicate clipping",
           "loadavg_start": os.getloadavg(), "networks": []}
    t_all = time.perf_counter()
    hdr = f"{'network':<46} {'R':>2} {'path':<12} {'img/s per core':>20} {'stacked/separate':>18}"
    print(hdr)
    for key in a.networks.split(","):
        block, kernels = NETWORKS[key]
        spec = grid[(block, json.dumps(kernels))]   # the study's own candidate (its space, clipping, branches)
        for reps_n in reps_list:
            reps = all_reps[:reps_n]
            if a.profile:
                profile(spec, reps, cfg, batch, pointwise)
                continue
            load0 = os.getloadavg()
            t0 = time.perf_counter()
            eqs = [equivalence(spec, reps, cfg, batch, a.equiv_steps, pw) for pw in pointwise]
            sp = speed(spec, reps, cfg, batch, a.rounds, a.steps, pointwise)
            row = {"network": key, "spec": spec.name, "kernels": [s.kernel for s in spec.stages],
                   "reparam": [[b.kernel for b in s.reparam] for s in spec.stages], "replicates": reps_n,
                   "seeds": [{"init": rp.init, "order": rp.order, "subset": rp.subset} for rp in reps],
                   "equivalence": eqs, **sp,
                   "median_images_per_s": {k: statistics.median(v) for k, v in sp["images_per_s"].items()},
                   "median_ratio": {k: statistics.median(v) for k, v in sp["ratio_vs_separate"].items()},
                   "loadavg_before": load0, "loadavg_after": os.getloadavg(), "seconds": time.perf_counter() - t0}
            res["networks"].append(row)
            for k, v in sp["images_per_s"].items():
                q = sp["ratio_vs_separate"].get(k)
                print(f"{spec.name:<46} {reps_n:>2} {k:<12} {spread(v):>20} {spread(q, 2) if q else '':>18}")
            for eq in eqs:
                print_equivalence(eq)
            print(f"{'':<49} load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)
    if a.profile:
        return 0
    res["loadavg_end"] = os.getloadavg()
    res["seconds"] = time.perf_counter() - t_all
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"{res['seconds']:.0f} s; written {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
