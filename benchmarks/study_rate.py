"""Useful multiply-adds per core-second of a whole scaling study, per phase, beside the machine's mm rate.

    python benchmarks/study_rate.py study                       # studies/kernel_size.yaml, shrunk (see flags)
    python benchmarks/study_rate.py study --val-every-epoch 0   # validate after the last epoch only
    python benchmarks/study_rate.py eval                        # cost of a 10,000-image validation vs a trial
    python benchmarks/study_rate.py analyse --output RUN         # the phases of a finished run folder
    python benchmarks/study_rate.py dcn                         # DCNv3 train step: reference vs fused vs others
    python benchmarks/study_rate.py threads --batch 64 --steps 8  # 2 trials x 1 thread vs 1 trial x 2 threads
    python benchmarks/study_rate.py mm                          # the single-core torch.mm rate alone

``study`` runs the project's own search (``lkscale.search.driver.run_study``: costing, Ray Tune, the
trainable, ``lkscale.train``) on ``studies/kernel_size.yaml`` with fewer images/replicates, then reads
what each trial reported (cumulative seconds of train steps, BN recalibration and validation; its own
wall time) from Tune's result files. Useful multiply-adds: forward MACs per image (the study's costing)
x (3 x training images + the validation images of one final evaluation); the issue's own count (every
validation counted) is given too. Phases, in core-seconds of ``concurrency`` cores over the wall time:
costing (before the first trial), train steps (less data), data (batches gathered and normalised:
``TensorSet.batches`` timed here on the study's data), BN recalibration, validation, trial overhead
(data loading, model build, weights, reports), and scheduling/Ray/idle (the rest).

``torch.mm`` (fp32, 1024 and 2048, one thread) is measured before and after in the same process:
median and range. The machine is shared: ``os.getloadavg()`` is recorded with every figure.
Results: JSON in ``benchmarks/results/study_rate*.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import torch

import lkscale
from lkscale.blocks import dcnv3 as dcn_blocks
from lkscale.cost.flops import count_flops
from lkscale.data import Splits, TensorSet, load_splits
from lkscale.rundir import read_trials
from lkscale.search.driver import run_study
from lkscale.search.trainable import train_candidate
from lkscale.spec import ArchSpec
from lkscale.study import load_study
from lkscale.train import TrainConfig, evaluate, recalibrate_bn, train_model

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_step import study_candidate  # noqa: E402  (the study's networks, as the main study builds them)


def spread(v: list[float], d: int = 1) -> str:
    return f"{statistics.median(v):.{d}f} [{min(v):.{d}f}-{max(v):.{d}f}]"


def mm_rate(sizes=(1024, 2048), repeats: int = 5) -> dict:
    """Single-core fp32 ``torch.mm`` rate in G multiply-adds/s: median and range per size."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)
            rates = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.mm(a, b)
                rates.append(n ** 3 / (time.perf_counter() - t0) / 1e9)
            out[str(n)] = {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}
    finally:
        torch.set_num_threads(old)
    out["load"] = os.getloadavg()
    return out


def data_seconds_per_image(splits, batch: int, channels_last: bool = True, rounds: int = 3) -> float:
    """Seconds per training image to gather, normalise and lay out a batch (``TensorSet.batches``)."""
    gen, t = torch.Generator().manual_seed(0), []
    for _ in range(rounds):
        t0 = time.perf_counter()
        n = sum(len(y) for _, y in splits.train.batches(batch, shuffle=True, generator=gen, drop_last=True,
                                                         channels_last=channels_last))
        t.append((time.perf_counter() - t0) / max(1, n))
    return statistics.median(t)


REPORTS = "phase_reports.jsonl"


def cpu_model() -> str:
    """The processor's model name (the machines this runs on differ: the mm rate is only comparable on one)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def recording_trainable(config: dict, data_stage: dict | None = None) -> None:
    """The search's own trainable (``train_candidate``), every ``tune.report`` also appended to
    ``run_dir/phase_reports.jsonl`` with the time and the trial's pid (Tune keeps no result files here)."""
    from ray import tune

    orig, pid = tune.report, os.getpid()

    def report(metrics: dict, *args, **kw):
        with open(os.path.join(config["run_dir"], REPORTS), "a") as f:
            f.write(json.dumps({**metrics, "timestamp": time.time(), "pid": pid, "name": config.get("name")}) + "\n")
        return orig(metrics, *args, **kw)

    tune.report = report
    try:
        train_candidate(config, data_stage)
    finally:
        tune.report = orig


