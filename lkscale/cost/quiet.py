"""Is the machine quiet enough to measure latency? A fixed reference workload against its own best time.

``quiet_check()`` times a small fixed workload (1 thread: a 192x192 matmul chain, about a millisecond)
and compares it with the fastest time this process has seen for it (its calibration; the first call
calibrates with several tries), and reads the 1-minute load average per CPU from ``/proc/loadavg``.
The machine counts as quiet when the reference is within ``max_ratio`` of its best and (if
``max_load`` is given) the load per CPU is at most that. ``wait_for_quiet`` polls until it is, or
until a deadline, and returns the last status either way: the caller decides (measure, or flag).

The search driver should measure latency only when none of its own training runs on the node
(before or between training waves); this check catches everyone else's load.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

from lkscale.cost.runtimes import threads

_BEST: dict[str, float] = {}  # reference workload -> fastest time seen in this process (ms)


@dataclass(frozen=True)
class QuietStatus:
    quiet: bool
    reference_ms: float  # the reference workload now (best of a few)
    baseline_ms: float  # the fastest it has run in this process
    ratio: float  # reference_ms / baseline_ms
    load_per_cpu: float | None  # 1-minute load average / CPUs (None where /proc/loadavg is missing)
    reason: str  # why not quiet ('' when quiet)


def read_load_per_cpu(path: str = "/proc/loadavg") -> float | None:
    try:
        with open(path) as f:
            return float(f.read().split()[0]) / (os.cpu_count() or 1)
    except (OSError, ValueError, IndexError):
        return None


def reference_ms(tries: int = 5) -> float:
    """Best of ``tries`` runs of a fixed single-thread workload, in ms."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(192, 192, generator=g)
    best = float("inf")
    with threads(1):
        for _ in range(tries):
            t0 = time.perf_counter()
            b = a
            for _ in range(8):
                b = torch.tanh(b @ a)
            best = min(best, time.perf_counter() - t0)
    return best * 1e3


def quiet_check(max_ratio: float = 1.3, max_load: float | None = None,
                reference: Callable[[], float] = reference_ms,
                load: Callable[[], float | None] = read_load_per_cpu, key: str = "default") -> QuietStatus:
    """Compare the reference workload with the best seen so far (and the load average with ``max_load``)."""
    if key not in _BEST:
        _BEST[key] = min(reference() for _ in range(3))
    now = reference()
    _BEST[key] = min(_BEST[key], now)
    base = _BEST[key]
    ratio = now / base if base > 0 else 1.0
    lpc = load()
    reasons = []
    if ratio > max_ratio:
        reasons.append(f"reference workload {ratio:.2f}x its best (> {max_ratio:g}x)")
    if max_load is not None and lpc is not None and lpc > max_load:
        reasons.append(f"load {lpc:.2f} per CPU (> {max_load:g})")
    return QuietStatus(not reasons, now, base, ratio, lpc, "; ".join(reasons))


def wait_for_quiet(timeout_s: float = 60.0, poll_s: float = 5.0, check: Callable[[], QuietStatus] = quiet_check,
                   sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                   progress: Callable[[str], None] | None = None) -> QuietStatus:
    """Poll ``check`` until the machine is quiet or ``timeout_s`` has passed; the last status either way."""
    deadline = clock() + timeout_s
    status = check()
    while not status.quiet and clock() < deadline:
        if progress:
            progress(f"waiting for a quiet machine: {status.reason}")
        sleep(poll_s)
        status = check()
    return status


def reset_calibration() -> None:
    """Forget the best reference times (e.g. after moving to another node)."""
    _BEST.clear()


__all__ = ["QuietStatus", "quiet_check", "wait_for_quiet", "read_load_per_cpu", "reference_ms", "reset_calibration"]
