"""Front recall per trial-epoch: single runs vs fixed replicates vs racing, on a calibrated noise model.

    python benchmarks/racing.py                  # 20 synthetic studies shaped like the main study, ~1 min
    python benchmarks/racing.py --problems 50 --cap 12
    python benchmarks/racing.py --run runs/kernel_size   # means, latencies (and spread) from a real run
    python benchmarks/racing.py --val-n 200 --margin 1    # accuracies on a coarse grid; pairs may end equivalent

Noise model (accuracy in points): acc(i, r) = mu_i + s_r + e_ir, with a replicate effect s_r shared by
every candidate (common random numbers) and an individual effect e_ir. Both spreads are calibrated
from measured replicates, not guessed: by default the main study's proxy settings, seeds 0-3,
ConvNeXt 3-3-3-3 50.2/52.0/51.6/48.0% and RepLK 31-15-7-3 54.5/55.5/59.8/52.8%:
var(e) = var(paired difference) / 2 and var(s) = mean within-candidate variance - var(e). With
``--run`` they come from the run's own replicates (trials.csv rows with a ``replicate`` column).
The true means of the 32 grid candidates spread over 47-53% (the main study's grid), latencies
log-uniform over 2.3-6.2 ms (its front, README); latency is measured once per candidate with a
relative standard error of 18% (two latency rounds on this machine differed by a median 17.6%:
sd = 0.176 / (0.6745 * sqrt(2))).

Strategies (4 trial-epochs per replicate, the main study's proxy):
- single: one run per candidate; claims the front of the single values.
- fixed-N: N replicates per candidate; claims the front of the means (and, in the "+tests" row,
  only the members the racing rule confirms from those same replicates).
Accuracies sit on the 100/val_n-point grid of ``--val-n`` validation images (the racing test floors the
paired spread accordingly); with ``--margin`` racing may end a pair equivalent (then "+ tied on front"
counts equivalent front members too).
- racing: starts from the single runs; more replicates only where a pair is unresolved (lkscale.racing,
  alpha 0.05, cap per candidate); claims the confirmed members.
Recall = true-front members claimed / true-front size; false = claimed members that are truly dominated.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

from lkscale.pareto import pareto_front
from lkscale.racing import CONFIRMED, EQUIVALENT, TIED, Candidate, Race
from lkscale.rundir import RunDir

CONVNEXT = [50.2, 52.0, 51.6, 48.0]
REPLK = [54.5, 55.5, 59.8, 52.8]
LAT_REL_SE = 0.176 / (0.6745 * np.sqrt(2))


def calibrate(groups: list[dict[int, float]]) -> tuple[float, float]:
    """(sd of the shared replicate effect, sd of the individual effect) from replicates by index."""
    multi = [g for g in groups if len(g) >= 2]
    within = np.mean([np.var(list(g.values()), ddof=1) for g in multi])
    diffs = []
    for i, a in enumerate(multi):
        for b in multi[i + 1:]:
            shared = sorted(set(a) & set(b))
            if len(shared) >= 2:
                diffs.append(np.var([a[r] - b[r] for r in shared], ddof=1) / 2)
    ind = float(np.mean(diffs)) if diffs else float(within)
    return float(np.sqrt(max(0.0, within - ind))), float(np.sqrt(ind))


def read_run(run_dir: str) -> tuple[list[str], np.ndarray, np.ndarray, list[dict[int, float]]]:
    """Names, mean accuracy (points), latency (ms) and replicates of the complete trials of a run."""
    reps: dict[str, dict[int, float]] = {}
    lat: dict[str, float] = {}
    with open(RunDir(run_dir).trials_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                acc, ms = float(row.get("val_acc") or "nan"), float(row.get("latency_ms") or "nan")
            except ValueError:
                continue
            if row.get("state", "complete") != "complete" or not np.isfinite(acc) or not np.isfinite(ms):
                continue
            r = int(float(row.get("replicate") or 0))
            reps.setdefault(row["name"], {})[r] = acc * 100 if acc <= 1 else acc
            lat[row["name"]] = ms
    names = sorted(reps)
    if len(names) < 2:
        raise SystemExit(f"{run_dir}: fewer than 2 complete trials with val_acc and latency_ms")
    return names, np.array([np.mean(list(reps[n].values())) for n in names]), np.array([lat[n] for n in names]), \
        [reps[n] for n in names]


class Problem:
    """One synthetic study: true means and latencies, a measured latency, and replicate draws."""

    def __init__(self, seed, mu, lat, sd_shared, sd_ind, lat_rel_se, val_n=None):
        rng = np.random.default_rng(seed)
        self.val_n = val_n
        self.seed, self.mu, self.lat = seed, np.asarray(mu, float), np.asarray(lat, float)
        self.names = [f"c{i}" for i in range(len(mu))]
        self.lat_meas = self.lat * np.exp(rng.normal(0, lat_rel_se, len(mu)))
        self.lat_se = self.lat_meas * lat_rel_se
        self.shared = rng.normal(0, sd_shared, 1000)
        self.sd_ind = sd_ind
        self.truth = {self.names[i] for i in pareto_front(np.c_[self.mu, self.lat])}

    def sample(self, name: str, r: int) -> float:
        i = int(name[1:])
        acc = float(self.mu[i] + self.shared[r] + np.random.default_rng([self.seed, i, r]).normal(0, self.sd_ind))
        return acc if not self.val_n else float(np.round(acc * self.val_n / 100) * 100 / self.val_n)  # on the grid

    def candidates(self, n_reps: int) -> list[Candidate]:
        return [Candidate(n, float(self.lat_meas[i]), float(self.lat_se[i]), {r: self.sample(n, r) for r in range(n_reps)})
                for i, n in enumerate(self.names)]

    def score(self, claimed: set[str], epochs: float) -> tuple[float, float, float]:
        return len(claimed & self.truth) / len(self.truth), float(len(claimed - self.truth)), epochs


def front_of_means(cands: list[Candidate]) -> set[str]:
    pts = [[np.mean(list(c.accs.values())), c.latency] for c in cands]
    return {cands[i].name for i in pareto_front(pts)}


def strategies(p: Problem, fixed: int, cap: int, epochs: int, alpha: float, budget=None,
               margin=None) -> dict[str, tuple]:
    n = len(p.names)
    out = {"single": p.score(front_of_means(p.candidates(1)), n * epochs)}
    cands = p.candidates(fixed)
    out[f"fixed-{fixed}"] = p.score(front_of_means(cands), n * fixed * epochs)
    tested = Race(cands, alpha=alpha, cap=fixed, min_replicates=fixed, n_val=p.val_n).verdicts()  # one look
    out[f"fixed-{fixed} + tests"] = p.score({k for k, v in tested.items() if v.status == CONFIRMED}, n * fixed * epochs)
    extra = None if budget is None else budget - n * epochs  # the single runs are the search's own
    race = Race(p.candidates(1), alpha=alpha, cap=cap, epochs_per_replicate=epochs, budget_epochs=extra, n_val=p.val_n,
                margin=margin)
    while batch := race.next_batch():
        for name, r in batch:
            race.add(name, r, p.sample(name, r))
    spent = n * epochs + race.spent_epochs
    v = race.verdicts()
    out[f"racing (cap {cap})"] = p.score({k for k, x in v.items() if x.status == CONFIRMED}, spent)
    out["  + tied on front"] = p.score({k for k, x in v.items() if x.status == CONFIRMED or
                                        (x.status in (TIED, EQUIVALENT) and x.on_front)}, spent)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=20, help="synthetic studies (seeds)")
    ap.add_argument("--candidates", type=int, default=32)
    ap.add_argument("--fixed", type=int, default=4, help="replicates per candidate for the fixed strategy")
    ap.add_argument("--cap", type=int, default=10, help="racing: replicates per candidate at most")
    ap.add_argument("--epochs", type=int, default=4, help="trial-epochs per replicate")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--budget", type=float, help="racing: total trial-epochs, single runs included (default: none)")
    ap.add_argument("--lat-rel-se", type=float, default=LAT_REL_SE, help="relative standard error of a latency")
    ap.add_argument("--run", help="a run folder: take means, latencies and (with replicates) the spread from it")
    ap.add_argument("--val-n", type=int, default=2000, help="validation images: accuracies on a 100/val_n grid "
                                                            "(0: continuous)")
    ap.add_argument("--margin", type=float, default=None, help="racing: pairs within +-margin points may end "
                                                               "equivalent (analysis.margin)")
    a = ap.parse_args(argv)
    groups = [dict(enumerate(CONVNEXT)), dict(enumerate(REPLK))]
    source = "measured seeds 0-3 (ConvNeXt 3-3-3-3, RepLK 31-15-7-3)"
    mu = lat = None
    if a.run:
        _, mu, lat, run_groups = read_run(a.run)
        if sum(len(g) >= 2 for g in run_groups) >= 2:
            groups, source = run_groups, f"{a.run} ({sum(len(g) >= 2 for g in run_groups)} candidates with replicates)"
    sd_shared, sd_ind = calibrate(groups)
    print(f"noise model from {source}: shared replicate sd {sd_shared:.2f}, individual sd {sd_ind:.2f} "
          f"(paired-difference sd {np.sqrt(2) * sd_ind:.2f}); latency relative se {a.lat_rel_se:.3f}", file=sys.stderr)
    rows: dict[str, list] = {}
    sizes = []
    for seed in range(a.problems):
        rng = np.random.default_rng(10_000 + seed)
        m = mu if mu is not None else rng.uniform(47, 53, a.candidates)
        lt = lat if lat is not None else np.exp(rng.uniform(np.log(2.3), np.log(6.2), a.candidates))
        p = Problem(seed, m, lt, sd_shared, sd_ind, a.lat_rel_se, a.val_n or None)
        sizes.append(len(p.truth))
        for k, v in strategies(p, a.fixed, a.cap, a.epochs, a.alpha, a.budget, a.margin).items():
            rows.setdefault(k, []).append(v)
    print(f"{a.problems} problems x {len(m)} candidates; true front size {np.mean(sizes):.1f} ± {np.std(sizes):.1f}; "
          f"noise: shared sd {sd_shared:.2f}, individual sd {sd_ind:.2f}, latency rel. se {a.lat_rel_se:.3f}; "
          f"mean ± sd over problems")
    print(f"{'strategy':<22}{'trial-epochs':>18}{'recall':>16}{'false claims':>16}{'recall/1k ep':>14}")
    for k, v in rows.items():
        r = np.array(v)
        print(f"{k:<22}{r[:, 2].mean():>10.0f} ± {r[:, 2].std():<5.0f}{r[:, 0].mean():>9.2f} ± {r[:, 0].std():<4.2f}"
              f"{r[:, 1].mean():>9.2f} ± {r[:, 1].std():<4.2f}{1000 * r[:, 0].mean() / r[:, 2].mean():>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
