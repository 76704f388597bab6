"""Is latency stable across runs? Old protocol (one eager measurement per network) vs the new one.

    python benchmarks/latency_stability.py            # about a minute
    python benchmarks/latency_stability.py --no-busy  # without the background load

The 8 networks: RepLK and ConvNeXt from studies/kernel_size.yaml (deploy form, batch 1, 1 thread,
32 px), kernels 3-3-3-3, 7-7-7-7, 13-13-13-13 and 31-29-27-13 (clipped by the study to what each
map can use: 7-7-7-3, 13-13-7-3, 31-15-7-3), built with lkscale.study/lkscale.space as the search
builds them. One core is kept busy by a background process (a spin loop) for the whole run, as
during a search. Two separate measurement runs, each in a fresh Python process, each measuring the
8 networks three ways, side by side:

- ``old``: ``measure_latency`` (eager torch, networks one after another, median of >= 20 calls after 5
  warm-up calls): what ``estimate`` did before.
- ``torch-il``: the interleaved protocol (``measure_interleaved``) in eager torch.
- ``ort-il-med``: the interleaved protocol in onnxruntime, a round's value = the median of its block.
- ``ort-il``: the interleaved protocol in onnxruntime, a round's value = the fastest call of its block
  (the defaults: ``LatencyConfig()``).

Reported per protocol: Spearman rank correlation of the 8 medians between the two runs, the median
relative difference |a - b| / mean(a, b), and per network each run's median with its spread (old:
p25-p75 of its calls; interleaved: the 95% interval for the median and the robust CV). Ordering
sanity: within a family and protocol, a network whose only change is a larger kernel must never be
faster beyond its measured error (the larger kernel's interval entirely below the smaller's).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
from scipy import stats

KERNELS = [[3, 3, 3, 3], [7, 7, 7, 7], [13, 13, 13, 13], [31, 29, 27, 13]]
FAMILIES = ["replk", "convnext"]
STUDY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "studies", "kernel_size.yaml")
PROTOCOLS = ["old", "torch-il", "ort-il-med", "ort-il"]


def specs() -> list:
    """The 8 networks, as the kernel_size study builds them (no re-param branch: the deploy form)."""
    from lkscale.space import candidate, encode
    from lkscale.study import load_study

    st = load_study(STUDY)
    out = []
    for fam in FAMILIES:
        for k in KERNELS:
            c = candidate(st.space, {"block": fam, "kernels": encode(tuple(k)), "reparam": encode(())},
                          st.data.input_size)
            out.append(c.spec)
    return out


def one_run() -> dict:
    """One measurement run (called in a fresh process): {protocol: {name: {median, lo, hi, cv, noisy}}}."""
    import lkscale
    from lkscale.config import LatencyConfig
    from lkscale.cost import measure_interleaved, measure_latency

    nets = {s.name: lkscale.reparameterize(lkscale.build_model(s, num_classes=10)) for s in specs()}
    out: dict = {"old": {}}
    for name, m in nets.items():  # the old way: one network after the other, one measurement each
        r = measure_latency(m, 32, batch_size=1, threads=1, deploy=False)
        out["old"][name] = {"median": r["median_ms"], "lo": r["p25_ms"], "hi": r["p75_ms"], "cv": None,
                            "noisy": False}
    for proto, runtime, stat in (("torch-il", "torch", "min"), ("ort-il-med", "onnxruntime", "median"),
                                 ("ort-il", "onnxruntime", "min")):
        res = measure_interleaved(nets, LatencyConfig(runtime=runtime, input_size=32, block_stat=stat))
        out[proto] = {n: {"median": r.median_ms, "lo": r.ci_low_ms, "hi": r.ci_high_ms, "cv": r.cv,
                          "noisy": r.noisy, "rounds": r.rounds} for n, r in res.items()}
    return out


def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def ordering_violations(run: dict, names: list) -> list:
    """(small, large) pairs of one family where the larger kernel is faster beyond both intervals."""
    bad = []
    for f in range(len(FAMILIES)):
        fam = names[f * len(KERNELS):(f + 1) * len(KERNELS)]
        for i in range(len(fam)):
            for j in range(i + 1, len(fam)):
                if run[fam[j]]["hi"] < run[fam[i]]["lo"]:
                    bad.append((fam[i], fam[j]))
    return bad


def summarize(runs: list, names: list) -> dict:
    out = {}
    for p in PROTOCOLS:
        a = np.array([runs[0][p][n]["median"] for n in names])
        b = np.array([runs[1][p][n]["median"] for n in names])
        rel = np.abs(a - b) / ((a + b) / 2)
        out[p] = {"spearman": float(stats.spearmanr(a, b).statistic), "median_rel_diff_pct": float(100 * np.median(rel)),
                  "noisy": sum(r[p][n]["noisy"] for r in runs for n in names),
                  "order_violations": [ordering_violations(r[p], names) for r in runs]}
    return out


def _fmt(r: dict) -> str:
    cv = f" cv {100 * r['cv']:4.1f}%" if r["cv"] is not None else "         "
    return f"{r['median']:6.3f} [{r['lo']:6.3f}-{r['hi']:6.3f}]{cv}{' NOISY' if r['noisy'] else ''}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-busy", action="store_true", help="no background load")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args()
    if args.one_run:
        print(json.dumps(one_run()))
        return 0
    names = [s.name for s in specs()]
    busy = None if args.no_busy else _busy()
    try:
        runs = []
        for i in range(2):
            print(f"run {i + 1}/2 ...", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, "--one-run"], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        if busy is not None:
            busy.terminate()
            busy.wait()
    summary = summarize(runs, names)
    print(f"8 networks (kernel_size study, deploy form, batch 1, 1 thread, 32 px); background load: "
          f"{'none' if args.no_busy else 'one core spinning'}; load average now {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    for p in PROTOCOLS:
        print(f"\n{p}: run 1 | run 2   (ms: median [spread])")
        for n in names:
            print(f"  {n:<44} {_fmt(runs[0][p][n])} | {_fmt(runs[1][p][n])}")
    print(f"\n{'protocol':<10} {'spearman':>8} {'median rel diff':>16} {'noisy':>6}  ordering violations (run 1, run 2)")
    for p, s in summary.items():
        v = [len(x) for x in s["order_violations"]]
        print(f"{p:<10} {s['spearman']:>8.3f} {s['median_rel_diff_pct']:>15.1f}% {s['noisy']:>6}  {v[0]}, {v[1]}")
        for x in s["order_violations"]:
            for small, large in x:
                print(f"    larger kernel faster beyond error: {large} < {small}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"names": names, "runs": runs, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
