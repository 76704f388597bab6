"""Two-objective racing: spend extra replicates where they decide the accuracy-latency front.

Each candidate has accuracies by replicate index and one latency with its standard error; the relations
between two candidates (paired accuracy tests at fixed looks, latency known with error) are
:mod:`lkscale.race_evidence`'s. Per objective: +1 (significantly better), -1 (significantly worse),
0 (unresolved); in accuracy also *equivalent within +-margin* (when the race has a margin).

Statuses:

- ``confirmed``: for *every* other candidate a, b is significantly better than a in at least one
  objective, so a cannot dominate b. This is an intersection-union test: a false confirmation of a
  truly dominated b needs a false win against its true dominator, whose probability is at most
  alpha/2 (accuracy, all looks) + alpha/2 (latency) = ``alpha``; no correction across rivals is needed.
- ``dominated``: some a is significantly better in one objective, b is significantly better than a
  in neither, and a is no worse in the other objective by its point estimate (for accuracy: the mean
  paired difference over a look of >= ``min_replicates`` shared replicates); or (with a margin) a is
  significantly faster and equivalent within +-margin in accuracy (``within_margin`` in the evidence).
- ``equivalent``: neither of the above, and every pair left undecided is equivalent within +-margin in
  accuracy with latencies that cannot be told apart: more replicates would not change the answer.
- ``tied``: none of these (on or near the front, dominance unresolved within the noise).

:class:`Race` proposes the (candidate, replicate) pairs whose results could resolve an unresolved
pair, within a per-candidate cap and a trial-epoch budget, and is driven by the caller:
``next_batch()`` -> train -> ``add(name, replicate, acc)``; ``to_dict``/``from_dict`` are JSON-safe.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import special

from .comparisons import paired_values, sd_floor
from .intervals import accuracy_interval
from .pareto import pareto_front
from .race_evidence import (CONFIRMED, DOMINATED, EQUIVALENT, TIED, AccTest, Candidate, Verdict, latency_z, looks,
                            paired_acc_test)


class Race:
    """Racing for two objectives (accuracy: max, over replicates; latency: min, known with error)."""

    def __init__(self, candidates, alpha: float = 0.05, cap: int = 10, min_replicates: int = 3,
                 budget_epochs: float | None = None, epochs_per_replicate: float = 1.0,
                 n_val: int | None = None, scale: float = 100.0, margin: float | None = None,
                 between_run_cv: float = 0.0):
        cands = list(candidates.values()) if isinstance(candidates, dict) else list(candidates)
        self.candidates = {c.name: c for c in cands}
        if len(self.candidates) != len(cands):
            raise ValueError("candidate names must be unique")
        if not 0 < alpha < 1 or cap < 2 or min_replicates > cap:
            raise ValueError(f"need 0 < alpha < 1 and 2 <= min_replicates <= cap, got {alpha}, {min_replicates}, {cap}")
        if margin is not None and not margin > 0:
            raise ValueError(f"margin must be > 0 (or None for no equivalence tests), got {margin}")
        self.alpha, self.cap, self.min_replicates = float(alpha), int(cap), int(min_replicates)
        self.budget_epochs, self.epochs_per_replicate = budget_epochs, float(epochs_per_replicate)
        self.n_val, self.scale, self.margin = n_val, scale, margin
        self.between_run_cv = float(between_run_cv)
        self.resolution = scale / n_val if n_val else 0.0
        self.looks = looks(self.min_replicates, self.cap)
        self.alpha_acc = self.alpha / 2 / len(self.looks)
        self.z_lat = float(special.ndtri(1 - self.alpha / 2))
        self.spent_epochs = 0.0
        self.pending: set[tuple[str, int]] = set()
        self.failed: set[tuple[str, int]] = set()
        self._cache: dict = {}

    # ---------------------------------------------------------------------------- feeding results
    def add(self, name: str, replicate: int, acc: float) -> None:
        """Record one result; it costs ``epochs_per_replicate`` if this race proposed it, else nothing."""
        key = (name, int(replicate))
        if key in self.pending:
            self.pending.discard(key)
            self.spent_epochs += self.epochs_per_replicate
        self.candidates[name].accs[int(replicate)] = float(acc)

    def fail(self, name: str, replicate: int) -> None:
        """A proposed run that failed: its epochs count as spent and it is not proposed again."""
        key = (name, int(replicate))
        if key in self.pending:
            self.pending.discard(key)
            self.spent_epochs += self.epochs_per_replicate
        self.failed.add(key)

    # ------------------------------------------------------------------------------- relations
    def acc_test(self, a: str, b: str):
        """(look, AccTest of a - b) on the first ``look`` shared replicates; (None, None) before the first look."""
        ra, rb = self.candidates[a].accs, self.candidates[b].accs
        shared = sorted(set(ra) & set(rb))
        usable = [n for n in self.looks if n <= len(shared)]
        if not usable:
            return None, None
        idx = tuple(shared[:usable[-1]])
        key = (a, b, idx)
        if key not in self._cache:
            xa, xb, _ = paired_values({i: ra[i] for i in idx}, {i: rb[i] for i in idx})
            self._cache[key] = paired_acc_test(xa - xb, self.resolution, self.margin)
        return usable[-1], self._cache[key]

    def acc_relation(self, a: str, b: str) -> int:
        _, t = self.acc_test(a, b)
        if t is None or np.isnan(t.p):
            return 0
        return 1 if t.p <= self.alpha_acc else (-1 if t.p_less <= self.alpha_acc else 0)

    def acc_equivalent(self, a: str, b: str) -> bool:
        """|acc a - acc b| < margin by TOST at the per-look level (False without a margin)."""
        _, t = self.acc_test(a, b)
        return t is not None and not np.isnan(t.p_equiv) and t.p_equiv <= self.alpha_acc

    def lat_z(self, a: str, b: str) -> float:
        """z of "a is faster than b" (:func:`lkscale.race_evidence.latency_z`, with this race's between-run spread)."""
        return latency_z(self.candidates[a], self.candidates[b], self.between_run_cv)

    def lat_relation(self, a: str, b: str) -> int:
        z = self.lat_z(a, b)
        return 1 if z > self.z_lat else (-1 if z < -self.z_lat else 0)

    def beats(self, b: str, a: str) -> bool:
        """b is significantly better than a in at least one objective (so a cannot dominate b)."""
        return self.acc_relation(b, a) == 1 or self.lat_relation(b, a) == 1

    def sig_dominates(self, a: str, b: str) -> bool:
        """a significantly better in one objective, no worse in the other, and b beats a in neither (or a
        significantly faster and equivalent in accuracy within the margin)."""
        if self.beats(b, a):
            return False
        ca, cb = self.candidates[a], self.candidates[b]
        if self.acc_relation(a, b) == 1:
            return bool(ca.latency <= cb.latency)  # False when either latency is unknown
        if self.lat_relation(a, b) == 1:
            _, t = self.acc_test(a, b)
            return t is not None and (t.diff >= 0 or self.acc_equivalent(a, b))
        return False

    # -------------------------------------------------------------------------------- statuses
    def _interval(self, c: Candidate):
        if not c.accs:
            return float("nan"), float("nan"), float("nan")
        iv = accuracy_interval(c.accs, self.n_val, 0.95, self.scale)
        return iv.estimate, iv.low, iv.high

    def front_of_means(self) -> set[str]:
        """Names on the Pareto front of (mean accuracy, latency), candidates with results and a latency only."""
        names = [n for n, c in self.candidates.items() if c.accs and math.isfinite(c.latency)]
        pts = [[np.mean(list(self.candidates[n].accs.values())), self.candidates[n].latency] for n in names]
        return {names[i] for i in pareto_front(pts, ("max", "min"))} if names else set()

    def verdict(self, name: str, front: set[str] | None = None, interval: bool = True) -> Verdict:
        """Status of one candidate against all others, with its evidence (``interval``: and its accuracy
        interval; without, low and high are NaN)."""
        front = self.front_of_means() if front is None else front
        c = self.candidates[name]
        dominated_by, unresolved, equivalent, wins = {}, [], [], []
        for other in self.candidates:
            if other == name:
                continue
            if self.beats(name, other):
                _, t = self.acc_test(name, other)
                acc_p = t.p if self.acc_relation(name, other) == 1 else float("nan")
                wins.append(acc_p if not np.isnan(acc_p) else float(special.ndtr(-self.lat_z(name, other))))
            elif self.sig_dominates(other, name):
                _, t = self.acc_test(other, name)
                within = self.acc_relation(other, name) != 1 and t is not None and t.diff < 0
                dominated_by[other] = {"acc_p": None if t is None else (t.p_equiv if within else t.p),
                                       "lat_z": self.lat_z(other, name), "within_margin": within}
            elif self.acc_equivalent(name, other) and self.lat_relation(name, other) == 0:
                equivalent.append(other)
            else:
                unresolved.append(other)
        if dominated_by:
            status = DOMINATED
        elif unresolved:
            status = TIED
        else:
            status = EQUIVALENT if equivalent else CONFIRMED
        note = "" if math.isfinite(c.latency) else "no latency: compared on accuracy only (never by latency)"
        if interval:
            mean, low, high = self._interval(c)
        else:
            mean, low, high = float(np.mean(list(c.accs.values()))) if c.accs else float("nan"), float("nan"), float("nan")
        return Verdict(name, status, mean, low, high, len(c.accs), c.latency, c.latency_se, name in front,
                       dominated_by, unresolved, max(wins) if status == CONFIRMED and wins else float("nan"),
                       equivalent, note)

    def verdicts(self, interval: bool = True) -> dict[str, Verdict]:
        front = self.front_of_means()
        return {n: self.verdict(n, front, interval) for n in self.candidates}

    def confirmed(self) -> list[str]:
        return sorted(n for n, v in self.verdicts(interval=False).items() if v.status == CONFIRMED)

    # ------------------------------------------------------------------------------- proposals
    def _next_look(self, a: str, b: str) -> int | None:
        """Shared replicates the pair needs for its next test; None when it is at the cap already."""
        look, _ = self.acc_test(a, b)
        later = [n for n in self.looks if look is None or n > look]
        return later[0] if later else None

    def _targets(self, verdicts: dict[str, Verdict]) -> dict[str, int]:
        """Replicates each candidate needs so that its unresolved pairs reach their next look."""
        targets: dict[str, int] = {}
        for v in verdicts.values():
            if v.status != TIED:
                continue
            for other in v.unresolved:
                if self.acc_relation(v.name, other) != 0:
                    continue  # accuracy is settled; only latency could decide, and it is measured once
                need = self._next_look(v.name, other)
                if need is None:
                    continue
                for n in (v.name, other):
                    targets[n] = max(targets.get(n, 0), need)
        return targets

    def _affordable(self, k: int) -> int:
        if self.budget_epochs is None:
            return k
        left = self.budget_epochs - self.spent_epochs - len(self.pending) * self.epochs_per_replicate
        return max(0, min(k, int(math.floor(left / self.epochs_per_replicate + 1e-9))))

    def next_batch(self, max_size: int | None = None) -> list[tuple[str, int]]:
        """(candidate, replicate index) pairs to train next; empty when the race is over or waiting.

        Candidates on the front of means come first, then those with fewer replicates, then the more
        accurate. Each is filled up to the next look of its unresolved pairs (lowest missing indices
        first, so candidates share replicates), never beyond ``cap``, and the batch never takes the
        epochs spent plus those in flight past ``budget_epochs``. The pairs are marked pending.
        """
        verdicts = self.verdicts(interval=False)
        targets = self._targets(verdicts)
        order = sorted(targets, key=lambda n: (not verdicts[n].on_front, verdicts[n].n, -verdicts[n].mean, n))
        room = self._affordable(len(self.candidates) * self.cap if max_size is None else max_size)
        batch: list[tuple[str, int]] = []
        for name in order:
            taken = set(self.candidates[name].accs) | {r for c, r in self.pending | self.failed if c == name}
            have = len(self.candidates[name].accs) + sum(1 for c, _ in self.pending if c == name)
            want = min(targets[name], self.cap) - have
            r = 0
            while want > 0 and len(batch) < room:
                if r not in taken:
                    batch.append((name, r))
                    want -= 1
                r += 1
        self.pending.update(batch)
        return batch

    def done(self) -> bool:
        """No run in flight and nothing left to propose (resolved, at the cap, or out of budget)."""
        if self.pending:
            return False
        batch = self.next_batch()
        self.pending.difference_update(batch)
        return not batch

    def rule(self) -> str:
        """The decision rule with its corrections, in words."""
        lat = f"{self.z_lat:.2f} standard errors, alpha/2"
        if self.between_run_cv:
            lat += f"; latencies from different runs add a run-to-run spread of {100 * self.between_run_cv:.1f}% each"
        eq = (f"; equivalent = within +-{self.margin:g} points in accuracy by two one-sided tests at the same level "
              f"and latencies not told apart" if self.margin else "")
        floor = (f", spread floored at {sd_floor(self.resolution):.3g} points (accuracies on a {self.resolution:.3g}-"
                 f"point grid)" if self.resolution else "")
        return (f"confirmed = significantly better than every other candidate in accuracy (one-sided paired t-test "
                f"over shared replicates at looks {self.looks}, each at alpha/2/{len(self.looks)} = "
                f"{self.alpha_acc:.4g}{floor}) or in latency (difference > {lat}); a truly dominated candidate is "
                f"confirmed with probability <= {self.alpha:g}{eq}")

    def summary(self) -> dict:
        """JSON-safe outcome: names by status, epochs spent, and the rule with its corrections."""
        v = self.verdicts()
        return {"confirmed": sorted(n for n, x in v.items() if x.status == CONFIRMED),
                "tied": sorted(n for n, x in v.items() if x.status == TIED),
                "equivalent": sorted(n for n, x in v.items() if x.status == EQUIVALENT),
                "dominated": sorted(n for n, x in v.items() if x.status == DOMINATED),
                "spent_epochs": self.spent_epochs, "budget_epochs": self.budget_epochs, "cap": self.cap,
                "alpha": self.alpha, "looks": self.looks, "margin": self.margin, "rule": self.rule(),
                "verdicts": {n: x.to_dict() for n, x in v.items()}}

    # ----------------------------------------------------------------------------------- state
    def to_dict(self) -> dict:
        return {"version": 2, "alpha": self.alpha, "cap": self.cap, "min_replicates": self.min_replicates,
                "budget_epochs": self.budget_epochs, "epochs_per_replicate": self.epochs_per_replicate,
                "n_val": self.n_val, "scale": self.scale, "margin": self.margin,
                "between_run_cv": self.between_run_cv, "spent_epochs": self.spent_epochs,
                "candidates": [c.to_dict() for c in self.candidates.values()],
                "pending": sorted([list(p) for p in self.pending]), "failed": sorted([list(p) for p in self.failed])}

    @classmethod
    def from_dict(cls, d: dict) -> "Race":
        race = cls([Candidate.from_dict(c) for c in d["candidates"]], d["alpha"], d["cap"], d["min_replicates"],
                   d.get("budget_epochs"), d.get("epochs_per_replicate", 1.0), d.get("n_val"), d.get("scale", 100.0),
                   d.get("margin"), d.get("between_run_cv", 0.0))
        race.spent_epochs = float(d.get("spent_epochs", 0.0))
        race.pending = {(str(n), int(r)) for n, r in d.get("pending", [])}
        race.failed = {(str(n), int(r)) for n, r in d.get("failed", [])}
        return race


__all__ = ["Race", "Candidate", "Verdict", "AccTest", "looks", "paired_acc_test", "CONFIRMED", "TIED",
           "DOMINATED", "EQUIVALENT"]
