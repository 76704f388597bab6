"""What a candidate costs: parameters, multiply-adds, useful kernel size, and deployed latency with its error.

Modules (one job each):

- ``flops``: fvcore multiply-adds with a documented rule for every op, ``count_flops``, ``count_params``.
- ``kernels``: effective kernels per stage, dead depthwise parameters, padding multiply-adds.
- ``runtimes``: where a latency is measured (onnxruntime by default, torch eager, torch.compile, CUDA).
- ``latency``: the measurement protocol (interleaved rounds, median with interval and spread, extra
  rounds for wide ones, ``noisy`` flag) and the older single-model timing.
- ``quiet``: is the machine quiet enough to measure (reference workload vs its best, load average).
- ``predictor``: a per-block lookup table calibrated on the target device; ``predict`` any candidate.
- ``measure``: latency of specs, measured side by side or predicted from a table (what the search calls).
- ``report``: ``estimate(spec) -> CostReport``.
"""
from lkscale.cost.flops import (ELEMENTWISE_OPS, FLOP_HANDLES, FLOPS_UNIT, IGNORED_OPS, _EXTRA_HANDLES, _analysis,
                                _count, count_flops, count_params, register_flop_handle)
from lkscale.cost.kernels import StageCost, dead_conv_params, effective_kernels, padding_macs
from lkscale.cost.latency import (LatencyResult, measure_interleaved, measure_latency, measure_train_step, median_ci,
                                  robust_cv, run_protocol, wall_timer)
from lkscale.cost.measure import latency_of, measure_specs
from lkscale.cost.predictor import LatencyTable, calibrate, network_parts, predict
from lkscale.cost.quiet import QuietStatus, quiet_check, wait_for_quiet
from lkscale.cost.report import CostReport, estimate
from lkscale.cost.runtimes import RUNTIMES, make_runner

__all__ = ["StageCost", "CostReport", "count_params", "count_flops", "effective_kernels", "padding_macs",
           "measure_latency", "measure_train_step", "estimate", "register_flop_handle", "dead_conv_params",
           "FLOP_HANDLES", "ELEMENTWISE_OPS", "IGNORED_OPS", "FLOPS_UNIT", "LatencyResult", "measure_interleaved",
           "run_protocol", "wall_timer", "median_ci", "robust_cv", "LatencyTable", "calibrate", "predict",
           "network_parts", "measure_specs", "latency_of", "QuietStatus", "quiet_check", "wait_for_quiet", "RUNTIMES", "make_runner"]
