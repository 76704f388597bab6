"""Run (or resume) a study: the checks, then Ray Tune with the Optuna searcher, then the final numbers.

Order of work (nothing expensive starts before every check has passed):
1. the run folder (a new one, or ``--resume`` of an old one), the data (found, or downloaded where
   allowed, and decoded once), the resources (a trial must fit on a node);
2. costs: a grid is costed — and its latency measured side by side — before any training;
   impossible params/FLOPs budgets fail here;
3. Ray Tune: ``StudySearch`` (Optuna, define-by-run) hands out candidates and replicates, the scheduler
   stops dominated runs between epochs (never in a scaling study), ``Recorder`` keeps trials.csv;
4. after training (a quiet slot): the complete candidates' latencies measured again side by side,
   ``summary.json`` written.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable

from lkscale.rundir import TUNE_DIR, RunDir, candidates, front_of, read_trials, tune_experiment, write_study
from lkscale.reachability import check_reachable
from lkscale.runlock import RunLock
from lkscale.search.baselines import prepare_baselines
from lkscale.search.checks import check_budgets_feasible, check_data, check_resources, space_specs
from lkscale.search.objective import Objective
from lkscale.search.resume import repair_record
from lkscale.search.summary import update_latencies, write_summary
from lkscale.search.trainable import train_candidate
from lkscale.study import Study, StudyError, load_study

log = logging.getLogger("lkscale.search")


def _run_folder(study: Study, output: str | None, resume: bool, storage: str | None, optuna_url: str | None):
    run_dir = os.path.abspath(output or study.output)
    remote = bool(storage and "://" in storage)
    tune_root = os.path.abspath(storage) if storage and not remote else run_dir
    d = RunDir(run_dir)
    has_run = os.path.isfile(d.study_yaml) and os.path.isdir(os.path.join(tune_root, TUNE_DIR))
    if remote:  # Tune's folders are in remote storage: the run folder is the record
        has_run = os.path.isfile(d.study_yaml) and (bool(optuna_url) or os.path.isfile(d.optuna_journal))
    if has_run and not resume:
        raise StudyError("output", f"{run_dir} already holds a search; pass --resume to continue it or choose "
                                   f"another --output")
    if resume and not has_run:
        raise StudyError("output", f"nothing to resume in {run_dir} (no study.yaml and tune/ folder)")
    return run_dir, tune_root


def _never_started(output: str, storage: str | None, optuna_url: str | None) -> bool:
    """A run folder whose first run stopped before its search began (say, a full disk while costing): its
    study.yaml is there, but no Optuna journal and no tune/ folder; ``--resume`` starts it."""
    d = RunDir(os.path.abspath(output))
    tune_root = os.path.abspath(storage) if storage and "://" not in storage else d.path
    return (not optuna_url and not (storage and "://" in storage) and os.path.isfile(d.study_yaml)
            and not os.path.isfile(d.optuna_journal) and not os.path.isdir(os.path.join(tune_root, TUNE_DIR)))


def _experiment_name(tune_root: str, resume: bool, storage: str | None) -> str:
    return tune_experiment(tune_root, resume, remote=bool(storage and "://" in storage))


def prepare(study: Study | str, output: str | None = None, resume: bool = False, storage: str | None = None,
            optuna_url: str | None = None, trials: int | None = None, download: bool = False,
            say: Callable[[str], None] = log.info, latency_runner: Callable | None = None
            ) -> tuple[Study, str, str, Objective]:
    """Every check that can fail before Ray starts; returns (study as run, run folder, Tune root, objective).
    ``latency_runner``: where latency is measured (``lkscale.search.remote_latency``; None: here)."""
    if isinstance(study, str):
        study = load_study(study)
    if trials:
        study = dataclasses.replace(study, search=dataclasses.replace(study.search, trials=trials))
    if download:
        study = dataclasses.replace(study, data=dataclasses.replace(study.data, download=True))
    run_dir, tune_root = _run_folder(study, output, resume, storage, optuna_url)
    for line in check_reachable(study):  # a choice no point builds: StudyError; a sampled doubt: a warning
        say(line)
    say(f"study {study.name}: checking data")
    study = dataclasses.replace(study, data=check_data(study, say))
    os.makedirs(run_dir, exist_ok=True)
    if not resume:
        write_study(run_dir, study.to_yaml())
        check_budgets_feasible(study)
    objective = Objective(study, run_dir, say, latency_runner)
    if study.search.sampler == "grid":
        specs = space_specs(study)
        say(f"costing {len(specs)} distinct grid networks before training (params, FLOPs; latency side by side)")
        objective.measure(list(specs.values()), label="(before training) ", quiet_slot=True)
        for spec in specs.values():
            objective.cost(spec)
    prepare_baselines(study, objective, say)  # each runs on the study's images; costed, latency side by side
    return study, run_dir, tune_root, objective


def run_study(study: Study | str, output: str | None = None, resume: bool = False, address: str | None = None,
              storage: str | None = None, optuna_url: str | None = None, trials: int | None = None,
              verbose: bool = False, progress: Callable[[str], None] | None = None, max_failures: int = 2,
              download: bool = False, tensorboard: bool = False, trainable: Callable | None = None) -> str:
    """Run (or resume) a study; returns the run folder. Nothing already in the folder is lost.

    ``trainable``: a Tune function trainable in place of proxy training (same config and reports as
    ``lkscale.search.trainable.train_candidate``; tests drive the whole search with fixed learning curves)."""
    from lkscale.search.baseline_tuning import train_baselines  # deferred: imports Ray
    from lkscale.search.tracking import check_tracking, log_run  # deferred: imports Ray
    from lkscale.search.remote_latency import reserve  # deferred: imports Ray
    from lkscale.search.tuning import fit, start_ray  # deferred: imports Ray

    say = progress or (lambda m: log.info(m))
    study = load_study(study) if isinstance(study, str) else study
    check_tracking(study.tracking, study.name)  # --mlflow without MLflow, or a store it refuses: before anything
    if not address:
        check_resources(study)  # this machine: before anything else is spent
    with RunLock(output or study.output, "search --resume" if resume else "search") as lock:  # one driver per folder
        if lock.took_over:
            say(f"note: took over the run-folder lock left by {lock.took_over.describe()}, which is gone")
        if resume and _never_started(output or study.output, storage, optuna_url):
            say("note: the first run stopped before its search began (no tune/ folder, no Optuna journal): starting it")
            resume = False
        if resume:  # damaged records: rebuilt from Optuna and Tune where they can be, else one clear error
            repair_record(output or study.output, say)
        runner = None
        if study.latency.resources:  # measured on the node that declares it: Ray first, that node reserved
            start_ray(address, verbose, say)
            runner = reserve(study, say)
        study, run_dir, tune_root, objective = prepare(study, output, resume, storage, optuna_url, trials, download,
                                                       say, latency_runner=runner)
        t0 = time.time()
        ran = fit(study, run_dir, tune_root, objective, resume=resume, address=address, storage=storage,
            optuna_url=optuna_url, verbose=verbose, progress=progress, max_failures=max_failures,
            experiment=_experiment_name(tune_root, resume, storage), tensorboard=tensorboard, say=say,
            trainable=trainable)
        refs = train_baselines(study, run_dir, tune_root, objective, trainable=trainable or train_candidate,
                               address=address, storage=storage, resume=resume, max_failures=max_failures,
                               say=say) if study.baselines else 0
        if ran or refs:  # a finished study resumed: nothing trained, the final latencies stand
            update_latencies(study, run_dir, objective, say)
        if runner:
            runner.release()
        write_summary(run_dir, study, seconds=time.time() - t0)
        if study.tracking.mlflow:  # final latencies and the run's files in MLflow (the CLI adds the report)
            log_run(study, run_dir)
    return run_dir


def front_table(run_dir: str) -> str:
    """The accuracy/latency front as a plain text table: mean accuracy over replicates with its interval."""
    cands = candidates(read_trials(run_dir))
    front = front_of(cands, "latency_ms")
    lines = [f"{'name':<52} {'kernels':<14} {'params':>8} {'MACs':>8} {'lat ms':>15} {'acc % (95% CI)':>22} {'n':>2}"
             "  (n=1: the CI is validation sampling only, no training noise)"]
    for t in front:
        lo, hi = t.get("latency_low_ms"), t.get("latency_high_ms")
        lat = f"{t.latency_ms:.2f}" + (f" [{lo:.2f}-{hi:.2f}]" if lo is not None and hi is not None else "")
        alo, ahi = t.get("val_acc_low"), t.get("val_acc_high")
        acc = f"{100 * t.val_acc:.1f}" + (f" [{100 * alo:.1f}-{100 * ahi:.1f}]" if alo == alo and alo is not None else "")
        lines.append(f"{t.name:<52} {'/'.join(map(str, t.kernels or [])):<14} {(t.params or 0) / 1e6:>7.2f}M "
                     f"{(t.flops or 0) / 1e6:>7.1f}M {lat:>15} {acc:>22} {t.get('n_replicates', 1):>2}")
    return "\n".join(lines)
