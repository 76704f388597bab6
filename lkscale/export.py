"""Export the winners of a search run, load them back, and use them through timm.

``export_winners(run_dir, out, top=N | pareto=True, retrain_epochs=0)`` writes one folder per winner,
named after the architecture (``ArchSpec.name``), under ``out``:

- ``spec.yaml``: the architecture (``lkscale.ArchSpec.load`` / ``lkscale.build_model`` rebuild it);
- ``model.safetensors``: train-form weights (the proxy-trained ones, or retrained from scratch for
  ``retrain_epochs`` epochs with the study's proxy settings, then scored on the test split);
- ``deploy.safetensors``: the re-parameterised (deploy) form, BNs folded and branches merged;
- ``model.onnx``: the deploy form, dynamic batch, checked against PyTorch with onnxruntime (CPU);
- ``config.json``: a timm-style config (``timm.create_model("local-dir:<folder>")`` reads it);
- ``export.json`` (everything below, machine-readable) and ``card.md`` (the model card: metrics,
  costs, effective kernels, checks, provenance).

Weights are only ever written and read as safetensors (never pickle; ``torch.load`` is not used).
Names and paths that come from a results folder are validated: a winner folder must resolve inside
``out`` and a weights file inside the run's ``weights/`` (no ``..``, separators or absolute paths).

Loading::

    model = lkscale.load("exports/rep-k13.7.3-...")               # train form, eval mode
    model = lkscale.load("exports/rep-k13.7.3-...", deploy=True)  # deploy form

timm::

    import lkscale.export, timm        # lkscale first (it makes timm importable here); the import
                                       # registers lkscale models with timm
    timm.create_model("lkscale_replk_proxy", num_classes=10)      # every preset, as lkscale_<preset>
    timm.create_model("local-dir:exports/rep-k13.7.3-...", pretrained=True)  # any export folder
    name = lkscale.export.register_export("exports/rep-k13.7.3-...")        # -> "lkscale_rep_k13_7_3_..."
    timm.create_model(name, pretrained=True)                      # the export's own weights
    timm.create_model("lkscale_replk_proxy", pretrained=True,
                      pretrained_cfg_overlay=dict(file="exports/.../model.safetensors"), num_classes=10)

timm names cannot contain ``.`` (it separates a pretrained tag), so an export ``rep-k13.7.3-d1...`` is
registered as ``lkscale_rep_k13_7_3_d1...`` (:func:`timm_name`). ``local-dir:`` needs no registration
beyond the import: ``config.json`` names the generic entry point ``lkscale_spec`` with the spec as a
model argument.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import sys
import warnings
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lkscale.spec import ArchSpec, SpecError

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,159}")
ONNX_ATOL = 1e-4
FORMAT = "lkscale-export/1"


class ExportError(ValueError):
    """An export that cannot be done as asked (bad run folder, unsafe name, missing weights): bad input."""


class ExportCheckError(RuntimeError):
    """An export that was done but failed its check (ONNX output differs, retraining diverged)."""


# ----------------------------------------------------------------------------------------- safety
def check_name(name: Any, what: str = "name") -> str:
    """``name`` if it is a plain file name (letters, digits, ``._+=-``; no separators, no ``..``)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ExportError(f"unsafe {what} {name!r}: expected a plain name of letters, digits and ._+=- "
                          f"(no path separators, no '..', not absolute)")
    return name


def safe_child(parent: str, name: str, what: str = "name") -> str:
    """``parent/name`` after checking ``name`` and that the resolved path stays inside ``parent``."""
    check_name(name, what)
    base = os.path.realpath(parent)
    path = os.path.realpath(os.path.join(base, name))
    if os.path.dirname(path) != base:
        raise ExportError(f"unsafe {what} {name!r}: resolves to {path}, outside {base}")
    return path


# ----------------------------------------------------------------------------------------- weights
def _metadata(path: str) -> dict:
    with safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


