"""Proxy train step of the main study's candidates: the path before issue 14 vs today's, side by side.

    python benchmarks/train_step.py                    # 6 candidates, about 2 minutes on 1 thread
    python benchmarks/train_step.py --all              # every kernel pattern of studies/kernel_size.yaml
    python benchmarks/train_step.py --profile          # per-op breakdown of one step per candidate instead

Candidates are built as studies/kernel_size.yaml builds them (replk_proxy base, RepLK or ConvNeXt
blocks, kernels clipped to the 16/8/4/2 maps, layer scale 1.0, with or without a 5x5 branch); data is
the study's shape (batch 64 of 32 px uint8 images, normalised per batch), one thread (two trials share
two cores). A step is what ``lkscale.train`` does per batch: batch, forward, label-smoothed loss,
backward, gradient clipping, AdamW. "before" is ``TrainConfig(fused_optimizer=False)`` (per-parameter
AdamW and clipping loops), "now" the default (fused AdamW, foreach clipping). Steps of the two paths
are interleaved (A B A B ...) over several rounds; images/s is given as the median over rounds with
the min-max range, and the ratio now/before per round (median, range). Shared machine: compare within
one run.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

import lkscale
from lkscale.data import TensorSet
from lkscale.space import map_sizes
from lkscale.spec import ArchSpec
from lkscale.train import TrainConfig, step_state, train_step

PATTERNS = [[3, 3, 3, 3], [7, 7, 7, 7], [13, 13, 13, 13], [25, 25, 25, 13], [31, 29, 27, 13], [5, 5, 5, 5],
            [9, 9, 9, 9], [11, 11, 11, 11]]
DEFAULT = [("convnext", [3, 3, 3, 3], []), ("convnext", [31, 29, 27, 13], []),
           ("replk", [3, 3, 3, 3], []), ("replk", [13, 13, 13, 13], [5]),
           ("replk", [31, 29, 27, 13], []), ("replk", [31, 29, 27, 13], [5])]


def study_candidate(block: str, kernels: list[int], reparam: list[int], input_size: int = 32) -> ArchSpec:
    """A candidate of studies/kernel_size.yaml: replk_proxy with these blocks, clipped kernels, branches."""
    d = lkscale.get_preset("replk_proxy").to_dict()
    d.pop("name")
    d["layer_scale"] = 1.0
    for s, k, h in zip(d["stages"], kernels, map_sizes(d["stem"]["stride"], len(d["stages"]), input_size)):
        k = min(k, 2 * h - 1)
        s.update(block=block, kernel=k, reparam=[r for r in reparam if r < k])
    return ArchSpec.from_dict(d)


class Path:
    """One model stepped by ``lkscale.train.train_step`` (train_model's own step, no learning-rate schedule) on
    batches drawn as train_model draws them."""

    def __init__(self, spec: ArchSpec, cfg: TrainConfig, data: TensorSet, batch: int):
        torch.manual_seed(0)
        self.run = step_state(lkscale.build_model(spec, num_classes=10), dataclasses.replace(cfg, device="cpu"))
        self.run.model.train()
        self.cfg, self.data, self.batch = self.run.cfg, data, batch
        self.gen = torch.Generator().manual_seed(0)
        self.it = iter(())

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = self.data.batches(self.batch, shuffle=True, generator=self.gen, drop_last=True,
                                        channels_last=True)
            return next(self.it)

    def step(self) -> float:
        t0 = time.perf_counter()
        xb, yb = self._next()
        train_step(self.run, xb, yb)
        return time.perf_counter() - t0


def fake_cifar(n: int, size: int) -> TensorSet:
    g = torch.Generator().manual_seed(0)
    return TensorSet(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                     torch.randint(0, 10, (n,), generator=g), torch.tensor([0.49, 0.48, 0.45]),
                     torch.tensor([0.25, 0.24, 0.26]))


def compare(spec: ArchSpec, data: TensorSet, batch: int, rounds: int, steps: int) -> dict:
    paths = {"before": Path(spec, TrainConfig(fused_optimizer=False), data, batch),
             "now": Path(spec, TrainConfig(fused_optimizer=True), data, batch)}
    for _ in range(2):                      # warm-up (dwconv autotuning, allocator)
        for p in paths.values():
            p.step()
    ips = {k: [] for k in paths}
    for _ in range(rounds):
        t = {k: 0.0 for k in paths}
        for _ in range(steps):
            for k, p in paths.items():
                t[k] += p.step()
        for k in paths:
            ips[k].append(batch * steps / t[k])
    ratios = [n / b for n, b in zip(ips["now"], ips["before"])]
    return {"ips": ips, "ratios": ratios}


def op_profile(step, steps: int, title: str, top: int, warmup: int = 3) -> None:
    """Print the per-op self time per step of ``step()`` (torch.profiler, CPU), the ``top`` ops first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    for _ in range(warmup):
        step()
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ev = [e for e in prof.key_averages() if e.key.startswith(("aten::", "Optimizer", "autograd::", "Depthwise"))]
    total = sum(e.self_cpu_time_total for e in ev)
    print(f"\n{title}: {total / 1e3 / steps:.1f} ms/step of op self time")
    for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:top]:
        print(f"  {e.key:<42} {e.self_cpu_time_total / 1e3 / steps:7.2f} ms/step {e.count // steps:4d} calls "
              f"{100 * e.self_cpu_time_total / total:5.1f}%")


def profile(spec: ArchSpec, data: TensorSet, batch: int, steps: int, top: int) -> None:
    op_profile(Path(spec, TrainConfig(), data, batch).step, steps, spec.name, top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="steps per path per round")
    ap.add_argument("--all", action="store_true", help="every kernel pattern x block x 5x5 branch of the study")
    ap.add_argument("--profile", action="store_true", help="print the per-op breakdown instead")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cands = [(b, k, r) for b in ("replk", "convnext") for k in PATTERNS for r in ([], [5])] if a.all else DEFAULT
    specs = list(dict.fromkeys(study_candidate(*c) for c in cands))
    data = fake_cifar(2048, 32)
    print(f"torch {torch.__version__}, {a.threads} thread(s), batch {a.batch_size}, 32 px, channels_last; "
          f"{len(specs)} candidates")
    if a.profile:
        for s in specs:
            profile(s, data, a.batch_size, 8, 14)
        return 0
    print(f"{'candidate':<48} {'before img/s':>18} {'now img/s':>18} {'now/before':>18}")
    all_ratios = []
    for s in specs:
        r = compare(s, data, a.batch_size, a.rounds, a.steps)
        b, n, q = r["ips"]["before"], r["ips"]["now"], r["ratios"]
        all_ratios.append(statistics.median(q))
        fmt = lambda v, d=0: f"{statistics.median(v):.{d}f} [{min(v):.{d}f}-{max(v):.{d}f}]"  # noqa: E731
        print(f"{s.name:<48} {fmt(b):>18} {fmt(n):>18} {fmt(q, 2):>18}")
    print(f"\nmedian over candidates of the per-candidate median ratio now/before: {statistics.median(all_ratios):.2f} "
          f"(range {min(all_ratios):.2f}-{max(all_ratios):.2f}); [min-max] over {a.rounds} rounds of {a.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
