"""The report of a search run: Pareto fronts, hypervolume, kernel-size scaling, figures.

``make_report(run_dir)`` reads a run folder written by ``lkscale.search.run_study`` (``study.yaml``,
``trials.csv``, ``summary.json``) and writes into it:

- ``report.md``: study settings, trial counts by state, trial-epochs saved by pruning, the Pareto
  fronts of validation accuracy against deploy latency and against FLOPs (complete trials only) with
  their hypervolumes and reference points, and, for studies that vary kernel size, a scaling table set
  beside RepLKNet's Table 5 trend;
- ``pareto_latency.png``, ``pareto_flops.png``, ``kernel_scaling.png`` (matplotlib, no display needed);
- ``report.html``: the same figures, interactive (plotly, its JavaScript embedded once so the file
  works offline);
- a ``report`` entry in ``summary.json`` (fronts, hypervolumes, reference points).

Reference points. Hypervolumes are only comparable when they share a reference point, so it never
comes from the run's data alone: accuracy 0 and the study's budget (``budgets.max_latency_ms``,
``budgets.max_flops``). A study without that budget gets a reference fixed on the first report of the
run (the next 1-2-5 step above 1.5x the largest value measured) and stored in ``summary.json``
(``reference_point``); every later report of the run, resumed searches included, re-uses it.
Set the budget in the study file to compare hypervolumes across runs.

Only complete trials (trained for the full proxy budget) can be on a front: pruned trials have a
partial accuracy, infeasible ones were never trained, failed ones have none.
"""
from __future__ import annotations

import csv
import html
import json
import logging
import math
import os
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from lkscale.pareto import hypervolume_2d, pareto_front

log = logging.getLogger(__name__)

STATES = ("complete", "pruned", "infeasible", "failed", "running")
OBJECTIVES = {  # key -> (column, axis label, unit label, budget key)
    "latency": ("latency_ms", "deploy latency (ms)", "ms", "max_latency_ms"),
    "flops": ("flops", "FLOPs (multiply-adds, deploy form)", "MACs", "max_flops"),
}
# RepLKNet (Ding et al., CVPR 2022), Table 5: RepLKNet-31B-style base on ImageNet at 224 px, kernel sizes
# [3,3,3,3] -> [31,29,27,13]: params 71.8M -> 79.3M (+10.4%), FLOPs 12.9G -> 15.3G (+18.6%).
REPLKNET_TABLE5 = {"from": [3, 3, 3, 3], "to": [31, 29, 27, 13], "params": (71.8e6, 79.3e6), "flops": (12.9e9, 15.3e9),
                   "params_change": 0.104, "flops_change": 0.186}
_JSON_COLS = ("blocks", "kernels", "depths", "widths", "dcn_groups", "reparam", "val_acc_epochs")
_FLOAT_COLS = ("params", "deploy_params", "flops", "latency_ms", "val_acc", "seconds")
_INT_COLS = ("number", "epochs_done", "epochs_budget", "stem_stride", "seed")


class RunDirError(ValueError):
    """The folder given is missing or is not a search run folder."""


@dataclass
class Trial:
    row: dict

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["row"][key]
        except KeyError:
            raise AttributeError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        v = self.row.get(key)
        return default if v is None else v


@dataclass
class Run:
    path: str
    study: dict
    summary: dict
    trials: list[Trial] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.study.get("name") or self.summary.get("study") or os.path.basename(self.path))

    @property
    def budgets(self) -> dict:
        return dict(self.study.get("budgets") or {})

    def by_state(self, *states: str) -> list[Trial]:
        return [t for t in self.trials if t.state in states]


# ----------------------------------------------------------------------------------------- loading
def _parse_value(col: str, raw: str | None) -> Any:
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "" or raw.lower() in ("nan", "none", "null"):
        return [] if col == "val_acc_epochs" else None
    if col in _JSON_COLS:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return None
    if col in _FLOAT_COLS:
        try:
            v = float(raw)
        except ValueError:
            return None
        return None if math.isnan(v) else v
    if col in _INT_COLS:
        try:
            return int(float(raw))
        except ValueError:
            return None
    return raw


def read_trials_csv(path: str) -> list[Trial]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"name", "state"} - set(reader.fieldnames or [])
        if missing:
            raise RunDirError(f"{path}: not a trials table (missing column {sorted(missing)[0]!r})")
        return [Trial({k: _parse_value(k, v) for k, v in row.items() if k is not None}) for row in reader]


