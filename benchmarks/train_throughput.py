"""Training-step speed on CPU, printed as ratios measured side by side in one run.

1. lkscale's ConvNeXt-block network vs ``timm.create_model("convnext_atto")`` with the same
   depths (2-2-6-2), widths (40-80-160-320), kernel (7) and stem (patch 4 by default): training
   images per second of one step (``lkscale.train.train_step``, what ``lkscale train`` and every search
   trial run: forward, label-smoothed cross-entropy, backward, gradient clipping, AdamW).
   Ratio = lkscale / timm (>= 1.0 means lkscale is at least as fast).
2. One RepLK candidate (replk_proxy's depths 1-1-2-1 and widths 32-64-128-256, stem stride 2, no
   re-param branches) at kernel 3, 13 and 31 in every stage: seconds per fixed number of steps, as a
   ratio to kernel 3.

    python benchmarks/train_throughput.py              # about a minute on 2 threads (more under load)
    python benchmarks/train_throughput.py --quick      # fewer steps, about 15 s

Steps of the models being compared are interleaved (A B A B ...) and the median is taken, so a
shared machine's load hits both alike; still, compare ratios within one run, not across runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import lkscale
from lkscale.spec import ArchSpec
from lkscale.train import TrainConfig, step_state, train_step

# timm imports torchvision, whose CUDA build cannot load beside a CPU torch on some machines: lkscale's
# import fix (lkscale/_compat.py, run by any lkscale import above) must come first
import timm  # noqa: E402,I001

ATTO_DEPTHS, ATTO_WIDTHS = (2, 2, 6, 2), (40, 80, 160, 320)


def convnext_spec(kernel: int, stem_stride: int) -> ArchSpec:
    return ArchSpec.from_dict({"stem": {"stride": stem_stride},
                               "stages": [{"block": "convnext", "depth": d, "width": w, "kernel": kernel}
                                          for d, w in zip(ATTO_DEPTHS, ATTO_WIDTHS)]})


def replk_spec(kernel: int) -> ArchSpec:
    return ArchSpec.from_dict({"stem": {"stride": 2},
                               "stages": [{"block": "replk", "depth": d, "width": w, "kernel": kernel, "reparam": []}
                                          for d, w in zip((1, 1, 2, 1), (32, 64, 128, 256))]})


class Stepper:
    """One model stepped by ``lkscale.train.train_step`` (the default TrainConfig, on the CPU) on a fixed batch;
    ``step()`` returns the seconds of one train step."""

    def __init__(self, model: torch.nn.Module, batch: int, size: int, classes: int = 10):
        self.run = step_state(model, TrainConfig(device="cpu"))
        self.run.model.train()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, classes, (batch,), generator=g)
        self.params = sum(p.numel() for p in model.parameters())

    def step(self) -> float:
        t0 = time.perf_counter()
        train_step(self.run, self.x, self.y)
        return time.perf_counter() - t0


def interleaved(steppers: dict[str, Stepper], warmup: int, steps: int) -> dict[str, float]:
    """Median step seconds per model, steps interleaved across models."""
    for _ in range(warmup):
        for s in steppers.values():
            s.step()
    times: dict[str, list[float]] = {k: [] for k in steppers}
    for _ in range(steps):
        for k, s in steppers.items():
            times[k].append(s.step())
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--patch", type=int, default=4, choices=(2, 4),
                   help="ConvNeXt stem: timm patch_size / lkscale stem stride (default 4, timm's own)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per model (default 20)")
    p.add_argument("--replk-steps", type=int, default=10, help="timed steps per kernel size (default 10)")
    p.add_argument("--kernels", default="3,13,31", help="RepLK kernel sizes (default 3,13,31; first is the base)")
    p.add_argument("--quick", action="store_true", help="fewer steps (about a minute)")
    p.add_argument("--skip-convnext", action="store_true")
    p.add_argument("--skip-replk", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.replk_steps = 5, 2
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, timm {timm.__version__}, {a.threads} thread(s), batch {a.batch_size}, "
          f"{a.input_size} px, channels_last, AdamW")

    if not a.skip_convnext:
        if a.patch == 2:
            print("note: timm adds a stride-2 downsample to stage 0 when patch_size=2 (keeping stride 4 there); "
                  "lkscale's stem stride 2 does not, so the two nets differ in compute: use --patch 4 to compare")
        lk = Stepper(lkscale.build_model(convnext_spec(7, a.patch), num_classes=10), a.batch_size, a.input_size)
        tm = Stepper(timm.create_model("convnext_atto", num_classes=10, patch_size=a.patch, kernel_sizes=7),
                     a.batch_size, a.input_size)
        med = interleaved({"lkscale": lk, "timm": tm}, warmup=2, steps=a.steps)
        print(f"\n[1] ConvNeXt blocks, depths {'-'.join(map(str, ATTO_DEPTHS))}, widths "
              f"{'-'.join(map(str, ATTO_WIDTHS))}, kernel 7, patch {a.patch}  ({a.steps} steps each, median)")
        for name, s in (("lkscale", lk), ("timm convnext_atto", tm)):
            key = "lkscale" if name == "lkscale" else "timm"
            print(f"  {name:<20} {s.params:>10,} params  {med[key] * 1e3:8.1f} ms/step  "
                  f"{a.batch_size / med[key]:8.1f} images/s")
        print(f"  ratio lkscale/timm images/s: {med['timm'] / med['lkscale']:.2f}  (target >= 1.0)")

    if not a.skip_replk:
        ks = [int(k) for k in a.kernels.split(",")]
        steppers = {k: Stepper(lkscale.build_model(replk_spec(k), num_classes=10), a.batch_size, a.input_size)
                    for k in ks}
        med = interleaved(steppers, warmup=2, steps=a.replk_steps)
        base = med[ks[0]]
        print(f"\n[2] RepLK candidate (depths 1-1-2-1, widths 32-64-128-256, stem stride 2, no branches), "
              f"seconds per {a.replk_steps} steps (median step x {a.replk_steps})")
        for k in ks:
            print(f"  kernel {k:>2}  {steppers[k].params:>10,} params  {med[k] * a.replk_steps:8.2f} s  "
                  f"ratio to kernel {ks[0]}: {med[k] / base:6.2f}")
    print("\n(shared machine: timings are noisy; ratios within this run are the figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
