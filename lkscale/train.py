"""Proxy trainer: a few epochs of AdamW on in-memory tensors, reporting after every epoch.

- AdamW (no weight decay on norms, biases, layer scales), cosine learning rate with linear warm-up,
  set per step; label smoothing; gradient-norm clipping; channels_last; an explicit thread count.
- After every epoch ``callback(metrics)`` is called with ``epoch, train_loss, val_loss, val_acc,
  epoch_seconds, images_per_s, lr, step, device, precision`` and the cumulative seconds per phase
  (``seconds_train``, ``seconds_bn``, ``seconds_eval``); returning True (or ``STOP``) stops training (status
  ``stopped``), which is how a search prunes a weak candidate. ``cfg.val_every_epoch`` False: BN is
  recalibrated and the model validated (and the callback called) after the last epoch only, for runs
  that no decision reads before the end (a scaling study).
- ``on_epoch_end(epoch, seconds)`` is called after every epoch, validated or not (before ``callback``), with
  the epoch's wall seconds: progress that does not wait for a validation (the search's heartbeat).
- Validation in inference form (``evaluate``: a re-parameterised copy under ``torch.inference_mode``).
- A NaN/inf loss ends the run with status ``nan`` and a message; nothing raises.
- Seeded: the same seed on one thread gives the same result bit for bit.
- Devices: ``cfg.device`` (``auto``: the GPU Ray assigned to the trial, else the CPU; see
  :func:`lkscale.devices.resolve_device`; the device and precision helpers live in ``lkscale.devices``,
  re-exported here). The model and the decoded uint8 images move to the device once; batches are
  gathered, augmented and normalised there. ``cfg.precision`` bf16/fp16 trains under autocast (fp16
  with a gradient scaler, CUDA only). The trained model is handed back on the CPU.
- ``cfg.fused_optimizer`` (default on): fused AdamW and foreach gradient clipping; off, the
  per-parameter loops of before (measured on CPU: ``benchmarks/train_step.py``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from lkscale.config import TrainConfig
from lkscale.data import Splits, TensorSet
from lkscale.devices import (autocast, check_precision, model_device, pick_device, resolve_device, to_device,
                             torch_threads)
from lkscale.reparam import reparameterize

log = logging.getLogger(__name__)

STOP = "stop"  # a callback may return this (or True) to end training after the current epoch


@dataclass
class TrainResult:
    status: str                      # 'ok' | 'nan' | 'stopped'
    history: list[dict] = field(default_factory=list)
    val_acc: float = float("nan")    # after the last completed epoch
    val_loss: float = float("nan")
    best_val_acc: float = float("nan")
    epochs_done: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0        # training images per second over the whole run
    message: str = ""
    device: str = "cpu"              # where it trained (cpu, cuda:0, ...)
    precision: str = "fp32"          # fp32 | bf16 | fp16
    phase_seconds: dict = field(default_factory=lambda: {"train": 0.0, "bn": 0.0, "eval": 0.0})
    model: nn.Module | None = None

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("model")
        return d


def lr_at(step: int, total_steps: int, warmup_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up, then cosine decay."""
    if warmup_steps > 0 and step < warmup_steps:
        frac = (step + 1) / warmup_steps
        return cfg.lr * (cfg.warmup_start + (1.0 - cfg.warmup_start) * frac)
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * t))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights of convs/linears only (not norms, biases, layer scales)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; fused (one kernel over all parameters, CPU and CUDA) when ``cfg.fused_optimizer``."""
    kw = {"fused": True} if cfg.fused_optimizer else {"foreach": False}
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, **kw)


def evaluate(model: nn.Module, tensorset: TensorSet, batch_size: int = 500,
             channels_last: bool = True, precision: str = "fp32", deploy: bool = True) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and top-1 accuracy on a TensorSet, on the model's device;
    the model is left in eval mode.

    Inference form: ``torch.inference_mode`` and, with ``deploy``, a re-parameterised copy
    (``lkscale.reparameterize``: BN folded into its conv, parallel branches into one kernel) that is
    equal to the eval-mode model within float rounding and 1.2-2x faster on CPU (measured in
    ``benchmarks/study_rate.py``); the model itself is not changed."""
    model.eval()
    n = len(tensorset)
    if n == 0:
        return float("nan"), float("nan")
    dev = model_device(model)
    if deploy:
        with torch.no_grad():
            model = reparameterize(model)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    with torch.inference_mode():
        for xb, yb in tensorset.batches(batch_size, channels_last=channels_last):
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            with autocast(precision, dev):
                out = model(xb)
            loss_sum += F.cross_entropy(out.float(), yb, reduction="sum")
            correct += (out.argmax(1) == yb).sum()
    return float(loss_sum) / n, int(correct) / n


def _finite(v: float) -> bool:
    return math.isfinite(v)


