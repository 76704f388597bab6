"""Which proxy of equal cost ranks the main study's candidates most like longer training? (issue 13, item 4)

Trains ~8 architectures of ``studies/kernel_size.yaml`` (RepLK and ConvNeXt blocks, kernels 3..31) on
real CIFAR-10 at several proxy settings of equal cost (epochs x training images) and at a long reference
setting, then measures the rank agreement (Kendall tau-b, Spearman rho, with percentile bootstrap
intervals over architectures) of each proxy with the reference. Every model is validated on the same
``--val-per-class`` images per class; the per-image correctness is stored, so the effect of the
validation size is measured on the same models: the accuracy on random stratified halves of the
validation set (1,000 of 2,000 images), repeated over many halves, against the whole of it.

Results go to a JSON-lines file, one line per (architecture, setting); a re-run skips finished jobs
(resumable), so the script can be stopped and continued. ``--analyse`` only reads the file.

    .venv/bin/python benchmarks/proxy_fidelity.py --out benchmarks/proxy_fidelity.jsonl
    .venv/bin/python benchmarks/proxy_fidelity.py --out benchmarks/proxy_fidelity.jsonl --analyse
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# (block, kernels): the main study's extremes and middle for both families, interleaved so that a partial
# run already spans them
ARCHS = (("replk", "[3, 3, 3, 3]"), ("convnext", "[31, 29, 27, 13]"), ("replk", "[31, 29, 27, 13]"),
         ("convnext", "[3, 3, 3, 3]"), ("replk", "[13, 13, 13, 13]"), ("convnext", "[13, 13, 13, 13]"),
         ("replk", "[7, 7, 7, 7]"), ("convnext", "[7, 7, 7, 7]"))
# name -> (epochs, training images per class, augment). Scaled to what 2 shared cores allow (~40 images/s
# per process measured here while other work ran): the proxies cost 10,000 image-passes each (a quarter
# of the main study's 4 x 10,000) and the reference twice that, with augmentation.
SETTINGS = {"ref8x250": (8, 250, True), "p4x250": (4, 250, False), "p2x500": (2, 500, False),
            "p8x125": (8, 125, False)}


def architectures() -> list[dict]:
    from lkscale.space import candidate
    from lkscale.study import parse_study

    path = os.path.join(os.path.dirname(HERE), "studies", "kernel_size.yaml")
    raw = yaml.safe_load(open(path))
    raw["space"]["reparam"] = [[]]  # the networks as measured: no re-param branch (the study now fixes a 5x5 one)
    study = parse_study(raw, path)
    out = []
    for block, k in ARCHS:
        c = candidate(study.space, {"block": block, "kernels": k, "reparam": "[]"}, study.data.input_size)
        out.append({"name": c.name, "spec": c.spec.to_json(), "block": block, "kernels": json.loads(k)})
    return out


def train_job(job: dict) -> dict:
    """Train one (architecture, setting); per-image correctness on the validation set."""
    import torch

    from lkscale.config import DataConfig, TrainConfig
    from lkscale.data import TensorSet, load_splits
    from lkscale.model import build_model
    from lkscale.spec import ArchSpec
    from lkscale.train import train_model

    torch.set_num_threads(job["threads"])
    epochs, per_class, augment = SETTINGS[job["setting"]]
    data = DataConfig(dataset="imagefolder", root=job["root"], train_per_class=per_class,
                      val_per_class=job["val_per_class"], test_per_class=0, input_size=32, seed=job["seed"],
                      augment=augment)
    proxy = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, weight_decay=0.05, warmup_epochs=0.2,
                        label_smoothing=0.1, threads=job["threads"], seed=job["seed"])
    splits = load_splits(data)
    val = splits.val  # validated once, at the end: training sees a token validation set (no per-epoch cost)
    splits = dataclasses.replace(splits, val=TensorSet(val.x[:10], val.y[:10], val.mean, val.std))
    torch.manual_seed(job["seed"])
    model = build_model(ArchSpec.from_json(job["spec"]), num_classes=splits.num_classes, in_chans=splits.in_chans)
    t0 = time.time()
    res = train_model(model, splits, proxy)
    model = res.model.eval()
    correct = []
    with torch.no_grad():
        for xb, yb in val.batches(500, channels_last=True):
            correct += (model(xb).argmax(1) == yb).int().tolist()
    return {**{k: job[k] for k in ("name", "setting", "seed", "block", "kernels")}, "status": res.status,
            "val_acc": float(np.mean(correct)), "labels": val.y.tolist(), "correct": correct, "seconds": time.time() - t0,
            "epochs": epochs, "train_per_class": per_class, "augment": augment}


def _done(path: str) -> set:
    if not os.path.isfile(path):
        return set()
    with open(path) as f:
        return {(r["name"], r["setting"], r["seed"]) for r in map(json.loads, f) if r.get("status") == "ok"}


def run_jobs(args: argparse.Namespace) -> None:
    archs, done = architectures()[: args.archs], _done(args.out)
    settings = [s for s in args.settings.split(",")]
    jobs = [{**a, "setting": s, "seed": args.seed, "threads": args.threads, "root": args.data,
             "val_per_class": args.val_per_class} for a in archs for s in settings]  # whole architectures first
    jobs = [j for j in jobs if (j["name"], j["setting"], j["seed"]) not in done]
    print(f"{len(jobs)} jobs to run ({len(done)} done)", file=sys.stderr, flush=True)
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for r in pool.imap_unordered(train_job, jobs):
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{r['setting']:>11} {r['name']}: {r['val_acc']:.4f} in {r['seconds']:.0f} s",
                  file=sys.stderr, flush=True)


def _half_accs(rows: list[dict], n_halves: int, seed: int) -> np.ndarray:
    """(n_halves, n_archs) accuracies on random stratified halves of the (shared) validation set."""
    labels = np.asarray(rows[0]["labels"])
    rng = np.random.default_rng(seed)
    out = np.empty((n_halves, len(rows)))
    correct = np.array([r["correct"] for r in rows], dtype=float)
    for h in range(n_halves):
        mask = np.zeros(len(labels), bool)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            mask[rng.choice(idx, len(idx) // 2, replace=False)] = True
        out[h] = correct[:, mask].mean(1)
    return out


def analyse(path: str, reference: str, seed: int = 0, n_halves: int = 200) -> dict:
    from lkscale.rank_agreement import kendall_tau_b, rank_correlation, spearman_rho

    with open(path) as f:
        rows = [r for r in map(json.loads, f) if r.get("status") == "ok" and r.get("seed") == seed]
    by = {}
    for r in rows:
        by.setdefault(r["setting"], {})[r["name"]] = r
    ref = by.get(reference, {})
    out = {"reference": reference, "seed": seed, "settings": {}}
    for s, got in sorted(by.items()):
        if s == reference:
            continue
        names = sorted(set(got) & set(ref))
        if len(names) < 3:
            continue
        p = [got[n]["val_acc"] for n in names]
        h = [ref[n]["val_acc"] for n in names]
        tau, rho = rank_correlation(p, h, "kendall"), rank_correlation(p, h, "spearman")
        halves = _half_accs([got[n] for n in names], n_halves, 0)
        tau_half = [kendall_tau_b(a, h) for a in halves]
        rho_half = [spearman_rho(a, h) for a in halves]
        out["settings"][s] = {
            "n": len(names), "kendall_tau": tau.to_dict(), "spearman_rho": rho.to_dict(),
            "val_images": len(got[names[0]]["correct"]),
            "half_val": {"val_images": len(got[names[0]]["correct"]) // 2, "kendall_tau_mean": float(np.nanmean(tau_half)),
                         "kendall_tau_sd": float(np.nanstd(tau_half)), "spearman_rho_mean": float(np.nanmean(rho_half)),
                         "spearman_rho_sd": float(np.nanstd(rho_half))},
            "seconds": float(sum(got[n]["seconds"] for n in names)),
            "accs": {n: [got[n]["val_acc"], ref[n]["val_acc"]] for n in names}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "proxy_fidelity.jsonl"))
    ap.add_argument("--data", default=None, help="dataset root (default: lkscale's search order)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--reference", default="ref8x250")
    ap.add_argument("--archs", type=int, default=6, help="the first N of ARCHS")
    ap.add_argument("--val-per-class", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--analyse", action="store_true", help="only analyse the results file")
    args = ap.parse_args(argv)
    if not args.analyse:
        run_jobs(args)
    print(json.dumps(analyse(args.out, args.reference, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