def load_run(run_dir: str) -> Run:
    """Read a run folder; RunDirError (one line) if it is missing or not a run folder."""
    if not run_dir or not os.path.exists(run_dir):
        raise RunDirError(f"{run_dir}: no such folder")
    if not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir}: not a folder (give the run folder written by `lkscale search`)")
    trials_path = os.path.join(run_dir, "trials.csv")
    study_path = os.path.join(run_dir, "study.yaml")
    if not os.path.isfile(trials_path) and not os.path.isfile(study_path):
        raise RunDirError(f"{run_dir}: not a search run folder (no trials.csv or study.yaml; "
                          f"give the folder written by `lkscale search`)")
    study: dict = {}
    if os.path.isfile(study_path):
        try:
            with open(study_path, encoding="utf-8") as f:
                study = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise RunDirError(f"{study_path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(study, dict):
            raise RunDirError(f"{study_path}: expected a mapping")
    summary: dict = {}
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.isfile(summary_path):
        try:
            with open(summary_path, encoding="utf-8") as f:
                summary = json.load(f)
        except json.JSONDecodeError as e:
            raise RunDirError(f"{summary_path}: not valid JSON ({e})") from None
    trials = read_trials_csv(trials_path) if os.path.isfile(trials_path) else []
    return Run(path=os.path.abspath(run_dir), study=study, summary=summary, trials=trials)


# ---------------------------------------------------------------------------------------- numbers
def _nice_ceil(x: float) -> float:
    """Smallest value of the 1-2-5 series >= x."""
    if x <= 0:
        return 1.0
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        v = m * 10 ** e
        if v >= x * (1 - 1e-12):
            return float(v)
    return float(10 ** (e + 1))


def reference_point(run: Run, objective: str, override: dict | None = None) -> dict:
    """Reference point of the accuracy/``objective`` hypervolume: ``{"val_acc": 0, col: value, "source": ...}``."""
    col, _, _, budget_key = OBJECTIVES[objective]
    if override and override.get(col) is not None:
        return {"val_acc": 0.0, col: float(override[col]), "source": "given explicitly"}
    budget = run.budgets.get(budget_key)
    if budget:
        return {"val_acc": 0.0, col: float(budget), "source": f"budgets.{budget_key}"}
    stored = (run.summary.get("reference_point") or {}).get(objective)
    if stored and stored.get(col) is not None:
        return {"val_acc": 0.0, col: float(stored[col]), "source": stored.get("source", "summary.json")}
    measured = [t.get(col) for t in run.trials if t.get(col) is not None]
    if not measured:
        return {"val_acc": 0.0, col: 1.0, "source": "placeholder: nothing measured yet (not stored)"}
    value = _nice_ceil(1.5 * max(measured))
    return {"val_acc": 0.0, col: value,
            "source": f"fixed at the first report of this run (no budgets.{budget_key}): 1.5x the largest "
                      f"measured value, rounded up; stored in summary.json"}


def epochs_saved(run: Run) -> int:
    """Trial-epochs saved by pruning: sum over pruned trials of (epoch budget - epochs trained)."""
    total = 0
    for t in run.by_state("pruned"):
        budget = t.get("epochs_budget")
        if budget is None:
            budget = (run.study.get("proxy") or {}).get("epochs", 0)
        total += max(0, int(budget) - int(t.get("epochs_done", 0)))
    return total


def front_of(trials: list[Trial], col: str) -> list[Trial]:
    """Complete trials on the (val_acc max, ``col`` min) front, sorted by ``col``; never other states."""
    pool = [t for t in trials if t.state == "complete" and t.get("val_acc") is not None and t.get(col) is not None]
    idx = pareto_front([(t.val_acc, t.row[col]) for t in pool], ("max", "min"))
    front, seen = [], set()
    for t in sorted((pool[i] for i in idx), key=lambda t: (t.row[col], -t.val_acc, t.get("number", 0))):
        if t.name not in seen:  # the same architecture sampled twice is listed once
            seen.add(t.name)
            front.append(t)
    return front


def _trial_record(t: Trial) -> dict:
    keys = ("name", "trial_id", "number", "state", "blocks", "kernels", "depths", "widths", "dcn_groups", "reparam",
            "stem_stride", "params", "deploy_params", "flops", "latency_ms", "val_acc", "epochs_done", "seed")
    return {k: t.row.get(k) for k in keys}


# ---------------------------------------------------------------------------------------- formatting
def fmt_count(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.4g}{suf}{unit}"
    return f"{v:.0f}{unit}"


def _dot(xs: Any) -> str:
    if not xs:
        return "-"
    return "-".join("-" if x is None else str(x) for x in xs)


def blocks_label(blocks: Any) -> str:
    if not blocks:
        return "-"
    return blocks[0] if len(set(blocks)) == 1 else "/".join(blocks)


def reparam_label(reparam: Any) -> str:
    """Per-stage re-param branches: ``[[5],[5],[],[]]`` -> ``5|5|-|-``; none anywhere -> ``none``."""
    if not reparam or not any(reparam):
        return "none"
    return "|".join("+".join(str(b) for b in st) if st else "-" for st in reparam)


def dcn_label(groups: Any) -> str:
    if not groups or all(g is None for g in groups):
        return "-"
    return _dot(groups)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


# ---------------------------------------------------------------------------------------- kernel scaling
def kernel_scaling(run: Run) -> dict | None:
    """Accuracy, latency, FLOPs and params against kernel size, one line per re-param setting.

    Only trials sharing one base (blocks, depths, widths, DCN groups, stem stride: the most common base
    among those with several kernel settings) are compared, so the kernel is the only thing changing
    along a line. ``None`` when the study does not vary kernel size.
    """
    found = kernel_scalings(run)
    return found[0] if found else None


def kernel_scalings(run: Run) -> list[dict]:
    """One scaling analysis per base architecture that was tried with several kernel settings (e.g. one for
    RepLK and one for ConvNeXt blocks in a study that varies the family too), most kernel settings first."""
    costed = [t for t in run.trials if t.get("kernels") and t.get("flops") is not None]
    bases: dict[str, list[Trial]] = defaultdict(list)
    for t in costed:
        key = json.dumps([t.get("blocks"), t.get("depths"), t.get("widths"), t.get("dcn_groups"), t.get("stem_stride")])
        bases[key].append(t)
    ranked = sorted(((len({tuple(t.kernels) for t in ts}), len(ts), key) for key, ts in bases.items()), reverse=True)
    return [_scaling_of(key, bases[key], len(costed)) for n_k, _n, key in ranked if n_k > 1]


def _scaling_of(base_key: str, members: list, n_costed: int) -> dict:
    blocks, depths, widths, dcn, stride = json.loads(base_key)
    kernel_order = sorted({tuple(t.kernels) for t in members}, key=lambda k: (max(k), sum(k), k))
    groups: dict[tuple, list[Trial]] = defaultdict(list)
    for t in members:
        groups[(tuple(t.kernels), reparam_label(t.get("reparam")))].append(t)
    rows = []
    for (kern, rep), ts in sorted(groups.items(), key=lambda kv: (kernel_order.index(kv[0][0]), kv[0][1])):
        accs = [t.val_acc for t in ts if t.state == "complete" and t.get("val_acc") is not None]
        lats = [t.latency_ms for t in ts if t.get("latency_ms") is not None]
        rows.append({
            "kernels": list(kern), "reparam": rep, "trials": len(ts), "complete": len(accs),
            "val_acc_mean": statistics.fmean(accs) if accs else None, "val_acc_best": max(accs) if accs else None,
            "latency_ms": statistics.median(lats) if lats else None,
            "flops": statistics.median(t.flops for t in ts),
            "params": statistics.median(t.params for t in ts if t.get("params") is not None)
            if any(t.get("params") is not None for t in ts) else None,
            "deploy_params": statistics.median(t.deploy_params for t in ts if t.get("deploy_params") is not None)
            if any(t.get("deploy_params") is not None for t in ts) else None,
        })

    def at(kern: tuple, key: str) -> float | None:
        vals = [r[key] for r in rows if tuple(r["kernels"]) == kern and r[key] is not None]
        return statistics.median(vals) if vals else None

    lo, hi = kernel_order[0], kernel_order[-1]

    def change(key: str) -> float | None:
        a, b = at(lo, key), at(hi, key)
        return None if not a or b is None else b / a - 1

    comparable = (len(blocks) == 4 and set(blocks) == {"replk"} and list(lo) == REPLKNET_TABLE5["from"]
                  and list(hi) == REPLKNET_TABLE5["to"])
    return {
        "base": {"blocks": blocks, "depths": depths, "widths": widths, "dcn_groups": dcn, "stem_stride": stride},
        "kernel_settings": [list(k) for k in kernel_order],
        "rows": rows,
        "change": {"from": list(lo), "to": list(hi), "params": change("params"), "deploy_params": change("deploy_params"),
                   "flops": change("flops"), "latency_ms": change("latency_ms")},
        "replknet_table5": REPLKNET_TABLE5,
        "same_setting_as_replknet": comparable,
        "excluded_trials": n_costed - len(members),
    }


# ---------------------------------------------------------------------------------------- figures
def _state_groups(run: Run) -> dict[str, list[Trial]]:
    out: dict[str, list[Trial]] = {s: [] for s in STATES}
    for t in run.trials:
        out.setdefault(t.state, []).append(t)
    return out


_STYLE = {  # state -> matplotlib kwargs
    "complete": dict(marker="o", s=36, facecolors="#1f77b4", edgecolors="#1f77b4", alpha=0.8, zorder=3),
    "pruned": dict(marker="o", s=36, facecolors="none", edgecolors="#ff7f0e", linewidths=1.3, zorder=2),
    "running": dict(marker="D", s=30, facecolors="none", edgecolors="#9467bd", zorder=2),
}
_STRIP_STYLE = {
    "infeasible": dict(marker="x", s=40, color="#7f7f7f", linewidths=1.5),
    "failed": dict(marker="X", s=40, color="#d62728", linewidths=0.5),
}


def _scale_x(ax, values: list[float]) -> None:
    pos = [v for v in values if v and v > 0]
    if pos and max(pos) / min(pos) > 30:
        ax.set_xscale("log")


def pareto_figure(run: Run, objective: str, front: list[Trial], ref: dict, hv: float, path: str) -> None:
    """PNG: all trials (state-coded), the front as a step line, the dominated area and the reference point.

    Trained trials are on the main axes; trials never trained (infeasible: over budget; failed) sit in a
    strip below at their measured cost. The legend and the reference point note are outside the axes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, PercentFormatter

    col, xlabel, unit, _ = OBJECTIVES[objective]
    groups = _state_groups(run)
    untrained = [t for s in ("infeasible", "failed") for t in groups.get(s, []) if t.get(col) is not None]
    no_x = sum(1 for s in ("infeasible", "failed") for t in groups.get(s, []) if t.get(col) is None)
    fig = Figure(figsize=(9.6, 5.6), dpi=120)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 1, height_ratios=[6, 1], hspace=0.08)
    ax = fig.add_subplot(gs[0])
    strip = fig.add_subplot(gs[1], sharex=ax)
    ref_x = ref[col]
    ref_txt = fmt_count(ref_x, " MACs") if unit == "MACs" else f"{ref_x:g} ms"
    xs_all = [t.row[col] for t in run.trials if t.get(col) is not None]
    x_hi = max(xs_all) if xs_all else ref_x
    in_range = ref_x <= x_hi * 1.6
    # dominated region (what the hypervolume measures), clipped to the reference point
    fx = [t.row[col] for t in front if t.row[col] < ref_x]
    fy = [t.val_acc for t in front if t.row[col] < ref_x]
    if fx:
        sx, sy = [], []
        for i, (x, y) in enumerate(zip(fx, fy)):
            nxt = fx[i + 1] if i + 1 < len(fx) else ref_x
            sx += [x, nxt]
            sy += [y, y]
        ax.fill_between(sx, sy, 0, color="#d62728", alpha=0.08, lw=0, zorder=0,
                        label=f"dominated area\n(hypervolume {hv:.4g})")
    for state in ("running", "pruned", "complete"):
        ts = [t for t in groups.get(state, []) if t.get(col) is not None and t.get("val_acc") is not None]
        if ts:
            label = {"complete": "complete", "pruned": "pruned\n(accuracy when stopped)", "running": "running"}[state]
            ax.scatter([t.row[col] for t in ts], [t.val_acc for t in ts], label=f"{label} ({len(ts)})", **_STYLE[state])
    if front:
        px = [t.row[col] for t in front]
        py = [t.val_acc for t in front]
        x_end = ref_x if ref_x > px[-1] else px[-1]  # to the reference (clipped at the axes edge)
        ax.step(px + [x_end], py + [py[-1]], where="post", color="#d62728", lw=1.6, zorder=4)
        ax.scatter(px, py, marker="*", s=150, color="#d62728", edgecolors="black", linewidths=0.5, zorder=5,
                   label=f"Pareto front ({len(front)})")
    if in_range:
        for a in (ax, strip):
            a.axvline(ref_x, color="black", ls=":", lw=1)
        ax.plot([ref_x], [0], marker="P", color="black", ms=9, clip_on=False, zorder=6, ls="none",
                label=f"reference point\n({ref_txt}, acc 0)")
    accs = [t.val_acc for t in run.trials if t.get("val_acc") is not None and t.state in ("complete", "pruned", "running")]
    top = max(accs) if accs else 1.0
    if not accs:
        ax.text(0.5, 0.5, "no trained trials yet", transform=ax.transAxes, ha="center", va="center", color="#555")
    ax.set_ylim(0, min(1.0, top * 1.12 + 0.02))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylabel("validation accuracy (proxy)")
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelbottom=False)
    ax.set_title(f"{run.name}: accuracy vs {xlabel.split(' (')[0]} ({len(run.trials)} trials)", fontsize=11)
    # strip of trials that were never trained
    for state in ("infeasible", "failed"):
        ts = [t for t in untrained if t.state == state]
        if ts:
            label = "infeasible: over budget,\nnot trained" if state == "infeasible" else "failed"
            strip.scatter([t.row[col] for t in ts], [0.5] * len(ts), label=f"{label} ({len(ts)})",
                          **_STRIP_STYLE[state])
    strip.set_ylim(0, 1)
    strip.set_yticks([])
    strip.set_ylabel("no\nresult", rotation=0, ha="right", va="center", fontsize=8)
    if not untrained:
        strip.text(0.5, 0.5, "no infeasible or failed trials" + (f" with a measured cost ({no_x} without)" if no_x else ""),
                   transform=strip.transAxes, ha="center", va="center", fontsize=8, color="#555")
    elif no_x:
        strip.text(0.99, 0.85, f"+{no_x} without a measured cost", transform=strip.transAxes, ha="right", va="top",
                   fontsize=7, color="#555")
    strip.set_xlabel(xlabel)
    vals = xs_all + ([ref_x] if in_range else [])
    _scale_x(ax, vals)
    if unit == "MACs":
        strip.xaxis.set_major_formatter(EngFormatter())
    if vals:
        lo, hi = min(vals), max(vals)
        if ax.get_xscale() == "log":
            ax.set_xlim(lo / 1.3, hi * 1.3)
        else:
            pad = (hi - lo) * 0.06 or max(abs(hi) * 0.1, 1e-9)
            ax.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = strip.get_legend_handles_labels()
    fig.legend(handles + h2, labels + l2, loc="upper left", bbox_to_anchor=(0.735, 0.93), fontsize=8, frameon=False,
               labelspacing=0.9)
    if not in_range:
        fig.text(0.745, 0.2, f"reference point:\n{ref_txt}, accuracy 0\n(beyond the right edge)", fontsize=8,
                 va="bottom", color="#333")
    fig.subplots_adjust(left=0.1, right=0.72, top=0.93, bottom=0.1)
    fig.savefig(path)


def scaling_figure(run: Run, scaling: dict, path: str) -> None:
    """PNG: 2x2 panels (accuracy, latency, FLOPs, params) against kernel setting, one line per re-param setting."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, PercentFormatter

    settings = [tuple(k) for k in scaling["kernel_settings"]]
    labels = [_dot(k) for k in settings]
    fig = Figure(figsize=(9, 6.4), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True)
    panels = (("val_acc_mean", "validation accuracy (mean of complete)", axes[0][0]),
              ("latency_ms", "deploy latency (ms)", axes[0][1]),
              ("flops", "FLOPs (multiply-adds)", axes[1][0]),
              ("params", "parameters (train form)", axes[1][1]))
    reps = sorted({r["reparam"] for r in scaling["rows"]}, key=lambda s: (s != "none", s))
    markers = "osD^v<>p"
    for key, title, ax in panels:
        for j, rep in enumerate(reps):
            pts = [(settings.index(tuple(r["kernels"])), r[key]) for r in scaling["rows"]
                   if r["reparam"] == rep and r[key] is not None]
            if pts:
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[j % len(markers)], lw=1.4,
                        ms=7 if j == 0 else 9, markerfacecolor=None if j == 0 else "none", markeredgewidth=1.5,
                        label=rep)
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        if key == "val_acc_mean":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
            accs = [r[key] for r in scaling["rows"] if r[key] is not None]
            if accs and max(accs) - min(accs) < 0.02:  # flat: give the axis a readable span
                mid = (max(accs) + min(accs)) / 2
                ax.set_ylim(max(0.0, mid - 0.05), min(1.0, mid + 0.05))
            elif not accs:
                ax.text(0.5, 0.5, "no complete trials", transform=ax.transAxes, ha="center", va="center",
                        color="#555", fontsize=9)
        elif key in ("flops", "params"):
            ax.yaxis.set_major_formatter(EngFormatter())
    for ax in axes[1]:
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30 if len(labels) > 4 or max(map(len, labels)) > 9 else 0, ha="right"
                           if len(labels) > 4 or max(map(len, labels)) > 9 else "center", fontsize=8)
        ax.set_xlabel("kernel size per stage")
    handles, leg_labels = [], []  # every re-param setting drawn in any panel (one without accuracy yet too)
    for ax in (axes[0][0], axes[0][1], axes[1][0], axes[1][1]):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in leg_labels:
                handles.append(h)
                leg_labels.append(lab)
    b = scaling["base"]
    fig.suptitle(f"{run.name}: kernel-size scaling (base {blocks_label(b['blocks'])}, depths {_dot(b['depths'])}, "
                 f"widths {_dot(b['widths'])})", fontsize=11)
    fig.legend(handles, leg_labels, loc="lower center", ncol=min(5, max(1, len(handles))), fontsize=8, frameon=False,
               title="re-param branches per stage (small kernel sizes; none = large kernel only)", title_fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    rot = len(labels) > 4 or max(map(len, labels)) > 9
    fig.subplots_adjust(left=0.09, right=0.97, top=0.9, bottom=0.22 if rot else 0.18, hspace=0.3, wspace=0.25)
    fig.savefig(path)


def _plotly_pareto(run: Run, objective: str, front: list[Trial], ref: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    col, xlabel, unit, _ = OBJECTIVES[objective]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.85, 0.15], vertical_spacing=0.03)
    groups = _state_groups(run)

    def hover(t: Trial) -> str:
        acc = "-" if t.get("val_acc") is None else f"{t.val_acc:.2%}"
        return (f"<b>{html.escape(str(t.name))}</b><br>state: {t.state}<br>block: {blocks_label(t.get('blocks'))}"
                f"<br>kernels: {_dot(t.get('kernels'))}<br>depths: {_dot(t.get('depths'))}<br>widths: "
                f"{_dot(t.get('widths'))}<br>re-param: {reparam_label(t.get('reparam'))}<br>DCN groups: "
                f"{dcn_label(t.get('dcn_groups'))}<br>params: {fmt_count(t.get('params'))}<br>FLOPs: "
                f"{fmt_count(t.get('flops'))}<br>latency: {t.get('latency_ms', float('nan')):.3g} ms<br>val acc: {acc}"
                f"<br>epochs: {t.get('epochs_done', '-')}/{t.get('epochs_budget', '-')}"
                + (f"<br>error: {html.escape(str(t.get('error'))[:120])}" if t.get("error") else ""))

    style = {"complete": dict(color="#1f77b4", symbol="circle"), "pruned": dict(color="#ff7f0e", symbol="circle-open"),
             "running": dict(color="#9467bd", symbol="diamond-open")}
    for state in ("complete", "pruned", "running"):
        ts = [t for t in groups.get(state, []) if t.get(col) is not None and t.get("val_acc") is not None]
        if ts:
            fig.add_trace(go.Scatter(x=[t.row[col] for t in ts], y=[t.val_acc for t in ts], mode="markers",
                                     name=f"{state} ({len(ts)})", marker=dict(size=9, **style[state]),
                                     hovertext=[hover(t) for t in ts], hoverinfo="text"), row=1, col=1)
    if front:
        fig.add_trace(go.Scatter(x=[t.row[col] for t in front], y=[t.val_acc for t in front], mode="lines+markers",
                                 line=dict(shape="hv", color="#d62728"), marker=dict(symbol="star", size=14),
                                 name=f"Pareto front ({len(front)})", hovertext=[hover(t) for t in front],
                                 hoverinfo="text"), row=1, col=1)
    for state, sym, color in (("infeasible", "x", "#7f7f7f"), ("failed", "x-thin-open", "#d62728")):
        ts = [t for t in groups.get(state, []) if t.get(col) is not None]
        if ts:
            fig.add_trace(go.Scatter(x=[t.row[col] for t in ts], y=[0.5] * len(ts), mode="markers",
                                     name=f"{state}, not trained ({len(ts)})",
                                     marker=dict(symbol=sym, size=10, color=color, line=dict(width=2, color=color)),
                                     hovertext=[hover(t) for t in ts], hoverinfo="text"), row=2, col=1)
    fig.add_trace(go.Scatter(x=[ref[col]], y=[0], mode="markers", marker=dict(symbol="cross", size=12, color="black"),
                             name=f"reference point ({ref[col]:g} {unit}, acc 0)", hoverinfo="name"), row=1, col=1)
    fig.update_yaxes(title_text="validation accuracy", tickformat=".0%", row=1, col=1)
    fig.update_yaxes(showticklabels=False, range=[0, 1], title_text="not trained", row=2, col=1)
    fig.update_xaxes(title_text=xlabel, row=2, col=1)
    fig.update_layout(title=f"{run.name}: accuracy vs {xlabel}", height=560, template="plotly_white",
                      legend=dict(orientation="h", y=-0.2))
    return fig


