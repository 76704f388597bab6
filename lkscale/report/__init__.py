"""The report of a search run: Pareto fronts, hypervolume, kernel-size scaling, tables and figures.

``make_report(run_dir)`` reads a run folder written by ``lkscale.search`` (``study.yaml``, ``trials.csv``,
``summary.json``; see ``lkscale.rundir``) and writes into it:

- ``report.md``: study settings, trial counts by state, trial-epochs saved by pruning, the Pareto
  fronts of validation accuracy against deploy latency and against FLOPs (complete trials only) with
  their hypervolumes and reference points, and, for studies that vary kernel size, a scaling table set
  beside RepLKNet's Table 5 trend;
- ``pareto_latency.png``, ``pareto_flops.png``, ``kernel_scaling.png`` (matplotlib, no display needed);
- ``report.html``: one self-contained page: the same tables (all trials too, filterable) and the
  figures, interactive (plotly, its JavaScript embedded once so the file works offline);
- a ``"report"`` entry in ``summary.json`` (fronts, hypervolumes, reference points, files): the only
  key the report writes there.

Reference points. Hypervolumes are only comparable when they share a reference point, so it never
comes from the run's data alone: accuracy 0 and the study's budget (``budgets.max_latency_ms``,
``budgets.max_flops``). A study without that budget gets a reference fixed on the first report of the
run (the next 1-2-5 step above 1.5x the largest value measured) and stored in ``summary.json``
(``report.reference_point``); every later report of the run, resumed searches included, re-uses it.

Modules: ``labels`` (text), ``numbers`` (reference points, fronts), ``scaling`` (kernel-size scaling),
``figures`` (matplotlib), ``interactive`` (plotly), ``markdown``, ``html``, ``make`` (the entry point).
"""
from __future__ import annotations

from lkscale.report.labels import (OBJECTIVES, REPLKNET_TABLE5, _dot, _pct, blocks_label, dcn_label, dot, fmt_count,
                                   pct, reparam_label)
from lkscale.report.make import make_report
from lkscale.report.numbers import reference_point
from lkscale.report.scaling import kernel_scaling, kernel_scalings
from lkscale.rundir import (STATES, Run, RunDirError, Trial, atomic_write, epochs_saved, front_of, load_run,
                            read_trials_csv)

__all__ = ["make_report", "load_run", "Run", "Trial", "RunDirError", "reference_point", "front_of", "epochs_saved",
           "kernel_scaling", "kernel_scalings", "REPLKNET_TABLE5", "OBJECTIVES", "STATES", "read_trials_csv",
           "fmt_count", "blocks_label", "reparam_label", "dcn_label", "dot", "pct", "atomic_write", "_dot", "_pct"]
