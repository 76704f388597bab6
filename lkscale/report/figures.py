"""PNG figures of a run (matplotlib, Agg canvas: no display needed)."""
from __future__ import annotations

from lkscale.attainment import surfaces
from lkscale.report.baselines import draw_baselines
from lkscale.report.labels import OBJECTIVES, blocks_label, dot, latency_short, ref_text
from lkscale.report.numbers import latency_setting
from lkscale.rundir import STATES, Run, Trial

_STYLE = {  # state -> matplotlib kwargs
    "complete": dict(marker="o", s=36, facecolors="#1f77b4", edgecolors="#1f77b4", alpha=0.8, zorder=3),
    "pruned": dict(marker="o", s=36, facecolors="none", edgecolors="#ff7f0e", linewidths=1.3, zorder=2),
    "running": dict(marker="D", s=30, facecolors="none", edgecolors="#9467bd", zorder=2),
}
_STRIP_STYLE = {
    "infeasible": dict(marker="x", s=40, color="#7f7f7f", linewidths=1.5),
    "failed": dict(marker="X", s=40, color="#d62728", linewidths=0.5),
}


def x_label(run: Run, objective: str) -> str:
    """The objective's axis label; latency says how it was measured (runtime, batch, threads, source)."""
    label = OBJECTIVES[objective][1]
    how = latency_short(latency_setting(run)) if objective == "latency" else ""
    return label.replace("(ms)", f"(ms; {how})") if how else label


def state_groups(run: Run) -> dict[str, list[Trial]]:
    out: dict[str, list[Trial]] = {s: [] for s in STATES}
    for t in run.trials:
        out.setdefault(t.state, []).append(t)
    return out


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _dominated_area(ax, front: list[Trial], col: str, ref_x: float, hv: float) -> None:
    """The region the hypervolume measures, clipped to the reference point."""
    fx = [t.row[col] for t in front if t.row[col] < ref_x]
    fy = [t.val_acc for t in front if t.row[col] < ref_x]
    if not fx:
        return
    sx, sy = [], []
    for i, (x, y) in enumerate(zip(fx, fy)):
        nxt = fx[i + 1] if i + 1 < len(fx) else ref_x
        sx += [x, nxt]
        sy += [y, y]
    ax.fill_between(sx, sy, 0, color="#d62728", alpha=0.08, lw=0, zorder=0, label=f"dominated area\n(hypervolume {hv:.4g})")


LOW_HIGH = {"val_acc": ("val_acc_low", "val_acc_high"), "latency_ms": ("latency_low_ms", "latency_high_ms")}


def error_bars(ts: list, col: str) -> tuple[list[float], list[float]] | None:
    """(minus, plus) distances from ``col`` to its interval bounds (0 where a bound is missing); None when no
    trial has an interval for ``col``."""
    if col not in LOW_HIGH:
        return None
    lo_k, hi_k = LOW_HIGH[col]
    if not any(t.get(lo_k) is not None for t in ts):
        return None
    minus = [max(0.0, t.row[col] - t.row[lo_k]) if t.get(lo_k) is not None else 0.0 for t in ts]
    plus = [max(0.0, t.row[hi_k] - t.row[col]) if t.get(hi_k) is not None else 0.0 for t in ts]
    return minus, plus


FRONT_MARKS = {  # racing status -> (legend label, star face colour)
    "confirmed": ("confirmed", "#d62728"),
    "tied": ("tied within noise", "white"),
    None: ("no racing status", "#d62728"),
    "dominated": ("dominated (racing)", "#bbbbbb"),
}


def _front_stars(ax, front: list[Trial], col: str, statuses: list) -> None:
    for status, (label, face) in FRONT_MARKS.items():
        pts = [t for t, st in zip(front, statuses) if st == status]
        if pts:
            ax.scatter([t.row[col] for t in pts], [t.val_acc for t in pts], marker="*", s=170, facecolors=face,
                       edgecolors="#d62728" if face == "white" else "black", linewidths=1.2 if face == "white" else 0.5,
                       zorder=5, label=f"front: {label} ({len(pts)})" if status else f"Pareto front ({len(pts)})")