def _plotly_scaling(run: Run, scaling: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    settings = [tuple(k) for k in scaling["kernel_settings"]]
    labels = [_dot(k) for k in settings]
    panels = (("val_acc_mean", "validation accuracy"), ("latency_ms", "deploy latency (ms)"),
              ("flops", "FLOPs (multiply-adds)"), ("params", "parameters"))
    fig = make_subplots(rows=2, cols=2, subplot_titles=[p[1] for p in panels])
    reps = sorted({r["reparam"] for r in scaling["rows"]}, key=lambda s: (s != "none", s))
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for i, (key, _title) in enumerate(panels):
        for j, rep in enumerate(reps):
            pts = sorted((settings.index(tuple(r["kernels"])), r[key]) for r in scaling["rows"]
                         if r["reparam"] == rep and r[key] is not None)
            if pts:
                fig.add_trace(go.Scatter(x=[labels[p[0]] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                         name=f"re-param {rep}", legendgroup=rep, showlegend=(i == 0),
                                         line=dict(color=colors[j % len(colors)])),
                              row=i // 2 + 1, col=i % 2 + 1)
    for i in range(4):
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels, row=i // 2 + 1, col=i % 2 + 1)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_layout(title=f"{run.name}: kernel-size scaling ({blocks_label(scaling['base']['blocks'])})", height=620,
                      template="plotly_white")
    return fig


# ---------------------------------------------------------------------------------------- markdown
def _front_table(front: list[Trial]) -> list[str]:
    lines = ["| # | name | block | kernels | depths | widths | DCN groups | re-param | params | FLOPs | latency (ms) | val acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, t in enumerate(front, 1):
        lat = t.get("latency_ms")
        lines.append(f"| {i} | `{t.name}` | {blocks_label(t.get('blocks'))} | {_dot(t.get('kernels'))} | "
                     f"{_dot(t.get('depths'))} | {_dot(t.get('widths'))} | {dcn_label(t.get('dcn_groups'))} | "
                     f"{reparam_label(t.get('reparam'))} | {fmt_count(t.get('params'))} | {fmt_count(t.get('flops'))} | "
                     f"{'-' if lat is None else f'{lat:.3g}'} | {t.val_acc:.2%} |")
    return lines


def _settings_lines(run: Run) -> list[str]:
    s = run.study
    b = run.budgets
    data, proxy, search = s.get("data") or {}, s.get("proxy") or {}, s.get("search") or {}
    pr = search.get("pruning") or {}
    rows = [
        ("study", f"`{run.name}`" + (f" — {s['description']}" if s.get("description") else "")),
        ("data", f"{data.get('dataset', '-')}, {data.get('train_per_class', '-')} train / "
                 f"{data.get('val_per_class', '-')} val images per class, {data.get('input_size', '-')} px"),
        ("proxy training", f"{proxy.get('epochs', '-')} epochs, batch {proxy.get('batch_size', '-')}, "
                           f"lr {proxy.get('lr', '-')}, seed {proxy.get('seed', '-')}"),
        ("budgets", ", ".join(f"{k} {v}" for k, v in (("max params", b.get("max_params")), ("max FLOPs", b.get("max_flops")),
                                                      ("max latency ms", b.get("max_latency_ms"))) if v) or "none"),
        ("latency measured at", f"batch {b.get('latency_batch_size', '-')}, {b.get('latency_input_size', '-')} px, "
                                f"{b.get('latency_threads', '-')} thread(s), deploy form"),
        ("search", f"sampler {search.get('sampler', '-')}, {search.get('trials', '-')} trials, "
                   f"{search.get('concurrency', '-')} at a time, seed {search.get('seed', '-')}; pruning "
                   f"{pr.get('scheduler', '-')} (grace {pr.get('grace_epochs', '-')} epochs, "
                   f"reduction factor {pr.get('reduction_factor', '-')})"),
    ]
    out = ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if s:
        out += ["", "<details><summary>study.yaml (resolved)</summary>", "", "```yaml",
                yaml.safe_dump(s, sort_keys=False, default_flow_style=None).rstrip(), "```", "", "</details>"]
    return out


def _markdown(run: Run, result: dict, scalings: list[dict], figures: dict) -> str:
    L: list[str] = [f"# Search report: {run.name}", "", f"Run folder: `{run.path}`", "", "## Study settings", ""]
    L += _settings_lines(run)
    counts = result["counts"]
    L += ["", "## Trials", "", "| state | trials | meaning |", "|---|---|---|"]
    meaning = {"complete": "trained for the full proxy budget (only these can be on a front)",
               "pruned": "stopped early by the scheduler (partial accuracy)",
               "infeasible": "over a cost budget, never trained", "failed": "error or NaN during training",
               "running": "not finished when this report was made"}
    for s in STATES:
        L.append(f"| {s} | {counts.get(s, 0)} | {meaning[s]} |")
    for s in sorted(set(counts) - set(STATES)):
        L.append(f"| {s} | {counts[s]} | |")
    L.append(f"| **total** | **{sum(counts.values())}** | |")
    saved = result["trial_epochs_saved"]
    budget = result.get("trial_epochs_budget")
    L += ["", f"Trial-epochs saved by pruning: **{saved}**" + (f" of {budget} budgeted" if budget else "")
          + " (sum over pruned trials of epochs budgeted minus epochs trained)."]
    for key, (col, xlabel, unit, _b) in OBJECTIVES.items():
        fr = result["fronts"][key]
        ref = fr["reference"]
        ref_txt = f"{fmt_count(ref[col])} {unit}" if unit == "MACs" else f"{ref[col]:g} {unit}"
        L += ["", f"## Pareto front: validation accuracy vs {xlabel}", "",
              f"{len(fr['front'])} of {counts.get('complete', 0)} complete trials are non-dominated "
              f"(maximise accuracy, minimise {col}).", "",
              f"Hypervolume: **{fr['hypervolume']:.6g}** (accuracy x {unit}); normalised by the reference box: "
              f"**{fr['hypervolume_normalized']:.4f}**. Reference point: accuracy 0, {col} = {ref_txt} "
              f"({ref['source']}). Trials at or beyond the reference add nothing.", ""]
        if fr["front"]:
            L += _front_table([t for t in result["_fronts"][key]])
        else:
            L.append("_No complete trials yet: no front._")
        if figures.get(key):
            L += ["", f"![accuracy vs {col}]({os.path.basename(figures[key])})"]
    L += ["", "## Kernel-size scaling", ""]
    if not scalings:
        L.append("_This study does not vary kernel size within one base architecture: no scaling table._")
    for n, scaling in enumerate(scalings):
        b = scaling["base"]
        if len(scalings) > 1:
            L += [f"### {blocks_label(b['blocks'])}", ""]
        L += [f"Base: {blocks_label(b['blocks'])}, depths {_dot(b['depths'])}, widths {_dot(b['widths'])}, "
              f"DCN groups {dcn_label(b['dcn_groups'])}, stem stride {b['stem_stride']}"
              + (f" ({scaling['excluded_trials']} trials with another base shown separately or left out)"
                 if scaling["excluded_trials"] else "")
              + ". Accuracy is the mean over complete trials (best in brackets); costs are per architecture.", "",
              "| kernels | re-param | trials (complete) | val acc mean (best) | latency (ms) | FLOPs | params | deploy params |",
              "|---|---|---|---|---|---|---|---|"]
        for r in scaling["rows"]:
            acc = "-" if r["val_acc_mean"] is None else f"{r['val_acc_mean']:.2%} ({r['val_acc_best']:.2%})"
            lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3g}"
            L.append(f"| {_dot(r['kernels'])} | {r['reparam']} | {r['trials']} ({r['complete']}) | {acc} | {lat} | "
                     f"{fmt_count(r['flops'])} | {fmt_count(r['params'])} | {fmt_count(r['deploy_params'])} |")
        c, t5 = scaling["change"], scaling["replknet_table5"]
        L += ["", f"Relative change from the smallest to the largest kernel setting, beside RepLKNet (Ding et al. 2022, "
                  f"Table 5):", "",
              "| | from | to | params | FLOPs | latency |", "|---|---|---|---|---|---|",
              f"| RepLKNet Table 5 (ImageNet, 224 px) | {_dot(t5['from'])} | {_dot(t5['to'])} | "
              f"{_pct(t5['params_change'])} (71.8M -> 79.3M) | {_pct(t5['flops_change'])} (12.9G -> 15.3G) | - |",
              f"| this study ({run.study.get('data', {}).get('input_size', '?')} px) | {_dot(c['from'])} | {_dot(c['to'])} | "
              f"{_pct(c['deploy_params'])} (deploy form; train form {_pct(c['params'])}) | {_pct(c['flops'])} | "
              f"{_pct(c['latency_ms'])} |", ""]
        if scaling["same_setting_as_replknet"]:
            L.append("Same kernel range and block family as RepLKNet's Table 5, so the trend is directly comparable "
                     "(the base is smaller and the input smaller, which shifts the share of depthwise weights).")
        else:
            L.append("The study's base or kernel range differs from RepLKNet's ([3,3,3,3] -> [31,29,27,13] on a 4-stage "
                     "RepLKNet), so the comparison shows the direction of the trend only.")
        if figures.get(f"scaling{n}"):
            L += ["", f"![kernel-size scaling]({os.path.basename(figures[f'scaling{n}'])})", ""]
    L += ["", "## Files", ""]
    for k, p in figures.items():
        if p:
            L.append(f"- `{os.path.basename(p)}` ({k})")
    L.append("- `report.html`: the figures, interactive (hover a point for its architecture)")
    L.append("")
    return "\n".join(L)


def _write_html(run: Run, figs: list, path: str) -> None:
    parts = []
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    doc = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>lkscale report: "
           f"{html.escape(run.name)}</title></head><body style='font-family:sans-serif;max-width:1100px;margin:auto'>"
           f"<h1>lkscale report: {html.escape(run.name)}</h1><p>See report.md for the tables.</p>"
           + "\n".join(parts) + "</body></html>")
    _atomic_write(path, doc)


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- entry point
def make_report(run_dir: str, reference: dict | None = None, figures: bool = True, html_report: bool = True,
                progress: Callable[[str], None] | None = None) -> dict:
    """Write ``report.md`` (+ PNG figures and ``report.html``) into ``run_dir``; return the summary as a dict.

    ``reference`` may give ``{"latency_ms": ..., "flops": ...}`` to override the reference point (else the
    study's budgets, else the value stored in ``summary.json``, else fixed now and stored there).
    """
    say = progress or (lambda m: log.info(m))
    run = load_run(run_dir)
    say(f"report for {run.name}: {len(run.trials)} trials in {run.path}")
    counts = dict(Counter(t.state for t in run.trials))
    result: dict[str, Any] = {
        "study": run.name, "run_dir": run.path, "trials": len(run.trials), "counts": counts,
        "trial_epochs_saved": epochs_saved(run),
        "trial_epochs_saved_summary": run.summary.get("trial_epochs_saved"),
        "trial_epochs_budget": run.summary.get("trial_epochs_budget"),
        "fronts": {}, "_fronts": {},
    }
    stored_refs = dict(run.summary.get("reference_point") or {})
    for key, (col, _xl, _u, _b) in OBJECTIVES.items():
        ref = reference_point(run, key, reference)
        front = front_of(run.trials, col)
        pts = [(t.val_acc, t.row[col]) for t in front]
        hv = hypervolume_2d(pts, (ref["val_acc"], ref[col]), ("max", "min")) if pts else 0.0
        result["fronts"][key] = {"objectives": ["val_acc", col], "senses": ["max", "min"], "reference": ref,
                                 "hypervolume": hv, "hypervolume_normalized": hv / (1.0 * ref[col]) if ref[col] else 0.0,
                                 "front": [_trial_record(t) for t in front]}
        result["_fronts"][key] = front
        if ref["source"].startswith("fixed at the first report"):
            stored_refs[key] = {col: ref[col], "source": ref["source"]}
    scalings = kernel_scalings(run)
    result["kernel_scaling"] = scalings[0] if scalings else None
    result["kernel_scalings"] = scalings
    paths: dict[str, str | None] = {}
    if figures:
        for key in OBJECTIVES:
            fr = result["fronts"][key]
            path = os.path.join(run.path, f"pareto_{key}.png")
            say(f"writing {os.path.basename(path)}")
            pareto_figure(run, key, result["_fronts"][key], fr["reference"], fr["hypervolume"], path)
            paths[key] = path
        for n, scaling in enumerate(scalings):
            family = "_".join(sorted(set(scaling["base"]["blocks"] or [])))
            path = os.path.join(run.path, "kernel_scaling.png" if n == 0 else f"kernel_scaling_{n + 1}_{family}.png")
            say(f"writing {os.path.basename(path)}")
            scaling_figure(run, scaling, path)
            paths[f"scaling{n}"] = path
        if html_report:
            say("writing report.html")
            figs = [_plotly_pareto(run, k, result["_fronts"][k], result["fronts"][k]["reference"]) for k in OBJECTIVES]
            figs += [_plotly_scaling(run, sc) for sc in scalings]
            paths["html"] = os.path.join(run.path, "report.html")
            _write_html(run, figs, paths["html"])
    md_path = os.path.join(run.path, "report.md")
    _atomic_write(md_path, _markdown(run, result, scalings, {k: v for k, v in paths.items() if k != "html"}))
    result["files"] = {"report": md_path, **{k: v for k, v in paths.items() if v}}
    del result["_fronts"]
    # summary.json: keep what search wrote, add the report's numbers
    summary_path = os.path.join(run.path, "summary.json")
    summary = dict(run.summary)
    if stored_refs:
        summary["reference_point"] = stored_refs
    summary["report"] = {
        "fronts": {k: {"names": [r["name"] for r in v["front"]], "hypervolume": v["hypervolume"],
                       "hypervolume_normalized": v["hypervolume_normalized"], "reference": v["reference"]}
                   for k, v in result["fronts"].items()},
        "trial_epochs_saved": result["trial_epochs_saved"],
    }
    summary.setdefault("study", run.name)
    _atomic_write(summary_path, json.dumps(summary, indent=2))
    say(f"wrote {md_path}")
    return result


__all__ = ["make_report", "load_run", "Run", "Trial", "RunDirError", "reference_point", "front_of", "epochs_saved",
           "kernel_scaling", "kernel_scalings", "REPLKNET_TABLE5", "OBJECTIVES", "read_trials_csv"]
