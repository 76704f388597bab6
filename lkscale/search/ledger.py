"""What the search has asked, trained and still owes: candidates, their replicates, and extra jobs.

One ``Ledger`` lives in the searcher (driver side). It decides, per Tune trial slot, what to run next:
1. a replicate a candidate still needs (its replicate 0 completed; ``search.replicates`` wanted),
2. a confirmation job (racing, after the search budget),
3. otherwise a new architecture from Optuna — unless the budget of distinct architectures is spent.
An architecture already asked (in flight, finished, pruned, over budget or failed) is never trained
again as a new candidate: Optuna's draw is recorded as a duplicate (FAIL, ``duplicate_of``) and another
is drawn. A resumed search rebuilds its ledger from ``trials.csv`` (:meth:`Ledger.from_trials`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

FINISHED_STATES = ("complete", "pruned", "infeasible", "failed")


@dataclass
class Candidate:
    name: str
    number: int                     # the Optuna trial number that drew it
    config: dict                    # the Tune config of its replicate 0 (spec, costs, notes)
    results: dict = field(default_factory=dict)  # replicate -> val_acc (complete replicates only)
    state: str = "running"          # state of replicate 0: running | complete | pruned | infeasible | failed
    told: bool = False              # Optuna has its final values
    queued: set = field(default_factory=set)     # replicates queued or in flight


@dataclass
class Job:
    name: str
    replicate: int
    phase: str                      # search | confirm


class Ledger:
    def __init__(self, trials: int, replicates: int = 1):
        self.budget = trials        # distinct architectures to train in this run
        self.replicates = replicates
        self.asked = 0              # distinct architectures asked in this run
        self.candidates: dict[str, Candidate] = {}
        self.by_number: dict[int, str] = {}
        self.jobs: list[Job] = []   # waiting to be handed to Tune
        self.running: dict[str, Job | None] = {}  # Tune trial id -> its job (None: a primary draw)
        self.duplicates = 0
        self.exhausted = False      # the sampler keeps drawing architectures already tried

    # ------------------------------------------------------------------------------- building
    @classmethod
    def from_trials(cls, rows: list, trials: int, replicates: int) -> "Ledger":
        """The ledger of a resumed run: every recorded architecture, its replicates, what it still needs."""
        led = cls(trials, replicates)
        for t in sorted(rows, key=lambda t: (t.get("replicate") or 0)):
            name, rep = t.get("name"), int(t.get("replicate") or 0)
            if not name or t.state not in FINISHED_STATES or t.get("role") == "baseline":
                continue  # a study's baselines are trained after the search, not by the ledger
            c = led.candidates.get(name)
            if c is None:
                c = led.candidates[name] = Candidate(name, int(t.get("number") or 0), _config_of(t.row))
                led.by_number[c.number] = name
            if rep == 0:
                c.state = t.state
            if t.state == "complete":
                c.results[rep] = float(t.val_acc)
        for c in led.candidates.values():
            if c.state == "complete":
                led._queue_replicates(c)
        return led

    def distinct_finished(self) -> int:
        return sum(1 for c in self.candidates.values() if c.state != "running")

    # ------------------------------------------------------------------------------- asking
    def seen(self, name: str) -> Candidate | None:
        return self.candidates.get(name)

    def register(self, name: str, number: int, config: dict, trial_id: str) -> None:
        self.candidates[name] = Candidate(name, number, dict(config))
        self.by_number[number] = name
        self.running[trial_id] = None
        self.asked += 1

    def next_job(self, trial_id: str) -> Job | None:
        if not self.jobs:
            return None
        job = self.jobs.pop(0)
        self.running[trial_id] = job
        return job

    def budget_spent(self) -> bool:
        return self.asked >= self.budget or self.exhausted

    def idle(self) -> bool:
        """Nothing in flight and nothing queued: the search phase (and any racing) can end."""
        return not self.running and not self.jobs

    def add_confirm_jobs(self, pairs: list[tuple[str, int]]) -> None:
        for name, rep in pairs:
            c = self.candidates[name]
            if rep not in c.results and rep not in c.queued:
                c.queued.add(rep)
                self.jobs.append(Job(name, rep, "confirm"))

    # ------------------------------------------------------------------------------- results
    def finish(self, trial_id: str, name: str | None, state: str, val_acc: float | None) -> Candidate | None:
        """Record a finished Tune trial; returns its candidate (None for a draw that never built)."""
        job = self.running.pop(trial_id, None)
        name = job.name if job else name
        c = self.candidates.get(name) if name else None
        if c is None:
            return None
        rep = job.replicate if job else 0
        c.queued.discard(rep)
        if state == "complete" and val_acc is not None:
            c.results[rep] = float(val_acc)
        if job is None:
            c.state = state
            if state == "complete":
                self._queue_replicates(c)
        return c

    def ready_to_tell(self, c: Candidate) -> bool:
        """Optuna hears a complete candidate once its search-phase replicates are in (or can never be)."""
        if c.told:
            return False
        if c.state != "complete":
            return True
        return len(c.results) >= self.replicates or not any(j.name == c.name for j in self.jobs) and not c.queued

    def _queue_replicates(self, c: Candidate) -> None:
        for rep in range(1, self.replicates):
            if rep not in c.results and rep not in c.queued:
                c.queued.add(rep)
                self.jobs.append(Job(c.name, rep, "search"))


def _config_of(row: dict) -> dict:
    """The Tune config of a recorded candidate (enough to train another replicate of it)."""
    keys = ("number", "name", "spec", "params", "deploy_params", "flops", "latency_ms", "latency_low_ms",
            "latency_high_ms", "latency_runtime", "latency_source")
    cfg = {k: row.get(k) for k in keys}
    cfg["notes"] = [n for n in (row.get("notes") or "").split("; ") if n]
    cfg["infeasible"] = ""
    return cfg
