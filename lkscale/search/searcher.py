"""A Ray Tune ``Searcher`` over an Optuna study, so every Tune trial slot is used for what the study needs.

``StudySearch`` asks Optuna for new architectures through Optuna's public ask-and-tell API
(``study.ask()``, then the define-by-run ``Objective`` on that trial), but first hands out the
replicates and confirmation jobs its ``Ledger`` owes; an architecture drawn twice is recorded as a
duplicate and never trained twice. Optuna hears each candidate once (``study.tell(number, values, state,
skip_if_finished=True)``): PRUNED when the scheduler stopped its replicate 0, FAIL when it failed,
COMPLETE with (mean accuracy over replicates, latency) otherwise; over-budget candidates are COMPLETE
with a violated constraint, so none of these is in ``best_trials``. Only public Ray (``Searcher``) and
Optuna APIs are used. Resume works from the record (trials.csv + the Optuna storage), so the searcher
keeps no checkpoint of its own.

Ray and Optuna are imported at module level: this module is only imported by the search driver.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from lkscale.search.ledger import Ledger

log = logging.getLogger("lkscale.search")
MAX_DRAWS = 64  # draws of already-tried architectures in a row before the space counts as exhausted


class StudySearch(Searcher):
    def __init__(self, objective: Callable[[optuna.Trial], dict], study: optuna.Study, ledger: Ledger,
                 on_idle: Callable[[Ledger], bool] | None = None, grid_size: int | None = None):
        super().__init__(metric="val_acc", mode="max")  # the second objective (latency) is Optuna's business
        self.objective, self.study, self.ledger = objective, study, ledger
        self.on_idle = on_idle  # called whenever the search phase is over and idle; True: it queued jobs
        self.grid_size = grid_size  # a grid: no draw once every point has been started
        self.asked: dict[str, optuna.Trial] = {}  # Tune trial id -> the Optuna trial it runs (primary draws)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space is the define-by-run objective; nothing to take from Tune's config

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a resumed search rebuilds its ledger from trials.csv and the Optuna storage."""

    def restore(self, checkpoint_path: str) -> None:
        """See :meth:`save`."""

    def _draw(self, trial_id: str) -> dict:
        ot = self.study.ask()
        self.asked[trial_id] = ot
        return {**ot.params, **self.objective(ot)}

    # ------------------------------------------------------------------------------- asking
    def suggest(self, trial_id: str):
        led = self.ledger
        job = led.next_job(trial_id)
        if job is not None:
            c = led.candidates[job.name]
            return {**c.config, "replicate": job.replicate, "phase": job.phase}
        if led.budget_spent():
            if led.idle():
                if self.on_idle and self.on_idle(led):
                    return self.suggest(trial_id)
                return Searcher.FINISHED
            return None
        for _ in range(MAX_DRAWS):
            if self._grid_started():
                led.exhausted = True
                return self.suggest(trial_id)
            cfg = self._draw(trial_id)
            name = cfg.get("name") if cfg else None
            prior = led.seen(name) if name else None
            if prior is None:
                if name:
                    led.register(name, int(cfg["number"]), cfg, trial_id)
                else:  # not a valid network: recorded as infeasible, counts as asked
                    led.running[trial_id] = None
                    led.asked += 1
                return {**cfg, "replicate": 0, "phase": "search"}
            ot = self.asked.pop(trial_id)
            ot.set_user_attr("duplicate_of", prior.number)
            self.study.tell(ot, state=TrialState.FAIL, skip_if_finished=True)
            led.duplicates += 1
        led.exhausted = True
        log.info("the sampler drew %d architectures already tried in a row: the space is exhausted", MAX_DRAWS)
        return None if not led.idle() else Searcher.FINISHED

    def _grid_started(self) -> bool:
        """Every grid point has an Optuna trial (finished, or running in another slot)."""
        if not self.grid_size:
            return False
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return False  # a re-queued trial is still to be asked
        return len({t.system_attrs.get("grid_id") for t in trials} - {None}) >= self.grid_size

    # ------------------------------------------------------------------------------- telling
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return  # multi-objective: Optuna takes no intermediate values (pruning is the scheduler's)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        result = result or {}
        if trial_id not in self.ledger.running:
            return  # finished before an interruption; the resumed ledger already has it
        ot = self.asked.pop(trial_id, None)
        state = trial_state(result, error)
        name = ot.user_attrs.get("name") if ot is not None else None
        c = self.ledger.finish(trial_id, name, state, result.get("val_acc"))
        if c is None:  # a draw that never built a network
            if ot is not None:
                self.study.tell(ot, [0.0, 0.0], state=TrialState.COMPLETE, skip_if_finished=True)
            return
        if ot is not None and result.get("val_acc_epochs"):
            ot.set_user_attr("val_acc_epochs", result["val_acc_epochs"])
        if self.ledger.ready_to_tell(c):
            tell_candidate(self.study, c, result, float(c.config.get("latency_ms") or 0.0))


def trial_state(result: dict, error: bool = False) -> str:
    """A Tune trial's final state from its last result (the recorder marks scheduler-stopped ones)."""
    if error or result.get("failed"):
        return "failed"
    if result.get("infeasible"):
        return "infeasible"
    if result.get("pruned") or result.get("val_acc") is None:
        return "pruned"
    return "complete"


def tell_candidate(study: optuna.Study, c, result: dict, latency_ms: float) -> None:
    """Tell Optuna a candidate's outcome (once): mean accuracy over its replicates, its latency."""
    c.told = True
    if c.state == "failed":
        study.tell(c.number, state=TrialState.FAIL, skip_if_finished=True)
    elif c.state == "pruned":
        study.tell(c.number, state=TrialState.PRUNED, skip_if_finished=True)
    elif c.state == "infeasible":
        study.tell(c.number, [0.0, latency_ms], state=TrialState.COMPLETE, skip_if_finished=True)
    else:
        acc = float(np.mean(list(c.results.values()))) if c.results else float(result.get("val_acc") or 0.0)
        study.tell(c.number, [acc, latency_ms], state=TrialState.COMPLETE, skip_if_finished=True)
