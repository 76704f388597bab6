"""Replay a pruning rule over learning curves already recorded: which candidates would it have stopped?

The rules are the search's own schedulers (``lkscale.search.schedulers.make_scheduler``: none, Ray's ASHA,
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
from ray.tune.schedulers import TrialScheduler

from lkscale.config import PruningConfig, SearchConfig
from lkscale.pareto import hypervolume_2d, pareto_front
from lkscale.search.schedulers import make_scheduler

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


def replay(rule: str, curves: list[Curve], order: list[int], grace: int = 1, reduction_factor: float | None = None,
           concurrency: int | None = None, pruner: str | None = None) -> dict[str, int]:
    """Epochs each curve's trial would have trained under ``rule``, trials started in ``order``
    (``reduction_factor``, ``concurrency`` and ``pruner``: None is the config's default)."""
    reduction_factor = PruningConfig.reduction_factor if reduction_factor is None else reduction_factor
    concurrency = SearchConfig.concurrency if concurrency is None else concurrency
    pruner = pruner or PruningConfig.pruner
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
    """Cost and what a replay kept. ``truth``: high-fidelity accuracy by key (a subset of the curves may do).

    The hypervolume reference is accuracy 0 and 1.1x the largest latency among the truth's candidates: close to
    the points, so the ratio feels the loss of a front member (a far reference, such as a latency budget many
    times the largest latency, makes every ratio near 1)."""
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


def fmt_range(d: dict | None, pct: bool = True) -> str:
    """``replay_rules``' {mean, min, max} as "71% (69%..72%)" (percent) or "0.93 (0.90..0.96)"."""
    if not d:
        return "n/a"
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.2f}")
    return f"{f(d['mean'])} ({f(d['min'])}..{f(d['max'])})" if d["max"] > d["min"] else f(d["mean"])


def curves_by_replicate(trials: list) -> list[list[Curve]]:
    """One list of full-length curves per replicate, from a run's complete trials (records with
    ``val_acc_epochs``, ``latency_ms``, ``kernels``); trials cut short (pruned) are left out."""
    done = [t for t in trials if t.get("state") == "complete" and t.get("val_acc_epochs") and t.get("latency_ms")]
    worlds = []
    for r in sorted({int(t.get("replicate") or 0) for t in done}):
        mine = [t for t in done if int(t.get("replicate") or 0) == r]
        full = max(len(t.get("val_acc_epochs")) for t in mine)
        worlds.append([Curve(t.get("name"), tuple(map(float, t.get("val_acc_epochs"))), float(t.get("latency_ms")),
                             float(np.mean(t.get("kernels") or [0]))) for t in mine if len(t.get("val_acc_epochs")) == full])
    return [w for w in worlds if len(w) >= 3]


def replay_rules(trials: list, truth: dict[str, float] | None = None, graces: tuple[int, ...] = (1, 2),
                 reduction_factor: float | None = None, orders: int = 100, seed: int = 0,
                 concurrency: int | None = None) -> dict:
    """What each rule (none; ASHA, MO-ASHA and Optuna's successive halving with the first rung at each epoch
    of ``graces``) would have kept of a run that trained every candidate to the end: the mean over replicates
    and arrival orders of ``judge``'s figures, and their range over replicates. Rules are keyed ``"moasha g2"``
    (first rung at epoch 2). Empty when fewer than 3 candidates have complete curves (a pruned run)."""
    reduction_factor = PruningConfig.reduction_factor if reduction_factor is None else reduction_factor
    concurrency = SearchConfig.concurrency if concurrency is None else concurrency
    worlds = curves_by_replicate(trials)
    epochs = min(len(c.accs) for w in worlds for c in w) if worlds else 0
    graces = tuple(sorted({int(g) for g in graces if 1 <= int(g) < epochs}))
    if not graces:
        return {}
    out = {"graces": list(graces), "reduction_factor": reduction_factor, "orders": orders, "replicates": len(worlds),
           "concurrency": concurrency, "epochs": epochs, "rules": {}}
    for rule, g in [("none", graces[0])] + [(r, g) for g in graces for r in RULES if r != "none"]:
        per = [replay_many(rule, w, orders, seed, truth, grace=g, reduction_factor=reduction_factor,
                           concurrency=concurrency) for w in worlds]
        row = {}
        for key in ("cost", "proxy_front_kept", "hf_front_kept", "hf_hv_ratio"):
            means = [float(np.nanmean([x[key] for x in res])) for res in per if key in res[0]]
            if means:
                row[key] = {"mean": float(np.mean(means)), "min": min(means), "max": max(means)}
        out["rules"][rule if rule == "none" else f"{rule} g{g}"] = row
    return out


__all__ = ["Curve", "RULES", "replay", "judge", "replay_many", "curves_by_replicate", "replay_rules", "fmt_range"]