def tune_results(run_dir: str) -> dict[str, list[dict]]:
    """Every report of every trial run (one process each), from ``phase_reports.jsonl``: {pid: [reports]}."""
    out: dict[str, list[dict]] = {}
    path = os.path.join(run_dir, REPORTS)
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    out.setdefault(str(r["pid"]), []).append(r)
    return out


def trial_end(run_dir: str) -> float | None:
    """When the last trial reported for the last time (epoch seconds), from Tune's result files."""
    ends = [reports[-1]["timestamp"] for reports in tune_results(run_dir).values() if reports]
    return max(ends) if ends else None


def study_phases(run_dir: str, wall: float, t_begin: float, cores: int, data_s_img: float, batch: int,
                 n_train: int, epochs: int) -> dict:
    """Useful MACs and core-seconds per phase of a finished run (see the module docstring)."""
    flops = {t.name: float(t.flops or 0) for t in read_trials(run_dir)}
    res = tune_results(run_dir)
    trained = n_train // batch * batch * epochs
    ph = dict.fromkeys(("train_step", "data", "bn", "eval", "trial_overhead"), 0.0)
    useful = issue = 0.0
    starts, per_trial = [], []
    for reports in res.values():
        last = reports[-1]
        if last.get("failed") or last.get("infeasible") or "seconds_train" not in last:
            continue
        name = last.get("name")
        f = flops.get(name, 0.0)
        n_val, n_evals = int(last.get("val_n", 0)), len(reports)
        data = data_s_img * trained
        ph["train_step"] += last["seconds_train"] - data
        ph["data"] += data
        ph["bn"] += last["seconds_bn"]
        ph["eval"] += last["seconds_eval"]
        ph["trial_overhead"] += last["seconds"] - last["seconds_train"] - last["seconds_bn"] - last["seconds_eval"]
        u = f * (3 * trained + n_val)
        useful += u
        issue += f * (3 * trained + n_val * n_evals)
        starts.append(last["timestamp"] - last["seconds"])
        per_trial.append({"name": name, "macs_fwd": f, "seconds": last["seconds"], "g_per_s": u / last["seconds"] / 1e9,
                          "train_g_per_s": f * 3 * trained / last["seconds_train"] / 1e9,
                          "eval_share": (last["seconds_eval"] + last["seconds_bn"]) / last["seconds"]})
    total = wall * cores
    ph["costing"] = (min(starts) - t_begin) * cores if starts else 0.0
    ph["scheduling_ray_idle"] = total - sum(ph.values())
    return {"core_seconds": total, "phases": ph, "phase_share": {k: v / total for k, v in ph.items()},
            "useful_macs": useful, "issue_macs": issue, "trials": per_trial,
            "g_per_core_s": useful / total / 1e9, "issue_g_per_core_s": issue / total / 1e9,
            "trial_g_per_s": [t["g_per_s"] for t in per_trial]}


