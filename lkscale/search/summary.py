"""The numbers a finished search leaves behind: final latencies and ``summary.json``.

After training nothing else runs on the machine: the complete candidates' deploy forms are measured
again, side by side in interleaved rounds, and those are the latencies the front and the report use
(``latency_source`` says ``measured-final``). ``summary.json`` (written through ``lkscale.rundir``)
holds counts, the front on mean accuracy over replicates with intervals, each candidate's racing
status (confirmed / tied / dominated at the study's confidence), and what latency means in this run.
"""
from __future__ import annotations

from typing import Callable

from lkscale.config import to_dict
from lkscale.rundir import candidates, front_of, read_trials, update_summary, write_trials
from lkscale.search.baselines import baseline_refs
from lkscale.search.confirm import make_race
from lkscale.search.objective import Objective
from lkscale.spec import ArchSpec
from lkscale.study import Study

MAX_FINAL_MEASURE = 40  # more complete candidates than this: only the front is measured again


def update_latencies(study: Study, run_dir: str, objective: Objective, say: Callable[[str], None]) -> None:
    if study.latency.source != "measured":
        return
    rows = read_trials(run_dir)
    cands = [c for c in candidates(rows) if c.state == "complete" and c.get("spec")]
    if len(cands) > MAX_FINAL_MEASURE:
        cands = front_of(cands, "latency_ms")
    specs = [ArchSpec.from_json(c.spec) for c in cands] + baseline_refs(rows)  # baselines side by side with them
    if not specs:
        return
    lat = objective.measure(specs, force=True, label="(final, after training) ", quiet_slot=True)
    for t in rows:
        spec = next((s for s in specs if s.name == t.get("name")), None)
        if spec is not None:
            f = lat[spec.without_reparam().name]
            t.row.update(latency_ms=f["latency_ms"], latency_low_ms=f["latency_low_ms"],
                         latency_high_ms=f["latency_high_ms"], latency_runtime=f["latency_runtime"],
                         latency_source="measured-final", latency_node=f.get("latency_node", ""))
    write_trials(run_dir, [t.row for t in rows])


def verdicts(study: Study, cands: list) -> dict[str, dict]:
    """Racing status of every complete candidate from the replicates it has (no new runs)."""
    done = [c for c in cands if c.state == "complete" and c.get("replicates")]
    if len(done) < 2:
        return {c.name: {"status": "confirmed" if done else "tied"} for c in done}
    race = make_race(study, [(c.name, c.row, c.replicates) for c in done], None, done[0].get("val_n"))
    out = {}
    for name, v in race.verdicts().items():
        out[name] = {"status": v.status, "on_front": v.on_front, "dominated_by": sorted(v.dominated_by),
                     "unresolved": list(v.unresolved)}
    return out


def write_summary(run_dir: str, study: Study, seconds: float | None = None) -> dict:
    rows = read_trials(run_dir)
    counts: dict[str, int] = {}
    for t in rows:
        counts[t.state] = counts.get(t.state, 0) + 1
    saved = sum(max(0, int(t.get("epochs_budget") or 0) - int(t.get("epochs_done") or 0))
                for t in rows if t.state == "pruned")
    cands = candidates(rows, study.search.confirm.confidence)
    front = front_of(cands, "latency_ms")
    status = verdicts(study, cands)
    keys = ("name", "val_acc", "val_acc_low", "val_acc_high", "n_replicates", "latency_ms", "latency_low_ms",
            "latency_high_ms", "params", "flops", "kernels", "blocks", "reparam")
    patch = {"study": study.name, "counts": counts, "trials": len(rows), "trial_epochs_saved": saved,
             "trial_epochs_budget": len([t for t in rows if t.state != "infeasible"]) * int(study.proxy.epochs),
             "trial_epochs_run": sum(int(t.get("epochs_done") or 0) for t in rows),
             "candidates": len([c for c in cands if c.state == "complete"]),
             "front": [c.name for c in front],
             "front_detail": [{**{k: c.get(k) for k in keys}, **status.get(c.name, {})} for c in front],
             "confirmed": sorted(n for n, v in status.items() if v["status"] == "confirmed"),
             "tied": sorted(n for n, v in status.items() if v["status"] == "tied" and v.get("on_front", True)),
             "status": {n: v["status"] for n, v in status.items()},
             "pruning": study.search.pruning.scheduler if study.search.mode == "front" else "none (scaling study)",
             "mode": study.search.mode, "replicates": study.search.replicates,
             "latency": {**to_dict(study.latency), "final": "measured-final" if study.latency.source == "measured"
                         else study.latency.source}}
    if seconds is not None:
        patch["seconds_last_run"] = round(seconds, 1)
    return update_summary(run_dir, patch)
