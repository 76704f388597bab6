"""The data layer's one error type and the check of a DataConfig built in code."""
from __future__ import annotations

from lkscale.config import DATASETS, DataConfig


class DataError(Exception):
    """A dataset that cannot be used as asked; the message names the path or option and the problem."""


def validate_config(cfg: DataConfig) -> None:
    """Check a DataConfig built in code (study files are validated by lkscale.config already)."""
    if cfg.dataset not in DATASETS:
        raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    for name in ("train_per_class", "test_per_class"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise DataError(f"data.{name}: expected a non-negative integer or null, got {v!r}")
    if not isinstance(cfg.val_per_class, int) or isinstance(cfg.val_per_class, bool) or cfg.val_per_class < 1:
        raise DataError(f"data.val_per_class: expected an integer >= 1, got {cfg.val_per_class!r}")
    if cfg.train_per_class == 0:
        raise DataError("data.train_per_class: must be at least 1 (or null for all)")
    if cfg.input_size is not None and (not isinstance(cfg.input_size, int) or cfg.input_size < 8):
        raise DataError(f"data.input_size: expected an integer >= 8 or null, got {cfg.input_size!r}")