def _save(state: dict, path: str, metadata: dict) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(state, path, metadata={k: str(v) for k, v in metadata.items()})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # like the other files (safetensors writes 0600)


def _load_weights(path: str) -> dict:
    if not str(path).endswith(".safetensors"):
        raise ExportError(f"{path}: only .safetensors weights are read (no pickle)")
    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such weights file")
    return load_file(path, device="cpu")


# ----------------------------------------------------------------------------------------- selection
def select_winners(run, top: int | None = None, pareto: bool = False) -> list:
    """Complete trials to export: the accuracy/latency Pareto front, or the ``top`` by validation accuracy."""
    from lkscale.report import front_of

    if (top is None) == (not pareto):
        raise ExportError("choose exactly one of --top N or --pareto")
    complete = [t for t in run.trials if t.state == "complete" and t.get("val_acc") is not None]
    if not complete:
        raise ExportError(f"{run.path}: no complete trials to export")
    if pareto:
        return front_of(run.trials, "latency_ms")
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ExportError(f"--top must be an integer >= 1, got {top!r}")
    inf = float("inf")
    ranked = sorted(complete, key=lambda t: (-t.val_acc, t.get("latency_ms", inf), t.name))
    seen, out = set(), []
    for t in ranked:  # one folder per architecture: the best trial of each
        if t.name not in seen:
            seen.add(t.name)
            out.append(t)
    return out[:top]


# ----------------------------------------------------------------------------------------- checks
def _seeded_input(batch: int, in_chans: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, in_chans, size, size, generator=g)


def export_onnx(model: torch.nn.Module, path: str, input_size: int, in_chans: int = 3,
                atol: float = ONNX_ATOL) -> dict:
    """Write ``model`` (eval) to ONNX with a dynamic batch and check it with onnxruntime on CPU.

    Uses the ``torch.export``-based exporter (``dynamo=True``); falls back to the TorchScript one if that
    fails. Raises ExportError when onnxruntime's output differs from PyTorch's by more than ``atol``.
    """
    import onnxruntime as ort

    model = model.eval()
    x = _seeded_input(2, in_chans, input_size, seed=1)
    info: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(model, (x,), None, dynamo=True, verbose=False, input_names=["input"],
                                     output_names=["logits"],
                                     dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
            prog.save(path)
        info["exporter"] = "torch.onnx.export(dynamo=True)"
        info["opset"] = int(prog.model.opset_imports.get("", 0)) if hasattr(prog, "model") else None
    except Exception as e:  # noqa: BLE001 - fall back to the TorchScript exporter
        log.warning("dynamo ONNX export failed (%s: %s); using the TorchScript exporter", type(e).__name__, e)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
        info["exporter"] = "torch.onnx.export(dynamo=False)"
        info["opset"] = 17
    xs = _seeded_input(3, in_chans, input_size, seed=2)  # another batch size: checks the dynamic axis too
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: xs.numpy()})[0]
    with torch.inference_mode():
        want = model(xs)
    diff = float((torch.from_numpy(got) - want).abs().max())
    info.update(onnxruntime=ort.__version__, check_batch=3, max_abs_diff=diff, atol=atol,
                output_max_abs=float(want.abs().max()))
    if not diff <= atol:
        raise ExportCheckError(f"{path}: onnxruntime output differs from PyTorch by {diff:.3g} > {atol:g}")
    return info


# ----------------------------------------------------------------------------------------- export
def _study_input_size(run) -> int:
    b, d = run.study.get("budgets") or {}, run.study.get("data") or {}
    return int(b.get("latency_input_size") or d.get("input_size") or 32)


