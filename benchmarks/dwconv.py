"""Depthwise conv speed on CPU: PyTorch (NCHW, channels_last) vs lkscale, as ratios to a FLOP floor.

    python benchmarks/dwconv.py            # a few minutes on 2 threads
    python benchmarks/dwconv.py --quick    # the issue's shape only (B=64 C=128 16x16), K=3 and 31
    python benchmarks/dwconv.py --e2e      # only the training-step figure (K=31 vs K=3 RepLK proxy)

The floor of a training step is three forward convolutions' worth of FLOPs (forward, grad-input,
grad-weight) at the sgemm speed measured in the same run. FLOPs are given two ways: nominal
(2*B*C*H*W*K*K) and useful (taps that land on padding excluded -- on maps smaller than the kernel
most do). "fwd" is an inference forward (no grad); "f+b" forward + backward w.r.t. input and weight.
Inputs are NCHW except in the ``*_cl`` columns (channels_last input and output gradient).
Every time is the fastest of a few runs after warm-up (the lkscale autotuner runs in the warm-up).
Timings on a shared machine are noisy: compare the columns of one run, not across runs.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from lkscale.ops import dwconv_impl
from lkscale.ops.dwconv import depthwise_conv2d

SHAPES = [  # (B, C, H, W): proxy stages of a 32px input with a stride-2 stem, and the issue's shape
    (64, 32, 16, 16), (64, 64, 8, 8), (64, 128, 4, 4), (64, 256, 2, 2), (64, 128, 16, 16)]
KERNELS = [3, 7, 13, 31]


def sgemm_gflops(n: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_interleaved(fns: dict, budget: float, max_reps: int) -> dict:
    """Fastest run of each of ``fns``, their runs interleaved (a, b, c, a, b, c, ...).

    The minimum, not the median, and interleaved: on a shared 2-core machine a 2-thread op that
    loses a core waits at every OpenMP barrier, which adds 10-100 ms spikes unrelated to the op's own
    cost; interleaving spreads slow periods over all contenders instead of one.
    """
    best = {name: _time(fn) for name, fn in fns.items()}
    reps = max(1, min(max_reps, int(budget / max(sum(best.values()), 1e-6))))
    for _ in range(reps):
        for name, fn in fns.items():
            best[name] = min(best[name], _time(fn))
    return best


def useful_taps(size: int, k: int) -> int:
    """Sum over output positions of the kernel taps (along one axis) that land inside the map."""
    p = k // 2
    return sum(min(size - 1, y + p) - max(0, y - p) + 1 for y in range(size))


class _Env:
    """Set LKSCALE_DWCONV for the duration of a call."""

    def __init__(self, mode: str):
        self.mode = mode

    def __enter__(self):
        self.old = os.environ.get("LKSCALE_DWCONV")
        os.environ["LKSCALE_DWCONV"] = self.mode

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("LKSCALE_DWCONV", None)
        else:
            os.environ["LKSCALE_DWCONV"] = self.old


def case_fns(b, c, h, w, k, impl: str):
    """(forward, forward+backward) closures for one implementation; input NCHW unless ``*_cl``."""
    cl = impl.endswith("_cl")
    fmt = torch.channels_last if cl else torch.contiguous_format
    x0 = torch.randn(b, c, h, w).contiguous(memory_format=fmt)
    wt0 = torch.randn(c, 1, k, k) * 0.1
    gy = torch.randn(b, c, h, w).contiguous(memory_format=fmt)
    x, wt = x0.clone().requires_grad_(), wt0.clone().requires_grad_()
    mode = "torch" if impl.startswith("torch") else "auto"

    def fwd():
        with _Env(mode), torch.no_grad():
            depthwise_conv2d(x0, wt0, None, k // 2)

    def fwdbwd():
        with _Env(mode):
            depthwise_conv2d(x, wt, None, k // 2).backward(gy)
        x.grad = wt.grad = None

    fwd(), fwdbwd()  # warm-up (and autotune for lkscale)
    return fwd, fwdbwd


def e2e(kernels=(3, 31), steps: int = 4, batch: int = 64) -> None:
    """Seconds per training step of a proxy RepLK candidate at K=31 vs K=3, PyTorch's path vs ours."""
    from torch.utils.flop_counter import FlopCounterMode

    from lkscale.model import build_model
    from lkscale.spec import ArchSpec

    def spec(k):
        return ArchSpec.from_dict({"stem": {"stride": 2}, "stages": [
            {"block": "replk", "depth": d, "width": w, "kernel": k} for d, w in zip([1, 1, 2, 1], [32, 64, 128, 256])]})

    x, t = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    flops, steps_fn = {}, {}
    for k in kernels:
        torch.manual_seed(0)
        model = build_model(spec(k), num_classes=10)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model.eval()(x)
        flops[k] = fc.get_total_flops()
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for mode in ("torch", "auto"):
            def step(model=model, opt=opt, mode=mode):
                with _Env(mode):
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x), t).backward()
                    opt.step()
            step()                                        # warm-up (+ autotune)
            steps_fn[k, mode] = step
    res = bench_interleaved(steps_fn, budget=0.0, max_reps=steps - 1)
    k0, k1 = kernels
    print(f"end-to-end: replk proxy (stem stride 2, widths 32/64/128/256, depths 1/1/2/1), 32px, batch {batch}, "
          f"AdamW step; fastest of {steps} interleaved steps")
    print(f"  forward FLOPs K={k1} / K={k0}: {flops[k1] / flops[k0]:.2f}x ({flops[k0] / 1e9:.2f} -> {flops[k1] / 1e9:.2f} GFLOP)")
    for mode, label in (("torch", "before (LKSCALE_DWCONV=torch)"), ("auto", "after  (lkscale)            ")):
        print(f"  {label}: K={k0} {res[k0, mode] * 1e3:7.0f} ms/step, K={k1} {res[k1, mode] * 1e3:7.0f} ms/step, "
              f"ratio {res[k1, mode] / res[k0, mode]:.2f}x")
    print(f"  K={k1} step speed-up: {res[k1, 'torch'] / res[k1, 'auto']:.1f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="issue shape only, K=3 and 31, one timed run each")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=0.6, help="seconds of timed runs per measurement")
    ap.add_argument("--e2e", action="store_true", help="only the end-to-end training-step figure")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end figure")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.e2e:
        e2e(steps=2 if args.quick else 4)
        return 0
    shapes, kernels, max_reps = SHAPES, KERNELS, 5
    if args.quick:
        shapes, kernels, max_reps, args.budget = [(64, 128, 16, 16)], [3, 31], 1, 0.0
    gf = sgemm_gflops()
    print(f"torch {torch.__version__}, {args.threads} threads; sgemm 2048^3: {gf:.0f} GFLOP/s")
    print("floor = 3 x forward FLOPs / sgemm speed; ratios are f+b time / floor (nominal | useful)")
    impls = ["torch_nchw", "torch_cl", "lkscale", "lkscale_cl"]
    hdr = (f"{'B,C,H,W':>14} {'K':>3} {'Keff':>4} {'floor ms':>15} | "
           + " | ".join(f"{n:>10} fwd  f+b ms  x floor" for n in impls) + " | f+b speed-up: lk/torch nchw, cl, best/best")
    print(hdr)
    for (b, c, h, w) in shapes:
        for k in kernels:
            nominal = 2 * b * c * h * w * k * k
            useful = 2 * b * c * useful_taps(h, k) * useful_taps(w, k)
            fl_nom, fl_use = 3 * nominal / gf / 1e9, 3 * useful / gf / 1e9
            fns = {i: case_fns(b, c, h, w, k, i) for i in impls}
            tf = bench_interleaved({i: f[0] for i, f in fns.items()}, args.budget, max_reps)
            tfb = bench_interleaved({i: f[1] for i, f in fns.items()}, args.budget, max_reps)
            res = {i: (tf[i], tfb[i]) for i in impls}
            cells = []
            for i in impls:
                f, fb = res[i]
                cells.append(f"{f * 1e3:8.1f} {fb * 1e3:8.1f} {fb / fl_nom:5.1f}|{fb / fl_use:5.1f}")
            lk, lk_cl = res["lkscale"][1], res["lkscale_cl"][1]
            best = min(res["torch_nchw"][1], res["torch_cl"][1])
            keff = dwconv_impl.effective_kernel(k, min(h, w))
            print(f"{f'{b},{c},{h},{w}':>14} {k:>3} {keff:>4} {fl_nom * 1e3:7.1f}|{fl_use * 1e3:7.1f} | "
                  + " | ".join(cells) + f" | {res['torch_nchw'][1] / lk:6.1f}x {res['torch_cl'][1] / lk_cl:5.2f}x"
                  f" {best / min(lk, lk_cl):5.2f}x", flush=True)
    print("autotuner choices:")
    for key, v in sorted(dwconv_impl.TUNER.choices().items()):
        print(f"  {key} -> {v}")
    if not args.no_e2e:
        e2e(steps=2 if args.quick else 4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
