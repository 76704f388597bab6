"""``lkscale noise STUDY``: where the noise of a paired accuracy difference comes from, and what it costs to beat.

Trains one pair of the study's networks changing one seed at a time (training subset, initial weights,
batch order; the validation sample held fixed) and all four at once (what a replicate does), scores each
trained network image by image on ``--val-big`` validation images per class (the study's own
``data.val_per_class`` nested in them), and reports the variance of the paired difference due to each
component with intervals (``lkscale.noise``), the minimum detectable effect at 80% power for the study's
replicates, and the replicates that equivalence within ``analysis.margin`` needs. The record
(``noise.json``) goes into the study's output folder (or ``--output``); ``lkscale plan`` reads it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from lkscale.cli import UsageError
from lkscale.noise import NOISE_JSON


def add_parser(sub) -> None:
    p = sub.add_parser("noise", help="variance components of a paired difference; minimum detectable effect",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="study file (.yaml)")
    p.add_argument("--pair", nargs=2, metavar=("A", "B"),
                   help="two of the study's networks (names or unique prefixes; default: its cheapest and costliest)")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="runs per group, the base included (default 3: 1 + 4 x 2 = 9 trained pairs)")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="override proxy.epochs (a quick look)")
    p.add_argument("--train-per-class", type=int, default=None, metavar="N", help="override data.train_per_class")
    p.add_argument("--val-big", type=int, default=1000, metavar="N",
                   help="validation images per class scored (default 1000); the study's val_per_class is nested in it")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="trainings at a time, one thread each (default 2)")
    p.add_argument("--output", metavar="DIR", help="folder for noise.json (default: the study's output folder)")
    p.add_argument("--analyse-only", action="store_true", help="only analyse an existing noise.json")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON on stdout")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pick(distinct: dict, key: str) -> str:
    hits = [n for n in distinct if n == key] or [n for n in distinct if n.startswith(key)]
    if len(hits) != 1:
        raise UsageError(f"--pair: {key!r} names {len(hits)} of the study's networks; "
                         f"choose from: {', '.join(distinct)}")
    return hits[0]


def _choose_pair(study, names: list | None) -> tuple:
    from lkscale.cost import count_flops
    from lkscale.model import build_model
    from lkscale.search.planning import expand

    distinct = expand(study)["distinct"]
    if names:
        a, b = (_pick(distinct, n) for n in names)
    else:
        size = study.data.input_size or 32
        by_flops = sorted(distinct, key=lambda n: count_flops(build_model(distinct[n]["spec"]), size)[0])
        a, b = by_flops[0], by_flops[-1]
    if a == b:
        raise UsageError("--pair: give two different networks")
    return (a, distinct[a]["spec"]), (b, distinct[b]["spec"])


def train_one(job: dict) -> dict:
    """One network at one seed setting (a worker process): train, then score the large validation set."""
    import numpy as np
    import torch

    from lkscale.config import DataConfig, TrainConfig, from_dict
    from lkscale.data import load_arrays, load_splits, stratified_split
    from lkscale.noise import pack
    from lkscale.search.trainable import build_seeded, init_seed, seeded_configs
    from lkscale.spec import ArchSpec
    from lkscale.train import train_model

    torch.set_num_threads(1)
    s = job["seeds"]
    data, proxy = seeded_configs(from_dict(DataConfig, job["data"]), from_dict(TrainConfig, job["proxy"]),
                                 val=s["val"], subset=s["subset"], init=s["init"], order=s["order"], threads=1)
    splits = load_splits(data)
    arrays, _ = load_arrays(data)
    ty, k = arrays["train_y"], len(splits.classes)
    (big_idx,) = stratified_split(ty, [job["val_big"]], s["val"], k)
    (small_idx,) = stratified_split(ty, [job["val_small"]], s["val"], k)
    mask = torch.from_numpy(np.isin(big_idx, small_idx))
    big = splits.val
    small = dataclasses.replace(big, x=big.x[mask], y=big.y[mask])
    spec = ArchSpec.from_json(job["spec"])
    model = build_seeded(spec, init_seed(proxy), splits.num_classes, splits.in_chans)
    cpu0 = time.process_time()
    res = train_model(model, dataclasses.replace(splits, val=small), proxy)
    cpu_train = time.process_time() - cpu0
    if res.status != "ok":
        return {"error": res.message or res.status}

    @torch.no_grad()
    def correct(ts) -> tuple:
        t0 = time.perf_counter()
        res.model.eval()
        out = [(res.model(xb.contiguous(memory_format=torch.channels_last)).argmax(1) == yb)
               for xb, yb in ts.batches(proxy.eval_batch_size, channels_last=True)]
        return torch.cat(out).numpy(), time.perf_counter() - t0

    c_small, t_small = correct(small)
    c_big, t_big = correct(big)
    return {"acc_small": float(c_small.mean()), "acc_big": float(c_big.mean()), "val_acc": float(res.val_acc),
            "correct": pack(c_big), "small_mask": pack(mask.numpy()), "train_s": float(res.seconds),
            "eval_small_s": t_small, "eval_big_s": t_big, "cpu_train_s": cpu_train}


def _record_path(args, study) -> str:
    return os.path.join(args.output or study.output, NOISE_JSON)


def _load(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _save(path: str, record: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".part", "w") as f:
        json.dump(record, f)
    os.replace(path + ".part", path)


def measure(args, study, path: str) -> dict:
    """Run (or finish) the measurement, writing the record after every trained network."""
    from lkscale.config import to_dict
    from lkscale.noise import design

    (na, sa), (nb, sb) = _choose_pair(study, args.pair)
    data = dataclasses.replace(study.data, val_per_class=args.val_big, test_per_class=0,
                               **({"train_per_class": args.train_per_class} if args.train_per_class else {}))
    proxy = dataclasses.replace(study.proxy, device="cpu", **({"epochs": args.epochs} if args.epochs else {}))
    settings = {"study": study.name, "a": na, "b": nb, "epochs": proxy.epochs, "train_per_class": data.train_per_class,
                "val_small": study.data.val_per_class * 10, "val_big": args.val_big * 10,
                "val_small_per_class": study.data.val_per_class, "val_big_per_class": args.val_big,
                "replicates": study.search.replicates}
    runs = design(args.seeds)
    old = _load(path)
    if old and all(old.get(k) == v for k, v in settings.items()):
        record = old
        have = {json.dumps(r["seeds"], sort_keys=True): r for r in old["runs"]}
        record["runs"] = [have.get(json.dumps(s, sort_keys=True), {"seeds": s}) for s in runs]
    else:
        record = {**settings, "base": runs[0], "runs": [{"seeds": s} for s in runs], "load": []}
    jobs = []
    for i, r in enumerate(record["runs"]):
        for side, spec in (("a", sa), ("b", sb)):
            if not r.get(side):
                jobs.append((i, side, {"seeds": r["seeds"], "spec": spec.to_json(), "data": to_dict(data),
                                       "proxy": to_dict(proxy), "val_big": args.val_big,
                                       "val_small": study.data.val_per_class}))
    _say(f"noise: {na} vs {nb}, {len(record['runs'])} seed settings, {len(jobs)} trainings to run, "
         f"{args.workers} at a time ({proxy.epochs:g} epochs x {data.train_per_class} images/class); {path}")
    t0 = time.time()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        futs = {pool.submit(train_one, job): (i, side) for i, side, job in jobs}
        for n, fut in enumerate(as_completed(futs), 1):
            i, side = futs[fut]
            out = fut.result()
            if "error" in out:
                raise RuntimeError(f"training {record['runs'][i]['seeds']} ({side}) failed: {out['error']}")
            record["runs"][i][side] = out
            record["load"].append(os.getloadavg()[0])
            _save(path, record)
            _say(f"noise: {n}/{len(jobs)} {side} {record['runs'][i]['seeds']}: acc {out['acc_small']:.4f} / "
                 f"{out['acc_big']:.4f}, {out['train_s']:.0f} s (load {os.getloadavg()[0]:.1f}, "
                 f"{(time.time() - t0) / 60:.1f} min)")
    return record


def summarise(record: dict, study) -> dict:
    """The analysis plus what it means for the study: MDE and replicates for equivalence per validation size."""
    from lkscale import noise
    from lkscale.comparisons import min_detectable_effect, replicates_needed

    a = noise.analyse(record)
    out = noise.to_json(a)
    an = getattr(study, "analysis", None)
    margin = float(getattr(an, "margin", 1.0))
    alpha = float(getattr(an, "alpha", 0.05))
    power = float(getattr(an, "power", 0.8))
    reps = int(study.search.replicates)
    settings = {}
    for n in (int(record["val_small"]), int(record["val_big"])):
        sd = noise.paired_sd(record, n)
        cost = noise.cost_seconds(record, n)
        once = noise.cost_seconds(record, n, evals=1)
        settings[str(n)] = {
            "paired_sd": sd, "observed_sd": a["observed"][n]["sd"], "s_per_pair": cost, "s_per_pair_scored_once": once,
            "sd_x_sqrt_minutes": sd * math.sqrt(cost / 60.0) if cost == cost else float("nan"),
            "sd_x_sqrt_minutes_scored_once": sd * math.sqrt(once / 60.0) if once == once else float("nan"),
            "mde": min_detectable_effect(sd, reps, alpha, power),
            "replicates_for_equivalence": replicates_needed(sd, margin, alpha, power, 0.0, "equivalence")}
    out.update(pair=[record["a"], record["b"]], settings=settings, margin=margin, alpha=alpha, power=power,
               replicates=reps, epochs=record["epochs"], train_per_class=record["train_per_class"],
               load=record.get("load", []))
    return out


def _print(s: dict) -> None:
    p = lambda c: f"{c['sd']:.2f} [{c['sd_low']:.2f}, {c['sd_high']:.2f}]"  # noqa: E731
    print(f"paired difference {s['pair'][0]} - {s['pair'][1]} ({s['epochs']:g} epochs x {s['train_per_class']}/class); "
          f"sd in accuracy points [95%]:")
    for g in ("subset", "init", "order", "all"):
        c = s["components"][g]
        print(f"  training, {g + ' seed' if g != 'all' else 'all seeds'} changed: {p(c):<24} ({c['runs']} runs; "
              f"before removing prediction churn {math.sqrt(max(0, c['raw_var'])):.2f})")
    c = s["components"]["pooled"]
    print(f"  training, pooled over the groups: {c['sd']:.2f} ({c['runs']} runs; used for the prediction where it "
          f"exceeds the all-seeds estimate)")
    for n, c in s["validation"].items():
        print(f"  validation sampling, {n:>6} images: {p(c)}")
    ad = s["additivity"]
    print(f"  one-factor variances sum to {ad['sum_one_factor']:.2f}, all at once {ad['all_at_once']:.2f} points^2")
    print(f"per replicate, {s['replicates']} replicates, margin {s['margin']:g} point(s), alpha {s['alpha']:g}, "
          f"power {s['power']:.0%}:")
    for n, v in s["settings"].items():
        print(f"  {n:>6} validation images: paired sd {v['paired_sd']:.2f} (observed {v['observed_sd']:.2f}), "
              f"{v['s_per_pair'] / 60:.1f} min per pair scored every epoch ({v['s_per_pair_scored_once'] / 60:.1f} scored "
              f"once), sd x sqrt(min) {v['sd_x_sqrt_minutes']:.2f} ({v['sd_x_sqrt_minutes_scored_once']:.2f}); "
              f"MDE {v['mde']:.2f} points; equivalence needs {v['replicates_for_equivalence']} replicates")
    print("  (minutes: wall time of the measurement's single-thread trainings on this machine under the load recorded; "
          "compare settings by their ratio)")


def run(args: argparse.Namespace) -> int:
    from lkscale.study import load_study

    if args.seeds < 2:
        raise UsageError("--seeds must be >= 2")
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    study = load_study(args.study)
    if args.val_big < study.data.val_per_class:
        raise UsageError(f"--val-big must be >= the study's data.val_per_class ({study.data.val_per_class})")
    path = _record_path(args, study)
    if args.analyse_only:
        record = _load(path)
        if record is None:
            raise UsageError(f"{path}: no noise record; run lkscale noise without --analyse-only first")
    else:
        record = measure(args, study, path)
    summary = summarise(record, study)
    record["analysis"] = summary
    _save(path, record)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print(summary)
    return 0
