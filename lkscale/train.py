"""Proxy trainer: a few epochs of AdamW on in-memory tensors, reporting after every epoch.

- AdamW (no weight decay on norms, biases, layer scales), cosine learning rate with linear warm-up,
  set per step; label smoothing; gradient-norm clipping; channels_last; an explicit thread count.
- After every epoch ``callback(metrics)`` is called with ``epoch, train_loss, val_loss, val_acc,
  epoch_seconds, images_per_s, lr``; returning True (or ``STOP``) stops training (status ``stopped``),
  which is how a search prunes a weak candidate.
- A NaN/inf loss ends the run with status ``nan`` and a message; nothing raises.
- Seeded: the same seed on one thread gives the same result bit for bit.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lkscale.config import TrainConfig
from lkscale.data import Splits, TensorSet

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
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the block (Ray sets OMP_NUM_THREADS=1 in trials)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.no_grad()
def evaluate(model: nn.Module, tensorset: TensorSet, batch_size: int = 500,
             channels_last: bool = True) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and top-1 accuracy on a TensorSet; the model is left in eval mode."""
    model.eval()
    n = len(tensorset)
    if n == 0:
        return float("nan"), float("nan")
    loss_sum, correct = 0.0, 0
    for xb, yb in tensorset.batches(batch_size, channels_last=channels_last):
        out = model(xb)
        loss_sum += float(F.cross_entropy(out.float(), yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    return loss_sum / n, correct / n


def _finite(v: float) -> bool:
    return math.isfinite(v)


def train_model(model: nn.Module, splits: Splits, cfg: TrainConfig | None = None,
                callback: Callable[[dict], Any] | None = None,
                on_step: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Train ``model`` on ``splits.train``, validating on ``splits.val`` after every epoch.

    ``callback(metrics)`` runs after each epoch; a True/``STOP`` return stops training.
    ``on_step(step, total_steps, loss)`` runs after each optimiser step (progress bars).
    ``cfg.epochs`` may be fractional (the last epoch is partial).
    """
    cfg = cfg or TrainConfig()
    cfg.validate()
    with torch_threads(cfg.threads):
        return _train(model, splits, cfg, callback, on_step)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, tensorset: TensorSet, batches: int, batch_size: int,
                   channels_last: bool = True, seed: int = 0) -> bool:
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
    for i, (xb, _) in enumerate(tensorset.batches(batch_size, shuffle=True, generator=gen, drop_last=True,
                                                  channels_last=channels_last)):
        if i >= batches:
            break
        model(xb)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
    return True


def _train(model, splits, cfg, callback, on_step) -> TrainResult:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train = splits.train
    n = len(train)
    if n == 0:
        raise ValueError("the training split is empty")
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    warmup_steps = min(total_steps - 1, int(round(cfg.warmup_epochs * steps_per_epoch))) if cfg.warmup_epochs else 0
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    augment = train.augment if cfg.augment is None else cfg.augment
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    res = TrainResult(status="ok", model=model)
    t_start = time.perf_counter()
    train_seconds, images_seen, step = 0.0, 0, 0
    for epoch in range(n_epochs):
        t0 = time.perf_counter()
        model.train()
        loss_sum, loss_n = 0.0, 0
        for xb, yb in train.batches(bs, shuffle=True, augment=augment, generator=gen, drop_last=True,
                                    channels_last=cfg.channels_last):
            if step >= total_steps:
                break
            lr = lr_at(step, total_steps, warmup_steps, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            out = model(xb)
            loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing)
            lv = float(loss.detach())
            if not _finite(lv):
                res.status = "nan"
                res.message = (f"training diverged: loss is {lv} at epoch {epoch + 1}, step {step + 1} "
                               f"(lr {lr:.3g}); lower the learning rate or check the model")
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad))
                if not _finite(gn):
                    res.status = "nan"
                    res.message = (f"training diverged: gradient norm is {gn} at epoch {epoch + 1}, step {step + 1} "
                                   f"(lr {lr:.3g}); lower the learning rate or check the model")
                    break
            opt.step()
            step += 1
            loss_sum += lv * len(yb)
            loss_n += len(yb)
            if on_step is not None:
                on_step(step, total_steps, lv)
        t_train = time.perf_counter() - t0
        train_seconds += t_train
        images_seen += loss_n
        if res.status == "nan":
            break
        if cfg.bn_recalibrate_batches:
            recalibrate_bn(model, train, cfg.bn_recalibrate_batches, bs, cfg.channels_last, cfg.seed + epoch)
        val_loss, val_acc = evaluate(model, splits.val, cfg.eval_batch_size, cfg.channels_last)
        if not _finite(val_loss):
            res.status = "nan"
            res.message = f"validation loss is {val_loss} after epoch {epoch + 1}; the weights have diverged"
            break
        metrics = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, loss_n),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "epoch_seconds": time.perf_counter() - t0,
            "images_per_s": loss_n / t_train if t_train > 0 else 0.0,
            "lr": lr_at(max(0, step - 1), total_steps, warmup_steps, cfg),
            "step": step,
        }
        res.history.append(metrics)
        res.val_acc, res.val_loss, res.epochs_done = val_acc, val_loss, epoch + 1
        res.best_val_acc = max(val_acc, res.best_val_acc) if _finite(res.best_val_acc) else val_acc
        log.info("epoch %d: train_loss %.4f val_loss %.4f val_acc %.4f (%.1f s)", epoch + 1,
                 metrics["train_loss"], val_loss, val_acc, metrics["epoch_seconds"])
        if callback is not None:
            answer = callback(dict(metrics))
            if (answer is True or answer == STOP) and epoch + 1 < n_epochs:
                res.status = "stopped"
                res.message = f"stopped by the callback after epoch {epoch + 1}"
                break
    res.seconds = time.perf_counter() - t_start
    res.images_per_s = images_seen / train_seconds if train_seconds > 0 else 0.0
    if res.status == "nan":
        log.warning(res.message)
    return res


__all__ = ["TrainConfig", "TrainResult", "STOP", "train_model", "evaluate", "lr_at", "make_optimizer",
           "param_groups", "torch_threads"]
