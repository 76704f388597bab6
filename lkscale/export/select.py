"""Which complete trials of a run to export: the accuracy/latency Pareto front, or the top N by accuracy."""
from __future__ import annotations

from lkscale.export.safety import ExportError
from lkscale.rundir import candidates, front_of


def select_winners(run, top: int | None = None, pareto: bool = False) -> list:
    """Complete trials to export: the accuracy/latency Pareto front, or the ``top`` by validation accuracy
    (one per architecture: its mean over replicates, as the report ranks it)."""
    if (top is None) == (not pareto):
        raise ExportError("choose exactly one of --top N or --pareto")
    cands = candidates(run.trials)
    complete = [t for t in cands if t.state == "complete" and t.get("val_acc") is not None]
    if not complete:
        raise ExportError(f"{run.path}: no complete trials to export")
    if pareto:
        return front_of(cands, "latency_ms")
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ExportError(f"--top must be an integer >= 1, got {top!r}")
    inf = float("inf")
    ranked = sorted(complete, key=lambda t: (-t.val_acc, t.get("latency_ms", inf), t.name))
    seen, out = set(), []
    for t in ranked:
        if t.name not in seen:
            seen.add(t.name)
            out.append(t)
    return out[:top]
