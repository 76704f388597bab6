"""Replay a pruning rule over learning curves already recorded: which candidates would it have stopped?

The rules are the search's own schedulers (``lkscale.pruning.make_scheduler``: none, Ray's ASHA,
multi-objective ASHA, Optuna's pruners), fed one epoch result at a time in a given arrival order with
``concurrency`` trials running side by side (round robin between the running trials), exactly through
the calls Tune makes (``on_trial_add`` / ``on_trial_result`` / ``on_trial_remove``). The curves must be
complete (a scaling study, or a search without pruning): a rule can only be judged on trials it would
have let run.

``replay`` returns how many epochs each candidate would have trained; ``judge`` turns that into the
cost (share of the trial-epochs of no pruning) and what was kept: the final proxy front, the front at
high fidelity where a truth is given, the hypervolume ratio at high fidelity, and the share stopped
by kernel size (a rule biased against large kernels stops them more often).
"""
from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np

from lkscale.pareto import hypervolume_2d, pareto_front

RULES = ("none", "asha", "moasha", "optuna")


@dataclasses.dataclass(frozen=True)
class Curve:
    key: str
    accs: tuple[float, ...]     # validation accuracy after each epoch
    latency_ms: float
    kernel: float               # mean kernel size (for the bias measure)


@dataclasses.dataclass
class _Trial:  # what a Tune scheduler reads of a trial
    trial_id: str
    config: dict = dataclasses.field(default_factory=lambda: {"replicate": 0})


def replay(rule: str, curves: list[Curve], order: list[int], grace: int = 1, reduction_factor: float = 2,
           concurrency: int = 2, pruner: str = "successive_halving") -> dict[str, int]:
    """Epochs each curve's trial would have trained under ``rule``, trials started in ``order``."""
    from ray.tune.schedulers import TrialScheduler

    from lkscale.pruning import make_scheduler

    if rule not in RULES:
        raise ValueError(f"unknown pruning rule {rule!r}; one of {', '.join(RULES)}")
    max_t = min(len(c.accs) for c in curves)
    sched = make_scheduler(rule, max_t, grace, reduction_factor, pruner=pruner)
    queue, running, done = deque(order), [], {}
    while queue or running:
        while queue and len(running) < concurrency:
            i = queue.popleft()
            trial = _Trial(curves[i].key)
            sched.on_trial_add(None, trial)
            running.append([i, trial, 0])
        for slot in list(running):
            i, trial, e = slot
            e = slot[2] = e + 1
            c = curves[i]
            result = {"epoch": e, "val_acc": float(c.accs[e - 1]), "latency_ms": float(c.latency_ms)}
            action = sched.on_trial_result(None, trial, result)
            if action == TrialScheduler.STOP or e >= max_t:
                done[c.key] = e
                if rule == "asha":
                    sched.on_trial_remove(None, trial)
                running.remove(slot)
    return done


def _hv(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    return hypervolume_2d(points, reference) if points else 0.0


def judge(curves: list[Curve], epochs: dict[str, int], truth: dict[str, float] | None = None) -> dict:
    """Cost and what a replay kept. ``truth``: high-fidelity accuracy by key (a subset of the curves may do)."""
    max_t = min(len(c.accs) for c in curves)
    kept = {c.key for c in curves if epochs.get(c.key, 0) >= max_t}
    out = {"cost": sum(epochs.values()) / (len(curves) * max_t), "kept": len(kept) / len(curves)}
    final = [(c.accs[max_t - 1], c.latency_ms) for c in curves]
    front = {curves[i].key for i in pareto_front(final)}
    out["proxy_front_kept"] = len(front & kept) / len(front)
    if truth:
        inside = [c for c in curves if c.key in truth]
        pts = [(truth[c.key], c.latency_ms) for c in inside]
        hf_front = {inside[i].key for i in pareto_front(pts)}
        out["hf_front_kept"] = len(hf_front & kept) / len(hf_front)
        reference = (0.0, 1.1 * max(c.latency_ms for c in inside))
        best = _hv(pts, reference)
        got = _hv([(truth[c.key], c.latency_ms) for c in inside if c.key in kept], reference)
        out["hf_hv_ratio"] = got / best if best > 0 else float("nan")
    out["stopped_by_kernel"] = {f"{k:g}": float(np.mean([c.key not in kept for c in curves if c.kernel == k]))
                                for k in sorted({c.kernel for c in curves})}
    return out


def replay_many(rule: str, curves: list[Curve], orders: int = 100, seed: int = 0,
                truth: dict[str, float] | None = None, **kw) -> list[dict]:
    """``judge`` of ``rule`` over ``orders`` seeded random arrival orders."""
    rng = np.random.default_rng(seed)
    return [judge(curves, replay(rule, curves, rng.permutation(len(curves)).tolist(), **kw), truth)
            for _ in range(orders)]


__all__ = ["Curve", "RULES", "replay", "judge", "replay_many"]
