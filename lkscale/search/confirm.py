"""Confirmation by racing: after the search budget, more replicates where they decide the front.

The race (``lkscale.racing``) starts from the candidates' search-phase replicates and the latencies
measured side by side (their standard error from the measured interval). Each time the search goes
idle the race proposes the next (candidate, replicate) pairs; the ledger trains them (never pruned);
their results feed the race; it ends when every pair is resolved at ``search.confirm.confidence``,
the candidates reach ``max_replicates``, or ``budget_epochs`` is spent.
"""
from __future__ import annotations

from typing import Callable

from scipy import special

from lkscale.racing import Candidate as RaceCandidate
from lkscale.racing import Race
from lkscale.rundir import update_summary
from lkscale.search.ledger import Ledger
from lkscale.study import Study


def latency_se(row: dict, confidence: float = 0.95) -> float:
    """Standard error of a latency from its measured interval (0 when there is none)."""
    lo, hi = row.get("latency_low_ms"), row.get("latency_high_ms")
    if lo is None or hi is None:
        return 0.0
    return max(0.0, (float(hi) - float(lo)) / (2 * float(special.ndtri(0.5 + confidence / 2))))


def make_race(study: Study, entries: list[tuple[str, dict, dict]], budget_epochs: float | None, n_val: int | None) -> Race:
    """``entries``: (name, row with latency fields, {replicate: accuracy as a fraction})."""
    cfg = study.search.confirm
    cands = [RaceCandidate(name, float(row.get("latency_ms") or 0.0), latency_se(row),
                           {int(r): 100.0 * float(a) for r, a in accs.items()}) for name, row, accs in entries]
    cap = max(2, cfg.max_replicates)
    return Race(cands, alpha=1 - cfg.confidence, cap=cap, min_replicates=min(3, cap), budget_epochs=budget_epochs,
                epochs_per_replicate=float(study.proxy.epochs), n_val=n_val, scale=100.0)


def confirm_hook(study: Study, run_dir: str) -> Callable[[Ledger], bool] | None:
    """The searcher's idle hook that runs the race (None when the study does not confirm)."""
    cfg = study.search.confirm
    if not cfg.enabled:
        return None
    state: dict = {"race": None}

    def hook(ledger: Ledger) -> bool:
        done = {n: c for n, c in ledger.candidates.items() if c.state == "complete" and c.results}
        if not done:
            return False
        race = state["race"]
        if race is None:
            budget = cfg.budget_epochs or 2 * float(study.proxy.epochs) * len(done)
            race = state["race"] = make_race(study, [(n, c.config, c.results) for n, c in done.items()], budget, None)
        for n, c in done.items():
            for rep, acc in c.results.items():
                if rep not in race.candidates[n].accs:
                    race.add(n, rep, 100.0 * acc)
        for n, rep in list(race.pending):
            if rep not in ledger.candidates[n].results and rep not in ledger.candidates[n].queued:
                race.fail(n, rep)
        batch = race.next_batch()
        ledger.add_confirm_jobs(batch)
        update_summary(run_dir, {"racing_state": race.to_dict()})
        return bool(ledger.jobs)

    return hook
