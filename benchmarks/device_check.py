"""GPU check in a few minutes: GPU tests, then ratios measured side by side in one run.

    python benchmarks/device_check.py            # on a machine with a CUDA GPU (about 3-5 minutes)
    python benchmarks/device_check.py --dry-run  # the same code on the CPU with tiny sizes (no GPU needed)

Without a GPU it prints "no GPU: skipped" and exits 0. With one it runs, in order:

1. the GPU tests: ``pytest tests/test_gpu.py tests/test_triton_dwconv.py`` (compiled Triton on the GPU);
2. trial throughput, CPU vs GPU: one proxy-training epoch (``lkscale.train.train_model``: the trial's
   real path, BN recalibration and validation included) of main-study candidates on 4,096 images of
   32 px, on 1 CPU thread (what a trial gets in the main study) and on the GPU; training images/s and
   the ratio GPU / CPU;
3. large-kernel depthwise conv, Triton vs cuDNN (``F.conv2d`` with the full kernel, as PyTorch runs it,
   NCHW and channels_last), forward + backward (input and weight), K = 7, 13, 31, at the main study's
   shapes (batch 64, 16x16 / 8x8 maps) and at ImageNet-like 56x56 / 28x28 maps; median of timed runs
   with CUDA events; ratio cuDNN / Triton (> 1: Triton faster), NCHW and channels_last inputs;
4. mixed vs full precision: the train step of the same candidates at fp32, bf16 and fp16 (autocast;
   fp16 with a gradient scaler), images/s and the ratio to fp32.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lkscale  # noqa: E402
from lkscale.data import Splits  # noqa: E402
from lkscale.ops import dwconv_impl  # noqa: E402
from lkscale.train import TrainConfig, step_state, to_device, torch_threads, train_model, train_step  # noqa: E402
from train_step import fake_cifar, study_candidate  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANDIDATES = [("convnext", [3, 3, 3, 3], []), ("convnext", [31, 29, 27, 13], []),
              ("replk", [3, 3, 3, 3], []), ("replk", [31, 29, 27, 13], [5])]
DW_SHAPES = [(64, 32, 16, 16), (64, 64, 8, 8), (64, 128, 16, 16), (32, 128, 56, 56), (32, 256, 28, 28)]
DW_KERNELS = [7, 13, 31]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_fn(fn, dev: torch.device, reps: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    _sync(dev)
    out = []
    for _ in range(reps):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


def run_tests() -> bool:
    cmd = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "tests/test_triton_dwconv.py", "-q", "-p", "no:cacheprovider"]
    print("$ " + " ".join(cmd[2:]), flush=True)
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    tail = [ln for ln in r.stdout.strip().splitlines() if ln.strip()][-6:]
    print("\n".join("  " + ln for ln in tail))
    return r.returncode == 0


def _splits(n_train: int, n_val: int) -> Splits:
    tr, va = fake_cifar(n_train, 32), fake_cifar(n_val, 32)
    return Splits(tr, va, None, [str(i) for i in range(10)], tr.mean, tr.std, 3, "random uint8")


def trial_throughput(dev: torch.device, n_train: int) -> None:
    print(f"\n[2] trial throughput: one proxy epoch ({n_train} images, batch 64, val 1,000), CPU 1 thread vs {dev}")
    splits = _splits(n_train, 1000)
    print(f"  {'candidate':<46} {'CPU img/s':>10} {'GPU img/s':>10} {'GPU/CPU':>8} {'CPU s':>7} {'GPU s':>7}")
    for c in CANDIDATES:
        spec = study_candidate(*c)
        res = {}
        for key, where, threads in (("cpu", "cpu", 1), ("dev", str(dev), None)):
            if key == "dev":  # untimed warm-up epoch on the device (Triton compiles, cuDNN picks algorithms)
                train_model(lkscale.build_model(spec, num_classes=10), _splits(256, 100),
                            TrainConfig(epochs=1, device=where))
            torch.manual_seed(0)
            model = lkscale.build_model(spec, num_classes=10)
            res[key] = train_model(model, splits, TrainConfig(epochs=1, threads=threads, device=where))
        cpu, gpu = res["cpu"], res["dev"]
        print(f"  {spec.name:<46} {cpu.images_per_s:10.0f} {gpu.images_per_s:10.0f} "
              f"{gpu.images_per_s / cpu.images_per_s:8.1f} {cpu.seconds:7.1f} {gpu.seconds:7.1f}")


def _dw_cases(dev, b, c, h, w, k):
    from lkscale.ops import triton_dwconv as tdw

    x = torch.randn(b, c, h, w, device=dev, requires_grad=True)
    wt = (torch.randn(c, 1, k, k, device=dev) * 0.02).requires_grad_()
    gy = torch.randn(b, c, h, w, device=dev)
    xcl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    gycl = gy.contiguous(memory_format=torch.channels_last)

    def cudnn(xx, g):
        def f():
            y = F.conv2d(xx, wt, None, 1, k // 2, 1, c)
            torch.autograd.grad(y, (xx, wt), g)
        return f

    def triton(xx, g):
        def f():
            y = tdw.depthwise_conv2d_triton(xx, dwconv_impl.crop_weight(wt, h, w))
            torch.autograd.grad(y, (xx, wt), g)
        return f

    return {"cudnn": cudnn(x, gy), "cudnn_cl": cudnn(xcl, gycl), "triton": triton(x, gy),
            "triton_cl": triton(xcl, gycl)}


def dwconv_vs_cudnn(dev: torch.device, shapes, kernels, reps: int) -> None:
    print(f"\n[3] depthwise conv fwd+bwd, Triton (cropped kernel) vs cuDNN (full kernel), median of {reps}, ms")
    print(f"  {'B x C x H x W':<18} {'K':>3} {'cuDNN':>9} {'cuDNN cl':>9} {'Triton':>9} {'Triton cl':>9} "
          f"{'cuDNN/Triton':>13} {'cl':>6}")
    for (b, c, h, w) in shapes:
        for k in kernels:
            t = {n: time_fn(f, dev, reps) * 1e3 for n, f in _dw_cases(dev, b, c, h, w, k).items()}
            print(f"  {f'{b}x{c}x{h}x{w}':<18} {k:>3} {t['cudnn']:9.2f} {t['cudnn_cl']:9.2f} {t['triton']:9.2f} "
                  f"{t['triton_cl']:9.2f} {t['cudnn'] / t['triton']:13.2f} {t['cudnn_cl'] / t['triton_cl']:6.2f}",
                  flush=True)


def _step_fn(spec, dev, precision, batch):
    """One step of ``lkscale.train.train_step`` (train_model's own: autocast, clipping, AdamW, fp16 scaler)."""
    torch.manual_seed(0)
    run = step_state(lkscale.build_model(spec, num_classes=10), TrainConfig(device=str(dev), precision=precision))
    run.model.train()
    data = to_device(fake_cifar(batch * 4, 32), run.device)
    it = [data.batches(batch, channels_last=True)]

    def step():
        try:
            xb, yb = next(it[0])
        except StopIteration:
            it[0] = data.batches(batch, channels_last=True)
            xb, yb = next(it[0])
        train_step(run, xb, yb)
    return step


def precision_ratios(dev: torch.device, reps: int, batch: int) -> None:
    precs = ["fp32", "bf16"] + (["fp16"] if dev.type == "cuda" else [])
    if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        precs.remove("bf16")
    print(f"\n[4] train step images/s by precision on {dev} (batch {batch}, median of {reps} steps)")
    print(f"  {'candidate':<46} " + " ".join(f"{p:>9}" for p in precs) + "   " + " ".join(f"{p}/fp32" for p in precs[1:]))
    for c in CANDIDATES:
        spec = study_candidate(*c)
        ips = {p: batch / time_fn(_step_fn(spec, dev, p, batch), dev, reps, warmup=3) for p in precs}
        print(f"  {spec.name:<46} " + " ".join(f"{ips[p]:9.0f}" for p in precs) + "   "
              + " ".join(f"{ips[p] / ips['fp32']:9.2f}" for p in precs[1:]), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="run every section on the CPU with tiny sizes (no Triton)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--train-images", type=int, default=4096)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available() and not a.dry_run:
        print(f"no GPU: skipped (torch {torch.__version__}, torch.cuda.is_available() is False)")
        return 0
    t0 = time.perf_counter()
    if a.dry_run:
        dev = torch.device("cpu")
        print("dry run on the CPU: tiny sizes, no Triton section, figures mean nothing")
        with torch_threads(1):
            trial_throughput(dev, 256)
            precision_ratios(dev, 2, 16)
        return 0
    dev = torch.device("cuda:0")
    print(f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{torch.get_num_threads()} CPU threads")
    ok = True
    if not a.skip_tests:
        print("\n[1] GPU tests")
        ok = run_tests()
    from lkscale.ops import triton_dwconv as tdw

    trial_throughput(dev, a.train_images)
    if tdw.available():
        dwconv_vs_cudnn(dev, DW_SHAPES, DW_KERNELS, reps=10)
    else:
        print(f"\n[3] skipped: triton not importable ({tdw.unavailable_reason()})")
    precision_ratios(dev, 20, 256)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s; GPU tests {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
