"""Deployment runtimes a latency is measured in: one ``Runner`` per (model, runtime, batch, threads, input).

- ``onnxruntime`` (default; what a CPU user deploys): the deploy form exported to ONNX in memory
  (``torch.onnx.export(dynamo=False)``, opset 17, static shapes; the ``torch.export``-based exporter if
  that fails), run by an ``InferenceSession`` with ``intra_op_num_threads=threads``,
  ``inter_op_num_threads=1``, sequential execution, all graph optimisations, CPU provider.
- ``torch``: eager PyTorch, eval, ``inference_mode``, channels_last, ``torch.set_num_threads(threads)``.
- ``compile``: ``torch.compile`` of the above. Where compiling fails the runner falls back to eager,
  says so in ``Runner.note`` and logs a warning: the result then records ``runtime='torch'``.
- ``cuda``: the model and input on the GPU, each call timed with CUDA events after a synchronise.

Thread counts are set by the caller around a whole measurement (``threads(n)``), not per call.
"""
from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "torch", "compile", "cuda")


class Runner:
    """One model ready to run in one runtime: ``runner()`` is one inference; ``time_calls(n)`` times n of them."""

    def __init__(self, call: Callable[[], object], runtime: str, note: str = "",
                 sync: Callable[[], None] | None = None):
        self._call = call
        self.runtime = runtime  # what actually runs (a failed compile says 'torch')
        self.note = note
        self._sync = sync

    def __call__(self) -> object:
        return self._call()

    def time_calls(self, n: int) -> list[float]:
        """Seconds per call for ``n`` consecutive calls (wall clock; CUDA events for ``cuda``)."""
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self._call()
            out.append(time.perf_counter() - t0)
        return out


class CudaRunner(Runner):
    def time_calls(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            self._call()
            end.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        return out


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, restored afterwards."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def onnx_bytes(model: nn.Module, x: torch.Tensor) -> tuple[bytes, str]:
    """The model (eval) as an in-memory ONNX graph for input ``x``, and which exporter wrote it."""
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            buf = io.BytesIO()
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["output"])
            return buf.getvalue(), "torch.onnx.export(dynamo=False)"
        except Exception as e:  # noqa: BLE001 - fall back to the torch.export-based exporter
            log.warning("TorchScript ONNX export failed (%s: %s); trying dynamo=True", type(e).__name__, e)
            prog = torch.onnx.export(model, (x,), None, dynamo=True, verbose=False)
            return prog.model_proto.SerializeToString(), "torch.onnx.export(dynamo=True)"


def _onnx_runner(model: nn.Module, x: torch.Tensor, n_threads: int) -> Runner:
    import onnxruntime as ort

    data, exporter = onnx_bytes(model, x)
    so = ort.SessionOptions()
    so.intra_op_num_threads = n_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x.numpy())}
    return Runner(lambda: sess.run(None, feed), "onnxruntime", f"{exporter}, onnxruntime {ort.__version__}")


def _torch_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    model = model.eval().to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)

    def call():
        with torch.inference_mode():
            return model(xc)

    return Runner(call, "torch", f"eager torch {torch.__version__}, channels_last")


def _compile_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    model = model.eval().to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    try:
        compiled = torch.compile(model)
        with torch.inference_mode():
            compiled(xc)  # compiles now, so a failure shows here and not inside a timed block
    except Exception as e:  # noqa: BLE001 - fall back loudly
        msg = f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); timed eager"
        log.warning(msg)
        runner = _torch_runner(model, x)
        runner.note = msg
        return runner

    def call():
        with torch.inference_mode():
            return compiled(xc)

    return Runner(call, "compile", f"torch.compile (default mode), torch {torch.__version__}")


def _cuda_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    if not torch.cuda.is_available():
        raise RuntimeError("runtime 'cuda' needs a GPU; torch.cuda.is_available() is False here")
    model = model.eval().cuda().to(memory_format=torch.channels_last)
    xc = x.cuda().contiguous(memory_format=torch.channels_last)

    def call():
        with torch.inference_mode():
            return model(xc)

    return CudaRunner(call, "cuda", f"CUDA {torch.cuda.get_device_name()}, CUDA events, synchronised")


def make_runner(model: nn.Module, runtime: str, batch_size: int, input_size: int, n_threads: int = 1,
                in_chans: int = 3, seed: int = 0, shape: tuple[int, ...] | None = None) -> Runner:
    """A ``Runner`` for ``model`` as given (pass the deploy form) on a fixed random input.

    The input is ``batch_size x in_chans x input_size x input_size``, or ``batch_size x *shape``.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    if batch_size < 1 or input_size < 1 or n_threads < 1:
        raise ValueError("batch_size, input_size and threads must be >= 1")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *(shape or (in_chans, input_size, input_size)), generator=g)
    if runtime == "onnxruntime":
        return _onnx_runner(model, x, n_threads)
    if runtime == "torch":
        return _torch_runner(model, x)
    if runtime == "compile":
        return _compile_runner(model, x)
    return _cuda_runner(model, x)


__all__ = ["RUNTIMES", "Runner", "CudaRunner", "make_runner", "onnx_bytes", "threads"]
