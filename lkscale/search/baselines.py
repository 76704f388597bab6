"""A study's baselines inside a search: checked and measured before training, trained after the search.

This module does not import Ray; ``baseline_tuning`` runs the Tune experiment.

- :func:`prepare_baselines` (before Ray starts, with the other checks): each baseline must run on the
  study's images (one clear error naming the model otherwise); its params and multiply-adds are
  counted with lkscale's cost tools and its deploy form's latency measured with the study's own
  protocol, side by side in a quiet slot. After training they are measured again side by side with the
  complete candidates (``summary.update_latencies``).
- ``baseline_tuning.train_baselines`` (after the search and any racing): every (baseline, replicate) not yet complete
  in ``trials.csv`` is trained by the search's own trainable with the study's proxy settings — the same
  replicate seeds, so the same data subset, batch order and initial-weight seed as the candidates
  (common random numbers) — as one more Tune experiment (``tune_baselines*``), never pruned. Their rows
  carry ``role: baseline``; ``rundir.candidates`` and ``rundir.front_of`` leave them out. A resumed
  search trains only the baselines' replicates still missing.
"""
from __future__ import annotations

from typing import Callable

from lkscale.baselines import ROLE, Baseline, BaselineError, check_runs, from_name
from lkscale.config import DataConfig
from lkscale.cost import count_flops, count_params
from lkscale.data import load_splits
from lkscale.reparam import reparameterize
from lkscale.search.objective import Objective
from lkscale.study import Study, StudyError

COST_KEYS = ("params", "deploy_params", "flops", "latency_ms", "latency_low_ms", "latency_high_ms",
             "latency_runtime", "latency_source")


def prepare_baselines(study: Study, objective: Objective, say: Callable[[str], None], quiet: bool = True,
                      latency: bool = True) -> None:
    """Check that every baseline runs on the study's images; cost it; measure its latency side by side."""
    if not study.baselines:
        return
    splits = load_splits(DataConfig(**{**study.data.__dict__, "test_per_class": 0}))
    size = study.data.input_size or splits.input_size
    for i, b in enumerate(study.baselines):
        try:
            check_runs(b, splits.num_classes, splits.in_chans, size, f"baselines[{i}]")
        except BaselineError as e:
            raise StudyError(e.field_path, str(e).split(": ", 1)[1]) from None
        if b.name not in objective.costs:
            model = b.build(num_classes=10, in_chans=3, input_size=size)  # costed as the candidates are
            deployed = reparameterize(model)
            objective.costs[b.name] = {"params": count_params(model), "deploy_params": count_params(deployed),
                                       "flops": count_flops(deployed, study.latency.input_size or size)[0],
                                       "deploy_name": b.name}
    say(f"baselines: {', '.join(b.name for b in study.baselines)} (trained after the search, "
        f"{study.search.replicates} replicate(s) each)")
    if latency:
        objective.measure(list(study.baselines), label="(baselines, before training) ", quiet_slot=quiet)


def baseline_costs(study: Study, latency: bool = True) -> list[dict]:
    """For ``lkscale plan``: each baseline's params, multiply-adds and latency (its deploy form, the study's
    protocol, the baselines side by side), and which budgets it is over. A baseline that cannot run on the
    study's images raises StudyError, as the search would."""
    if not study.baselines:
        return []
    objective = _Costs(study)
    prepare_baselines(study, objective, lambda m: None, quiet=False, latency=latency)
    limits = study.budgets.limits()
    rows = []
    for b in study.baselines:
        c = objective.costs[b.name]
        over = sorted(k for k, lim in limits.items() if c.get(k) is not None and c[k] > lim)
        rows.append({"name": b.name, **{k: c.get(k) for k in COST_KEYS}, "over_budget": over})
    return rows


class _Costs(Objective):
    """An Objective that keeps its costs in memory (the plan writes no run folder)."""

    def __init__(self, study: Study):
        self.study, self.run_dir, self.costs, self.latency, self.say = study, "", {}, {}, None

    def _save(self) -> None:
        return


def baseline_jobs(study: Study, objective: Objective, rows: list) -> list[dict]:
    """Tune configs of every (baseline, replicate) not complete in ``rows``."""
    done = {(t.get("name"), int(t.get("replicate") or 0)) for t in rows
            if t.get("role") == ROLE and t.state == "complete"}
    jobs = []
    for b in study.baselines:
        cost = objective.costs.get(b.name, {})
        spec = b.spec()
        for r in range(study.search.replicates):
            if (b.name, r) in done:
                continue
            jobs.append({"number": None, "name": b.name, "role": ROLE, "spec": spec.to_json() if spec else "",
                         "notes": [], "infeasible": "", "replicate": r, "phase": "baseline",
                         **{k: cost.get(k) for k in COST_KEYS}})
    return jobs


def baseline_refs(rows: list) -> list[Baseline]:
    """The baselines with a complete replicate in ``rows`` (what the final latency measurement includes)."""
    names = sorted({t.get("name") for t in rows if t.get("role") == ROLE and t.state == "complete"})
    return [from_name(n) for n in names]


__all__ = ["prepare_baselines", "baseline_costs", "baseline_jobs", "baseline_refs", "COST_KEYS"]
