"""Adaptive replicates for a scaling study: more replicates only where a comparison is still undecided.

After the first ``search.replicates`` of every grid point (the search phase), each *look* decides the
study's comparisons — every neighbouring kernel step of a family and every setting against the family's
best (by mean) — as better / worse / equivalent within ``analysis.margin`` / undecided
(``lkscale.comparisons``: paired over the common-random-number replicates, the sd floored at the
accuracy grid ``100 / val_n``; Holm over the comparisons still open, per kind of claim, as
``decide_family`` does). A decided comparison keeps its verdict; every setting in a still-undecided
comparison is filled up to the next planned replicate count (the same replicate indices for all, so the
pairs stay paired), and the next look comes when they are in. It ends when every comparison is decided,
after the last planned look (at ``search.adaptive.max_replicates``), or when the next round does not fit
``search.adaptive.budget_epochs`` (extra trial-epochs; 0: no cap) — then the comparisons likeliest to
decide go first.

Error spending over the looks (Bonferroni): ``search.adaptive.looks`` looks are planned, at replicate
counts evenly spaced from ``search.replicates`` to ``max_replicates`` (3, 6, 10 by default for 3
replicates), and each look tests at ``alpha / looks``. By the union bound the chance of a wrong decided
claim (of each kind, over the family) stays <= ``alpha`` over the whole procedure, whatever the looks
find; looking at the nominal ``alpha`` each time does not (simulated in ``tests/test_adaptive.py``).
Few looks, each adding several replicates, keep that price low (alpha / 3 rather than alpha / 8 for
one replicate per look); Bonferroni ignores the correlation between looks, so it is conservative (a
Pocock or O'Brien-Fleming boundary from the joint distribution would spend less), never invalid.

The hook rides the searcher's idle hook (``StudySearch(on_idle=...)``), as racing does
(``lkscale.search.confirm``): the ledger trains what it asks, one record row per replicate.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from scipy import special

from lkscale.comparisons import VERDICTS, decision_replicates, holm, sd_floor
from lkscale.rundir import read_summary, read_trials, update_summary
from lkscale.search.ledger import Ledger
from lkscale.study import Study

CLAIMS = ("p_better", "p_worse", "p_equivalent")


# ------------------------------------------------------------------------------------------ comparisons
def families(specs: dict[str, dict]) -> dict[str, list[str]]:
    """Settings grouped by everything but their kernels (a scaling line), each ordered by kernel size.
    ``specs``: name -> ArchSpec as a dict (``stages``: block, depth, width, kernel, ...; ``stem``)."""
    fam: dict[str, list[tuple]] = {}
    for name, s in specs.items():
        stages = s.get("stages") or []
        key = json.dumps([s.get("stem"), [{k: v for k, v in st.items() if k not in ("kernel", "reparam")}
                                          for st in stages]], sort_keys=True, default=str)
        fam.setdefault(key, []).append((tuple(int(st.get("kernel") or 0) for st in stages), name))
    return {k: [n for _, n in sorted(v)] for k, v in fam.items() if len(v) > 1}


def comparisons(fams: dict[str, list[str]], means: dict[str, float]) -> list[tuple[str, str, str]]:
    """(a, b, kind) with a the larger kernel of a step (``step``) or the family's best (``vs_best``)."""
    out, seen = [], set()
    for names in fams.values():
        for x, y in zip(names, names[1:]):
            out.append((y, x, "step"))
            seen.add(frozenset((x, y)))
        have = [n for n in names if n in means]
        if not have:
            continue
        best = max(have, key=lambda n: means[n])
        for n in names:
            if n != best and frozenset((best, n)) not in seen:
                out.append((best, n, "vs_best"))
                seen.add(frozenset((best, n)))
    return out