def _trained_points(ax, groups: dict, front: list[Trial], col: str, ref_x: float, statuses: list) -> None:
    for state in ("running", "pruned", "complete"):
        ts = [t for t in groups.get(state, []) if t.get(col) is not None and t.get("val_acc") is not None]
        if ts:
            label = {"complete": "complete (mean, interval)", "pruned": "pruned\n(accuracy when stopped)",
                     "running": "running"}[state]
            ax.scatter([t.row[col] for t in ts], [t.val_acc for t in ts], label=f"{label} ({len(ts)})", **_STYLE[state])
            if state == "complete":
                yerr, xerr = error_bars(ts, "val_acc"), error_bars(ts, col)
                ax.errorbar([t.row[col] for t in ts], [t.val_acc for t in ts], yerr=yerr, xerr=xerr, fmt="none",
                            ecolor="#1f77b4", elinewidth=0.9, alpha=0.55, capsize=2, zorder=2)
    if front:
        px = [t.row[col] for t in front]
        py = [t.val_acc for t in front]
        x_end = ref_x if ref_x > px[-1] else px[-1]  # to the reference (clipped at the axes edge)
        ax.step(px + [x_end], py + [py[-1]], where="post", color="#d62728", lw=1.6, zorder=4)
        _front_stars(ax, front, col, statuses)


def _attainment(ax, run: Run, col: str, right: float) -> list[float]:
    """The front's uncertainty over replicates (``lkscale.attainment``): the median (50%) attainment surface and
    the band between the best and the worst replicate's fronts, over the replicates every complete candidate
    has. Returns the accuracies drawn (for the axis limits); nothing with fewer than 2 shared replicates."""
    import numpy as np

    done = [t for t in run.trials if t.state == "complete" and t.get(col) is not None and t.get("replicates")]
    if len(done) < 2:
        return []
    eaf = surfaces([float(t.row[col]) for t in done], [t.get("replicates") for t in done], (0.0, 0.5, 1.0))
    if not eaf["surfaces"]:
        return []
    best, mid, worst = (eaf["surfaces"][q] for q in (0.0, 0.5, 1.0))
    xs = np.union1d(best[0], worst[0])
    xs = np.r_[xs, max(right, xs[-1])]

    def at(surface):
        i = np.searchsorted(surface[0], xs, side="right") - 1
        return np.where(i >= 0, surface[1][np.clip(i, 0, None)], np.nan)

    top, bottom = at(best), at(worst)
    ax.fill_between(xs, np.where(np.isnan(bottom), top, bottom), top, step="post", color="#2ca02c", alpha=0.13, lw=0,
                    zorder=1, label=f"best-worst replicate fronts\n({eaf['replicates']} shared replicates)")
    mx = np.r_[mid[0], max(right, mid[0][-1])]
    ax.step(mx, np.r_[mid[1], mid[1][-1]], where="post", color="#2ca02c", lw=1.3, ls="--", zorder=3,
            label="median attainment surface")
    return [float(v) for v in np.r_[top, bottom] if np.isfinite(v)]


def _accuracy_axis(ax, run: Run, xlabel: str, extra: list[float] | None = None) -> None:
    """Accuracy framed on what is drawn (trained trials with their intervals, the attainment band), not from 0."""
    from matplotlib.ticker import PercentFormatter

    shown = [t for t in run.trials if t.get("val_acc") is not None and t.state in ("complete", "pruned", "running")]
    accs = [v for t in shown for v in (t.get("val_acc_low"), t.val_acc, t.get("val_acc_high")) if v is not None]
    accs += list(extra or [])
    if not accs:
        ax.text(0.5, 0.5, "no trained trials yet", transform=ax.transAxes, ha="center", va="center", color="#555")
        ax.set_ylim(0, 1.0)
    else:
        lo, hi = min(accs), max(accs)
        pad = max(0.08 * (hi - lo), 0.01)
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + 1.6 * pad))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylabel("validation accuracy (proxy)")
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelbottom=False)
    ax.set_title(f"{run.name}: mean accuracy vs {xlabel.split(' (')[0]} ({len(run.trials)} architectures)", fontsize=11)


