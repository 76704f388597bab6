"""``lkscale search STUDY.yaml``: run a study (Ray Tune + Optuna) and report its Pareto front."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run a study: proxy-train candidates under FLOP/latency budgets",
                       description="Run the study in STUDY.yaml with Ray Tune + Optuna and report the Pareto front "
                                   "of validation accuracy against deploy latency.")
    p.add_argument("study", help="study file (YAML), e.g. studies/kernel_size.yaml")
    p.add_argument("--output", help="run folder (default: the study's output, runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the study in the run folder after an interruption")
    p.add_argument("--trials", type=int, help="override search.trials")
    p.add_argument("--address", help="Ray cluster to use: 'auto' ($RAY_ADDRESS or the cluster `ray start` recorded "
                                     "here), HOST:PORT of the head, or ray://HOST:PORT (Ray Client, needs "
                                     "ray[client]) (default: start a local Ray); see docs/cluster.md")
    p.add_argument("--storage", help="where Ray Tune keeps results and trial checkpoints (weights): a path every "
                                     "node shares or a URI Ray supports (s3://...); needed on a cluster without "
                                     "a shared filesystem")
    p.add_argument("--optuna-storage", help="Optuna storage: an RDB URL (e.g. postgresql://...) or a journal file")
    p.add_argument("--download", action="store_true", help="allow fetching CIFAR-10 from its official source when "
                                                           "no local dataset is found (same as data.download: true)")
    p.add_argument("--tensorboard", action="store_true", help="also write per-trial TensorBoard event files "
                                                              "(under the run folder's tune*/ folders)")
    p.add_argument("--mlflow", metavar="URI", help="also track the search in MLflow at this tracking URI "
                                                   "(sqlite:///PATH.db, http://HOST:5000): one run per trial, the run's files "
                                                   "as artifacts; needs the extra: pip install 'lkscale[mlflow]' "
                                                   "(same as tracking: {mlflow: URI} in the study)")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("--verbose", action="store_true", help="show Ray's own status table and worker logs")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from lkscale.cli import UsageError
    from lkscale.fidelity.run import run_fidelity
    from lkscale.report import make_report
    from lkscale.rundir import read_summary
    from lkscale.search import front_table, run_study
    from lkscale.search.tracking import log_run
    from lkscale.study import load_study

    if args.trials is not None and args.trials < 1:
        raise UsageError("--trials must be >= 1")
    study = load_study(args.study)
    if args.mlflow:
        study = dataclasses.replace(study, tracking=dataclasses.replace(study.tracking, mlflow=args.mlflow))

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    run_dir = run_study(study, output=args.output, resume=args.resume, address=args.address, storage=args.storage,
                        optuna_url=args.optuna_storage, trials=args.trials, verbose=args.verbose, progress=progress,
                        download=args.download, tensorboard=args.tensorboard)
    if study.fidelity and study.fidelity.enabled:  # the study asks: does the proxy rank like longer training?
        progress("fidelity: retraining a sample of the run at higher fidelity")
        run_fidelity(run_dir, study.fidelity, address=args.address, say=progress)
    summary = read_summary(run_dir)
    if not args.no_report:
        summary["report"] = make_report(run_dir)
        if study.tracking.mlflow:  # the report's files join the run's artifacts in MLflow
            log_run(study, run_dir)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        lat = summary.get("latency", {})
        print(f"\nPareto front (validation accuracy, mean over replicates with its 95% interval, vs deploy latency: "
              f"{lat.get('runtime')}, batch {lat.get('batch_size')}, {lat.get('threads')} thread(s)), {run_dir}:",
              file=sys.stderr)
        print(front_table(run_dir))
        c = summary["counts"]
        print(f"\n{summary['trials']} trials: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
              + f"; trial-epochs run {summary.get('trial_epochs_run')}, saved by pruning: "
              f"{summary['trial_epochs_saved']}", file=sys.stderr)
        if summary.get("confirmed") or summary.get("tied"):
            print(f"confirmed front: {', '.join(summary.get('confirmed') or []) or 'none'}; tied within noise: "
                  f"{', '.join(summary.get('tied') or []) or 'none'}", file=sys.stderr)
        answer = (read_summary(run_dir).get("report") or {}).get("answer") or []
        if answer:  # the report's first lines: the study's question answered, with intervals
            print("\nanswer:\n" + "\n".join(f"  {line.replace('**', '')}" for line in answer), file=sys.stderr)
    return 0 if summary["counts"].get("complete") else 1
