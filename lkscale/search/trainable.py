"""The Tune function trainable: proxy-train one (candidate, replicate), reporting after every epoch.

Common random numbers: replicate ``r`` fixes the validation sample, the data subset, the batch order and
the initial weights (seed ``proxy.seed + r`` for all four; :func:`seeded_configs` sets them one at a
time, as ``lkscale noise`` does) — the same for every candidate — so the difference between two candidates at
the same replicate cancels the noise they share. The final weights of replicate 0 are written to the
run folder (``lkscale.weights``); on a cluster they also travel as a Tune checkpoint.

Tune hears of a validated epoch only (``proxy.val_every_epoch: false``: of the last one); every epoch, validated
or not, is also written to the trial's progress file (``lkscale.search.progress.write_progress``), which the
driver's heartbeat reads: progress without a report that would carry a fake accuracy.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import traceback
import warnings

import torch

from lkscale.baselines import ROLE as BASELINE
from lkscale.baselines import build_seeded as build_baseline
from lkscale.baselines import from_name
from lkscale.config import DataConfig, TrainConfig, from_dict
from lkscale.data import load_splits
from lkscale.model import build_model
from lkscale.rundir import RunDir
from lkscale.search.memory import is_out_of_memory, out_of_memory_reason, trial_memory_limit
from lkscale.search.progress import write_progress
from lkscale.search.staging import node_data, node_id
from lkscale.spec import ArchSpec
from lkscale.train import train_model
from lkscale.weights import save_trained

log = logging.getLogger("lkscale.search")


def replicate_configs(data: DataConfig, proxy: TrainConfig, replicate: int, threads: int) -> tuple:
    """The data and training settings of replicate ``replicate`` (common random numbers): every seed
    ``proxy.seed + replicate``."""
    seed = proxy.seed + replicate
    return seeded_configs(dataclasses.replace(data, test_per_class=0), proxy, val=seed, subset=seed, init=seed,
                          order=seed, threads=threads)


def seeded_configs(data: DataConfig, proxy: TrainConfig, *, val: int, subset: int, init: int, order: int,
                   threads: int | None = None) -> tuple:
    """Data and training settings with the four seeds of a run set one by one: the validation sample,
    the training subset, the initial weights (``proxy.init_seed``, for :func:`build_seeded`) and the batch
    order (``proxy.seed``). All four equal: exactly the single-seed run of before."""
    return (dataclasses.replace(data, seed=subset, val_seed=val),
            dataclasses.replace(proxy, seed=order, init_seed=init, threads=threads))


def init_seed(proxy: TrainConfig) -> int:
    """The seed of the initial weights (``proxy.init_seed``, else ``proxy.seed``)."""
    return proxy.seed if proxy.init_seed is None else proxy.init_seed


def build_seeded(spec: ArchSpec, seed: int, num_classes: int, in_chans: int) -> torch.nn.Module:
    """The model's initial weights depend on the replicate's seed only, not on the process."""
    torch.manual_seed(seed)
    return build_model(spec, num_classes=num_classes, in_chans=in_chans)


def _save(model, spec, splits, path: str) -> None:
    save_trained(path, model, spec, splits)


def _weights(model, spec, splits, run_dir: str, checkpoint: bool) -> str | None:
    """Write the final weights; on a cluster also into a fresh checkpoint folder (returned)."""
    if not checkpoint:
        _save(model, spec, splits, RunDir(run_dir).weights(spec.name))
        return None
    ckpt = tempfile.mkdtemp(prefix="lkscale-ckpt-")
    _save(model, spec, splits, RunDir(ckpt).weights(spec.name))
    if os.path.isdir(run_dir):  # this node sees the driver's folder (one machine, or a shared filesystem)
        os.makedirs(RunDir(run_dir).weights_dir, exist_ok=True)
        shutil.copyfile(RunDir(ckpt).weights(spec.name), RunDir(run_dir).weights(spec.name) + ".part")
        os.replace(RunDir(run_dir).weights(spec.name) + ".part", RunDir(run_dir).weights(spec.name))
    return ckpt


def _trial_id(tune) -> str:
    """This trial's Tune id ("" outside a Tune session: the tests call the trainable directly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray warns outside a session, then returns None
        try:
            return str(tune.get_context().get_trial_id() or "")
        except Exception:  # noqa: BLE001 - progress is a courtesy; the trial goes on without it
            return ""


