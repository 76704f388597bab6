"""Progress of a running search on stderr: a live line on a terminal, plain lines in logs and CI.

The line: trials complete / running / pruned / infeasible / failed, the epochs of the running trials,
the current front (size and hypervolume against the study's reference), elapsed time and an estimate
of the time left, with what it rests on (:meth:`Progress.estimate`).

Plain lines (stderr not a terminal) also get one line per finished epoch and a heartbeat about once a
minute (``LKSCALE_HEARTBEAT_S``; tests set a tiny interval): the running trials with their epoch and
seconds per epoch, elapsed, and the estimate — so a log never goes silent while slow networks train.

The estimate: each running trial's epochs left at its own observed seconds per epoch (before its first
epoch: the plan's probe of that network when the run folder holds the plan, :func:`plan_probe`, else the
pool below), never less than the time its current epoch has already taken; trials not started yet at the
pool's seconds per epoch (every epoch observed so far, over all trials; the plan's mean before any); the
work divided by the trials at a time, and never less than the longest running trial's remainder. Pruning
stops some trials early: an upper bound.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, Iterable

from lkscale.pareto import hypervolume_2d, pareto_front

STATES = ("complete", "running", "pruned", "infeasible", "failed")
HEARTBEAT_S = 60.0  # plain-line heartbeat interval; $LKSCALE_HEARTBEAT_S overrides it


def _fmt_s(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def heartbeat_interval() -> float:
    try:
        return max(0.05, float(os.environ.get("LKSCALE_HEARTBEAT_S", HEARTBEAT_S)))
    except ValueError:
        return HEARTBEAT_S


def plan_probe(run_dir: str) -> dict[str, float]:
    """Seconds per epoch by network from ``RUN_DIR/plan.json`` (``lkscale plan STUDY --json > RUN_DIR/plan.json``
    before the search): the two probed networks, and every other network of the plan interpolated between them
    by FLOPs as the plan does. {} when the run folder holds no plan (or one without a probe)."""
    try:
        with open(os.path.join(run_dir, "plan.json")) as f:
            plan = json.load(f)
        probed = {k: float(v) for k, v in ((plan.get("estimate") or {}).get("seconds_per_epoch") or {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}
    flops = {n["name"]: float(n["flops"]) for n in plan.get("networks") or [] if n.get("flops") is not None}
    known = [(flops[k], v) for k, v in probed.items() if k in flops]
    out = dict(probed)
    if len(known) == 2 and known[0][0] != known[1][0]:
        (f0, s0), (f1, s1) = sorted(known)
        for name, f in flops.items():
            out.setdefault(name, s0 + (s1 - s0) * (f - f0) / (f1 - f0))
    return out


def _epochs(r: dict) -> int:
    return int(r.get("epochs_done") or 0)


class Progress:
    def __init__(self, write: Callable[[str], None], total_trials: int, epochs: int, concurrency: int,
                 ref_latency: float | None = None, live: bool | None = None, stream=None,
                 probe: dict[str, float] | None = None, heartbeat_s: float | None = None):
        self.write = write                  # plain lines (the CLI's stderr printer)
        self.total, self.epochs, self.concurrency = total_trials, epochs, max(1, concurrency)
        self.ref_latency = ref_latency
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.probe = dict(probe or {})      # network name -> seconds per epoch (the plan's training probe)
        self.heartbeat_s = heartbeat_interval() if heartbeat_s is None else heartbeat_s
        self.t0 = time.time()
        self._beat = self.t0
        self._since: dict[str, float] = {}  # trial id -> when its last epoch ended (or it was first seen running)
        self._last = ""

    # ------------------------------------------------------------------------------- the estimate
    def _mark(self, running: dict | None) -> None:
        now = time.time()
        for tid in running or {}:
            self._since.setdefault(str(tid), now)

    def estimate(self, rows: Iterable[dict], running: dict | None = None) -> tuple[float | None, str]:
        """(seconds left or None, what the figure rests on). ``running``: Tune trials by id."""
        rows = list(rows)
        self._mark(running)
        by_id = {str(r.get("trial_id")): r for r in rows if r.get("trial_id") is not None}
        run_ids = [str(t) for t in running] if running is not None else \
            [str(r.get("trial_id")) for r in rows if r.get("state") == "running"]
        observed = [r for r in rows if _epochs(r) > 0 and r.get("state") != "infeasible"]
        ep = sum(_epochs(r) for r in observed)
        pool = sum(float(r.get("seconds") or 0.0) for r in observed) / ep if ep else None
        n_fin = sum(1 for r in observed if r.get("state") != "running")
        n_run = len(observed) - n_fin
        now, remain, probed = time.time(), [], []
        for tid in run_ids:
            r = by_id.get(tid, {})
            name = r.get("name") or (getattr((running or {}).get(tid), "config", None) or {}).get("name", "")
            done = _epochs(r)
            if done:
                per = float(r.get("seconds") or 0.0) / done
            elif name in self.probe:
                per = float(self.probe[name])
                probed.append(name)
            else:
                per = pool
            if per is None:
                return None, "no estimate yet: no epoch has finished and the run folder holds no plan probe"
            in_epoch = now - self._since.get(tid, now)
            per = max(per, in_epoch)  # the current epoch has taken this long already
            remain.append(max(0.0, (self.epochs - done) * per - in_epoch))
        finished = sum(1 for r in rows if r.get("state") in ("complete", "pruned", "infeasible", "failed"))
        unstarted = max(0, self.total - finished - len(run_ids))
        if unstarted and pool is None:
            if not self.probe:
                return None, "no estimate yet: no epoch has finished and the run folder holds no plan probe"
            per_new = sum(self.probe.values()) / len(self.probe)
            basis = f"the plan's probe ({per_new:.0f} s/epoch, mean over {len(self.probe)} probed network(s))"
        else:
            per_new = pool or 0.0
            who = " and ".join(x for x in (f"{n_fin} finished" if n_fin else "", f"{n_run} running" if n_run else "")
                               if x)
            basis = f"{who} trial(s)' observed {per_new:.0f} s/epoch" if ep else "the running trials"
        if probed:
            basis += f"; the plan's probe for {', '.join(sorted(set(probed)))} (running, no epoch yet)"
        work = sum(remain) + unstarted * self.epochs * per_new
        return max(work / self.concurrency, max(remain, default=0.0)), basis

    # ------------------------------------------------------------------------------- lines
    def summary(self, rows: Iterable[dict], running: dict | None = None, basis: bool = False) -> str:
        rows = list(rows)
        counts = {k: sum(1 for r in rows if r.get("state") == k) for k in STATES}
        done = [r for r in rows if r.get("state") == "complete" and r.get("val_acc") is not None]
        pts = [(float(r["val_acc"]), float(r.get("latency_ms") or 0.0)) for r in done]
        front = pareto_front(pts, ("max", "min")) if pts else []
        ref = self.ref_latency or (1.5 * max((p[1] for p in pts), default=1.0))
        hv = hypervolume_2d([pts[i] for i in front], (0.0, ref)) if front else 0.0
        finished = sum(counts[k] for k in ("complete", "pruned", "infeasible", "failed"))
        eta, why = self.estimate(rows, running)
        run_ep = ""
        if running:
            eps = [f"{int((t.last_result or {}).get('epoch') or 0)}/{self.epochs}" for t in running.values()]
            run_ep = f" (epochs {' '.join(eps)})"
        tally = ", ".join(f"{k} {counts[k]}" for k in ("pruned", "infeasible", "failed") if counts[k])
        n_running = len(running) if running is not None else counts["running"]
        left = f", ~{_fmt_s(eta)} left" + (f", from {why}" if basis else "") if eta is not None else ""
        return (f"{finished}/{self.total} trials: complete {counts['complete']}, running {n_running}{run_ep}"
                f"{', ' + tally if tally else ''}; front {len(front)} (HV {hv:.3g}); elapsed "
                f"{_fmt_s(time.time() - self.t0)}{left}")

    def update(self, rows: Iterable[dict], running: dict | None = None) -> None:
        """Redraw the live line (terminals only: logs get one line per finished trial)."""
        if not self.live:
            return
        line = self.summary(rows, running)
        if line != self._last:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            self._last = line

    def epoch_done(self, row: dict, rows: Iterable[dict], running: dict | None = None) -> None:
        """A running trial finished an epoch: a plain line (logs only; a terminal has the live line)."""
        self._since[str(row.get("trial_id"))] = time.time()
        if self.live:
            return
        done = _epochs(row)
        acc = row.get("val_acc")
        per = float(row.get("seconds") or 0.0) / done if done else 0.0
        per_s = f"{per:.1f}" if per < 10 else f"{per:.0f}"
        rep = f" r{row.get('replicate')}" if row.get("replicate") else ""
        self.write(f"[trial {row.get('number')}{rep}] epoch {done}/{self.epochs}  "
                   + (f"acc {float(acc):.3f}  " if acc not in ("", None) else "") + f"{per_s} s/epoch  {row.get('name') or '-'}")

    def tick(self, rows: Iterable[dict], running: dict | None = None) -> None:
        """Called often (every Tune step): the heartbeat once per interval, on plain lines only."""
        self._mark(running)
        if self.live or time.time() - self._beat < self.heartbeat_s:
            return
        self._beat = time.time()
        self.write(self.heartbeat(rows, running))

    def heartbeat(self, rows: Iterable[dict], running: dict | None = None) -> str:
        rows = list(rows)
        by_id = {str(r.get("trial_id")): r for r in rows}
        now, parts = time.time(), []
        for tid, t in (running or {}).items():
            r = by_id.get(str(tid), {})
            done = _epochs(r)
            per = f"{float(r.get('seconds') or 0.0) / done:.0f} s/epoch" if done else "no epoch yet"
            into = now - self._since.get(str(tid), now)
            parts.append(f"trial {(t.config or {}).get('number', r.get('number'))} epoch {done}/{self.epochs} ({per}, "
                         f"{_fmt_s(into)} into epoch {done + 1})")
        eta, why = self.estimate(rows, running)
        left = f"~{_fmt_s(eta)} left, from {why}" if eta is not None else why
        return (f"... elapsed {_fmt_s(now - self.t0)}; running: {'; '.join(parts) if parts else 'none'}; {left}")

    def trial_done(self, row: dict, rows: Iterable[dict], running: dict | None = None) -> None:
        self._since.pop(str(row.get("trial_id")), None)
        acc = row.get("val_acc")
        acc_s = f"acc {float(acc):.3f}" if acc not in ("", None) and row.get("state") != "infeasible" else ""
        lat = row.get("latency_ms")
        lat_s = f"{float(lat):.2f} ms" if lat not in ("", None) else ""
        rep = f" r{row.get('replicate')}" if row.get("replicate") else ""
        extra = f"  ({row['error']})" if row.get("error") else ""
        if self.live:
            self.stream.write("\r\033[K")
        self.write(f"[trial {row.get('number')}{rep}] {row.get('state', ''):<10} {row.get('name') or '-'}  {acc_s}  "
                   f"{lat_s}  epochs {row.get('epochs_done')}/{self.epochs}{extra}\n    "
                   f"{self.summary(rows, running, basis=True)}")
