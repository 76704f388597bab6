#!/usr/bin/env python
"""Search -> retrain the top-k -> export, locally or on a Ray cluster.

    python pipelines/search_retrain_export.py studies/kernel_size.yaml --out exports/kernel_size \
        [--top 3] [--retrain-epochs 30] [--address auto] [--storage /shared/ray] \
        [--optuna-storage postgresql://...] [--output runs/kernel_size] [--resume] [--trials N]

1. search: ``lkscale.search.run_study`` (local Ray, or the cluster at ``--address``). A run folder that
   already holds this search is continued with ``--resume`` (nothing finished is trained again).
2. report: ``lkscale.report.make_report`` (tables and figures in the run folder).
3. retrain + export: the ``--top`` complete trials by validation accuracy, each retrained from scratch for
   ``--retrain-epochs`` epochs (the study's data and proxy settings) and exported
   (``lkscale.export.export_trial``: spec, weights, deploy weights, ONNX, model card, test accuracy).
   Each winner is one Ray task with the study's ``resources.cpus_per_trial`` CPUs, so on a cluster the
   winners retrain in parallel on any node; a node that cannot read the data root gets the dataset from
   Ray's object store (``lkscale.search.node_data``). The task sends its export folder back to the
   driver as a tar, so the output folder need not be shared. ``--retrain-epochs 0`` exports the
   proxy-trained weights directly (no Ray task).

Writes ``OUT/<name>/`` per winner, ``OUT/exports.json`` (the index, as ``lkscale export`` writes it) and
``OUT/pipeline.json`` (the stages, their seconds, and the node each winner was retrained on).
Exit status: 0 ok, 1 nothing to export (no complete trial) or a stage failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
from typing import Callable

import ray
import torch

from lkscale.export import (ExportError, check_name, export_trial, export_winners, read_export, safe_child,
                            select_winners, timm_name)
from lkscale.export.layout import write_index
from lkscale.fidelity.run import run_fidelity
from lkscale.report import make_report
from lkscale.rundir import RunDirError, load_run
from lkscale.search import data_stage_payload, node_data, node_id, run_study
from lkscale.spec import SpecError
from lkscale.study import StudyError, load_study

log = logging.getLogger("lkscale.pipeline")


def _retrain_export(run, trial, out_name: str, epochs: int, onnx: bool, stage: dict | None, threads: int) -> dict:
    """Ray task body: retrain one winner from scratch and export it; returns the folder as tar bytes."""
    torch.set_num_threads(max(1, threads))  # Ray sets OMP_NUM_THREADS=1 in workers
    run.study["data"] = {**(run.study.get("data") or {}), "root": node_data(run.study_config().data, stage).root}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="lkscale-export-") as tmp:
        folder = export_trial(run, trial, tmp, retrain_epochs=epochs, onnx=onnx)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.add(folder, arcname=out_name)
    return {"name": out_name, "tar": buf.getvalue(), "node": node_id(), "seconds": round(time.time() - t0, 1)}


def _unpack(result: dict, out: str) -> str:
    """Put a task's export folder at ``out/<name>`` (extracted beside it, then renamed into place)."""
    dest = safe_child(out, result["name"], "winner name")
    tmp = tempfile.mkdtemp(prefix=f".unpack-{result['name']}-", dir=out)
    try:
        with tarfile.open(fileobj=io.BytesIO(result["tar"]), mode="r:") as tf:
            tf.extractall(tmp, filter="data")
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.replace(os.path.join(tmp, result["name"]), dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def retrain_and_export(run_dir: str, out: str, top: int, retrain_epochs: int, address: str | None = None,
                       onnx: bool = True, say: Callable[[str], None] = print) -> list[dict]:
    """Stage 3: the ``top`` winners of ``run_dir`` retrained (Ray tasks) and exported into ``out``."""
    if retrain_epochs == 0:  # the proxy weights, exported in this process
        paths = export_winners(run_dir, out, top=top, retrain_epochs=0, onnx=onnx, progress=say)
        return [{"name": os.path.basename(p), "folder": p, "node": "driver"} for p in paths]
    run = load_run(run_dir)
    winners = select_winners(run, top=top)
    os.makedirs(out, exist_ok=True)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    study = run.study_config()
    cpus = int(study.resources.cpus_per_trial)
    stage = data_stage_payload(study.data) if address else None
    task = ray.remote(_retrain_export).options(num_cpus=cpus, max_retries=1)
    say(f"retraining {len(winners)} winner(s) for {retrain_epochs} epochs as Ray tasks ({cpus} CPU each)")
    refs = {task.remote(run, t, check_name(t.name, "trial name"), retrain_epochs, onnx, stage, cpus): t
            for t in winners}
    done = []
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        res = ray.get(ready[0])
        folder = _unpack(res, out)
        m = read_export(folder)["metrics"]
        say(f"exported {res['name']} (retrained on node {res['node']} in {res['seconds']}s; "
            f"test acc {m.get('test_acc')})")
        done.append({"name": res["name"], "folder": folder, "node": res["node"], "seconds": res["seconds"]})
    order = [t.name for t in winners]
    done.sort(key=lambda d: order.index(d["name"]))
    write_index(out, run.name, run.path, f"top {top}", retrain_epochs,
                [{"name": d["name"], "folder": d["folder"], "timm_name": timm_name(d["name"])} for d in done])
    return done


def run_pipeline(study_path: str, out: str, top: int = 1, retrain_epochs: int = 0, output: str | None = None,
                 resume: bool = False, address: str | None = None, storage: str | None = None,
                 optuna_url: str | None = None, trials: int | None = None, onnx: bool = True, report: bool = True,
                 say: Callable[[str], None] = print) -> dict:
    """All three stages; returns what ``pipeline.json`` holds."""

    study = load_study(study_path)
    run_dir = os.path.abspath(output or study.output)
    if not resume and os.path.isfile(os.path.join(run_dir, "study.yaml")):
        say(f"{run_dir} already holds a search: continuing it (--resume)")
        resume = True
    stages: dict[str, float] = {}
    t = time.time()
    run_study(study, output=run_dir, resume=resume, address=address, storage=storage, optuna_url=optuna_url,
              trials=trials, progress=say)
    if study.fidelity and study.fidelity.enabled:  # as `lkscale search` does: the study asks for it
        say("fidelity: retraining a sample of the run at higher fidelity")
        run_fidelity(run_dir, study.fidelity, address=address, say=say)
    stages["search"] = round(time.time() - t, 1)
    if report:
        t = time.time()
        make_report(run_dir)
        stages["report"] = round(time.time() - t, 1)
    t = time.time()
    os.makedirs(out, exist_ok=True)
    exported = retrain_and_export(run_dir, out, top, retrain_epochs, address=address, onnx=onnx, say=say)
    stages["retrain_export"] = round(time.time() - t, 1)
    record = {"study": study.name, "run_dir": run_dir, "out": os.path.abspath(out), "top": top,
              "retrain_epochs": retrain_epochs, "address": address, "storage": storage, "stages_seconds": stages,
              "exports": exported}
    with open(os.path.join(out, "pipeline.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="search_retrain_export", description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--out", required=True, help="folder for the exported winners")
    p.add_argument("--top", type=int, default=1, help="how many winners (best validation accuracy); default 1")
    p.add_argument("--retrain-epochs", type=int, default=0,
                   help="retrain each winner from scratch for N epochs before export (0: proxy weights)")
    p.add_argument("--output", help="search run folder (default: the study's output)")
    p.add_argument("--resume", action="store_true", help="continue the search in the run folder")
    p.add_argument("--trials", type=int, help="override search.trials")
    p.add_argument("--address", help="Ray cluster: 'auto' or ray://HOST:PORT (default: local Ray)")
    p.add_argument("--storage", help="Ray Tune storage (a shared path or a URI such as s3://...)")
    p.add_argument("--optuna-storage", help="Optuna storage: an RDB URL (postgresql://..., sqlite:///...) or a journal")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    p.add_argument("--no-report", action="store_true", help="skip the report stage")
    args = p.parse_args(argv)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.top < 1:
        say("search_retrain_export: error: --top must be >= 1")
        return 2
    if args.retrain_epochs < 0:
        say("search_retrain_export: error: --retrain-epochs must be >= 0")
        return 2
    if args.trials is not None and args.trials < 1:
        say("search_retrain_export: error: --trials must be >= 1")
        return 2
    try:
        rec = run_pipeline(args.study, args.out, top=args.top, retrain_epochs=args.retrain_epochs, output=args.output,
                           resume=args.resume, address=args.address, storage=args.storage,
                           optuna_url=args.optuna_storage, trials=args.trials, onnx=not args.no_onnx,
                           report=not args.no_report, say=say)
    except (StudyError, SpecError) as e:
        say(f"search_retrain_export: error: {e}")
        return 2
    except (ExportError, RunDirError) as e:
        say(f"search_retrain_export: failed: {e}")
        return 1
    except Exception as e:  # noqa: BLE001 - a stage failed (a retrain task, Ray): one line, status 1
        log.debug("pipeline failed", exc_info=True)
        say(f"search_retrain_export: failed: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}")
        return 1
    print(json.dumps(rec, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