def train_candidate(config: dict, data_stage: dict | None = None) -> None:
    """Tune function trainable (see the module docstring). Never raises: a failure is reported."""
    from ray import tune  # deferred: this module is importable without Ray running

    base = {"epoch": 0, "val_acc": 0.0, "latency_ms": float(config.get("latency_ms") or 0.0), "node": node_id(),
            "infeasible": False, "failed": False, "error": "", "replicate": int(config.get("replicate", 0))}
    if config.get("infeasible"):
        tune.report({**base, "infeasible": True, "error": config["infeasible"]})
        return
    threads = max(1, int(config["cpus_per_trial"]))
    torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS=1 in workers
    t0, history = time.time(), []
    trial_id, run_dir = _trial_id(tune), str(config.get("run_dir") or "")
    write_progress(run_dir, trial_id, 0, 0.0)  # started: the heartbeat counts this epoch's time from here
    memory_mb = config.get("memory_mb")  # resources.memory_per_trial_mb: past it, this trial fails alone
    limit = contextlib.ExitStack()
    try:
        limit.enter_context(trial_memory_limit(memory_mb))
        data, proxy = replicate_configs(from_dict(DataConfig, config["data"]), from_dict(TrainConfig, config["proxy"]),
                                        base["replicate"], threads)
        splits = load_splits(node_data(data, data_stage))
        ref = from_name(config["name"]) if config.get("role") == BASELINE else None  # a study's baseline
        spec = ArchSpec.from_json(config["spec"]) if ref is None else None
        model = build_seeded(spec, init_seed(proxy), splits.num_classes, splits.in_chans) if ref is None else \
            build_baseline(ref, init_seed(proxy), splits.num_classes, splits.in_chans, splits.input_size)
        base["val_n"] = len(splits.val)
        keep = base["replicate"] == 0 and ref is None  # a baseline's weights are not kept

        def on_epoch(m: dict):
            history.append(float(m["val_acc"]))
            ckpt = None
            if m["epoch"] >= proxy.epochs and keep:
                ckpt = _weights(model, spec, splits, config["run_dir"], bool(config.get("weights_checkpoint")))
            tune.report({**base, "epoch": m["epoch"], "val_acc": float(m["val_acc"]), "val_loss": float(m["val_loss"]),
                         "train_loss": float(m["train_loss"]), "epoch_seconds": float(m["epoch_seconds"]),
                         "images_per_s": float(m["images_per_s"]), "val_acc_epochs": json.dumps(history),
                         **{k: float(v) for k, v in m.items() if k.startswith("seconds_")},  # per phase
                         "seconds": time.time() - t0, "device": str(m.get("device", "cpu")),
                         "precision": proxy.precision},
                        checkpoint=tune.Checkpoint.from_directory(ckpt) if ckpt else None)
            if ckpt:
                shutil.rmtree(ckpt, ignore_errors=True)

        result = train_model(model, splits, proxy, callback=on_epoch,
                             on_epoch_end=lambda epoch, _s: write_progress(run_dir, trial_id, epoch, time.time() - t0))
        limit.close()
        if result.status == "nan":
            tune.report({**base, "epoch": result.epochs_done, "failed": True, "val_acc_epochs": json.dumps(history),
                         "error": result.message or "loss became NaN/inf", "seconds": time.time() - t0})
    except Exception as e:  # noqa: BLE001 - recorded as a failed trial; the study goes on
        limit.close()
        msg = out_of_memory_reason(e, memory_mb) if is_out_of_memory(e) else f"{type(e).__name__}: {e}"
        log.warning("trial failed: %s\n%s", msg, traceback.format_exc())
        tune.report({**base, "epoch": len(history), "failed": True, "error": msg[:500],
                     "val_acc_epochs": json.dumps(history), "seconds": time.time() - t0})
