"""Progress of a running search on stderr: a live line on a terminal, plain lines in logs and CI.

The line: trials complete / running / pruned / infeasible / failed, the epochs of the running trials,
the current front (size and hypervolume against the study's reference), elapsed time and an estimate
of the time left (mean seconds per trial-epoch so far x trial-epochs left / trials at a time).
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable

from lkscale.pareto import hypervolume_2d, pareto_front

STATES = ("complete", "running", "pruned", "infeasible", "failed")


def _fmt_s(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, write: Callable[[str], None], total_trials: int, epochs: int, concurrency: int,
                 ref_latency: float | None = None, live: bool | None = None, stream=None):
        self.write = write                  # plain lines (the CLI's stderr printer)
        self.total, self.epochs, self.concurrency = total_trials, epochs, max(1, concurrency)
        self.ref_latency = ref_latency
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.t0 = time.time()
        self._last = ""

    def summary(self, rows: Iterable[dict], running: dict | None = None) -> str:
        rows = list(rows)
        counts = {k: sum(1 for r in rows if r.get("state") == k) for k in STATES}
        done = [r for r in rows if r.get("state") == "complete" and r.get("val_acc") is not None]
        pts = [(float(r["val_acc"]), float(r.get("latency_ms") or 0.0)) for r in done]
        front = pareto_front(pts, ("max", "min")) if pts else []
        ref = self.ref_latency or (1.5 * max((p[1] for p in pts), default=1.0))
        hv = hypervolume_2d([pts[i] for i in front], (0.0, ref)) if front else 0.0
        epochs_run = sum(int(r.get("epochs_done") or 0) for r in rows)
        seconds = sum(float(r.get("seconds") or 0.0) for r in rows)
        finished = sum(counts[k] for k in ("complete", "pruned", "infeasible", "failed"))
        left_epochs = max(0, self.total - finished) * self.epochs
        eta = (seconds / epochs_run * left_epochs / self.concurrency) if epochs_run else None
        run_ep = ""
        if running:
            eps = [f"{int((t.last_result or {}).get('epoch') or 0)}/{self.epochs}" for t in running.values()]
            run_ep = f" (epochs {' '.join(eps)})"
        tally = ", ".join(f"{k} {counts[k]}" for k in ("pruned", "infeasible", "failed") if counts[k])
        n_running = len(running) if running is not None else counts["running"]
        return (f"{finished}/{self.total} trials: complete {counts['complete']}, running {n_running}{run_ep}"
                f"{', ' + tally if tally else ''}; front {len(front)} (HV {hv:.3g}); elapsed "
                f"{_fmt_s(time.time() - self.t0)}" + (f", ~{_fmt_s(eta)} left" if eta is not None else ""))

    def update(self, rows: Iterable[dict], running: dict | None = None) -> None:
        """Redraw the live line (terminals only: logs get one line per finished trial)."""
        if not self.live:
            return
        line = self.summary(rows, running)
        if line != self._last:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            self._last = line

    def trial_done(self, row: dict, rows: Iterable[dict], running: dict | None = None) -> None:
        acc = row.get("val_acc")
        acc_s = f"acc {float(acc):.3f}" if acc not in ("", None) and row.get("state") != "infeasible" else ""
        lat = row.get("latency_ms")
        lat_s = f"{float(lat):.2f} ms" if lat not in ("", None) else ""
        rep = f" r{row.get('replicate')}" if row.get("replicate") else ""
        extra = f"  ({row['error']})" if row.get("error") else ""
        if self.live:
            self.stream.write("\r\033[K")
        self.write(f"[trial {row.get('number')}{rep}] {row.get('state', ''):<10} {row.get('name') or '-'}  {acc_s}  "
                   f"{lat_s}  epochs {row.get('epochs_done')}/{self.epochs}{extra}\n    {self.summary(rows, running)}")
