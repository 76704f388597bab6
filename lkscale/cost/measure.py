"""Latency of architectures (not modules): what the search driver calls.

- ``measure_specs(specs, cfg)``: the deploy forms of several specs measured side by side with the
  interleaved protocol (re-measure a front together before the report with this).
- ``latency_of(specs, cfg)``: measured or predicted, as ``cfg.source`` says (``cfg.table`` names the
  calibration table for ``predicted``); every result says which in ``source``.
"""
from __future__ import annotations

from typing import Callable, Sequence

from lkscale.config import LatencyConfig
from lkscale.cost.latency import LatencyResult, measure_interleaved
from lkscale.cost.predictor import LatencyTable, predict
from lkscale.model import build_model
from lkscale.reparam import reparameterize
from lkscale.spec import ArchSpec

_TABLES: dict[str, LatencyTable] = {}


def measure_specs(specs: Sequence[ArchSpec], cfg: LatencyConfig, input_size: int | None = None,
                  num_classes: int = 10, in_chans: int = 3,
                  progress: Callable[[str], None] | None = None) -> dict[str, LatencyResult]:
    """{spec name: LatencyResult} for the deploy forms of ``specs``, measured side by side.

    Specs that share a deploy form (re-param variants) are timed once and share the result.
    """
    deploy = {s.name: s.without_reparam().name for s in specs}
    models = {}
    for s in specs:
        if deploy[s.name] not in models:
            build = getattr(s, "build", None)  # a study's baseline (lkscale.baselines) builds itself
            net = build(num_classes=num_classes, in_chans=in_chans, input_size=input_size or cfg.input_size) \
                if build else build_model(s, num_classes=num_classes, in_chans=in_chans)
            models[deploy[s.name]] = reparameterize(net)
    res = measure_interleaved(models, cfg, in_chans=in_chans, input_size=input_size, progress=progress)
    return {s.name: res[deploy[s.name]] for s in specs}


def load_table(path: str) -> LatencyTable:
    """A calibration table, read once per process."""
    if path not in _TABLES:
        _TABLES[path] = LatencyTable.load(path)
    return _TABLES[path]


def latency_of(specs: Sequence[ArchSpec], cfg: LatencyConfig, input_size: int | None = None, num_classes: int = 10,
               in_chans: int = 3, progress: Callable[[str], None] | None = None) -> dict[str, LatencyResult]:
    """Measured (side by side) or predicted (from ``cfg.table``) latency of ``specs``, as ``cfg.source`` says."""
    if cfg.source == "measured":
        return measure_specs(specs, cfg, input_size, num_classes, in_chans, progress)
    if cfg.source != "predicted":
        raise ValueError(f"latency source {cfg.source!r}: measured or predicted")
    if not cfg.table:
        raise ValueError("latency source 'predicted' needs a calibration table (budgets.latency.table); "
                         "write one with `lkscale latency --study S --calibrate OUT.json` on the target device")
    table = load_table(cfg.table)
    size = input_size or cfg.input_size
    if size and size != table.input_size:
        raise ValueError(f"table {cfg.table} was calibrated at {table.input_size} px, not {size}")
    if (cfg.runtime, cfg.batch_size, cfg.threads) != (table.runtime, table.batch_size, table.threads):
        raise ValueError(f"table {cfg.table} is for {table.runtime}, batch {table.batch_size}, {table.threads} "
                         f"thread(s); the study asks for {cfg.runtime}, batch {cfg.batch_size}, {cfg.threads}")
    return {s.name: predict(s.without_reparam(), table) for s in specs}


__all__ = ["measure_specs", "latency_of", "load_table"]