def train_model(model: nn.Module, splits: Splits, cfg: TrainConfig | None = None,
                callback: Callable[[dict], Any] | None = None,
                on_step: Callable[[int, int, float], None] | None = None,
                on_epoch_end: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``model`` on ``splits.train``, validating on ``splits.val`` after every epoch.

    ``callback(metrics)`` runs after each validated epoch; a True/``STOP`` return stops training.
    ``on_step(step, total_steps, loss)`` runs after each optimiser step (progress bars).
    ``on_epoch_end(epoch, seconds)`` runs after every epoch trained, validated or not (1-based epoch, the
    epoch's wall seconds with its validation if any), before ``callback``; not after a diverged epoch.
    ``cfg.epochs`` may be fractional (the last epoch is partial).
    """
    cfg = cfg or TrainConfig()
    cfg.validate()
    with torch_threads(cfg.threads):
        return _train(model, splits, cfg, callback, on_step, on_epoch_end)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, tensorset: TensorSet, batches: int, batch_size: int,
                   channels_last: bool = True, seed: int = 0, precision: str = "fp32") -> bool:
    """Recompute BatchNorm running statistics with the current weights (a cumulative average over
    ``batches`` training batches, no augmentation). A short proxy run moves the features faster than
    BN's exponential running average (momentum 0.1) follows, so eval-mode outputs lag the trained
    network, badly for BN-heavy blocks like RepLK's; recomputed statistics rank candidates by what they
    learned. Returns False when the model has no BatchNorm.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the recalibration batches
    was_training = model.training
    model.train()
    gen = torch.Generator().manual_seed(seed)
    dev = model_device(model)
    for i, (xb, _) in enumerate(tensorset.batches(batch_size, shuffle=True, generator=gen, drop_last=True,
                                                  channels_last=channels_last)):
        if i >= batches:
            break
        with autocast(precision, dev):
            model(xb.to(dev, non_blocking=True))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
    return True


@dataclass
class _Run:
    """What one training run carries between epochs."""
    cfg: TrainConfig
    device: torch.device
    model: nn.Module
    opt: torch.optim.Optimizer
    scaler: Any                      # torch.amp.GradScaler for fp16, else None
    gen: torch.Generator
    total_steps: int
    warmup_steps: int
    step: int = 0


def _prepare(model: nn.Module, splits: Splits, cfg: TrainConfig) -> tuple[_Run, Splits, int, int]:
    """Device, model and data placement, optimiser; returns (run, splits on the device, batch, epochs)."""
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    n = len(splits.train)
    if n == 0:
        raise ValueError("the training split is empty")
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    warmup_steps = min(total_steps - 1, int(round(cfg.warmup_epochs * steps_per_epoch))) if cfg.warmup_epochs else 0
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type != "cpu":  # decoded uint8 images live on the device; batches are made there
        splits = dataclasses.replace(splits, train=to_device(splits.train, device), val=to_device(splits.val, device))
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    run = _Run(cfg, device, model, make_optimizer(model, cfg), scaler, torch.Generator().manual_seed(cfg.seed),
               total_steps, warmup_steps)
    return run, splits, bs, math.ceil(total_steps / steps_per_epoch)


def _optimizer_step(run: _Run, loss: torch.Tensor) -> float | None:
    """Backward, clipping and the AdamW step; returns a non-finite gradient norm (divergence), else None.

    With fp16 an overflowing step is the scaler's business (it skips the step and lowers the scale)."""
    cfg, opt = run.cfg, run.opt
    opt.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(opt)
    else:
        loss.backward()
    if cfg.clip_grad:
        gn = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad,
                                            foreach=True if cfg.fused_optimizer else None)
        if run.scaler is None and not _finite(float(gn)):
            return float(gn)
    if run.scaler is not None:
        run.scaler.step(opt)
        run.scaler.update()
    else:
        opt.step()
    return None


def train_step(run: _Run, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, float | None]:
    """One optimiser step of ``train_model`` on a batch already on the device: forward under autocast,
    label-smoothed cross-entropy, then (when the loss is finite) backward, clipping and AdamW (no learning-rate
    change). Returns (loss, the gradient norm when it is not finite, else None). The benchmarks time this."""
    with autocast(run.cfg.precision, run.device):
        out = run.model(xb)
    loss = F.cross_entropy(out.float(), yb, label_smoothing=run.cfg.label_smoothing)
    lv = float(loss.detach())
    return lv, (_optimizer_step(run, loss) if _finite(lv) else None)


def step_state(model: nn.Module, cfg: TrainConfig) -> _Run:
    """What :func:`train_step` steps with, as ``train_model`` sets it up (device, channels_last, AdamW, the fp16
    grad scaler, the seeded batch generator), for a caller that feeds its own batches (the benchmarks)."""
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    return _Run(cfg, device, model, make_optimizer(model, cfg), scaler, torch.Generator().manual_seed(cfg.seed), 1, 0)


def _train_epoch(run: _Run, train: TensorSet, bs: int, augment: bool, epoch: int, res: TrainResult,
                 on_step) -> tuple[float, int]:
    """One epoch of optimiser steps; returns (loss sum, images). Sets res.status to 'nan' on divergence."""
    cfg, model = run.cfg, run.model
    model.train()
    loss_sum, loss_n = 0.0, 0
    for xb, yb in train.batches(bs, shuffle=True, augment=augment, generator=run.gen, drop_last=True,
                                channels_last=cfg.channels_last):
        if run.step >= run.total_steps:
            break
        lr = lr_at(run.step, run.total_steps, run.warmup_steps, cfg)
        for g in run.opt.param_groups:
            g["lr"] = lr
        xb, yb = xb.to(run.device, non_blocking=True), yb.to(run.device, non_blocking=True)
        lv, gn = train_step(run, xb, yb)
        where = f"at epoch {epoch + 1}, step {run.step + 1} (lr {lr:.3g}); lower the learning rate or check the model"
        if not _finite(lv):
            res.status, res.message = "nan", f"training diverged: loss is {lv} {where}"
            break
        if gn is not None:
            res.status, res.message = "nan", f"training diverged: gradient norm is {gn} {where}"
            break
        run.step += 1
        loss_sum += lv * len(yb)
        loss_n += len(yb)
        if on_step is not None:
            on_step(run.step, run.total_steps, lv)
    return loss_sum, loss_n


def _train(model, splits, cfg, callback, on_step, on_epoch_end=None) -> TrainResult:
    run, splits, bs, n_epochs = _prepare(model, splits, cfg)
    train = splits.train
    augment = train.augment if cfg.augment is None else cfg.augment
    res = TrainResult(status="ok", model=model, device=str(run.device), precision=cfg.precision)
    t_start = time.perf_counter()
    train_seconds, images_seen = 0.0, 0
    phase = res.phase_seconds
    t_span = time.perf_counter()  # start of the epochs since the last validation
    for epoch in range(n_epochs):
        t0 = time.perf_counter()
        loss_sum, loss_n = _train_epoch(run, train, bs, augment, epoch, res, on_step)
        t_train = time.perf_counter() - t0
        train_seconds += t_train
        phase["train"] += t_train
        images_seen += loss_n
        if res.status == "nan":
            break
        if not cfg.val_every_epoch and epoch + 1 < n_epochs:
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, time.perf_counter() - t0)
            continue  # no decision needs this epoch's accuracy
        t1 = time.perf_counter()
        if cfg.bn_recalibrate_batches:
            recalibrate_bn(run.model, train, cfg.bn_recalibrate_batches, bs, cfg.channels_last, cfg.seed + epoch,
                           cfg.precision)
        t2 = time.perf_counter()
        val_loss, val_acc = evaluate(run.model, splits.val, cfg.eval_batch_size, cfg.channels_last, cfg.precision)
        phase["bn"] += t2 - t1
        phase["eval"] += time.perf_counter() - t2
        if not _finite(val_loss):
            res.status = "nan"
            res.message = f"validation loss is {val_loss} after epoch {epoch + 1}; the weights have diverged"
            break
        metrics = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, loss_n),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "epoch_seconds": time.perf_counter() - t_span,  # the epochs since the last validation, with it
            "images_per_s": loss_n / t_train if t_train > 0 else 0.0,
            "lr": lr_at(max(0, run.step - 1), run.total_steps, run.warmup_steps, cfg),
            "step": run.step,
            "device": str(run.device),
            "precision": cfg.precision,
            **{f"seconds_{k}": v for k, v in phase.items()},  # cumulative per phase: train steps, BN, eval
        }
        res.history.append(metrics)
        res.val_acc, res.val_loss, res.epochs_done = val_acc, val_loss, epoch + 1
        res.best_val_acc = max(val_acc, res.best_val_acc) if _finite(res.best_val_acc) else val_acc
        log.info("epoch %d: train_loss %.4f val_loss %.4f val_acc %.4f (%.1f s)", epoch + 1,
                 metrics["train_loss"], val_loss, val_acc, metrics["epoch_seconds"])
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, time.perf_counter() - t0)
        if callback is not None:
            answer = callback(dict(metrics))
            if (answer is True or answer == STOP) and epoch + 1 < n_epochs:
                res.status = "stopped"
                res.message = f"stopped by the callback after epoch {epoch + 1}"
                break
        t_span = time.perf_counter()
    res.seconds = time.perf_counter() - t_start
    res.images_per_s = images_seen / train_seconds if train_seconds > 0 else 0.0
    if run.device.type != "cpu":
        run.model.to("cpu")  # in place: callers save, export and evaluate the model on the CPU
    if res.status == "nan":
        log.warning(res.message)
    return res


__all__ = ["TrainConfig", "TrainResult", "STOP", "train_model", "evaluate", "lr_at", "make_optimizer",
           "param_groups", "torch_threads", "resolve_device", "pick_device", "to_device", "autocast",
           "check_precision", "recalibrate_bn", "train_step", "step_state"]