def _data_config(run, test: bool):
    from lkscale.data import DataConfig

    d, p = run.study.get("data") or {}, run.study.get("proxy") or {}
    return DataConfig(dataset=d.get("dataset", "imagefolder"), root=d.get("root"),
                      train_per_class=d.get("train_per_class"), val_per_class=d.get("val_per_class", 100),
                      test_per_class=d.get("test_per_class") if test else 0, input_size=d.get("input_size", 32),
                      seed=int(p.get("seed", 0)), augment=bool(d.get("augment", True)))


def _retrain(run, spec: ArchSpec, epochs: int, say: Callable[[str], None]) -> tuple[torch.nn.Module, Any, dict]:
    from lkscale.data import load_splits
    from lkscale.model import build_model
    from lkscale.train import TrainConfig, evaluate, train_model

    p = run.study.get("proxy") or {}
    splits = load_splits(_data_config(run, test=True))
    model = build_model(spec, num_classes=splits.num_classes, in_chans=splits.in_chans)
    cfg = TrainConfig(epochs=epochs, batch_size=int(p.get("batch_size", 128)), lr=float(p.get("lr", 2e-3)),
                      weight_decay=float(p.get("weight_decay", 0.05)), warmup_epochs=float(p.get("warmup_epochs", 0.5)),
                      label_smoothing=float(p.get("label_smoothing", 0.1)), clip_grad=p.get("clip_grad") or None,
                      seed=int(p.get("seed", 0)), augment=bool((run.study.get("data") or {}).get("augment", True)))
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


def _normalisation(run, meta: dict, splits) -> dict:
    if splits is not None:
        return {"mean": [float(v) for v in splits.mean], "std": [float(v) for v in splits.std], "source": "training subset"}
    if meta.get("mean") and meta.get("std"):
        return {"mean": json.loads(meta["mean"]), "std": json.loads(meta["std"]), "source": "weights metadata"}
    try:  # the run's weights predate mean/std in the metadata: recompute them from the same seeded subset
        from lkscale.data import load_splits

        sp = load_splits(_data_config(run, test=False))
        return {"mean": [float(v) for v in sp.mean], "std": [float(v) for v in sp.std],
                "source": "recomputed from the study's training subset"}
    except Exception as e:  # noqa: BLE001 - the card says it is unknown
        log.warning("could not recompute the input normalisation: %s", e)
        return {"mean": None, "std": None, "source": f"unknown ({type(e).__name__}: {e})"}


