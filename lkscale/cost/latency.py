"""Latency with its error: interleaved rounds over candidates, median, interval and spread per candidate.

The protocol (``measure_interleaved``)
--------------------------------------
1. One ``Runner`` per candidate (``runtimes.make_runner``: onnxruntime by default), each warmed up.
2. ``cfg.rounds`` rounds; every round visits all candidates in a fresh random order and times a block
   of ``cfg.repeats`` consecutive calls per candidate. Load that comes and goes hits every candidate
   alike instead of whichever was timed at that moment. A round's value is the fastest call of its
   block (``cfg.block_stat='min'``; 'median' is the alternative): being preempted by other processes
   only ever adds time, so the fastest of a block is the call that ran undisturbed. Measured here
   (8 kernel_size networks, onnxruntime, two runs in fresh processes, load average ~6.7 on 2 CPUs,
   15 rounds): median of block minima: Spearman 1.000 between runs, median difference 0.3%; median
   of block medians: 0.929 and 1.6% (7 rounds: 1.000/0.2% vs 0.881/1.9%).
3. Per candidate: the median of the round values (``median_ms``), a distribution-free interval for
   that median from order statistics of the round values (``median_ci``, 95% where the number of
   rounds allows it, else min..max) and the robust coefficient of variation of the round values
   (``robust_cv``: 1.4826 * MAD / median; one disturbed round does not inflate it).
4. A candidate whose ``cv > cfg.max_cv`` gets extra rounds (with the other such candidates, interleaved
   as above), up to ``cfg.max_extra_rounds``; still too wide, it is returned with ``noisy=True``:
   flagged for the caller, never silently used.

What an interval covers: the noise *within one measurement run* (the rounds of that run). Two runs of the
same network differ by more (the machine's state, other load, the process): measured as a relative sd of
19% per run on this 2-core machine under load (``benchmarks/latency_between_runs.py``: 8 specs, two fresh
``lkscale cost`` processes each, one core kept busy; 3 of 8 pairs of intervals disjoint). Each measured
result records ``between_run_cv`` (``LatencyConfig.between_run_cv``): add ``between_run_cv * median`` in
quadrature per run before comparing figures from different runs (``lkscale.racing`` does).
:func:`across_runs_interval` widens one interval that way.

The clock is injectable (``timer(name, runner, n) -> seconds per call``) so that the protocol is
tested without depending on wall-clock speed. ``quiet.py`` tells the caller when the machine is quiet.

``measure_latency`` / ``measure_train_step`` are the older single-model measurements (eager torch,
one run of repeats), kept for callers and as the baseline of ``benchmarks/latency_stability.py``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from scipy import special
from torch import nn

from lkscale.config import LatencyConfig
from lkscale.cost.runtimes import Runner, make_runner, threads

WARMUP_CALLS = 5
CONFIDENCE = 0.95

Timer = Callable[[str, Runner, int], list]


@dataclass(frozen=True)
class LatencyResult:
    runtime: str  # what ran: onnxruntime | torch | compile | cuda
    batch_size: int
    threads: int
    input_size: int
    median_ms: float  # median over rounds of each round's value (its fastest call, or median: block_stat)
    ci_low_ms: float  # interval for the median (order statistics over rounds; see ``ci_level``)
    ci_high_ms: float
    cv: float  # robust coefficient of variation of the round values (1.4826 MAD / median)
    rounds: int
    noisy: bool  # spread still above max_cv after the extra rounds: do not trust this number
    throughput_ips: float  # images per second at this batch size (batch_size / median)
    source: str = "measured"  # measured | predicted
    error_pct: float | None = None  # predicted: the predictor's held-out mean absolute percentage error
    ci_level: float | None = None  # coverage of [ci_low, ci_high] (within this run: see the module doc)
    note: str = ""  # exporter/runtime version, a fallback, the table used
    between_run_cv: float | None = None  # measured: relative sd another measurement run adds (not in the interval)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "LatencyResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self) -> str:
        """One line: value, interval, spread and what was measured."""
        flag = "  NOISY (spread above max_cv)" if self.noisy else ""
        what = "predicted" if self.source == "predicted" else f"{self.rounds} interleaved rounds"
        err = f", predictor MAPE {self.error_pct:.1f}%" if self.error_pct is not None else ""
        scope = " within-run" if self.source == "measured" else ""
        return (f"{self.median_ms:.3f} ms [{self.ci_low_ms:.3f}-{self.ci_high_ms:.3f}{scope}] cv {100 * self.cv:.1f}% "
                f"({self.runtime}, batch {self.batch_size}, {self.threads} thread(s), {self.input_size} px, "
                f"{what}{err}; {self.throughput_ips:.0f} img/s){flag}")


# ------------------------------------------------------------------------------------------ statistics
def median_ci(values, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Distribution-free interval for the median: (low, high, coverage) from order statistics.

    The k-th smallest and k-th largest of n values bracket the median with probability
    1 - 2 P(Binomial(n, 1/2) <= k - 1); k is the largest rank with coverage >= ``confidence``. With too
    few values for that (n < 6 at 95%) it is (min, max) with its coverage 1 - 2^(1-n).
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        raise ValueError("no values")
    cdf = np.cumsum([math.comb(n, i) for i in range(n + 1)]) / 2.0 ** n  # P(B <= i)
    k = 1
    for cand in range(1, n // 2 + 1):
        if 1 - 2 * cdf[cand - 1] >= confidence:
            k = cand
    coverage = 1 - 2 * cdf[k - 1] if n > 1 else 0.0
    return float(x[k - 1]), float(x[n - k]), float(coverage)


def robust_cv(values) -> float:
    """1.4826 * median absolute deviation / median (a normal's sd / mean; 0 for one value)."""
    x = np.asarray(values, dtype=float)
    med = float(np.median(x))
    if med <= 0:
        return math.inf
    return float(1.4826 * np.median(np.abs(x - med)) / med)


def summarize(round_values_s, runtime: str, batch_size: int, n_threads: int, input_size: int, noisy: bool,
              note: str = "") -> LatencyResult:
    ms = np.asarray(round_values_s, dtype=float) * 1e3
    med = float(np.median(ms))
    lo, hi, level = median_ci(ms)
    return LatencyResult(runtime=runtime, batch_size=batch_size, threads=n_threads, input_size=input_size,
                         median_ms=med, ci_low_ms=lo, ci_high_ms=hi, cv=robust_cv(ms), rounds=int(ms.size),
                         noisy=noisy, throughput_ips=batch_size / (med / 1e3) if med > 0 else math.inf,
                         ci_level=level, note=note)


def across_runs_interval(median_ms: float, low_ms: float, high_ms: float, between_run_cv: float,
                         confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A within-run interval widened for comparison with another run's figures: its half widths plus the
    run-to-run sd (``between_run_cv * median``) combined in quadrature, at ``confidence`` (normal quantile)."""
    z = float(special.ndtri(0.5 + confidence / 2))
    extra = z * between_run_cv * median_ms
    lo, hi = median_ms - low_ms, high_ms - median_ms
    return median_ms - math.hypot(lo, extra), median_ms + math.hypot(hi, extra)


# ------------------------------------------------------------------------------------------- protocol
def wall_timer(name: str, runner: Runner, n: int) -> list:
    """The real clock: ``runner.time_calls(n)`` (perf_counter, or CUDA events on a GPU)."""
    return runner.time_calls(n)


BLOCK_STATS = {"min": np.min, "median": np.median}


def _round(names: list, runners: Mapping[str, Runner], values: dict, repeats: int, timer: Timer,
           rng: random.Random, stat: Callable = np.min) -> None:
    order = list(names)
    rng.shuffle(order)
    for name in order:
        values[name].append(float(stat(timer(name, runners[name], repeats))))


def run_protocol(runners: Mapping[str, Runner], cfg: LatencyConfig, timer: Timer = wall_timer,
                 seed: int = 0, progress: Callable[[str], None] | None = None) -> tuple[dict, set]:
    """Warm-up, ``cfg.rounds`` interleaved rounds, extra rounds for wide ones: ({name: [round s]}, noisy)."""
    if cfg.rounds < 1 or cfg.repeats < 1 or cfg.max_extra_rounds < 0:
        raise ValueError("rounds and repeats must be >= 1 and max_extra_rounds >= 0")
    stat_name = getattr(cfg, "block_stat", "min")
    if stat_name not in BLOCK_STATS:
        raise ValueError(f"block_stat {stat_name!r}: one of {', '.join(BLOCK_STATS)}")
    stat = BLOCK_STATS[stat_name]
    rng = random.Random(seed)
    names = list(runners)
    for name in names:
        timer(name, runners[name], WARMUP_CALLS)
    values: dict[str, list] = {n: [] for n in names}
    for r in range(cfg.rounds):
        _round(names, runners, values, cfg.repeats, timer, rng, stat)
        if progress:
            progress(f"round {r + 1}/{cfg.rounds} over {len(names)} candidate(s)")
    wide = [n for n in names if robust_cv(values[n]) > cfg.max_cv]
    for extra in range(cfg.max_extra_rounds):
        if not wide:
            break
        if progress:
            progress(f"extra round {extra + 1}/{cfg.max_extra_rounds} for {len(wide)} wide candidate(s)")
        _round(wide, runners, values, cfg.repeats, timer, rng, stat)
        wide = [n for n in wide if robust_cv(values[n]) > cfg.max_cv]
    return values, set(wide)


def measure_interleaved(models: Mapping[str, nn.Module], cfg: LatencyConfig, in_chans: int = 3,
                        timer: Timer = wall_timer, input_size: int | None = None, seed: int = 0,
                        progress: Callable[[str], None] | None = None) -> dict[str, LatencyResult]:
    """Measure every model (as given: pass deploy forms) side by side; see the module docstring.

    ``input_size`` overrides ``cfg.input_size`` (one of them must be set).
    """
    size = input_size or cfg.input_size
    if not size:
        raise ValueError("no input size: set LatencyConfig.input_size or pass input_size")
    with threads(cfg.threads):
        runners = {name: make_runner(m, cfg.runtime, cfg.batch_size, size, cfg.threads, in_chans)
                   for name, m in models.items()}
        values, noisy = run_protocol(runners, cfg, timer, seed, progress)
    return {name: dataclasses.replace(summarize(values[name], runners[name].runtime, cfg.batch_size, cfg.threads,
                                                size, name in noisy, runners[name].note),
                                      between_run_cv=cfg.between_run_cv) for name in models}


# ------------------------------------------------------------------------- single-model (older) timing
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
    """Eager forward latency of one model, one run of repeats (ms): median, p25, p75, min, mean, n.

    The older single measurement (no interleaving, no spread check); ``measure_interleaved`` is the
    protocol to use. With ``deploy`` a model that is not yet deployed is re-parameterised (a copy).
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