def cmd_study(a) -> dict:
    study = load_study(a.study)
    data = dataclasses.replace(study.data, train_per_class=a.train_per_class, val_per_class=a.val_per_class)
    proxy = dataclasses.replace(study.proxy, epochs=a.epochs, val_every_epoch=bool(a.val_every_epoch))
    search = dataclasses.replace(study.search, replicates=a.replicates)
    study = dataclasses.replace(study, data=data, proxy=proxy, search=search, fidelity=None)
    mm0 = mm_rate()
    splits = load_splits(data)
    data_s_img = data_seconds_per_image(splits, proxy.batch_size)
    out = a.output or tempfile.mkdtemp(prefix="study_rate-")
    load0 = os.getloadavg()
    t_begin = time.time()
    error = None
    try:
        run_study(study, output=out, progress=lambda m: print(f"  {m}", file=sys.stderr), trainable=recording_trainable)
    except Exception as e:  # noqa: BLE001 - e.g. the summary after training; the trials are what is measured
        error = f"{type(e).__name__}: {e}"
        print(f"run_study failed after training? {error}", file=sys.stderr)
    t_end = time.time()
    load1 = os.getloadavg()
    mm1 = mm_rate()
    trials_end = trial_end(out)
    wall = (trials_end or t_end) - t_begin  # to the end of the last trial (the final latency pass is apart)
    r = study_phases(out, wall, t_begin, study.search.concurrency, data_s_img, proxy.batch_size, len(splits.train),
                     int(proxy.epochs))
    r.update(after_training_s=t_end - (trials_end or t_end), error=error)
    mm = [mm0["1024"]["median"], mm0["2048"]["median"], mm1["1024"]["median"], mm1["2048"]["median"]]
    r.update(run_dir=out, wall_s=wall, load_before=load0, load_after=load1, mm_before=mm0, mm_after=mm1,
             mm_g_per_s=statistics.median(mm), data_s_per_image=data_s_img,
             settings={"train_per_class": a.train_per_class, "val_per_class": a.val_per_class, "epochs": a.epochs,
                       "replicates": a.replicates, "val_every_epoch": bool(a.val_every_epoch),
                       "concurrency": study.search.concurrency, "cpus_per_trial": study.resources.cpus_per_trial})
    r["share_of_mm"] = r["g_per_core_s"] / r["mm_g_per_s"]
    print(f"wall {wall:.0f} s on {study.search.concurrency} cores, load {load0[0]:.1f} -> {load1[0]:.1f}")
    print(f"mm 1 thread: {spread(mm)} G MAC/s (1024/2048, before and after)")
    report(r, study.search.concurrency)
    return r