def _untrained_strip(strip, groups: dict, col: str, xlabel: str, counts: dict | None = None) -> None:
    """Trials never trained (infeasible: over budget; failed) at their measured cost, below the main axes;
    ``counts``: the search's trial counts by state (summary.json), which include draws that never built."""
    untrained = [t for s in ("infeasible", "failed") for t in groups.get(s, []) if t.get(col) is not None]
    no_x = sum(1 for s in ("infeasible", "failed") for t in groups.get(s, []) if t.get(col) is None)
    for state in ("infeasible", "failed"):
        ts = [t for t in untrained if t.state == state]
        if ts:
            label = "infeasible: over budget,\nnot trained" if state == "infeasible" else "failed"
            strip.scatter([t.row[col] for t in ts], [0.5] * len(ts), label=f"{label} ({len(ts)})", **_STRIP_STYLE[state])
    strip.set_ylim(0, 1)
    strip.set_yticks([])
    strip.set_ylabel("no\nresult", rotation=0, ha="right", va="center", fontsize=8)
    # draws that never built a network have no name (not in ``groups``): only the search's counts know them
    missing = max(no_x, sum((counts or {}).get(s, 0) for s in ("infeasible", "failed")) - len(untrained))
    if not untrained:
        strip.text(0.5, 0.5, f"{missing} infeasible or failed trial(s), none with a measured cost (never built or "
                             f"never costed)" if missing else "no infeasible or failed trials",
                   transform=strip.transAxes, ha="center", va="center", fontsize=8, color="#555")
    elif missing:
        strip.text(0.99, 0.85, f"+{missing} without a measured cost", transform=strip.transAxes, ha="right",
                   va="top", fontsize=7, color="#555")
    strip.set_xlabel(xlabel)


def _x_limits(ax, vals: list[float]) -> None:
    pos = [v for v in vals if v and v > 0]
    if pos and max(pos) / min(pos) > 30:
        ax.set_xscale("log")
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    if ax.get_xscale() == "log":
        ax.set_xlim(lo / 1.3, hi * 1.3)
    else:
        pad = (hi - lo) * 0.06 or max(abs(hi) * 0.1, 1e-9)
        ax.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)


