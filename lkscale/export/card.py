"""The model card (``card.md``) of an export: architecture, metrics, costs, checks, use, provenance."""
from __future__ import annotations

from typing import Any

from lkscale.report import fmt_count


def _fmt(v: Any, unit: str = "") -> str:
    return fmt_count(v, unit) if isinstance(v, (int, float)) else "-"


def model_card(r: dict) -> str:
    """The model card (markdown) of an ``export.json`` record."""
    return "\n".join(_architecture(r) + _metrics(r) + _costs_and_checks(r) + _use(r))


def _architecture(r: dict) -> list[str]:
    pv, spec = r["provenance"], r["spec"]
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
    return L


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _metrics(r: dict) -> list[str]:
    m, acc = r["metrics"], _acc
    L = ["", f"Effective kernel: the taps that ever touch the image at {r['input_size']} px input "
              f"(lkscale.cost.effective_kernels).", "", "## Metrics", "", "| metric | value |", "|---|---|",
          f"| validation accuracy (proxy, search) | {acc(m.get('val_acc'))} after {m.get('proxy_epochs')} epochs |"]
    if m.get("retrain_epochs"):
        L += [f"| retrained | {m['retrain_epochs']} epochs from scratch on {m.get('retrain_train_images')} images, "
              f"{m.get('retrain_seconds', 0):.0f} s |",
              f"| validation accuracy (retrained) | {acc(m.get('retrain_val_acc'))} |",
              f"| **test accuracy (retrained)** | **{acc(m.get('test_acc'))}** on {m.get('test_images')} images |"]
    else:
        L.append("| test accuracy | not measured (export with --retrain-epochs N to retrain and test) |")
    return L


def _costs_and_checks(r: dict) -> list[str]:
    c, ch = r["costs"], r["checks"]
    ls = c.get("latency_setting") or {}
    L = ["", "## Costs", "", "| cost | value |", "|---|---|",
          f"| parameters (train form) | {_fmt(c['params'])} ({c['params']:,}) |",
          f"| parameters (deploy form) | {_fmt(c['deploy_params'])} ({c['deploy_params']:,}) |",
          f"| FLOPs (multiply-adds, deploy form, one {r['input_size']} px image) | {_fmt(c.get('flops'))} |",
          "| deploy latency (search measurement) | "
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
    return L


def _use(r: dict) -> list[str]:
    pv = r["provenance"]
    n = r["normalisation"]
    mean = "-" if n["mean"] is None else ", ".join(f"{v:.4f}" for v in n["mean"])
    std = "-" if n["std"] is None else ", ".join(f"{v:.4f}" for v in n["std"])
    return ["", "## Input", "",
          f"{r['in_chans']} x {r['input_size']} x {r['input_size']} images scaled to [0, 1], then normalised with "
          f"mean ({mean}) and std ({std}) ({n['source']}). {r['num_classes']} classes"
          + (f": {', '.join(map(str, r['classes']))}." if r.get("classes") else "."), "",
          "## Use", "", "```python", "import lkscale", f"model = lkscale.load(\"{r['name']}\")               # train form",
          f"model = lkscale.load(\"{r['name']}\", deploy=True)  # deploy form", "",
          "import timm",
          "lkscale.register_timm()  # registers lkscale's timm entry points (once per process)",
          f"model = timm.create_model(\"local-dir:{r['name']}\", pretrained=True)",
          f"# or: lkscale.register_export(\"{r['name']}\"); timm.create_model(\"{r['timm_name']}\", pretrained=True)",
          "```", "", "Files: `spec.yaml`, `model.safetensors` (train form), `deploy.safetensors` (deploy form), "
          "`model.onnx` (deploy form, dynamic batch), `config.json` (timm), `export.json` (this card as data).", "",
          "## Provenance", "", "| | |", "|---|---|",
          f"| study | `{pv['study']}` |", f"| run folder | `{pv['run_dir']}` |",
          f"| trial | number {pv['trial_number']}, id `{pv['trial_id']}` |",
          f"| seed | trial {pv.get('seed')}, proxy training {pv.get('proxy_seed')} |",
          f"| lkscale | {pv['lkscale_version']} |", f"| torch | {pv['torch_version']} |",
          f"| exported | {pv['exported_at']} |", ""]
