"""Resuming a search after an interruption (even ``kill -9``): the record is ``trials.csv`` + Optuna.

``reconcile`` makes the two agree before anything new runs:
- a trial finished in ``trials.csv`` whose Optuna trial is still RUNNING (the driver died between
  writing the row and telling Optuna) is told from the record — never trained again;
- a trial the interruption cut off (``running`` in ``trials.csv``, or never recorded) is closed as FAIL
  in Optuna, dropped from ``trials.csv``, and its parameters are queued again (``enqueue_trial``), so it
  is trained from the start with identical parameters;
- a complete candidate still owed replicates stays RUNNING in Optuna; the ledger queues them.
Only Optuna's public API is used (``tell(..., skip_if_finished=True)``, ``enqueue_trial``).
"""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from lkscale.rundir import read_trials, write_trials
from lkscale.search.ledger import Ledger
from lkscale.search.searcher import tell_candidate
from lkscale.study import Study


def reconcile(study: Study, run_dir: str, storage) -> tuple[Ledger, int]:
    """Returns (the ledger rebuilt from the record, how many interrupted trials were re-queued)."""
    st = optuna.load_study(study_name=study.name, storage=storage)
    rows = [t for t in read_trials(run_dir) if t.state != "running"]
    write_trials(run_dir, [t.row for t in rows])
    ledger = Ledger.from_trials(rows, study.search.trials, study.search.replicates)
    requeued = 0
    for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name = ledger.by_number.get(t.number)
        c = ledger.candidates.get(name) if name else None
        if c is not None:
            if ledger.ready_to_tell(c):
                tell_candidate(st, c, {}, float(c.config.get("latency_ms") or 0.0))
            continue
        st.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if t.params:
            st.enqueue_trial(t.params, skip_if_exists=False)
            requeued += 1
    ledger.budget = max(0, study.search.trials - ledger.distinct_finished())
    for c in ledger.candidates.values():  # told before the interruption: nothing more to tell
        c.told = c.told or _finished(st, c.number)
    return ledger, requeued


def _finished(st: optuna.Study, number: int) -> bool:
    trials = st.get_trials(deepcopy=False)
    return number < len(trials) and trials[number].state.is_finished()


def close_abandoned(study: Study, storage) -> int:
    """After a finished Tune run: Optuna trials still RUNNING (asked, never told) are closed as FAIL."""
    st = optuna.load_study(study_name=study.name, storage=storage)
    running = st.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        st.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    return len(running)


def rung_history(rows: list, epochs: int) -> list[tuple[str, list[float], float]]:
    """(trial id, accuracy per epoch, latency) of every finished replicate-0 trial: the multi-objective
    ASHA rungs of a resumed search are rebuilt from these, so pruning compares with the whole record."""
    out = []
    for t in rows:
        accs = t.get("val_acc_epochs") or []
        if t.state in ("complete", "pruned") and not t.get("replicate") and accs and t.get("latency_ms") is not None:
            out.append((str(t.get("trial_id")), [float(a) for a in accs][:epochs], float(t.latency_ms)))
    return out
