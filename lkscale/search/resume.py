"""Resuming a search after an interruption (even ``kill -9``): the record is ``trials.csv`` + Optuna.

``reconcile`` makes the two agree before anything new runs:
- a trial finished in ``trials.csv`` whose Optuna trial is still RUNNING (the driver died between
  writing the row and telling Optuna) is told from the record — never trained again;
- a trial the interruption cut off (``running`` in ``trials.csv``, or never recorded) is closed as FAIL
  in Optuna, dropped from ``trials.csv``, and its parameters are queued again (``enqueue_trial``), so it
  is trained from the start with identical parameters;
- a complete candidate still owed replicates stays RUNNING in Optuna; the ledger queues them.
Only Optuna's public API is used (``tell(..., skip_if_finished=True)``, ``enqueue_trial``).

``repair_record`` runs first, before anything expensive: a damaged record (a row of ``trials.csv`` cut
short or unparsable, ``costs.json`` or ``summary.json`` not valid JSON) is copied aside and rebuilt where
the Tune folders still hold it (each finished trial's config and last result are in Tune's experiment
state), and every rebuild is said; a row nothing holds any more is one clear error naming the file and
the row. ``costs.json`` is a cache (measured again) and ``summary.json`` is rewritten at the end.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Callable

import optuna
import yaml
from optuna.trial import TrialState

from lkscale.rundir import (RunDir, RunDirError, keep_damaged, read_costs, read_summary, read_trials,
                            write_trials)
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


def cut_short(run_dir: str) -> int:
    """Trials the record still has running after Tune returned: the run was cut short (Ctrl-C: Tune stops
    and returns normally)."""
    return sum(1 for t in read_trials(run_dir, []) if t.state == "running")


def close_abandoned(study: Study, storage, run_dir: str | None = None) -> int:
    """After Tune returned: Optuna trials still RUNNING (asked, never told) are closed as FAIL. With the run
    folder, what an interruption cut is kept for ``--resume``: a trial with no finished replicate is closed
    as FAIL and its parameters queued again (a grid would otherwise never train that point again), a
    candidate with finished replicates stays RUNNING (``reconcile`` tells it or queues what it is owed).
    Returns how many trials were cut (0 after a search that ran to its end)."""
    st = optuna.load_study(study_name=study.name, storage=storage)
    finished = {t.get("number") for t in read_trials(run_dir, []) if t.state != "running"} if run_dir else set()
    cut = 0
    for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number in finished:
            cut += 1
            continue
        st.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if run_dir and t.params:
            st.enqueue_trial(t.params, skip_if_exists=False)
            cut += 1
    return cut


def rung_history(rows: list, epochs: int) -> list[tuple[str, list[float], float]]:
    """(trial id, accuracy per epoch, latency) of every finished replicate-0 trial: the multi-objective
    ASHA rungs of a resumed search are rebuilt from these, so pruning compares with the whole record."""
    out = []
    for t in rows:
        accs = t.get("val_acc_epochs") or []
        if t.state in ("complete", "pruned") and not t.get("replicate") and accs and t.get("latency_ms") is not None:
            out.append((str(t.get("trial_id")), [float(a) for a in accs][:epochs], float(t.latency_ms)))
    return out


def tune_results(run_dir: str) -> dict[str, tuple[dict, dict, str]]:
    """trial_id -> (config, last result, Tune status) of every trial in the run folder's Tune experiments
    (the newest experiment state of each ``tune*/`` folder); {} where there is none or it is unreadable."""
    out: dict[str, tuple[dict, dict, str]] = {}
    for folder in sorted(glob.glob(os.path.join(run_dir, "tune*"))):
        states = sorted(glob.glob(os.path.join(folder, "experiment_state-*.json")))
        if not states:
            continue
        try:
            with open(states[-1], encoding="utf-8") as f:
                data = json.load(f)
            for trial_json, runtime_json in data.get("trial_data", []):
                t, rt = json.loads(trial_json), json.loads(runtime_json)
                out[str(t["trial_id"])] = (t.get("config") or {}, rt.get("last_result") or {}, str(t.get("status")))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a state cut by the interruption: nothing to rebuild from it
    return out


def _rebuilt_row(trial_id: str, tune: dict, epochs: int, seed: int) -> dict | None:
    """The trials.csv row of a finished Tune trial, from its config and last result (None: not finished)."""
    from lkscale.search.recorder import row_for  # deferred: imports Ray (only when a row must be rebuilt)
    from lkscale.search.searcher import trial_state

    if trial_id not in tune:
        return None
    cfg, result, _ = tune[trial_id]
    finished = result.get("infeasible") or result.get("failed") or int(result.get("epoch") or 0) >= epochs
    if not finished or not cfg.get("name") and not result.get("infeasible"):
        return None
    row = row_for(cfg, result, {}, trial_state(result), epochs, seed)
    row["trial_id"] = trial_id
    return row


def repair_record(run_dir: str, say: Callable[[str], None], epochs: int | None = None, seed: int | None = None) -> list[str]:
    """Before a resume: name every damaged part of the record and rebuild it, or stop with one line.
    Returns what was rebuilt (also said)."""
    d, done = RunDir(run_dir), []
    if not os.path.isdir(run_dir):
        return done
    bad_costs, bad_summary, bad_rows = [], [], []
    read_costs(run_dir, bad_costs, strict=False)
    read_summary(run_dir, bad_summary, strict=False)
    rows = read_trials(run_dir, bad_rows) if os.path.isfile(d.trials_csv) else []
    if bad_rows:
        proxy = (_study_dict(run_dir).get("proxy") or {})
        epochs = epochs or int(proxy.get("epochs") or 0)
        seed = int(proxy.get("seed") or 0) if seed is None else seed
        tune = tune_results(run_dir)
        have = {str(t.get("trial_id")) for t in rows}
        rebuilt = []
        for dmg in bad_rows:
            if dmg.key in have:
                done.append(f"{dmg}: dropped (trial {dmg.key} has a readable row)")
                continue
            if dmg.key in tune and _rebuilt_row(dmg.key, tune, epochs, seed) is None:
                done.append(f"{dmg}: dropped (Tune says trial {dmg.key} was still running: it is trained again)")
                continue
            row = _rebuilt_row(dmg.key, tune, epochs, seed) if dmg.key else None
            if row is None:
                raise RunDirError(f"{dmg}, and the Tune folders do not hold that trial's result; delete that line "
                                  f"(its trial is then trained again) and run --resume again")
            rebuilt.append(row)
            done.append(f"{dmg.file}: {dmg.where} ({dmg.reason}) rebuilt from the Tune folders: trial {row['number']} "
                        f"replicate {row['replicate']} {row['state']}")
        copy = keep_damaged(d.trials_csv)
        write_trials(run_dir, [t.row for t in rows] + rebuilt)
        done.append(f"the damaged {os.path.basename(d.trials_csv)} is kept as {copy}")
    for dmg, what in ((bad_costs, "costs are measured again where needed (each trial keeps the latency it was "
                                  "searched with)"),
                      (bad_summary, "it is written again when this search ends")):
        if dmg:
            copy = keep_damaged(dmg[0].file)
            os.remove(dmg[0].file)
            done.append(f"{dmg[0]}: moved to {copy}; {what}")
    for line in done:
        say("record: " + line)
    return done


def _study_dict(run_dir: str) -> dict:
    try:
        with open(RunDir(run_dir).study_yaml, encoding="utf-8") as f:
            out = yaml.safe_load(f)
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}
