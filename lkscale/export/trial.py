"""Export one trial (or a run's winners) into a folder: spec, train/deploy weights, ONNX, card, timm config.

``export_winners(run_dir, out, top=N | pareto=True, retrain_epochs=0)`` writes one folder per winner,
named after the architecture (``ArchSpec.name``), under ``out``:

- ``spec.yaml``: the architecture (``lkscale.ArchSpec.load`` / ``lkscale.build_model`` rebuild it);
- ``model.safetensors``: train-form weights (the proxy-trained ones, or retrained from scratch for
  ``retrain_epochs`` epochs with the study's proxy settings, then scored on the test split);
- ``deploy.safetensors``: the re-parameterised (deploy) form, BNs folded and branches merged;
- ``model.onnx``: the deploy form, dynamic batch, checked against PyTorch with onnxruntime (CPU);
- ``config.json``: a timm-style config (``timm.create_model("local-dir:<folder>")`` reads it);
- ``export.json`` (everything below, machine-readable) and ``card.md`` (the model card).

Weights go through ``lkscale.weights`` (safetensors, one metadata schema; never pickle). Names and paths
that come from a results folder are validated: a winner folder must resolve inside ``out`` and a
weights file inside the run's ``weights/``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
from typing import Any, Callable

import torch

from lkscale import __version__
from lkscale.config import DataConfig
from lkscale.cost import effective_kernels
from lkscale.data import load_splits
from lkscale.export.card import model_card
from lkscale.export.layout import ExportDir, write_index
from lkscale.export.onnx import export_onnx, seeded_input
from lkscale.export.safety import ExportCheckError, ExportError, check_name, safe_child
from lkscale.export.select import select_winners
from lkscale.export.timm_cfg import timm_config, timm_name
from lkscale.model import build_model
from lkscale.reparam import reparameterize
from lkscale.rundir import RunDir, load_run
from lkscale.spec import ArchSpec, SpecError
from lkscale.train import evaluate, train_model
from lkscale.weights import WeightsError, WeightsMeta, read_weights, save_weights

log = logging.getLogger(__name__)

FORMAT = "lkscale-export/1"


def _latency_setting(run) -> dict:
    """The search's latency measurement settings (``budgets.latency`` of the run's typed study)."""
    lat = run.study_config().budgets.latency
    return {f"latency_{k}": getattr(lat, k) for k in ("batch_size", "input_size", "threads")}


def _study_input_size(run) -> int:
    """The input size the search costed at: the latency's, else the data's (``Study.latency``)."""
    return int(run.study_config().latency.input_size or DataConfig.input_size)


def _data_config(run, test: bool) -> DataConfig:
    """The study's data settings (its own defaults for what the run's study.yaml leaves out)."""
    cfg = run.study_config().data
    return cfg if test else dataclasses.replace(cfg, test_per_class=0)


def _retrain(run, spec: ArchSpec, epochs: int, say: Callable[[str], None]) -> tuple[torch.nn.Module, Any, dict]:
    splits = load_splits(_data_config(run, test=True))
    model = build_model(spec, num_classes=splits.num_classes, in_chans=splits.in_chans)
    cfg = dataclasses.replace(run.study_config().proxy, epochs=epochs)
    say(f"retraining {spec.name} from scratch for {epochs} epochs on {len(splits.train)} images")
    result = train_model(model, splits, cfg, callback=lambda m: say(
        f"  epoch {m['epoch']}: val acc {m['val_acc']:.3f}") and None)
    if result.status == "nan":
        raise ExportCheckError(f"retraining {spec.name} diverged: {result.message or 'loss became NaN/inf'}")
    metrics: dict[str, Any] = {"retrain_epochs": epochs, "retrain_val_acc": float(result.val_acc),
                               "retrain_seconds": float(result.seconds), "retrain_train_images": len(splits.train)}
    if splits.test is not None and len(splits.test):
        _loss, acc = evaluate(model, splits.test, cfg.eval_batch_size)
        metrics.update(test_acc=float(acc), test_images=len(splits.test))
    else:
        metrics.update(test_acc=None, test_images=0)
    model.eval()
    return model, splits, metrics


def _normalisation(run, meta: WeightsMeta | None, splits) -> dict:
    if splits is not None:
        return {"mean": [float(v) for v in splits.mean], "std": [float(v) for v in splits.std], "source": "training subset"}
    if meta is not None and meta.mean and meta.std:
        return {"mean": list(meta.mean), "std": list(meta.std), "source": "weights metadata"}
    try:  # the run's weights predate mean/std in the metadata: recompute them from the same seeded subset
        sp = load_splits(_data_config(run, test=False))
        return {"mean": [float(v) for v in sp.mean], "std": [float(v) for v in sp.std],
                "source": "recomputed from the study's training subset"}
    except Exception as e:  # noqa: BLE001 - the card says it is unknown
        log.warning("could not recompute the input normalisation: %s", e)
        return {"mean": None, "std": None, "source": f"unknown ({type(e).__name__}: {e})"}


def _effective_kernels(model, input_size: int, in_chans: int) -> list[dict]:
    try:
        return [{"stage": s.index, "block": s.block, "map": list(s.map_hw), "kernel": s.kernel,
                 "effective_kernel": list(s.effective_kernel), "dead_params": s.dead_params, "dw_params": s.dw_params}
                for s in effective_kernels(model, input_size, in_chans)]
    except Exception as e:  # noqa: BLE001
        log.warning("effective kernels not computed: %s", e)
        return []


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _proxy_model(run, trial, spec: ArchSpec, name: str) -> tuple[torch.nn.Module, WeightsMeta]:
    """The trial's proxy-trained model from the run's ``weights/<name>.safetensors``."""
    wpath = safe_child(RunDir(run.path).weights_dir, f"{name}.safetensors", "weights file")
    if not os.path.isfile(wpath):
        raise ExportError(f"trial {name}: no proxy weights at {wpath}; pass --retrain-epochs N to train it")
    try:
        state, meta = read_weights(wpath)
    except WeightsError as e:
        raise ExportError(str(e)) from None
    if meta.spec is not None and meta.spec.name != name:
        raise ExportError(f"{wpath}: holds weights of {meta.spec.name}, not {name}")
    model = build_model(spec, num_classes=meta.num_classes, in_chans=meta.in_chans)
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def _trial_spec(trial) -> tuple[str, ArchSpec]:
    name = check_name(trial.name, "trial name")
    try:
        spec = ArchSpec.from_json(trial.row.get("spec") or "")
    except SpecError as e:
        raise ExportError(f"trial {name}: its spec does not parse ({e})") from None
    if spec.name != name:
        raise ExportError(f"trial {name}: name does not match its spec (spec name {spec.name})")
    return name, spec


def _record(run, trial, spec: ArchSpec, model, deployed, data: dict, norm: dict, weights_source: str,
            metrics: dict, deploy_diff: float) -> dict:
    """``export.json`` (without the ONNX check, added once it ran)."""
    return {
        "format": FORMAT, "name": spec.name, "timm_name": timm_name(spec.name), "spec": spec.to_dict(), **data,
        "normalisation": norm, "weights": weights_source, "metrics": metrics,
        "costs": {"params": _count(model), "deploy_params": _count(deployed), "flops": trial.get("flops"),
                  "latency_ms": trial.get("latency_ms"),
                  "latency_setting": _latency_setting(run),
                  "params_search": trial.get("params"), "deploy_params_search": trial.get("deploy_params")},
        "effective_kernels": _effective_kernels(model, data["input_size"], data["in_chans"]),
        "checks": {"deploy_vs_train_max_abs_diff": deploy_diff, "onnx": None},
        "provenance": {"study": run.name, "run_dir": run.path, "trial_id": trial.get("trial_id"),
                       "trial_number": trial.get("number"), "seed": trial.get("seed"),
                       "proxy_seed": run.study_config().proxy.seed,
                       "lkscale_version": __version__, "torch_version": torch.__version__,
                       "exported_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
    }


def _write_folder(folder: str, spec: ArchSpec, model, deployed, record: dict, onnx: bool,
                  say: Callable[[str], None]) -> None:
    n = record["normalisation"]
    common = dict(num_classes=record["num_classes"], in_chans=record["in_chans"], input_size=record["input_size"],
                  classes=record["classes"], mean=n["mean"], std=n["std"], extra={"lkscale_version": __version__})
    d = ExportDir(folder)
    spec.save(d.spec_yaml)
    save_weights(d.model_weights, model, spec, form="train", **common)
    save_weights(d.deploy_weights, deployed, spec, form="deploy", **common)
    if onnx:
        say(f"exporting {spec.name} to ONNX")
        record["checks"]["onnx"] = export_onnx(deployed, d.onnx, record["input_size"], record["in_chans"])
    for path, text in ((d.export_json, json.dumps(record, indent=2)),
                       (d.timm_config, json.dumps(timm_config(record), indent=2)), (d.card_md, model_card(record))):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def export_trial(run, trial, out: str, retrain_epochs: int = 0, onnx: bool = True,
                 progress: Callable[[str], None] | None = None) -> str:
    """Export one complete trial of ``run`` into ``out/<name>``; returns the folder."""
    say = progress or (lambda m: log.info(m))
    name, spec = _trial_spec(trial)
    dest = safe_child(out, name, "winner name")
    input_size = _study_input_size(run)
    meta, splits = None, None
    metrics: dict[str, Any] = {"val_acc": trial.get("val_acc"), "val_acc_epochs": trial.get("val_acc_epochs"),
                               "proxy_epochs": trial.get("epochs_done")}
    if retrain_epochs:
        model, splits, extra = _retrain(run, spec, int(retrain_epochs), say)
        metrics.update(extra)
        num_classes, in_chans, classes = splits.num_classes, splits.in_chans, list(splits.classes)
        weights_source = f"retrained from scratch for {retrain_epochs} epochs"
    else:
        model, meta = _proxy_model(run, trial, spec, name)
        num_classes, in_chans = meta.num_classes, meta.in_chans
        classes = list(meta.classes) if meta.classes is not None else None
        weights_source = f"proxy-trained in the search ({trial.get('epochs_done')} epochs)"
    deployed = reparameterize(model)
    x = seeded_input(2, in_chans, input_size)
    with torch.inference_mode():
        deploy_diff = float((model(x) - deployed(x)).abs().max())
    data = {"num_classes": num_classes, "in_chans": in_chans, "input_size": input_size, "classes": classes}
    record = _record(run, trial, spec, model, deployed, data, _normalisation(run, meta, splits), weights_source,
                     metrics, deploy_diff)
    tmp = os.path.join(os.path.realpath(out), f".tmp-{name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        _write_folder(tmp, spec, model, deployed, record, onnx, say)
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"exported {name} -> {dest}")
    return dest


def export_winners(run_dir: str, out: str, top: int | None = None, pareto: bool = False, retrain_epochs: int = 0,
                   onnx: bool = True, progress: Callable[[str], None] | None = None) -> list[str]:
    """Export the run's winners (``top`` by accuracy, or the accuracy/latency ``pareto`` front) into ``out``."""
    if not isinstance(retrain_epochs, int) or isinstance(retrain_epochs, bool) or retrain_epochs < 0:
        raise ExportError(f"--retrain-epochs must be an integer >= 0, got {retrain_epochs!r}")
    run = load_run(run_dir)
    winners = select_winners(run, top=top, pareto=pareto)
    os.makedirs(out, exist_ok=True)
    say = progress or (lambda m: log.info(m))
    say(f"exporting {len(winners)} winner(s) of {run.name} to {os.path.realpath(out)}")
    paths = [export_trial(run, t, out, retrain_epochs=retrain_epochs, onnx=onnx, progress=say) for t in winners]
    index = [{"name": os.path.basename(p), "folder": p, "timm_name": timm_name(os.path.basename(p))} for p in paths]
    write_index(out, run.name, run.path, "pareto" if pareto else f"top {top}", retrain_epochs, index)
    return paths