def pareto_figure(run: Run, objective: str, front: list[Trial], ref: dict, hv: float, path: str,
                  statuses: list | None = None) -> None:
    """PNG: all candidates (state-coded; ``run.trials`` one per architecture), complete ones at their mean
    accuracy with error bars (accuracy interval over replicates; latency interval), the front as a step
    line with its members marked by racing status (``statuses``, one per member: confirmed / tied / None),
    the dominated area and the reference point; with >= 2 replicates shared by every complete candidate, the
    front's uncertainty: the median attainment surface and the best-worst replicate band (``_attainment``).
    The accuracy axis is framed on the data (not from 0; the reference point, at accuracy 0, sits on its
    bottom edge).

    Trained trials are on the main axes; trials never trained (infeasible: over budget; failed) sit in a
    strip below at their measured cost. The legend and the reference point note are outside the axes.
    """
    from matplotlib.ticker import EngFormatter
    from matplotlib.transforms import blended_transform_factory

    col, _, unit, _ = OBJECTIVES[objective]
    xlabel = x_label(run, objective)
    groups = state_groups(run)
    fig = _figure((9.6, 5.6))
    gs = fig.add_gridspec(2, 1, height_ratios=[6, 1], hspace=0.08)
    ax = fig.add_subplot(gs[0])
    strip = fig.add_subplot(gs[1], sharex=ax)
    ref_x, ref_txt = ref[col], ref_text(ref[col], unit)
    xs_all = [t.row[col] for t in run.trials if t.get(col) is not None]
    bounds = [t.row[k] for k in LOW_HIGH.get(col, ()) for t in run.trials if t.get(k) is not None]
    in_range = ref_x <= (max(xs_all) if xs_all else ref_x) * 1.6
    _dominated_area(ax, front, col, ref_x, hv)
    drawn = _attainment(ax, run, col, ref_x if in_range else max(xs_all, default=ref_x))
    _trained_points(ax, groups, front, col, ref_x, list(statuses or [None] * len(front)))
    if in_range:
        for a in (ax, strip):
            a.axvline(ref_x, color="black", ls=":", lw=1)
        ax.plot([ref_x], [0], marker="P", color="black", ms=9, clip_on=False, zorder=6, ls="none",
                transform=blended_transform_factory(ax.transData, ax.transAxes),
                label=f"reference point\n({ref_txt}, acc 0; below)")
    _accuracy_axis(ax, run, xlabel, drawn)
    refs = draw_baselines(ax, run, col)  # the study's baselines: marked references, never on the front
    _untrained_strip(strip, groups, col, xlabel, run.summary.get("counts"))
    _x_limits(ax, xs_all + bounds + refs + ([ref_x] if in_range else []))
    if unit == "MACs":
        strip.xaxis.set_major_formatter(EngFormatter())
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = strip.get_legend_handles_labels()
    fig.legend(handles + h2, labels + l2, loc="upper left", bbox_to_anchor=(0.735, 0.93), fontsize=8, frameon=False,
               labelspacing=0.9)
    if not in_range:
        fig.text(0.745, 0.2, f"reference point:\n{ref_txt}, accuracy 0\n(beyond the right edge)", fontsize=8,
                 va="bottom", color="#333")
    fig.subplots_adjust(left=0.1, right=0.72, top=0.93, bottom=0.1)
    fig.savefig(path)


LINE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]


def fit_positions(line: dict, settings: list) -> tuple[list, list, list, list] | None:
    """The line's fitted curve and band at x positions of the panels (the settings' index; the curve's own x,
    effective kernel or index, mapped piecewise-linearly onto them), or None when no curve was fitted."""
    import numpy as np

    fit = line.get("fit")
    if not fit or not line.get("settings"):
        return None
    pos = [settings.index(tuple(k)) for k in line["settings"]]
    x = np.interp(fit["grid"], line["x_values"], pos)
    nan = float("nan")
    low = [nan if v is None else v for v in fit["band_low"]]
    high = [nan if v is None else v for v in fit["band_high"]]
    return list(x), fit["mid"], low, high


def _accuracy_extras(ax, scaling: dict, settings: list, rep: str, color: str) -> None:
    """Error bars, the fitted saturating curve with its band, and the significant steps of one line."""
    from lkscale.report.significance import step_text

    rows = sorted((settings.index(tuple(r["kernels"])), r) for r in scaling["rows"]
                  if r["reparam"] == rep and r["val_acc_mean"] is not None)
    if not rows:
        return
    xs, ys = [p for p, _ in rows], [r["val_acc_mean"] for _, r in rows]
    lo = [max(0.0, r["val_acc_mean"] - r["val_acc_low"]) if r["val_acc_low"] is not None else 0.0 for _, r in rows]
    hi = [max(0.0, r["val_acc_high"] - r["val_acc_mean"]) if r["val_acc_high"] is not None else 0.0 for _, r in rows]
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor=color, elinewidth=1.1, capsize=3, zorder=2)
    line = scaling["lines"].get(rep) or {}
    drawn = fit_positions(line, settings)
    if drawn:
        fx, mid, band_lo, band_hi = drawn
        ax.plot(fx, mid, color=color, ls="--", lw=1, alpha=0.8, label=f"{rep}: saturating fit + band")
        ax.fill_between(fx, band_lo, band_hi, color=color, alpha=0.12, lw=0)
    top = {p: r["val_acc_high"] if r["val_acc_high"] is not None else r["val_acc_mean"] for p, r in rows}
    for st in line.get("steps", []):
        if st["significant"]:
            a, b = settings.index(tuple(st["from"])), settings.index(tuple(st["to"]))
            ax.annotate(step_text(st).split(" [")[0] + " *", ((a + b) / 2, max(top[a], top[b])), textcoords="offset points",
                        xytext=(0, 4), ha="center", fontsize=7, color=color, fontweight="bold")


