"""The Tune trainable of one high-fidelity retrain: the search's own trainable, one candidate per grid point.

``config["candidate"]`` (a ``tune.grid_search`` over the sample) holds the candidate's ``name``, ``spec``,
``number`` and ``latency_ms``; they are lifted to the top level the search's trainable reads. Its
``run_dir`` is ``<run>/fidelity``, so the retrained weights never replace the proxy's.
"""
from __future__ import annotations

from typing import Callable


def lift(config: dict) -> dict:
    """The flat config of the search's trainable: the candidate's keys at the top, replicate 0."""
    flat = {k: v for k, v in config.items() if k not in ("candidate", "inner")}
    return {**flat, **config["candidate"], "replicate": 0}


def retrain(config: dict, data_stage: dict | None = None, inner: Callable | None = None) -> None:
    """Train one sampled candidate at the high fidelity (``inner``: the trainable; the search's by default)."""
    if inner is None:
        from lkscale.search.trainable import train_candidate as inner  # imports torch; only inside a worker
    if data_stage is not None:
        inner(lift(config), data_stage=data_stage)
    else:
        inner(lift(config))
