"""Faults injected on purpose, at a larger count than the test suite: how many were injected, how many the
search survived (its final record equal to an uninterrupted run's set of networks and replicates, nothing
finished trained again, Optuna agreeing with trials.csv), how many records were compared.

The scenarios are tests/test_faults.py's (``chain``: a small grid search with fixed learning curves hit by a
full disk while writing the record, a second driver, SIGKILL of the driver alone or with its Ray, SIGKILL of a
trial worker, Ctrl-C, and a record damaged outside lkscale, each followed by ``--resume``), plus a corrupted
dataset cache, N times with different seeds (so different moments). Loopback only; writes
``benchmarks/results/faults.json``::

    .venv/bin/python benchmarks/fault_injection.py [--chains 3] [--seed 0] [--out benchmarks/results/faults.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

import test_faults  # noqa: E402  (the scenarios live with their tests)

FAULTS = ["enospc", "sigkill", "sigkill-group", "sigint", "sigkill", "worker", "damage"]  # worker: its run ends the search


def cache_corruption(tmp: str, rounds: int, rng: random.Random) -> dict:
    """The decoded-dataset cache corrupted between runs in each of three ways: detected and rebuilt each time."""
    import numpy as np

    from lkscale.data.cache import cached_arrays

    src = os.path.join(tmp, "src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "data.bin"), "wb") as f:
        f.write(b"x")
    calls = []
    ref = np.arange(200_000, dtype=np.uint32).astype(np.uint8).reshape(2000, 100)

    def decode():
        calls.append(1)
        return {"train_x": ref.copy(), "train_y": np.arange(2000), "classes": ["a"]}

    cache = os.path.join(tmp, "cache")
    from pathlib import Path

    cached_arrays("t", Path(src), decode, [Path(src)], Path(cache))
    folder = next(p for p in Path(cache).iterdir() if p.is_dir())
    ok = 0
    for _ in range(rounds):
        kind = rng.choice(["truncate", "meta", "garbage"])
        x = folder / "train_x.npy"
        if kind == "truncate":
            x.write_bytes(x.read_bytes()[: rng.randint(1, 1000)])
        elif kind == "meta":
            (folder / "meta.json").write_text("{cut")
        else:
            x.write_bytes(os.urandom(64))
        n = len(calls)
        got = cached_arrays("t", Path(src), decode, [Path(src)], Path(cache))
        ok += int(len(calls) == n + 1 and np.array_equal(got["train_x"], ref))
    return {"injected": rounds, "survived": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chains", type=int, default=3, help="searches, each hit by every fault kind in turn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "faults.json"))
    a = ap.parse_args()
    t0 = time.time()
    kinds: dict[str, dict] = {}
    chains = []
    for c in range(a.chains):
        seed = a.seed + c
        with tempfile.TemporaryDirectory(prefix="lkscale-faults-") as tmp:
            say = lambda m, c=c: print(f"[chain {c + 1}/{a.chains}, {time.time() - t0:.0f} s] {m}", file=sys.stderr,
                                       flush=True)
            injected: list[str] = []
            try:
                res = test_faults.chain(tmp, FAULTS, seed=seed, say=say, injected=injected)
                ok, why = True, ""
            except Exception as e:  # noqa: BLE001 - a fault not survived is a result, recorded with its reason
                where = traceback.extract_tb(e.__traceback__)[-1]
                res, ok, why = {"injected": injected}, False, f"line {where.lineno}: {where.line}: {str(e)[-1500:]}"
            chains.append({"seed": seed, "survived": ok, "injected": res.get("injected"), "record": res.get("record"),
                           "error": why})
            for f in res.get("injected") or []:
                k = kinds.setdefault(test_faults.FAULT_NAMES[f], {"injected": 0, "survived": 0})
                k["injected"] += 1
                k["survived"] += int(ok)
            if not ok:  # the fault that struck when the chain failed (counted, not survived)
                k = kinds.setdefault("fault striking when a chain failed", {"injected": 0, "survived": 0})
                k["injected"] += 1
            say(f"{'survived' if ok else 'NOT survived'}: {res}")
    with tempfile.TemporaryDirectory() as tmp:
        kinds["dataset cache corrupted between runs"] = cache_corruption(tmp, 6, random.Random(a.seed))
    out = {"command": "benchmarks/fault_injection.py " + " ".join(sys.argv[1:]),
           "faults_injected": sum(k["injected"] for k in kinds.values()),
           "faults_survived": sum(k["survived"] for k in kinds.values()),
           "records_compared": sum(1 for ch in chains if ch["record"]),
           "by_fault": kinds, "chains": chains, "seconds": round(time.time() - t0)}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"faults injected {out['faults_injected']}, survived {out['faults_survived']}, records compared "
          f"{out['records_compared']} ({out['seconds']} s); by fault:")
    for name, k in kinds.items():
        print(f"  {name:<72} {k['survived']}/{k['injected']}")
    return 0 if out["faults_injected"] == out["faults_survived"] else 1


if __name__ == "__main__":
    sys.exit(main())