def whole_run(run_dir: str, wall: float, cores: int, n_train: int, batch: int) -> dict:
    """Useful MACs per core-second of a run made by ``lkscale search`` itself (no per-phase reports): from
    ``trials.csv`` (each complete trial's forward MACs, epochs and validation images; its own seconds)."""
    rows = [t for t in read_trials(run_dir) if t.state == "complete"]
    per_trial, useful, busy = [], 0.0, 0.0
    for t in rows:
        f = float(t.flops or 0)
        u = f * (3 * (n_train // batch * batch) * int(t.get("epochs_done") or 0) + int(t.get("val_n") or 0))
        useful += u
        busy += float(t.get("seconds") or 0)
        per_trial.append({"name": t.name, "macs_fwd": f, "seconds": float(t.get("seconds") or 0),
                          "g_per_s": u / float(t.get("seconds") or 1) / 1e9})
    total = wall * cores
    return {"core_seconds": total, "useful_macs": useful, "g_per_core_s": useful / total / 1e9, "trials": per_trial,
            "trial_g_per_s": [t["g_per_s"] for t in per_trial], "trial_seconds": busy,
            "share_in_trials": busy / total, "phases": None}


def cmd_analyse(a) -> dict:
    """Phases of a finished run folder (``--output``): from study.yaml's write time to the last trial's end.
    A run of ``lkscale search`` (no ``phase_reports.jsonl``): the whole run only, over ``--wall-s`` (default:
    study.yaml's write time to summary.json's), from its trials.csv."""
    study = load_study(os.path.join(a.output, "study.yaml"))
    splits = load_splits(study.data)
    t_begin = os.path.getmtime(os.path.join(a.output, "study.yaml"))
    if not os.path.isfile(os.path.join(a.output, REPORTS)):
        wall = a.wall_s or os.path.getmtime(os.path.join(a.output, "summary.json")) - t_begin
        load0 = os.getloadavg()
        r = whole_run(a.output, wall, study.search.concurrency, len(splits.train), study.proxy.batch_size)
        r.update(run_dir=a.output, wall_s=wall, mm_after=mm_rate(), load=[load0, os.getloadavg()])
        r["mm_g_per_s"] = statistics.median([r["mm_after"]["1024"]["median"], r["mm_after"]["2048"]["median"]])
        r["share_of_mm"] = r["g_per_core_s"] / r["mm_g_per_s"]
        print(f"wall {wall:.0f} s on {study.search.concurrency} cores; mm 1 thread {r['mm_g_per_s']:.1f} G MAC/s "
              f"(measured now, load {load0[0]:.2f})")
        print(f"useful: {r['useful_macs']:.3g} MACs -> {r['g_per_core_s']:.2f} G/s per core = "
              f"{100 * r['share_of_mm']:.0f}% of mm; trials' own seconds {100 * r['share_in_trials']:.0f}% of the "
              f"core-seconds; per trial G/s: {spread(r['trial_g_per_s'], 2)}")
        return r
    wall = trial_end(a.output) - t_begin
    r = study_phases(a.output, wall, t_begin, study.search.concurrency,
                     data_seconds_per_image(splits, study.proxy.batch_size), study.proxy.batch_size, len(splits.train),
                     int(study.proxy.epochs))
    r.update(run_dir=a.output, wall_s=wall, mm_after=mm_rate(), load=os.getloadavg())
    r["mm_g_per_s"] = statistics.median([r["mm_after"]["1024"]["median"], r["mm_after"]["2048"]["median"]])
    r["share_of_mm"] = r["g_per_core_s"] / r["mm_g_per_s"]
    report(r, study.search.concurrency)
    return r


def report(r: dict, cores: int) -> None:
    print(f"wall {r['wall_s']:.0f} s on {cores} cores; mm 1 thread {r['mm_g_per_s']:.1f} G MAC/s")
    print(f"useful: {r['useful_macs']:.3g} MACs -> {r['g_per_core_s']:.2f} G/s per core = "
          f"{100 * r['share_of_mm']:.0f}% of mm (issue's count: {r['issue_g_per_core_s']:.2f} G/s)")
    print(f"per trial G/s: {spread(r['trial_g_per_s'], 2)}; train step only: "
          f"{spread([t['train_g_per_s'] for t in r['trials']], 2)}")
    for k, v in r["phases"].items():
        print(f"  {k:<22} {v:8.1f} core-s  {100 * r['phase_share'][k]:5.1f}%")


def cmd_dcn(a) -> dict:
    """Training-step rate (forward MACs x 3 per image / train-step seconds of ``train_model``, one thread,
    batch ``--batch``) of the pareto study's DCNv3 9-9-7-3 network (widths 32-256, depths 2-2-2-2, groups
    ``--dcn-groups``) with the reference (grid_sample) and fused DCNv3 core, beside ConvNeXt and RepLK
    networks of the main study, interleaved over ``--rounds`` rounds in one process."""
    torch.set_num_threads(1)
    dcn = ArchSpec.from_dict({"stem": {"stride": 2}, "stages": [
        {"block": "dcnv3", "depth": 2, "width": w, "kernel": k, "dcn_groups": a.dcn_groups}
        for w, k in zip((32, 64, 128, 256), (9, 9, 7, 3))]})
    nets = {"dcnv3 reference": (dcn, "reference"), "dcnv3 fused": (dcn, "fused"),
            "convnext 7": (study_candidate("convnext", [7, 7, 7, 7], [5]), None),
            "replk 31-15-7-3": (study_candidate("replk", [31, 29, 27, 13], [5]), None),
            "replk 3": (study_candidate("replk", [3, 3, 3, 3], []), None)}
    g = torch.Generator().manual_seed(0)
    n = a.batch * a.steps
    ts = TensorSet(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                   torch.randint(0, 10, (n,), generator=g), torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26]))
    splits = Splits(train=ts, val=TensorSet(ts.x[:a.batch], ts.y[:a.batch], ts.mean, ts.std), test=None,
                    classes=[str(i) for i in range(10)], mean=ts.mean, std=ts.std, in_chans=3)
    core = dcn_blocks.dcnv3_core
    macs = {k: count_flops(lkscale.build_model(spec, num_classes=10), 32)[0] for k, (spec, _) in nets.items()}
    rates: dict[str, list[float]] = {k: [] for k in nets}
    cfg = TrainConfig(epochs=1, batch_size=a.batch, threads=1, val_every_epoch=False, bn_recalibrate_batches=0)
    for r in range(a.rounds + 1):  # round 0 warms up (dwconv autotuning, allocator)
        for k, (spec, impl) in nets.items():
            dcn_blocks.dcnv3_core = core if impl is None else functools.partial(core, impl=impl)
            try:
                torch.manual_seed(0)
                res = train_model(lkscale.build_model(spec, num_classes=10), splits, cfg)
            finally:
                dcn_blocks.dcnv3_core = core
            if r:
                rates[k].append(3 * macs[k] * n / res.phase_seconds["train"] / 1e9)
        if r:
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items()) + f" G MAC/s; load "
                  f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    others = statistics.median([statistics.median(v) for k, v in rates.items() if not k.startswith("dcnv3")])
    out = {"macs_per_image": macs, "g_per_s": rates, "others_median": others, "mm": mm_rate(), "load": os.getloadavg(),
           "batch": a.batch, "steps": a.steps, "dcn_groups": a.dcn_groups}
    for k, v in rates.items():
        print(f"{k:<18} {macs[k] / 1e6:7.1f} M MAC/img  train step {spread(v, 2):>20} G MAC/s  "
              f"{statistics.median(v) / others:5.2f}x the non-DCN median")
    ratio = [f / r for f, r in zip(rates["dcnv3 fused"], rates["dcnv3 reference"])]
    print(f"fused / reference per round: {spread(ratio, 2)}; mm: {out['mm']['1024']['median']:.1f} G/s")
    out["fused_over_reference"] = ratio
    return out