def decide_open(results: dict[str, dict[int, float]], pairs: list[tuple[str, str]], margin: float, alpha: float,
                resolution: float | None) -> list[dict]:
    """Verdicts of ``pairs`` (a - b, points, paired by replicate), Holm-adjusted over them per claim at
    ``alpha`` — :func:`lkscale.comparisons.decide_family`'s verdicts, without its replicates-needed
    search (a look runs thousands of times in the tests); t tails by ``scipy.special.stdtr``. Fewer than
    2 shared replicates: undecided."""
    raw = []
    floor = sd_floor(resolution)
    for a, b in pairs:
        ra, rb = results.get(a, {}), results.get(b, {})
        reps = sorted(set(ra) & set(rb))
        if len(reps) < 2:
            raw.append({"diff": float("nan"), "sd": float("nan"), "n": len(reps), **{k: 1.0 for k in CLAIMS}})
            continue
        d = np.array([ra[r] - rb[r] for r in reps], float)
        n, mean = len(d), float(d.mean())
        sd = max(float(d.std(ddof=1)), floor)
        se = sd / math.sqrt(n)
        if se > 0:
            cdf = special.stdtr(n - 1, np.array([mean / se, (mean + margin) / se, (mean - margin) / se]))
            pb, pw, pe = 1 - cdf[0], cdf[0], max(1 - cdf[1], cdf[2])
        else:  # no floor and no spread: the sign decides (the limit of t)
            pb, pw, pe = float(mean <= 0), float(mean >= 0), float(abs(mean) >= margin)
        half = float(special.stdtrit(n - 1, 1 - alpha)) * se
        raw.append({"diff": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": n,
                    "p_better": float(pb), "p_worse": float(pw), "p_equivalent": float(pe)})
    adj = {k: holm([x[k] for x in raw]) if raw else [] for k in CLAIMS}
    for i, x in enumerate(raw):
        pb, pw, pe = (float(adj[k][i]) for k in CLAIMS)
        x["verdict"] = ("equivalent" if pe <= alpha else "better" if pb <= alpha else "worse" if pw <= alpha
                        else "undecided")
    return raw


# ------------------------------------------------------------------------------------------ the rule
@dataclass
class AdaptiveRule:
    """The looks of one scaling study (pure: the hook feeds it the ledger's results; tests feed it a
    simulation). ``results``: name -> {replicate: accuracy in points}."""
    fams: dict[str, list[str]]
    replicates: int
    max_replicates: int
    margin: float = 1.0
    alpha: float = 0.05
    resolution: float | None = None
    budget_epochs: float = 0.0          # extra trial-epochs (0: no cap)
    epochs_per_replicate: float = 1.0
    planned: int = 3                    # looks, the first at ``replicates``, the last at ``max_replicates``
    spend: bool = True                  # False: every look at the nominal alpha (wrong; tests show why)
    power: float = 0.8
    needs: bool = True                  # say what would decide the comparisons left open (costs root finding)
    decided: dict = field(default_factory=dict)   # "a|b" -> verdict record (frozen)
    open: list = field(default_factory=list)      # the last look's undecided comparisons
    looks: int = 0
    spent_epochs: float = 0.0
    stopped: str = ""

    @property
    def schedule(self) -> list[int]:
        """Replicate counts at the looks: evenly spaced from ``replicates`` to ``max_replicates``."""
        lo, hi = self.replicates, max(self.replicates, self.max_replicates)
        k = max(1, min(self.planned, hi - lo + 1))
        if k == 1:
            return [lo]
        return sorted({int(round(lo + i * (hi - lo) / (k - 1))) for i in range(k)})

    @property
    def planned_looks(self) -> int:
        return len(self.schedule)

    @property
    def alpha_look(self) -> float:
        return self.alpha / self.planned_looks if self.spend else self.alpha

    def look(self, results: dict[str, dict[int, float]]) -> list[tuple[str, int]]:
        """Decide what can be decided; return the next round's (name, replicate) jobs ([] when done)."""
        means = {n: float(np.mean(list(r.values()))) for n, r in results.items() if r}
        todo = [(a, b, kind) for a, b, kind in comparisons(self.fams, means)
                if _key(a, b) not in self.decided and a in results and b in results]
        self.looks += 1
        verdicts = decide_open(results, [(a, b) for a, b, _ in todo], self.margin, self.alpha_look, self.resolution)
        self.open = []
        for (a, b, kind), v in zip(todo, verdicts):
            rec = {"a": a, "b": b, "kind": kind, "look": self.looks, **v}
            if v["verdict"] != "undecided":
                self.decided[_key(a, b)] = rec
            else:
                self.open.append(rec)
        if not self.open:
            self.stopped = "every comparison decided"
            return []
        last = self.looks >= self.planned_looks
        jobs = [] if last else self._round(results, self.schedule[self.looks])
        if last:
            self.stopped = f"the {self.planned_looks} planned looks are done (max_replicates {self.max_replicates})"
        if not jobs and self.needs:
            self._needs()
        self.spent_epochs += len(jobs) * self.epochs_per_replicate
        return jobs

    def _needs(self) -> None:
        """Replicates per setting that would decide each open comparison (at its measured sd and difference)."""
        for rec in self.open:
            sd = rec.get("sd")
            rec["replicates_needed"] = (decision_replicates(sd, self.margin, rec["diff"], self.alpha_look, self.power)
                                        if sd and sd == sd else None)

    def _round(self, results: dict[str, dict[int, float]], target: int) -> list[tuple[str, int]]:
        """Fill every setting of an open comparison up to ``target`` replicates (indices 0..target-1 it
        lacks: the same indices for all); when the budget does not cover them all, the comparisons
        likeliest to decide first."""
        left = math.inf if not self.budget_epochs else self.budget_epochs - self.spent_epochs
        lack = lambda n: [r for r in range(target) if r not in results.get(n, {})]  # noqa: E731
        order = self.open
        every = {n for r in self.open for n in (r["a"], r["b"])}
        if sum(len(lack(n)) for n in every) * self.epochs_per_replicate > left + 1e-9:
            self._needs()
            order = sorted(self.open, key=lambda r: r.get("replicates_needed") or 10 ** 9)
        chosen: list[str] = []
        for rec in order:
            new = [n for n in (rec["a"], rec["b"]) if n not in chosen]
            if (sum(len(lack(n)) for n in chosen + new)) * self.epochs_per_replicate > left + 1e-9:
                continue
            chosen.extend(new)
        jobs = [(n, r) for n in chosen for r in lack(n)]
        if not jobs:
            self.stopped = "budget spent" if left < math.inf else "nothing left to add"
        return jobs

    def restore(self, state: dict) -> None:
        """Continue a resumed run's looks: its decided comparisons, looks and spent budget count."""
        if not state:
            return
        self.looks = int(state.get("looks") or 0)
        self.spent_epochs = float(state.get("spent_epochs") or 0.0)
        self.decided = {_key(r["a"], r["b"]): r for r in state.get("decided") or []}

    def to_dict(self) -> dict:
        return {"looks": self.looks, "planned_looks": self.planned_looks, "schedule": self.schedule, "alpha": self.alpha,
                "alpha_per_look": self.alpha_look, "margin": self.margin, "spent_epochs": self.spent_epochs,
                "budget_epochs": self.budget_epochs, "max_replicates": self.max_replicates,
                "decided": list(self.decided.values()), "open": self.open, "stopped": self.stopped}


