"""Confirmation by racing: after the search budget, more replicates where they decide the front.

The race (``lkscale.racing``) starts from the candidates' search-phase replicates and their latencies,
each with the error it really has:

- measured: the standard error from the measured interval (``latency_se``); latencies measured side by
  side in the final run (``latency_source: measured-final``) are compared as one run; a figure from
  any other measurement (the provisional one at draw time: beyond ``MAX_FINAL_MEASURE`` candidates only
  the front is measured again) is its own run and also carries the run-to-run spread
  ``budgets.latency.between_run_cv``;
- predicted: the summed part intervals *and* the predictor's own error, from the held-out error of the
  calibration table (``error_pct``, a mean absolute percentage error; sd = MAPE * sqrt(pi/2) for normal
  errors). A table with no held-out error leaves the latency unable to decide anything;
- none: the candidate has no latency (NaN), is never faster or slower than a rival and can be
  confirmed by accuracy only (its verdict says so).

Accuracies are in points on a grid of 100 / val_n (the spread of a paired difference is floored
accordingly). Pairs may end *equivalent* within +-``analysis.margin`` points (two one-sided tests at
the per-look level). Each time the search goes idle the race proposes the next (candidate, replicate)
pairs; the ledger trains them (never pruned); their results feed the race; it ends when every pair is
resolved at ``search.confirm.confidence``, the candidates reach ``max_replicates``, or
``budget_epochs`` is spent.
"""
from __future__ import annotations

import math
from typing import Callable

from scipy import special

from lkscale.cost.measure import load_table
from lkscale.racing import Candidate as RaceCandidate
from lkscale.racing import Race
from lkscale.rundir import read_trials, update_summary
from lkscale.search.ledger import Ledger
from lkscale.study import Study

MAPE_TO_SD = math.sqrt(math.pi / 2)  # E|e| = sd * sqrt(2 / pi) for a normal error e


def latency_se(row: dict, confidence: float = 0.95) -> float:
    """Standard error of a latency from its measured interval (0 when there is none)."""
    lo, hi = row.get("latency_low_ms"), row.get("latency_high_ms")
    if lo is None or hi is None:
        return 0.0
    return max(0.0, (float(hi) - float(lo)) / (2 * float(special.ndtri(0.5 + confidence / 2))))


def predictor_error_pct(row: dict, study: Study) -> float | None:
    """The held-out MAPE (%) of the table a predicted latency comes from (the row's, else the study's table)."""
    if row.get("latency_error_pct") is not None:
        return float(row["latency_error_pct"])
    path = study.latency.table
    if not path:
        return None
    try:
        return load_table(path).error_pct
    except (OSError, ValueError, KeyError):
        return None


def race_latency(name: str, row: dict, study: Study) -> tuple[float, float, str]:
    """(latency ms, its standard error, measurement run) for the race; NaN latency when the row has none."""
    ms = row.get("latency_ms")
    if ms is None or not math.isfinite(float(ms)) or float(ms) <= 0:
        return float("nan"), 0.0, ""
    ms, se = float(ms), latency_se(row)
    source = row.get("latency_source") or "measured"
    if source == "predicted":
        err = predictor_error_pct(row, study)
        pred_se = math.inf if err is None else ms * err / 100 * MAPE_TO_SD
        return ms, math.hypot(se, pred_se), "predicted"
    return ms, se, "final" if source == "measured-final" else f"draw:{name}"


def make_race(study: Study, entries: list[tuple[str, dict, dict]], budget_epochs: float | None, n_val: int | None) -> Race:
    """``entries``: (name, row with latency fields, {replicate: accuracy as a fraction})."""
    cfg = study.search.confirm
    cands = []
    for name, row, accs in entries:
        ms, se, run = race_latency(name, row, study)
        cands.append(RaceCandidate(name, ms, se, {int(r): 100.0 * float(a) for r, a in accs.items()}, run))
    cap = max(2, cfg.max_replicates)
    return Race(cands, alpha=1 - cfg.confidence, cap=cap, min_replicates=min(3, cap), budget_epochs=budget_epochs,
                epochs_per_replicate=float(study.proxy.epochs), n_val=n_val, scale=100.0,
                margin=study.analysis.margin, between_run_cv=study.latency.between_run_cv)


def _val_n(run_dir: str) -> int | None:
    """The validation size of the run's trials (the accuracies' grid), None when not recorded."""
    for t in read_trials(run_dir):
        if t.get("val_n"):
            return int(t.get("val_n"))
    return None


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
            race = state["race"] = make_race(study, [(n, c.config, c.results) for n, c in done.items()], budget,
                                             _val_n(run_dir))
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
