"""ONNX export of a model's deploy form, checked against PyTorch with onnxruntime on CPU."""
from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from lkscale.export.safety import ExportCheckError

log = logging.getLogger(__name__)

ONNX_ATOL = 1e-4


def seeded_input(batch: int, in_chans: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, in_chans, size, size, generator=g)


def _write(model: torch.nn.Module, x: torch.Tensor, path: str) -> dict:
    """Try the ``torch.export``-based exporter, fall back to the TorchScript one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(model, (x,), None, dynamo=True, verbose=False, input_names=["input"],
                                     output_names=["logits"],
                                     dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
            prog.save(path)
        opset = int(prog.model.opset_imports.get("", 0)) if hasattr(prog, "model") else None
        return {"exporter": "torch.onnx.export(dynamo=True)", "opset": opset}
    except Exception as e:  # noqa: BLE001 - fall back to the TorchScript exporter
        log.warning("dynamo ONNX export failed (%s: %s); using the TorchScript exporter", type(e).__name__, e)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
        return {"exporter": "torch.onnx.export(dynamo=False)", "opset": 17}


def export_onnx(model: torch.nn.Module, path: str, input_size: int, in_chans: int = 3,
                atol: float = ONNX_ATOL) -> dict:
    """Write ``model`` (eval) to ONNX with a dynamic batch and check it with onnxruntime on CPU.

    Raises ExportCheckError when onnxruntime's output differs from PyTorch's by more than ``atol``.
    """
    import onnxruntime as ort  # deferred: only exports with ONNX need it

    model = model.eval()
    info: dict[str, Any] = _write(model, seeded_input(2, in_chans, input_size, seed=1), path)
    xs = seeded_input(3, in_chans, input_size, seed=2)  # another batch size: checks the dynamic axis too
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