def _key(a: str, b: str) -> str:
    return "|".join(sorted((a, b)))


# ------------------------------------------------------------------------------------------ the hook
def _analysis(study: Study) -> tuple[float, float, float]:
    an = getattr(study, "analysis", None)
    return (float(getattr(an, "margin", 1.0)), float(getattr(an, "alpha", 0.05)), float(getattr(an, "power", 0.8)))


def _val_n(run_dir: str) -> int | None:
    for t in read_trials(run_dir):
        try:
            v = int(float(t.get("val_n") or 0))
        except (TypeError, ValueError):
            continue
        if v > 0:
            return v
    return None


def adaptive_hook(study: Study, run_dir: str) -> Callable[[Ledger], bool] | None:
    """The searcher's idle hook for adaptive replicates (None unless a scaling study asks for them)."""
    cfg = getattr(study.search, "adaptive", None)
    if cfg is None or not cfg.enabled or study.search.mode != "scaling":
        return None
    margin, alpha, power = _analysis(study)
    state: dict = {"rule": None}

    def hook(ledger: Ledger) -> bool:
        done = {n: c for n, c in ledger.candidates.items() if c.state == "complete" and c.results}
        if len(done) < 2:
            return False
        rule = state["rule"]
        if rule is None:
            specs = {n: json.loads(c.config["spec"]) if isinstance(c.config.get("spec"), str) else c.config.get("spec")
                     for n, c in done.items()}
            n_val = _val_n(run_dir)
            rule = state["rule"] = AdaptiveRule(
                families({n: s for n, s in specs.items() if isinstance(s, dict)}), study.search.replicates,
                max(study.search.replicates, cfg.max_replicates), margin, alpha,
                100.0 / n_val if n_val else None, float(cfg.budget_epochs), float(study.proxy.epochs),
                planned=cfg.looks, power=power)
            rule.restore(read_summary(run_dir, strict=False).get("adaptive_state") or {})
        results = {n: {int(r): 100.0 * float(a) for r, a in c.results.items()} for n, c in done.items()}
        jobs = rule.look(results)
        ledger.add_confirm_jobs(jobs)
        update_summary(run_dir, {"adaptive_state": rule.to_dict()})
        return bool(ledger.jobs)

    return hook


__all__ = ["AdaptiveRule", "adaptive_hook", "families", "comparisons", "decide_open", "VERDICTS"]
