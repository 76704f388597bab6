"""Latency predictor for a device that is not the searching machine: a per-block lookup table.

Calibration (on the target device, about a minute for a study's space): every distinct part of the
deploy forms the space produces -- the stem, each stage's stride-2 transition and one block at its
(family, width, kernel, map size, FFN ratio, DCN groups) shape, the head -- is exported and timed on
its own with the interleaved protocol (``latency.run_protocol``). Then a few whole networks are
timed as well: ``fit`` of them give the per-network overhead (measured minus the sum of parts: runtime
call overhead per part, work fused across part boundaries), one per network skeleton (stem, transition
and head families, block families, number of stages; measured here: constant within a family to
about +-0.01 ms in onnxruntime and +-0.15 ms in eager torch, but 0.27 / 0.9 ms apart between RepLK
and ConvNeXt); the others are held out and give the predictor's error (mean absolute percentage
error, ``LatencyTable.error_pct``).

``predict(spec, table)`` = overhead of its skeleton + sum(part latency * count). A block whose kernel
is not in the table is interpolated (linearly in kernel area) from the same block at other kernels; any
other missing part is an error that names it; a skeleton with no fitted overhead gets the mean one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from lkscale.config import LatencyConfig
from lkscale.cost.latency import LatencyResult, run_protocol, summarize
from lkscale.cost.runtimes import make_runner, threads
from lkscale.model import build_model
from lkscale.reparam import reparameterize
from lkscale.space import map_sizes
from lkscale.spec import ArchSpec


@dataclass
class LatencyTable:
    runtime: str
    batch_size: int
    threads: int
    input_size: int
    in_chans: int
    num_classes: int
    parts: dict  # part key -> {"median_ms", "ci_low_ms", "ci_high_ms", "cv", "noisy"}
    overhead_ms: float = 0.0  # per network: the mean over fitted skeletons (for a skeleton not fitted)
    overheads: dict = field(default_factory=dict)  # skeleton -> per-network overhead (ms)
    error_pct: float | None = None  # MAPE on held-out whole networks
    holdout: list = field(default_factory=list)  # [{"name", "measured_ms", "predicted_ms"}]
    fit: list = field(default_factory=list)  # same, for the networks the overhead was fitted on
    host: dict = field(default_factory=dict)
    created: str = ""

    def save(self, path: str) -> None:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "LatencyTable":
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def host_info() -> dict:
    import onnxruntime as ort

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "cpu": cpu or platform.processor(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "torch": torch.__version__, "onnxruntime": ort.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


# ---------------------------------------------------------------------------------------------- parts
def _block_group(st, h: int, spec: ArchSpec) -> str:
    return (f"block {st.block} w{st.width} @{h} ffn{st.ffn_ratio:g} g{st.dcn_groups or 0} "
            f"ls{int(bool(spec.layer_scale))}")


def skeleton(spec: ArchSpec) -> str:
    """What the per-network overhead depends on: stem/transition/head families, block families, stages."""
    return (f"stem {spec.stem.family} down {spec.downsample} head {spec.head} "
            f"blocks {'+'.join(sorted(set(spec.blocks)))} stages {len(spec.stages)}")


def network_parts(spec: ArchSpec, input_size: int, num_classes: int = 10, in_chans: int = 3) -> list[tuple[str, int]]:
    """[(part key, how many times it runs)] for the deploy form of ``spec`` on one input size."""
    maps = map_sizes(spec.stem.stride, len(spec.stages), input_size)
    w = spec.widths
    parts = [(f"stem {spec.stem.family} s{spec.stem.stride} {in_chans}->{w[0]} @{input_size}", 1)]
    for i, st in enumerate(spec.stages):
        if i:
            parts.append((f"down {spec.downsample} {w[i - 1]}->{w[i]} @{maps[i - 1]}", 1))
        parts.append((f"{_block_group(st, maps[i], spec)} k{st.kernel}", st.depth))
    parts.append((f"head {spec.head} {w[-1]}->{num_classes} @{maps[-1]}", 1))
    return parts


def part_modules(spec: ArchSpec, input_size: int, num_classes: int = 10,
                 in_chans: int = 3) -> dict[str, tuple[nn.Module, tuple]]:
    """{part key: (deployed module, its input shape without batch)} for the parts of ``spec``."""
    model = reparameterize(build_model(spec, num_classes=num_classes, in_chans=in_chans)).eval()
    mods = [model.stem]
    for i, stage in enumerate(model.stages):
        if i:
            mods.append(stage.downsample)
        mods.append(stage.blocks[0])
    mods.append(model.head)
    shapes: dict[int, tuple] = {}

    def record(mod, args) -> None:  # a pre-hook that returned a value would replace the input
        shapes.setdefault(id(mod), tuple(args[0].shape[1:]))

    hooks = [m.register_forward_pre_hook(record) for m in mods]
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
    keys = [k for k, _ in network_parts(spec, input_size, num_classes, in_chans)]
    return {k: (m, shapes[id(m)]) for k, m in zip(keys, mods)}


def _lookup(key: str, parts: dict) -> tuple[dict, bool]:
    """A part's entry, or a block interpolated in kernel area from the same block at other kernels."""
    if key in parts:
        return parts[key], False
    group, _, k = key.rpartition(" k")
    if not key.startswith("block ") or not k.isdigit():
        raise KeyError(f"part '{key}' is not in the latency table; calibrate with a space that contains it")
    known = sorted((int(q.rpartition(" k")[2]), v) for q, v in parts.items() if q.rpartition(" k")[0] == group)
    if len(known) < 2:
        raise KeyError(f"part '{key}' is not in the latency table and fewer than 2 kernels of '{group}' are")
    x = np.array([kk * kk for kk, _ in known], dtype=float)
    out = {}
    for f in ("median_ms", "ci_low_ms", "ci_high_ms"):
        y = np.array([v[f] for _, v in known])
        j = int(np.clip(np.searchsorted(x, int(k) ** 2), 1, len(x) - 1))  # the bracketing (or nearest) pair
        out[f] = float(y[j - 1] + (y[j] - y[j - 1]) * (int(k) ** 2 - x[j - 1]) / (x[j] - x[j - 1]))
    out["cv"] = max(v["cv"] for _, v in known)
    out["noisy"] = any(v["noisy"] for _, v in known)
    return out, True