def _effective_kernels(model, input_size: int, in_chans: int) -> list[dict]:
    try:
        from lkscale.cost import effective_kernels
    except ImportError:
        return []
    try:
        return [{"stage": s.index, "block": s.block, "map": list(s.map_hw), "kernel": s.kernel,
                 "effective_kernel": list(s.effective_kernel), "dead_params": s.dead_params, "dw_params": s.dw_params}
                for s in effective_kernels(model, input_size, in_chans)]
    except Exception as e:  # noqa: BLE001
        log.warning("effective kernels not computed: %s", e)
        return []


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def export_trial(run, trial, out: str, retrain_epochs: int = 0, onnx: bool = True,
                 progress: Callable[[str], None] | None = None) -> str:
    """Export one complete trial of ``run`` into ``out/<name>``; returns the folder."""
    from lkscale import __version__
    from lkscale.model import build_model
    from lkscale.reparam import reparameterize

    say = progress or (lambda m: log.info(m))
    name = check_name(trial.name, "trial name")
    try:
        spec = ArchSpec.from_json(trial.row.get("spec") or "")
    except SpecError as e:
        raise ExportError(f"trial {name}: its spec does not parse ({e})") from None
    if spec.name != name:
        raise ExportError(f"trial {name}: name does not match its spec (spec name {spec.name})")
    dest = safe_child(out, name, "winner name")
    input_size = _study_input_size(run)
    meta: dict = {}
    splits = None
    metrics: dict[str, Any] = {"val_acc": trial.get("val_acc"), "val_acc_epochs": trial.get("val_acc_epochs"),
                               "proxy_epochs": trial.get("epochs_done")}
    if retrain_epochs:
        model, splits, extra = _retrain(run, spec, int(retrain_epochs), say)
        metrics.update(extra)
        num_classes, in_chans, classes = splits.num_classes, splits.in_chans, list(splits.classes)
        weights_source = f"retrained from scratch for {retrain_epochs} epochs"
    else:
        wdir = os.path.join(run.path, "weights")
        wpath = safe_child(wdir, f"{name}.safetensors", "weights file")
        if not os.path.isfile(wpath):
            raise ExportError(f"trial {name}: no proxy weights at {wpath}; pass --retrain-epochs N to train it")
        meta = _metadata(wpath)
        if meta.get("spec"):
            wname = ArchSpec.from_json(meta["spec"]).name
            if wname != name:
                raise ExportError(f"{wpath}: holds weights of {wname}, not {name}")
        num_classes = int(meta.get("num_classes", 10))
        in_chans = int(meta.get("in_chans", 3))
        classes = json.loads(meta["classes"]) if meta.get("classes") else None
        model = build_model(spec, num_classes=num_classes, in_chans=in_chans)
        model.load_state_dict(_load_weights(wpath), strict=True)
        model.eval()
        weights_source = f"proxy-trained in the search ({trial.get('epochs_done')} epochs)"
    norm = _normalisation(run, meta, splits)
    deployed = reparameterize(model)
    x = _seeded_input(2, in_chans, input_size)
    with torch.inference_mode():
        deploy_diff = float((model(x) - deployed(x)).abs().max())

    tmp = os.path.join(os.path.realpath(out), f".tmp-{name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        common = {"format": FORMAT, "spec": spec.to_json(), "num_classes": num_classes, "in_chans": in_chans,
                  "input_size": input_size, "classes": json.dumps(classes), "mean": json.dumps(norm["mean"]),
                  "std": json.dumps(norm["std"]), "lkscale_version": __version__}
        spec.save(os.path.join(tmp, "spec.yaml"))
        _save(model.state_dict(), os.path.join(tmp, "model.safetensors"), {**common, "form": "train"})
        _save(deployed.state_dict(), os.path.join(tmp, "deploy.safetensors"), {**common, "form": "deploy"})
        onnx_info = None
        if onnx:
            say(f"exporting {name} to ONNX")
            onnx_info = export_onnx(deployed, os.path.join(tmp, "model.onnx"), input_size, in_chans)
        record = {
            "format": FORMAT, "name": name, "timm_name": timm_name(name), "spec": spec.to_dict(),
            "num_classes": num_classes, "in_chans": in_chans, "input_size": input_size, "classes": classes,
            "normalisation": norm, "weights": weights_source, "metrics": metrics,
            "costs": {"params": _count(model), "deploy_params": _count(deployed), "flops": trial.get("flops"),
                      "latency_ms": trial.get("latency_ms"),
                      "latency_setting": {k: (run.study.get("budgets") or {}).get(k) for k in
                                          ("latency_batch_size", "latency_input_size", "latency_threads")},
                      "params_search": trial.get("params"), "deploy_params_search": trial.get("deploy_params")},
            "effective_kernels": _effective_kernels(model, input_size, in_chans),
            "checks": {"deploy_vs_train_max_abs_diff": deploy_diff, "onnx": onnx_info},
            "provenance": {"study": run.name, "run_dir": run.path, "trial_id": trial.get("trial_id"),
                           "trial_number": trial.get("number"), "seed": trial.get("seed"),
                           "proxy_seed": (run.study.get("proxy") or {}).get("seed"),
                           "lkscale_version": __version__, "torch_version": torch.__version__,
                           "exported_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
        }
        with open(os.path.join(tmp, "export.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(timm_config(record), f, indent=2)
        with open(os.path.join(tmp, "card.md"), "w", encoding="utf-8") as f:
            f.write(model_card(record))
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
    from lkscale.report import load_run

    if not isinstance(retrain_epochs, int) or isinstance(retrain_epochs, bool) or retrain_epochs < 0:
        raise ExportError(f"--retrain-epochs must be an integer >= 0, got {retrain_epochs!r}")
    run = load_run(run_dir)
    winners = select_winners(run, top=top, pareto=pareto)
    os.makedirs(out, exist_ok=True)
    say = progress or (lambda m: log.info(m))
    say(f"exporting {len(winners)} winner(s) of {run.name} to {os.path.realpath(out)}")
    paths = [export_trial(run, t, out, retrain_epochs=retrain_epochs, onnx=onnx, progress=say) for t in winners]
    index = [{"name": os.path.basename(p), "folder": p, "timm_name": timm_name(os.path.basename(p))} for p in paths]
    with open(os.path.join(out, "exports.json"), "w", encoding="utf-8") as f:
        json.dump({"study": run.name, "run_dir": run.path, "selection": "pareto" if pareto else f"top {top}",
                   "retrain_epochs": retrain_epochs, "exports": index}, f, indent=2)
    return paths


# ----------------------------------------------------------------------------------------- card
def _fmt(v: Any, unit: str = "") -> str:
    from lkscale.report import fmt_count

    return fmt_count(v, unit) if isinstance(v, (int, float)) else "-"


def model_card(r: dict) -> str:
    m, c, ch, pv = r["metrics"], r["costs"], r["checks"], r["provenance"]
    spec = r["spec"]
    acc = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    L = [f"# {r['name']}", "",
         f"Found by the lkscale study `{pv['study']}` (trial {pv['trial_number']}, id `{pv['trial_id']}`). "
         f"Weights: {r['weights']}.", "", "## Architecture", "",
         f"Stem stride {spec['stem']['stride']} ({spec['stem']['family']}), downsample {spec['downsample']}, "
         f"head {spec['head']}, drop path {spec['drop_path_rate']}, layer scale {spec['layer_scale']}.", "",
         "| stage | block | depth | width | kernel | effective kernel | dead dw params | DCN groups | re-param | FFN ratio |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    eff = {e["stage"]: e for e in r.get("effective_kernels") or []}
    for i, st in enumerate(spec["stages"]):
        e = eff.get(i)
        ek = f"{e['effective_kernel'][0]}x{e['effective_kernel'][1]} on {e['map'][0]}x{e['map'][1]}" if e else "-"
        dead = f"{e['dead_params']} of {e['dw_params']}" if e else "-"
        L.append(f"| {i} | {st['block']} | {st['depth']} | {st['width']} | {st['kernel']} | {ek} | {dead} | "
                 f"{st.get('dcn_groups') or '-'} | {', '.join(map(str, st.get('reparam') or [])) or '-'} | "
                 f"{st.get('ffn_ratio', '-')} |")
    L += ["", f"Effective kernel: the taps that ever touch the image at {r['input_size']} px input "
              f"(lkscale.cost.effective_kernels).", "", "## Metrics", "", "| metric | value |", "|---|---|",
          f"| validation accuracy (proxy, search) | {acc(m.get('val_acc'))} after {m.get('proxy_epochs')} epochs |"]
    if m.get("retrain_epochs"):
        L += [f"| retrained | {m['retrain_epochs']} epochs from scratch on {m.get('retrain_train_images')} images, "
              f"{m.get('retrain_seconds', 0):.0f} s |",
              f"| validation accuracy (retrained) | {acc(m.get('retrain_val_acc'))} |",
              f"| **test accuracy (retrained)** | **{acc(m.get('test_acc'))}** on {m.get('test_images')} images |"]
    else:
        L.append("| test accuracy | not measured (export with --retrain-epochs N to retrain and test) |")
    ls = c.get("latency_setting") or {}
    L += ["", "## Costs", "", "| cost | value |", "|---|---|",
          f"| parameters (train form) | {_fmt(c['params'])} ({c['params']:,}) |",
          f"| parameters (deploy form) | {_fmt(c['deploy_params'])} ({c['deploy_params']:,}) |",
          f"| FLOPs (multiply-adds, deploy form, one {r['input_size']} px image) | {_fmt(c.get('flops'))} |",
          f"| deploy latency (search measurement) | "
          + ("-" if c.get("latency_ms") is None else f"{c['latency_ms']:.3g} ms")
          + f" (batch {ls.get('latency_batch_size', '-')}, {ls.get('latency_input_size', '-')} px, "
            f"{ls.get('latency_threads', '-')} thread(s), CPU of the search machine) |",
          "", "## Checks", "",
          f"- deploy form vs train form (random input): max abs diff {ch['deploy_vs_train_max_abs_diff']:.2e}"]
    o = ch.get("onnx")
    if o:
        L.append(f"- ONNX (`{o['exporter']}`, opset {o.get('opset')}) vs PyTorch with onnxruntime {o['onnxruntime']} "
                 f"on CPU, batch {o['check_batch']}: max abs diff **{o['max_abs_diff']:.2e}** (limit {o['atol']:g}; "
                 f"outputs up to {o['output_max_abs']:.3g})")
    else:
        L.append("- ONNX: not exported")
    n = r["normalisation"]
    mean = "-" if n["mean"] is None else ", ".join(f"{v:.4f}" for v in n["mean"])
    std = "-" if n["std"] is None else ", ".join(f"{v:.4f}" for v in n["std"])
    L += ["", "## Input", "",
          f"{r['in_chans']} x {r['input_size']} x {r['input_size']} images scaled to [0, 1], then normalised with "
          f"mean ({mean}) and std ({std}) ({n['source']}). {r['num_classes']} classes"
          + (f": {', '.join(map(str, r['classes']))}." if r.get("classes") else "."), "",
          "## Use", "", "```python", "import lkscale", f"model = lkscale.load(\"{r['name']}\")               # train form",
          f"model = lkscale.load(\"{r['name']}\", deploy=True)  # deploy form", "",
          "import lkscale.export, timm  # importing lkscale.export registers lkscale models with timm",
          f"model = timm.create_model(\"local-dir:{r['name']}\", pretrained=True)",
          f"# or: lkscale.export.register_export(\"{r['name']}\"); timm.create_model(\"{r['timm_name']}\", pretrained=True)",
          "```", "", "Files: `spec.yaml`, `model.safetensors` (train form), `deploy.safetensors` (deploy form), "
          "`model.onnx` (deploy form, dynamic batch), `config.json` (timm), `export.json` (this card as data).", "",
          "## Provenance", "", "| | |", "|---|---|",
          f"| study | `{pv['study']}` |", f"| run folder | `{pv['run_dir']}` |",
          f"| trial | number {pv['trial_number']}, id `{pv['trial_id']}` |",
          f"| seed | trial {pv.get('seed')}, proxy training {pv.get('proxy_seed')} |",
          f"| lkscale | {pv['lkscale_version']} |", f"| torch | {pv['torch_version']} |",
          f"| exported | {pv['exported_at']} |", ""]
    return "\n".join(L)


# ----------------------------------------------------------------------------------------- loading
def read_export(path: str) -> dict:
    """The ``export.json`` record of an export folder."""
    p = os.path.join(path, "export.json")
    if not os.path.isfile(p):
        raise ExportError(f"{path}: not an lkscale export folder (no export.json)")
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def load(path: str, deploy: bool = False) -> torch.nn.Module:
    """Rebuild the model of an export folder (train form, or ``deploy`` form), weights loaded, eval mode."""
    from lkscale.model import build_model
    from lkscale.reparam import reparameterize

    if not os.path.isdir(path):
        raise ExportError(f"{path}: no such export folder")
    spec_path = os.path.join(path, "spec.yaml")
    wpath = os.path.join(path, "deploy.safetensors" if deploy else "model.safetensors")
    for p in (spec_path, wpath):
        if not os.path.isfile(p):
            raise ExportError(f"{path}: not an lkscale export folder (missing {os.path.basename(p)})")
    spec = ArchSpec.load(spec_path)
    meta = _metadata(wpath)
    model = build_model(spec, num_classes=int(meta.get("num_classes", 1000)), in_chans=int(meta.get("in_chans", 3)))
    if deploy:
        model = reparameterize(model, inplace=True)
    model.load_state_dict(_load_weights(wpath), strict=True)
    model.eval()
    model.pretrained_cfg = _pretrained_cfg_from_meta(meta, spec.name)
    return model


# ----------------------------------------------------------------------------------------- timm
_REGISTERED: dict[str, str | None] = {}  # timm name -> default weights file (None: no weights)


def timm_name(name: str) -> str:
    """timm registry name of an lkscale architecture or preset: ``lkscale_`` + name with ``.-+=`` as ``_``."""
    return "lkscale_" + re.sub(r"[^A-Za-z0-9_]", "_", name).lower()


def _pretrained_cfg_from_meta(meta: dict, arch: str) -> dict:
    size = int(meta.get("input_size", 224))
    chans = int(meta.get("in_chans", 3))
    cfg = {"architecture": arch, "num_classes": int(meta.get("num_classes", 1000)), "input_size": (chans, size, size),
           "interpolation": "bilinear", "crop_pct": 1.0, "first_conv": None, "classifier": None}
    for k in ("mean", "std"):
        v = json.loads(meta[k]) if meta.get(k) else None
        if v:
            cfg[k] = tuple(v)
    return cfg


def timm_config(record: dict) -> dict:
    """timm ``config.json`` for ``timm.create_model("local-dir:<folder>")`` (generic ``lkscale_spec`` entry point)."""
    n = record["normalisation"]
    pcfg = {"input_size": [record["in_chans"], record["input_size"], record["input_size"]],
            "interpolation": "bilinear", "crop_pct": 1.0, "num_classes": record["num_classes"]}
    if n.get("mean"):
        pcfg.update(mean=n["mean"], std=n["std"])
    if record.get("classes"):
        pcfg["label_names"] = record["classes"]
    return {"architecture": "lkscale_spec", "num_classes": record["num_classes"],
            "num_features": record["spec"]["stages"][-1]["width"],
            "model_args": {"spec": record["spec"], "num_classes": record["num_classes"], "in_chans": record["in_chans"]},
            "pretrained_cfg": pcfg}


def _cfg_get(cfg: Any, key: str) -> Any:
    if cfg is None or isinstance(cfg, str):
        return None
    if isinstance(cfg, dict):
        return cfg.get(key)
    return getattr(cfg, key, None)


def _weights_file(timm_model: str, pretrained_cfg: Any, overlay: dict | None) -> str:
    f = (overlay or {}).get("file") or _cfg_get(pretrained_cfg, "file") or _REGISTERED.get(timm_model)
    if not f:
        raise RuntimeError(f"no pretrained weights for {timm_model}: pass pretrained_cfg_overlay=dict(file="
                           f"'<export>/model.safetensors'), use 'local-dir:<export folder>', or register_export(folder)")
    f = str(f)
    if os.path.isdir(f):
        f = os.path.join(f, "model.safetensors")
    return f


def _timm_entry(timm_model: str, default_spec: Callable[[], ArchSpec] | None) -> Callable:
    def entry(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: dict | None = None,
              cache_dir: Any = None, spec: Any = None, num_classes: int | None = None, in_chans: int | None = None,
              drop_rate: float = 0.0, drop_path_rate: float | None = None, pretrained_model_args: Any = None,
              device: Any = None, dtype: Any = None, **kwargs) -> torch.nn.Module:
        from lkscale.model import build_model

        if kwargs:
            raise TypeError(f"{timm_model}: unexpected arguments {', '.join(sorted(kwargs))}")
        if spec is not None:
            s = spec if isinstance(spec, ArchSpec) else ArchSpec.from_dict(
                {k: v for k, v in dict(spec).items() if k != "name"})
        elif default_spec is not None:
            s = default_spec()
        else:
            raise TypeError(f"{timm_model}: pass spec=<ArchSpec or dict> (or use local-dir:<export folder>)")
        if drop_path_rate is not None:
            s = s.replace(drop_path_rate=float(drop_path_rate))
        meta: dict = {}
        wfile = None
        if pretrained:
            wfile = _weights_file(timm_model, pretrained_cfg, pretrained_cfg_overlay)
            if not wfile.endswith(".safetensors") or not os.path.isfile(wfile):
                raise RuntimeError(f"{wfile}: pretrained weights must be an existing .safetensors file")
            meta = _metadata(wfile)
        nc = num_classes if num_classes is not None else int(meta.get("num_classes", _cfg_get(pretrained_cfg, "num_classes") or 1000))
        ic = in_chans if in_chans is not None else int(meta.get("in_chans", 3))
        model = build_model(s, num_classes=nc, in_chans=ic, drop_rate=drop_rate)
        if wfile:
            if meta.get("form") == "deploy":
                raise RuntimeError(f"{wfile}: deploy-form weights; timm builds the train form, use model.safetensors")
            if (meta.get("num_classes") and int(meta["num_classes"]) != nc) or (meta.get("in_chans") and int(meta["in_chans"]) != ic):
                raise RuntimeError(f"{wfile}: weights are for {meta.get('num_classes')} classes / {meta.get('in_chans')} "
                                   f"channels, asked for {nc} / {ic}")
            model.load_state_dict(_load_weights(wfile), strict=True)
        model.pretrained_cfg = _pretrained_cfg_from_meta({"num_classes": nc, "in_chans": ic, **meta}, timm_model)
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        return model

    entry.__name__ = entry.__qualname__ = timm_model
    entry.__module__ = __name__
    entry.__doc__ = f"lkscale model {timm_model} (registered by lkscale.export)."
    return entry


def _register(timm_model: str, default_spec: Callable[[], ArchSpec] | None, weights: str | None) -> str:
    from timm.models import register_model

    fn = _timm_entry(timm_model, default_spec)
    setattr(sys.modules[__name__], timm_model, fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # re-registering an export overwrites quietly
        register_model(fn)
    _REGISTERED[timm_model] = weights
    return timm_model


def register_presets() -> list[str]:
    """Register every lkscale preset with timm as ``lkscale_<preset>`` (random init; ``pretrained`` needs a file)."""
    from lkscale.presets import get_preset, preset_names

    names = []
    for p in preset_names():
        names.append(_register(timm_name(p), (lambda p=p: get_preset(p)), None))
    return names


def register_export(path: str) -> str:
    """Register an export folder with timm under :func:`timm_name` of its architecture; returns that name.

    ``timm.create_model(name)`` then builds it, and ``pretrained=True`` loads the folder's ``model.safetensors``.
    """
    read_export(path)  # checks it is an export folder
    spec = ArchSpec.load(os.path.join(path, "spec.yaml"))
    wfile = os.path.realpath(os.path.join(path, "model.safetensors"))
    return _register(timm_name(spec.name), (lambda s=spec: s), wfile if os.path.isfile(wfile) else None)


_register("lkscale_spec", None, None)
PRESETS_REGISTERED = register_presets()

__all__ = ["export_winners", "export_trial", "select_winners", "export_onnx", "load", "read_export", "model_card",
           "register_export", "register_presets", "timm_name", "timm_config", "check_name", "safe_child",
           "ExportError", "ExportCheckError", "ONNX_ATOL"]
