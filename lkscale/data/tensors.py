"""In-memory datasets: uint8 image tensors, labels, normalisation, batch augmentation, channel statistics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class TensorSet:
    """Images as uint8 (N, C, H, W) and int64 labels, plus the normalisation to apply."""

    x: torch.Tensor
    y: torch.Tensor
    mean: torch.Tensor = field(default_factory=lambda: torch.zeros(3))
    std: torch.Tensor = field(default_factory=lambda: torch.ones(3))
    augment: bool = False  # whether training on this set should augment (set from DataConfig.augment)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        xb = xb.float().div_(255.0)
        c = xb.shape[1]
        return xb.sub_(self.mean.view(1, c, 1, 1)).div_(self.std.view(1, c, 1, 1))

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` float batches (normalised; augmented if asked) by indexing the tensors."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            xb = self.x[idx]
            if augment:
                xb = random_crop_flip(xb, padding=4, generator=generator)
            xb = self.normalise(xb)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx]


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop (zero padding ``padding``) and horizontal flip of a (B, C, H, W) batch.

    One gather for the whole batch: row indices ``oy + i`` and column indices ``ox + j`` (reversed for
    flipped images) into the padded batch.
    """
    b, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = oy[:, None] + torch.arange(h)[None, :]                      # (B, H)
    j = torch.arange(w)[None, :].expand(b, w)
    cols = ox[:, None] + torch.where(flip[:, None], w - 1 - j, j)        # (B, W)
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass
class Splits:
    train: TensorSet
    val: TensorSet
    test: TensorSet | None
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    in_chans: int
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> int:
        return int(self.train.x.shape[-1])


def to_tensor(x: np.ndarray, input_size: int | None) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    if input_size and tuple(t.shape[-2:]) != (input_size, input_size):
        chunks = []
        for i in range(0, len(t), 2048):
            f = F.interpolate(t[i:i + 2048].float(), size=(input_size, input_size), mode="bilinear",
                              align_corners=False, antialias=input_size < t.shape[-1])
            chunks.append(f.round_().clamp_(0, 255).to(torch.uint8))
        t = torch.cat(chunks) if chunks else t.new_zeros((0, t.shape[1], input_size, input_size))
    return t


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (in [0, 1] units) of a uint8 (N, C, H, W) tensor, from exact histograms."""
    c = x.shape[1]
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    mean = torch.zeros(c, dtype=torch.float64)
    std = torch.zeros(c, dtype=torch.float64)
    for ch in range(c):
        hist = torch.bincount(x[:, ch].reshape(-1).long(), minlength=256).to(torch.float64)
        n = hist.sum().clamp_min(1)
        m = (hist * levels).sum() / n
        mean[ch] = m
        std[ch] = ((hist * (levels - m).square()).sum() / n).sqrt()
    return mean.float(), std.clamp_min(1e-3).float()