def predict(spec: ArchSpec, table: LatencyTable) -> LatencyResult:
    """Predicted latency of ``spec``'s deploy form on the table's device (``source='predicted'``)."""
    tot = {"median_ms": 0.0, "ci_low_ms": 0.0, "ci_high_ms": 0.0}
    var, noisy, interp = 0.0, False, 0
    for key, count in network_parts(spec, table.input_size, table.num_classes, table.in_chans):
        e, was_interp = _lookup(key, table.parts)
        interp += was_interp
        for f in tot:
            tot[f] += count * e[f]
        var += (count * e["cv"] * e["median_ms"]) ** 2
        noisy |= bool(e["noisy"])
    sk = skeleton(spec)
    over = table.overheads.get(sk, table.overhead_ms)
    med = over + tot["median_ms"]
    note = f"per-block table from {table.host.get('hostname', '?')} ({table.created})"
    if interp:
        note += f"; {interp} block(s) interpolated in kernel area"
    if sk not in table.overheads:
        note += "; no fitted overhead for this skeleton (mean used)"
    return LatencyResult(
        runtime=table.runtime, batch_size=table.batch_size, threads=table.threads, input_size=table.input_size,
        median_ms=med, ci_low_ms=over + tot["ci_low_ms"], ci_high_ms=over + tot["ci_high_ms"],
        cv=float(np.sqrt(var)) / max(tot["median_ms"], 1e-12), rounds=0, noisy=noisy,
        throughput_ips=table.batch_size / (med / 1e3) if med > 0 else float("inf"), source="predicted",
        error_pct=table.error_pct, note=note)


# ------------------------------------------------------------------------------------------ calibrate
def _measure(modules: dict, cfg: LatencyConfig, progress) -> dict[str, LatencyResult]:
    """Interleaved measurement of {name: (module, input shape)}."""
    with threads(cfg.threads):
        runners = {k: make_runner(m, cfg.runtime, cfg.batch_size, 1, cfg.threads, shape=shape)
                   for k, (m, shape) in modules.items()}
        values, noisy = run_protocol(runners, cfg, progress=progress)
    return {k: summarize(values[k], runners[k].runtime, cfg.batch_size, cfg.threads, modules[k][1][-1], k in noisy,
                         runners[k].note) for k in modules}


def mape(pred, meas) -> float:
    p, m = np.asarray(pred, dtype=float), np.asarray(meas, dtype=float)
    return float(100 * np.mean(np.abs(p - m) / m))


