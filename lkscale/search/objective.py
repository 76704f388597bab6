"""The define-by-run function Optuna samples with, and the costs it checks before anything trains.

``Objective(trial)`` samples a candidate (``lkscale.space.suggest``), costs it (params and FLOPs by
fvcore; latency of the deploy form as the study's ``budgets.latency`` says: measured with the
interleaved protocol of ``lkscale.cost.latency``, or predicted from a calibration table) and tells
Optuna the budget constraints. Over budget: the Tune trial reports once and never trains.

Latency is measured in quiet slots only: a grid is measured all together before training starts
(:meth:`Objective.measure`); a sampled candidate is measured when it is drawn and flagged
``provisional`` — the front is measured again side by side after training (``driver``). With
``budgets.latency.resources`` the measurements run on the node that declares it (``latency_runner``,
``lkscale.search.remote_latency``), which then records itself as ``latency_node``.
"""
from __future__ import annotations

from typing import Any, Callable

from lkscale.config import COST_CLASSES
from lkscale.cost import estimate
from lkscale.cost.measure import latency_of
from lkscale.cost.quiet import quiet_check, wait_for_quiet
from lkscale.rundir import read_costs, write_costs
from lkscale.space import suggest
from lkscale.spec import ArchSpec
from lkscale.study import Study

QUIET_WAIT_S = 15.0    # how long to wait for a quiet slot before measuring anyway
BUDGET_KEY = {"params": "max_params", "flops": "max_flops", "latency_ms": "max_latency_ms"}


def budget_violations(cost: dict, limits: dict[str, float]) -> dict[str, float]:
    """Constraint values (> 0 means over budget, relative to the budget) for each set budget."""
    return {k: (cost[k] - lim) / lim for k, lim in limits.items()}


def latency_fields(res: Any) -> dict:
    """The trials.csv/costs.json fields of a LatencyResult."""
    return {"latency_ms": res.median_ms, "latency_low_ms": res.ci_low_ms, "latency_high_ms": res.ci_high_ms,
            "latency_runtime": res.runtime, "latency_source": res.source, "latency_noisy": bool(res.noisy),
            "latency_cv": res.cv, "throughput_ips": res.throughput_ips}


class Objective:
    """Optuna define-by-run function: sample, build, cost. Picklable (Tune checkpoints the searcher)."""

    def __init__(self, study: Study, run_dir: str, say: Callable[[str], None] | None = None,
                 latency_runner: Callable | None = None):
        self.study = study
        self.runner = latency_runner  # (specs, cfg) -> ({name: LatencyResult}, node); None: measured here
        self.run_dir = run_dir
        saved = read_costs(run_dir)
        self.costs: dict[str, dict] = saved.get("costs", {})      # spec name -> costs
        self.latency: dict[str, dict] = saved.get("latency", {})  # deploy-form name -> latency fields
        self.say = say

    def __getstate__(self):
        d = dict(self.__dict__)
        d["say"] = None
        return d

    # ------------------------------------------------------------------------------- latency
    def _save(self) -> None:
        write_costs(self.run_dir, {"costs": self.costs, "latency": self.latency})

    def measure(self, specs: list[ArchSpec], force: bool = False, label: str = "(provisional; measured again after "
                                                                               "training) ",
                quiet_slot: bool = False) -> dict[str, dict]:
        """Latency of the deploy forms of ``specs`` measured side by side (interleaved rounds); cached by
        deploy form unless ``force`` (the final re-measurement of a front). ``quiet_slot``: nothing of ours
        trains now (before or after training): wait a little for the machine to be quiet, and record whether it was."""
        lat_cfg = self.study.latency
        forms = {s.without_reparam().name: s for s in specs}
        todo = [s for n, s in forms.items() if force or n not in self.latency]
        if todo:
            if self.say and lat_cfg.source == "measured":
                self.say(f"measuring latency of {len(todo)} deploy form(s) side by side {label}({lat_cfg.runtime}, "
                         f"batch {lat_cfg.batch_size}, {lat_cfg.threads} thread(s), {lat_cfg.rounds} rounds)")
            # a remote node is reserved for measuring: this machine's load says nothing about it
            quiet = self._quiet_slot() if quiet_slot and lat_cfg.source == "measured" and not self.runner else None
            res, node = self.runner(todo, lat_cfg) if self.runner else (latency_of(todo, lat_cfg), "")
            for s in todo:
                self.latency[s.without_reparam().name] = {**latency_fields(res[s.name]), "quiet": quiet,
                                                          "latency_node": node}
        for s in specs:
            if s.name in self.costs:
                self.costs[s.name].update(self.latency[s.without_reparam().name])
        self._save()
        return {n: self.latency[n] for n in forms}

    def _quiet_slot(self) -> bool:
        """Wait (up to QUIET_WAIT_S) for the machine to be quiet before timing; say so when it is not."""
        # the reference workload against its best in this process (the load average lags by a minute)
        status = wait_for_quiet(QUIET_WAIT_S, 3.0, check=quiet_check, progress=self.say)
        if not status.quiet and self.say:
            self.say(f"note: the machine is busy ({status.reason}); latency measured anyway, side by side, with "
                     f"its interval")
        return status.quiet

    # ------------------------------------------------------------------------------- costs
    def cost(self, spec: ArchSpec) -> dict:
        if spec.name in self.costs:
            return self.costs[spec.name]
        lat_cfg = self.study.latency
        rep = estimate(spec, input_size=lat_cfg.input_size, num_classes=COST_CLASSES, latency=False)
        dname = spec.without_reparam().name
        c = {"params": rep.params, "deploy_params": rep.deploy_params, "flops": rep.flops, "deploy_name": dname,
             "effective_kernels": [list(s.effective_kernel) for s in rep.stages], "dead_params": rep.dead_params}
        self.costs[spec.name] = c
        if dname not in self.latency:
            self.measure([spec])
        c.update(self.latency[dname])
        self._save()
        return c

    def __call__(self, trial) -> dict:
        study = self.study
        cand = suggest(trial, study.space, study.data.input_size)
        out: dict[str, Any] = {"number": trial.number, "notes": cand.notes, "infeasible": "", "spec": "", "name": ""}
        if cand.spec is None:
            trial.set_constraint("valid", 1.0)
            out["infeasible"] = cand.error
            out.update(params=0, deploy_params=0, flops=0, latency_ms=0.0)
            return out
        spec = cand.spec
        cost = self.cost(spec)
        limits = study.budgets.limits()
        over = budget_violations(cost, limits)
        for key, v in over.items():
            trial.set_constraint(key, v)
        trial.set_user_attr("name", spec.name)
        trial.set_user_attr("spec", spec.to_json())
        for k in ("params", "flops", "latency_ms"):
            trial.set_user_attr(k, cost[k])
        bad = [k for k, v in over.items() if v > 0]
        if bad:
            out["infeasible"] = "over budget: " + ", ".join(f"{k} {cost[k]:.4g} > {limits[k]:.4g}" for k in bad)
        out.update(spec=spec.to_json(), name=spec.name,
                   **{k: cost.get(k) for k in ("params", "deploy_params", "flops", "latency_ms", "latency_low_ms",
                                               "latency_high_ms", "latency_runtime", "latency_source",
                                               "latency_node")})
        return out
