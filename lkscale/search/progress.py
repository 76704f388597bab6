"""Progress of a running search on stderr: a live line on a terminal, plain lines in logs and CI.

The line: trials complete / running / pruned / infeasible / failed, the epochs of the running trials,
the current front (size and hypervolume against the study's reference), elapsed time and an estimate
of the time left, with what it rests on (:meth:`Progress.estimate`).

Plain lines (stderr not a terminal) also get one line per finished epoch and a heartbeat about once a
minute (``LKSCALE_HEARTBEAT_S``; tests set a tiny interval): the running trials with their epoch and
seconds per epoch, elapsed, and the estimate — so a log never goes silent while slow networks train.

Epochs that report nothing to Tune (``proxy.val_every_epoch: false``: no validation, so no result before
the last epoch) are still seen: the trainable writes ``RUN_DIR/.progress/TRIAL_ID.json`` (epochs trained,
seconds since the trial started, when) at its start and after every epoch (:func:`write_progress`), and
the heartbeat, the epoch lines ("not validated") and the estimate read it (:func:`read_progress`) when it
is further along than the trial's last Tune result; the recorder removes it when the trial ends. A Tune
report would need a fake accuracy that schedulers, the searcher and ``trials.csv`` would take for real, so
the file is a side channel. A trial whose node cannot see the run folder (a cluster without a shared
filesystem) writes none: its progress is what Tune reports.

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
PROGRESS_DIR = ".progress"  # RUN_DIR/.progress/TRIAL_ID.json: epochs trained so far, validated or not


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


def progress_path(run_dir: str, trial_id: str) -> str:
    return os.path.join(run_dir, PROGRESS_DIR, f"{trial_id}.json")


def write_progress(run_dir: str, trial_id: str, epoch: int, seconds: float, t: float | None = None) -> bool:
    """Record that trial ``trial_id`` has trained ``epoch`` epochs in ``seconds`` since it started (``t``: when;
    now by default). Atomic; False (nothing written, nothing raised) when the run folder is not visible here."""
    if not trial_id or not run_dir or not os.path.isdir(run_dir):
        return False
    path = progress_path(run_dir, trial_id)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".part", "w") as f:
            json.dump({"epoch": int(epoch), "seconds": float(seconds), "t": time.time() if t is None else float(t)}, f)
        os.replace(path + ".part", path)
        return True
    except OSError:
        return False


def read_progress(run_dir: str | None, trial_id: str) -> dict | None:
    """{"epoch", "seconds", "t"} as :func:`write_progress` left it, else None (no file, or one cut short)."""
    if not run_dir:
        return None
    try:
        with open(progress_path(run_dir, str(trial_id))) as f:
            d = json.load(f)
        return {"epoch": int(d["epoch"]), "seconds": float(d["seconds"]), "t": float(d["t"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_progress(run_dir: str | None, trial_id: str) -> None:
    if run_dir:
        try:
            os.remove(progress_path(run_dir, str(trial_id)))
        except OSError:
            pass


class Progress:
    def __init__(self, write: Callable[[str], None], total_trials: int, epochs: int, concurrency: int,
                 ref_latency: float | None = None, live: bool | None = None, stream=None,
                 probe: dict[str, float] | None = None, heartbeat_s: float | None = None,
                 run_dir: str | None = None, validated_every_epoch: bool = False):
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
        self.run_dir = run_dir              # where trials write their per-epoch progress files (None: none)
        self._told: dict[str, int] = {}     # trial id -> the last epoch a plain line was written for
        # every epoch reaches Tune (proxy.val_every_epoch): its line comes from Tune's result, never from the
        # progress file, which is written first and would print the same epoch twice ("not validated", then "acc")
        self.validated_every_epoch = validated_every_epoch

    # ------------------------------------------------------------------------------- the estimate
    def _mark(self, running: dict | None) -> None:
        now = time.time()
        for tid in running or {}:
            self._since.setdefault(str(tid), now)

    def _observed(self, tid: str, r: dict) -> tuple[int, float, float | None]:
        """(epochs trained, seconds they took since the trial started, when the last one ended or None) of a
        running trial: its progress file when that is at least as far along as its last Tune result."""
        f = read_progress(self.run_dir, tid)
        if f is not None and f["epoch"] >= _epochs(r):
            return f["epoch"], f["seconds"], f["t"]
        return _epochs(r), float(r.get("seconds") or 0.0), None

    def _in_epoch(self, tid: str, since: float | None, now: float) -> float:
        return max(0.0, now - (since if since is not None else self._since.get(tid, now)))

    def estimate(self, rows: Iterable[dict], running: dict | None = None) -> tuple[float | None, str]:
        """(seconds left or None, what the figure rests on). ``running``: Tune trials by id."""
        rows = list(rows)
        self._mark(running)
        by_id = {str(r.get("trial_id")): r for r in rows if r.get("trial_id") is not None}
        run_ids = [str(t) for t in running] if running is not None else \
            [str(r.get("trial_id")) for r in rows if r.get("state") == "running"]
        seen = [(r, *(self._observed(str(r.get("trial_id")), r)[:2] if r.get("state") == "running"
                      else (_epochs(r), float(r.get("seconds") or 0.0)))) for r in rows]  # (row, epochs, seconds)
        observed = [(r, n, sec) for r, n, sec in seen if n > 0 and r.get("state") != "infeasible"]
        ep = sum(n for _, n, _ in observed)
        pool = sum(sec for _, _, sec in observed) / ep if ep else None
        n_fin = sum(1 for r, _, _ in observed if r.get("state") != "running")
        n_run = len(observed) - n_fin
        now, remain, probed = time.time(), [], []
        for tid in run_ids:
            r = by_id.get(tid, {})
            name = r.get("name") or (getattr((running or {}).get(tid), "config", None) or {}).get("name", "")
            done, secs, since = self._observed(tid, r)
            if done:
                per = secs / done
            elif name in self.probe:
                per = float(self.probe[name])
                probed.append(name)
            else:
                per = pool
            if per is None:
                return None, "no estimate yet: no epoch has finished and the run folder holds no plan probe"
            in_epoch = self._in_epoch(tid, since, now)
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
            eps = [f"{max(int((t.last_result or {}).get('epoch') or 0), self._observed(str(tid), {})[0])}/{self.epochs}"
                   for tid, t in running.items()]
            run_ep = f" (epochs {' '.join(eps)})"
        tally = ", ".join(f"{k} {counts[k]}" for k in ("pruned", "infeasible", "failed") if counts[k])
        n_running = len(running) if running is not None else counts["running"]
        left = f", ~{_fmt_s(eta)} left" + (f", from {why}" if basis else "") if eta is not None else ""
        extra = finished + n_running - self.total  # trials queued after the plan (adaptive replicates, racing)
        of = f"{finished}/{self.total + extra} trials (+{extra} added after the plan)" if extra > 0 else \
            f"{finished}/{self.total} trials"
        return (f"{of}: complete {counts['complete']}, running {n_running}{run_ep}"
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
        self._told[str(row.get("trial_id"))] = max(_epochs(row), self._told.get(str(row.get("trial_id")), 0))
        done = _epochs(row)
        acc = row.get("val_acc")
        per = float(row.get("seconds") or 0.0) / done if done else 0.0
        per_s = f"{per:.1f}" if per < 10 else f"{per:.0f}"
        rep = f" r{row.get('replicate')}" if row.get("replicate") else ""
        self.write(f"[trial {row.get('number')}{rep}] epoch {done}/{self.epochs}  "
                   + (f"acc {float(acc):.3f}  " if acc not in ("", None) else "") + f"{per_s} s/epoch  {row.get('name') or '-'}")

    def tick(self, rows: Iterable[dict], running: dict | None = None) -> None:
        """Called often (every Tune step): on plain lines only, a line for each epoch a trial finished without
        telling Tune (its progress file), and the heartbeat once per interval."""
        self._mark(running)
        if self.live:
            return
        rows = list(rows)
        if self.run_dir and running and not self.validated_every_epoch:
            self._unreported_epochs(rows, running)
        if time.time() - self._beat < self.heartbeat_s:
            return
        self._beat = time.time()
        self.write(self.heartbeat(rows, running))

    def _unreported_epochs(self, rows: list[dict], running: dict) -> None:
        by_id = {str(r.get("trial_id")): r for r in rows}
        for tid, t in running.items():
            tid, r = str(tid), by_id.get(str(tid), {})
            f = read_progress(self.run_dir, tid)
            if f is None or f["epoch"] <= max(_epochs(r), self._told.get(tid, 0)) or f["epoch"] >= self.epochs:
                continue  # nothing new, or Tune reported it (the last epoch always is: the trial's own line)
            self._told[tid] = f["epoch"]
            cfg = getattr(t, "config", None) or {}
            per = f["seconds"] / f["epoch"]
            per_s = f"{per:.1f}" if per < 10 else f"{per:.0f}"
            rep = f" r{cfg.get('replicate')}" if cfg.get("replicate") else ""
            self.write(f"[trial {cfg.get('number', r.get('number'))}{rep}] epoch {f['epoch']}/{self.epochs}  not "
                       f"validated  {per_s} s/epoch  {cfg.get('name') or r.get('name') or '-'}")

    def heartbeat(self, rows: Iterable[dict], running: dict | None = None) -> str:
        rows = list(rows)
        by_id = {str(r.get("trial_id")): r for r in rows}
        now, parts = time.time(), []
        for tid, t in (running or {}).items():
            r = by_id.get(str(tid), {})
            done, secs, since = self._observed(str(tid), r)
            per = f"{secs / done:.0f} s/epoch" if done else "no epoch yet"
            into = self._in_epoch(str(tid), since, now)
            parts.append(f"trial {(t.config or {}).get('number', r.get('number'))} epoch {done}/{self.epochs} ({per}, "
                         f"{_fmt_s(into)} into epoch {done + 1})")
        eta, why = self.estimate(rows, running)
        left = f"~{_fmt_s(eta)} left, from {why}" if eta is not None else why
        return (f"... elapsed {_fmt_s(now - self.t0)}; running: {'; '.join(parts) if parts else 'none'}; {left}")

    def trial_done(self, row: dict, rows: Iterable[dict], running: dict | None = None) -> None:
        self._since.pop(str(row.get("trial_id")), None)
        self._told.pop(str(row.get("trial_id")), None)
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