def fit_linear(x, y) -> tuple[float, float]:
    """Least squares y = a + b x (a = mean difference when there is one point or x does not vary)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or np.ptp(x) == 0:
        return float(np.mean(y - x)), 1.0
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def whole_networks(specs: list[ArchSpec], input_size: int, num_classes: int = 10,
                   in_chans: int = 3) -> dict[str, tuple[nn.Module, tuple]]:
    """{deploy-form name: (deployed model, input shape)}, one per distinct deploy form."""
    out = {}
    for s in specs:
        d = s.without_reparam()
        if d.name not in out:
            out[d.name] = (reparameterize(build_model(d, num_classes=num_classes, in_chans=in_chans)).eval(),
                           (in_chans, input_size, input_size))
    return out


def calibrate(space_specs: list[ArchSpec], cfg: LatencyConfig, input_size: int | None = None, num_classes: int = 10,
              in_chans: int = 3, fit: int = 4, holdout: int = 8, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> LatencyTable:
    """Measure every part of ``space_specs`` and ``fit + holdout`` whole networks; the table with its error."""
    size = input_size or cfg.input_size
    if not size:
        raise ValueError("no input size: set LatencyConfig.input_size or pass input_size")
    say = progress or (lambda m: None)
    modules: dict = {}
    for s in space_specs:
        for k, v in part_modules(s.without_reparam(), size, num_classes, in_chans).items():
            modules.setdefault(k, v)
    say(f"timing {len(modules)} distinct parts ({cfg.runtime})")
    parts = {k: {f: getattr(r, f) for f in ("median_ms", "ci_low_ms", "ci_high_ms", "cv", "noisy")}
             for k, r in _measure(modules, cfg, say).items()}
    table = LatencyTable(cfg.runtime, cfg.batch_size, cfg.threads, size, in_chans, num_classes, parts,
                         host=host_info(), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    nets = whole_networks(space_specs, size, num_classes, in_chans)
    by_name = {s.without_reparam().name: s.without_reparam() for s in space_specs}
    chosen = split_fit(list(nets), {n: skeleton(by_name[n]) for n in nets}, fit, holdout, seed)
    say(f"timing {len(chosen)} whole networks ({min(fit, len(chosen))} to fit the overhead, the rest held out)")
    measured = _measure({n: nets[n] for n in chosen}, cfg, say)
    table = fit_table(table, {n: by_name[n] for n in chosen}, {n: measured[n].median_ms for n in chosen}, fit)
    for row in table.fit + table.holdout:  # the spread of each whole-network measurement, for the reader
        row.update(cv=measured[row["name"]].cv, noisy=measured[row["name"]].noisy)
    return table


def split_fit(names: list[str], skeletons: dict[str, str], fit: int, holdout: int, seed: int = 0) -> list[str]:
    """``fit`` names taken round-robin over skeletons (shuffled), then up to ``holdout`` others."""
    rng = random.Random(seed)
    pools: dict[str, list] = {}
    for n in sorted(names):
        pools.setdefault(skeletons[n], []).append(n)
    for p in pools.values():
        rng.shuffle(p)
    order = []
    while any(pools.values()):
        for k in sorted(pools):
            if pools[k]:
                order.append(pools[k].pop())
    first, rest = order[:fit], order[fit:]
    rng.shuffle(rest)
    return first + rest[:holdout]


def fit_table(table: LatencyTable, specs: dict[str, ArchSpec], measured_ms: dict[str, float], fit: int) -> LatencyTable:
    """Fit the per-skeleton overhead on the first ``fit`` of ``specs``; the MAPE on the rest."""
    names = list(specs)
    fit_names, held = names[:fit], names[fit:]
    bare = dataclasses.replace(table, overhead_ms=0.0, overheads={})
    raw = {n: predict(specs[n], bare).median_ms for n in names}
    diffs: dict[str, list] = {}
    for n in fit_names:
        diffs.setdefault(skeleton(specs[n]), []).append(measured_ms[n] - raw[n])
    table.overheads = {k: float(np.median(v)) for k, v in diffs.items()}
    table.overhead_ms = float(np.mean(list(table.overheads.values()))) if diffs else 0.0
    rows = {n: {"name": n, "measured_ms": measured_ms[n], "predicted_ms": predict(specs[n], table).median_ms}
            for n in names}
    table.fit = [rows[n] for n in fit_names]
    table.holdout = [rows[n] for n in held]
    if held:
        table.error_pct = mape([rows[n]["predicted_ms"] for n in held], [rows[n]["measured_ms"] for n in held])
    return table


__all__ = ["LatencyTable", "calibrate", "predict", "network_parts", "skeleton", "split_fit", "part_modules", "whole_networks", "fit_table",
           "fit_linear", "mape", "host_info"]