def _scaling_panel(ax, key: str, title: str, scaling: dict, settings: list, reps: list) -> None:
    from matplotlib.ticker import EngFormatter, PercentFormatter

    markers = "osD^v<>p"
    for j, rep in enumerate(reps):
        pts = sorted((settings.index(tuple(r["kernels"])), r[key]) for r in scaling["rows"]
                     if r["reparam"] == rep and r[key] is not None)
        color = LINE_COLORS[j % len(LINE_COLORS)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[j % len(markers)], lw=1.4, color=color,
                    ms=7 if j == 0 else 9, markerfacecolor=None if j == 0 else "none", markeredgewidth=1.5, label=rep)
        if key == "val_acc_mean":
            _accuracy_extras(ax, scaling, settings, rep, color)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if key == "val_acc_mean":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
        accs = [v for r in scaling["rows"] for v in (r["val_acc_low"], r["val_acc_high"], r[key]) if v is not None]
        if accs and max(accs) - min(accs) < 0.02:  # flat: give the axis a readable span
            mid = (max(accs) + min(accs)) / 2
            ax.set_ylim(max(0.0, mid - 0.05), min(1.0, mid + 0.05))
        elif accs:
            span = max(accs) - min(accs)
            ax.set_ylim(max(0.0, min(accs) - 0.08 * span), min(1.0, max(accs) + 0.18 * span))
        else:
            ax.text(0.5, 0.5, "no complete trials", transform=ax.transAxes, ha="center", va="center", color="#555",
                    fontsize=9)
    elif key in ("flops", "params"):
        ax.yaxis.set_major_formatter(EngFormatter())


def scaling_figure(run: Run, scaling: dict, path: str) -> None:
    """PNG: 2x2 panels (accuracy, latency, FLOPs, params) against kernel setting, one line per re-param setting."""
    settings = [tuple(k) for k in scaling["kernel_settings"]]
    labels = [dot(k) for k in settings]
    rot = len(labels) > 4 or max(map(len, labels)) > 9
    fig = _figure((9, 6.4))
    axes = fig.subplots(2, 2, sharex=True)
    panels = (("val_acc_mean", "val accuracy: mean, interval; * significant step", axes[0][0]),
              ("latency_ms", "deploy latency (ms)", axes[0][1]),
              ("flops", "FLOPs (multiply-adds)", axes[1][0]),
              ("params", "parameters (train form)", axes[1][1]))
    reps = sorted({r["reparam"] for r in scaling["rows"]}, key=lambda s: (s != "none", s))
    for key, title, ax in panels:
        _scaling_panel(ax, key, title, scaling, settings, reps)
    for ax in axes[1]:
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30 if rot else 0, ha="right" if rot else "center", fontsize=8)
        ax.set_xlabel("kernel size per stage")
    handles, leg_labels = [], []  # every re-param setting drawn in any panel (one without accuracy yet too)
    for _k, _t, ax in panels:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in leg_labels:
                handles.append(h)
                leg_labels.append(lab)
    b = scaling["base"]
    how = latency_short(latency_setting(run))
    fig.suptitle(f"{run.name}: kernel-size scaling (base {blocks_label(b['blocks'])}, depths {dot(b['depths'])}, "
                 f"widths {dot(b['widths'])})" + (f"\nlatency: {how}" if how else ""), fontsize=11)
    fig.legend(handles, leg_labels, loc="lower center", ncol=min(5, max(1, len(handles))), fontsize=8, frameon=False,
               title="re-param branches per stage (small kernel sizes; none = large kernel only)", title_fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    fig.subplots_adjust(left=0.09, right=0.97, top=0.86 if how else 0.9, bottom=0.22 if rot else 0.18, hspace=0.3,
                        wspace=0.25)
    fig.savefig(path)