def _train_worker(args: tuple) -> tuple[float, float, float]:
    """One trial's training in its own process: (start, end, train-step seconds) of ``n`` images."""
    block, kernels, reparam, threads, n, batch = args
    g = torch.Generator().manual_seed(0)
    ts = TensorSet(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                   torch.randint(0, 10, (n,), generator=g), torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26]))
    splits = Splits(train=ts, val=TensorSet(ts.x[:batch], ts.y[:batch], ts.mean, ts.std), test=None,
                    classes=[str(i) for i in range(10)], mean=ts.mean, std=ts.std, in_chans=3)
    torch.manual_seed(0)
    model = lkscale.build_model(study_candidate(block, kernels, reparam), num_classes=10)
    cfg = TrainConfig(epochs=1, batch_size=batch, threads=threads, val_every_epoch=False, bn_recalibrate_batches=0)
    train_model(model, splits, dataclasses.replace(cfg, epochs=2 * batch / n))  # warm-up: autotuning, allocator
    t0 = time.time()
    res = train_model(model, splits, cfg)
    return t0, time.time(), res.phase_seconds["train"]


def cmd_threads(a) -> dict:
    """2 trials x 1 thread (two processes side by side) vs 1 trial x 2 threads, images/s of train steps
    (``train_model``), per main-study network, alternating over ``--rounds`` rounds."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    nets = [("replk", [31, 29, 27, 13], [5]), ("convnext", [7, 7, 7, 7], [5]), ("replk", [3, 3, 3, 3], [])]
    n, out = a.batch * a.steps, {}
    with ctx.Pool(2) as pool:
        for net in nets:
            two, one = [], []
            for _ in range(a.rounds):
                r = pool.map(_train_worker, [(*net, 1, n, a.batch)] * 2)
                two.append(2 * n / (max(e for _, e, _ in r) - min(s for s, _, _ in r)))
                s, e, _ = pool.apply(_train_worker, ((*net, 2, n, a.batch),))
                one.append(n / (e - s))
            name = study_candidate(*net).name
            out[name] = {"2x1_img_s": two, "1x2_img_s": one, "ratio": [t / o for t, o in zip(two, one)],
                         "load": os.getloadavg()}
            print(f"{name:<46} 2 trials x 1 thread {spread(two)} img/s, 1 trial x 2 threads {spread(one)} img/s, "
                  f"ratio {spread(out[name]['ratio'], 2)}; load {os.getloadavg()[0]:.1f}", flush=True)
    return {"batch": a.batch, "images": n, "nets": out}


def cmd_eval(a) -> dict:
    """Validation of ``--val-images`` vs one main-study trial (8,000 images x 3 epochs), per network:
    the train-step rate from one short epoch through ``train_model``, validation old (no_grad, batch 500,
    eval-mode model) and new (``evaluate``: deploy form, inference mode, ``--eval-batch``), interleaved."""
    torch.set_num_threads(1)
    study = load_study(a.study)
    data = dataclasses.replace(study.data, train_per_class=a.train_per_class, val_per_class=a.val_images // 10)
    splits = load_splits(data)
    rows = []
    for block, kernels, reparam in [("replk", [31, 29, 27, 13], [5]), ("convnext", [7, 7, 7, 7], [5]),
                                    ("replk", [3, 3, 3, 3], [])]:
        spec = study_candidate(block, kernels, reparam)
        torch.manual_seed(0)
        model = lkscale.build_model(spec, num_classes=10)
        cfg = dataclasses.replace(study.proxy, epochs=1, threads=1, val_every_epoch=False, bn_recalibrate_batches=0)
        res = train_model(model, splits, cfg)  # one epoch, validated once at its end (new form)
        train_s_img = res.phase_seconds["train"] / (len(splits.train) // cfg.batch_size * cfg.batch_size)
        m = res.model
        t = {"old": [], "new": [], "bn": []}
        for _ in range(a.rounds):
            t0 = time.perf_counter(); evaluate(m, splits.val, 500, deploy=False); t["old"].append(time.perf_counter() - t0)  # noqa: E702
            t0 = time.perf_counter(); evaluate(m, splits.val, a.eval_batch); t["new"].append(time.perf_counter() - t0)  # noqa: E702
            t0 = time.perf_counter(); recalibrate_bn(m, splits.train, 10, cfg.batch_size); t["bn"].append(time.perf_counter() - t0)  # noqa: E702
        trial_train = train_s_img * 8000 * 3
        row = {"network": spec.name, "train_s_per_image": train_s_img, "trial_train_s": trial_train,
               "eval_old_s": t["old"], "eval_new_s": t["new"], "bn_s": t["bn"],
               "share_old_end_only": statistics.median(t["old"]) / (trial_train + statistics.median(t["old"])),
               "share_new_end_only": (statistics.median(t["new"]) + statistics.median(t["bn"])) /
                                     (trial_train + statistics.median(t["new"]) + statistics.median(t["bn"])),
               "share_new_every_epoch": 3 * (statistics.median(t["new"]) + statistics.median(t["bn"])) /
                                        (trial_train + 3 * (statistics.median(t["new"]) + statistics.median(t["bn"]))),
               "speedup": [o / n for o, n in zip(t["old"], t["new"])], "load": os.getloadavg()}
        rows.append(row)
        print(f"{spec.name:<46} trial train {trial_train:6.0f} s | {a.val_images} val: old {spread(t['old'])} s, "
              f"new {spread(t['new'])} s (x{spread(row['speedup'], 2)}), BN {spread(t['bn'], 2)} s | share of a trial: "
              f"end only {100 * row['share_new_end_only']:.1f}% (old form {100 * row['share_old_end_only']:.1f}%), "
              f"every epoch {100 * row['share_new_every_epoch']:.1f}%; load {row['load'][0]:.1f}", flush=True)
    return {"val_images": a.val_images, "eval_batch": a.eval_batch, "rows": rows, "mm": mm_rate()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("study", "analyse", "eval", "dcn", "threads", "mm"))
    ap.add_argument("--study", default=os.path.join(HERE, "..", "studies", "kernel_size.yaml"))
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--replicates", type=int, default=1)
    ap.add_argument("--val-every-epoch", type=int, default=1)
    ap.add_argument("--val-images", type=int, default=10000)
    ap.add_argument("--eval-batch", type=int, default=TrainConfig.eval_batch_size)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128, help="dcn: the pareto study's batch")
    ap.add_argument("--steps", type=int, default=3, help="dcn: training steps per network per round")
    ap.add_argument("--dcn-groups", type=int, default=4)
    ap.add_argument("--output", help="run folder for `study` (default: a fresh temporary folder)")
    ap.add_argument("--wall-s", type=float, help="analyse: the run's wall time, when measured outside it")
    ap.add_argument("--out", help="write the JSON here")
    a = ap.parse_args(argv)
    r = {"mm": lambda _: mm_rate(), "study": cmd_study, "analyse": cmd_analyse, "eval": cmd_eval, "dcn": cmd_dcn, "threads": cmd_threads}[a.what](a)
    if a.what == "mm":
        print(json.dumps(r, indent=1))
    r = {"what": a.what, "argv": sys.argv[1:], "torch": torch.__version__, "cpu": cpu_model(), "when": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                                                  time.gmtime()), **r}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
