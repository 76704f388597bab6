"""``estimate(spec)``: one network's ``CostReport`` (params, MACs, effective kernels, latency with its spread)."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lkscale.config import LatencyConfig
from lkscale.cost.flops import FLOPS_UNIT, _count, count_params
from lkscale.cost.kernels import effective_kernels, padding_macs
from lkscale.cost.latency import measure_train_step, run_protocol, summarize
from lkscale.cost.runtimes import make_runner, threads as torch_threads
from lkscale.model import build_model
from lkscale.reparam import reparameterize
from lkscale.spec import ArchSpec

log = logging.getLogger(__name__)


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
    latency_ms: float | None = None  # median over interleaved rounds of the deploy form's latency, or None
    latency_p25_ms: float | None = None  # quartiles and minimum of the round values
    latency_p75_ms: float | None = None
    latency_min_ms: float | None = None
    train_step_ms: float | None = None  # median train-form step (fwd + bwd + SGD), or None
    stages: list = field(default_factory=list)  # list[StageCost]
    elementwise_ops: dict = field(default_factory=dict)  # op -> output elements, counted as 0 MACs
    train_batch_size: int | None = None
    num_classes: int | None = None
    latency_runs: int | None = None  # rounds
    seconds: float | None = None  # wall time of the estimate itself
    useful_flops: int | None = None  # flops minus conv multiply-adds that only read padding
    flops_unit: str = FLOPS_UNIT
    latency: dict | None = None  # the full LatencyResult (runtime, interval, cv, noisy, throughput, note)

    @property
    def dead_params(self) -> int:
        return sum(s.dead_params for s in self.stages)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stages"] = [{**s, "map_hw": list(s["map_hw"]), "effective_kernel": list(s["effective_kernel"])}
                       for s in d["stages"]]
        d["dead_params"] = self.dead_params
        return d


def _time_deployed(report: CostReport, deployed, cfg: LatencyConfig, in_chans: int) -> None:
    with torch_threads(cfg.threads):
        runner = make_runner(deployed, cfg.runtime, cfg.batch_size, report.input_size, cfg.threads, in_chans)
        values, noisy = run_protocol({"m": runner}, cfg)
    res = summarize(values["m"], runner.runtime, cfg.batch_size, cfg.threads, report.input_size, bool(noisy),
                    runner.note)
    ms = np.asarray(values["m"]) * 1e3
    report.latency_ms, report.latency_runs = res.median_ms, res.rounds
    report.latency_p25_ms, report.latency_p75_ms = float(np.percentile(ms, 25)), float(np.percentile(ms, 75))
    report.latency_min_ms = float(ms.min())
    report.latency = res.to_dict()


def estimate(spec: ArchSpec, input_size: int = 32, num_classes: int = 10, batch_size: int | None = None,
             threads: int | None = None, latency: bool = True, train_step: bool = False, repeats: int | None = None,
             warmup: int = 5, min_seconds: float = 0.1, in_chans: int = 3,
             progress: Callable[[str], None] | None = None,
             latency_config: LatencyConfig | None = None) -> CostReport:
    """Build ``spec`` and measure what it costs (see ``flops`` and ``kernels`` for the conventions).

    Latency: the deploy form, measured with ``latency.run_protocol`` in ``latency_config`` (default:
    ``LatencyConfig()``: onnxruntime, its rounds and calls per round, batch size and threads), with
    ``batch_size``, ``threads`` and ``repeats`` laid over it where given. ``warmup``/``min_seconds`` are
    accepted for older callers and unused.
    """
    t0 = time.perf_counter()
    say = progress or (lambda msg: log.info(msg))
    flags = {"batch_size": batch_size, "threads": threads, "repeats": repeats}
    cfg = dataclasses.replace(latency_config or LatencyConfig(), **{k: v for k, v in flags.items() if v is not None})
    if input_size < 1 or cfg.batch_size < 1 or cfg.threads < 1 or cfg.repeats < 1:
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
                        batch_size=cfg.batch_size, threads=cfg.threads, stages=stages, elementwise_ops=elementwise,
                        num_classes=num_classes,
                        useful_flops=flops - padding_macs(deployed, input_size, in_chans))
    if latency:
        say(f"timing the deploy form ({cfg.runtime}, batch {cfg.batch_size}, {cfg.threads} thread(s), "
            f"{cfg.rounds} rounds of {cfg.repeats})")
        _time_deployed(report, deployed, cfg, in_chans)
    if train_step:
        tb = max(cfg.batch_size, 2)  # train-mode BN needs more than one value per channel
        say(f"timing a train step (batch {tb})")
        ts = measure_train_step(model, input_size, tb, cfg.threads, warmup=2, repeats=max(3, cfg.repeats // 4),
                                in_chans=in_chans, num_classes=num_classes)
        report.train_step_ms, report.train_batch_size = ts["median_ms"], tb
    report.seconds = time.perf_counter() - t0
    return report
