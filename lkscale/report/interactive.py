"""Interactive figures of a run (plotly) for ``report.html``.

The axes are framed on the data: a reference point far beyond the measured costs (a loose budget) would
squeeze every trial into a sliver of the plot, so it is then marked by an arrow at the right edge instead.
"""
from __future__ import annotations

import html
import math

from lkscale.report.baselines import baseline_rows
from lkscale.report.figures import LINE_COLORS, LOW_HIGH, error_bars, fit_positions, state_groups, x_label
from lkscale.report.labels import (OBJECTIVES, acc_interval_text, blocks_label, dcn_label, dot, fmt_count,
                                   latency_short, ms_interval_text, ref_text, reparam_label)
from lkscale.report.numbers import latency_setting
from lkscale.report.significance import step_text
from lkscale.rundir import Run, Trial

_STYLE = {"complete": dict(color="#1f77b4", symbol="circle"), "pruned": dict(color="#ff7f0e", symbol="circle-open"),
          "running": dict(color="#9467bd", symbol="diamond-open")}
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def hover(t: Trial, status: str | None = None) -> str:
    acc = acc_interval_text(t.get("val_acc"), t.get("val_acc_low"), t.get("val_acc_high"), t.get("n_replicates"))
    lat = "-" if t.get("latency_ms") is None else \
        f"{ms_interval_text(t.latency_ms, t.get('latency_low_ms'), t.get('latency_high_ms'))} ms" \
        + (f" ({t.get('latency_runtime')}, {t.get('latency_source', '')})" if t.get("latency_runtime") else "")
    return (f"<b>{html.escape(str(t.name))}</b><br>state: {t.state}<br>block: {blocks_label(t.get('blocks'))}"
            f"<br>kernels: {dot(t.get('kernels'))}<br>depths: {dot(t.get('depths'))}<br>widths: "
            f"{dot(t.get('widths'))}<br>re-param: {reparam_label(t.get('reparam'))}<br>DCN groups: "
            f"{dcn_label(t.get('dcn_groups'))}<br>params: {fmt_count(t.get('params'))}<br>FLOPs: "
            f"{fmt_count(t.get('flops'))}<br>latency: {lat}<br>val acc: {acc}"
            f"<br>epochs: {t.get('epochs_done', '-')}/{t.get('epochs_budget', '-')}"
            + (f"<br>racing status: <b>{status}</b>" if status else "")
            + (f"<br>error: {html.escape(str(t.get('error'))[:120])}" if t.get("error") else ""))


def _bars(ts: list, col: str) -> dict | None:
    eb = error_bars(ts, col)
    if eb is None:
        return None
    return dict(type="data", symmetric=False, array=eb[1], arrayminus=eb[0], thickness=1, width=2,
                color="rgba(31,119,180,0.5)")


FRONT_STYLE = {"confirmed": ("front: confirmed", dict(symbol="star", color="#d62728")),
               "tied": ("front: tied within noise", dict(symbol="star-open", color="#d62728", line=dict(width=2))),
               "dominated": ("front: dominated (racing)", dict(symbol="star", color="#bbbbbb")),
               None: ("Pareto front", dict(symbol="star", color="#d62728"))}


def _front_traces(fig, go, front: list[Trial], col: str, statuses: list) -> None:
    fig.add_trace(go.Scatter(x=[t.row[col] for t in front], y=[t.val_acc for t in front], mode="lines",
                             line=dict(shape="hv", color="#d62728"), name="front (on mean accuracy)",
                             hoverinfo="skip"), row=1, col=1)
    for status, (label, marker) in FRONT_STYLE.items():
        ts = [t for t, st in zip(front, statuses) if st == status]
        if ts:
            fig.add_trace(go.Scatter(x=[t.row[col] for t in ts], y=[t.val_acc for t in ts], mode="markers",
                                     marker=dict(size=15, **marker), name=f"{label} ({len(ts)})",
                                     hovertext=[hover(t, status) for t in ts], hoverinfo="text"), row=1, col=1)


def x_frame(values: list[float], ref_x: float) -> tuple[bool, bool, list[float] | None]:
    """(log axis?, reference inside the frame?, axis range in plotly units) for the measured ``values``.

    The reference is inside when it lies within 1.6x the largest value (as in the PNG figures)."""
    pos = [v for v in values if v is not None and v > 0]
    if not pos:
        return False, True, None
    lo, hi = min(pos), max(pos)
    ref_in = ref_x <= hi * 1.6
    if ref_in:
        hi = max(hi, ref_x)
    log = hi / lo > 30
    if log:
        return True, ref_in, [math.log10(lo / 1.3), math.log10(hi * 1.3)]
    pad = (hi - lo) * 0.06 or hi * 0.1
    return False, ref_in, [max(0.0, lo - pad), hi + pad]


def _trace_points(fig, go, groups: dict, front: list[Trial], col: str, ref_x: float, statuses: list) -> None:
    for state in ("complete", "pruned", "running"):
        ts = [t for t in groups.get(state, []) if t.get(col) is not None and t.get("val_acc") is not None]
        if ts:
            bars = dict(error_y=_bars(ts, "val_acc"), error_x=_bars(ts, col)) if state == "complete" else {}
            fig.add_trace(go.Scatter(x=[t.row[col] for t in ts], y=[t.val_acc for t in ts], mode="markers",
                                     name=f"{state} ({len(ts)})" + (": mean, interval" if bars else ""),
                                     marker=dict(size=9, **_STYLE[state]), **{k: v for k, v in bars.items() if v},
                                     hovertext=[hover(t) for t in ts], hoverinfo="text"), row=1, col=1)
    if front:
        _front_traces(fig, go, front, col, statuses)
        last = front[-1]
        if ref_x > last.row[col]:  # the front's last step runs to the reference (clipped at the edge)
            fig.add_trace(go.Scatter(x=[last.row[col], ref_x], y=[last.val_acc] * 2, mode="lines", showlegend=False,
                                     line=dict(color="#d62728", dash="dot"), hoverinfo="skip"), row=1, col=1)
    untrained = [t for s in ("infeasible", "failed") for t in groups.get(s, []) if t.get(col) is not None]
    xs = [t.row[col] for t in front or untrained or [t for t in sum(groups.values(), []) if t.get(col) is not None]]
    if not untrained and xs:  # an empty strip would lose its axis (ticks and title) in plotly.js
        mid = (min(xs) * max(xs)) ** 0.5 if min(xs) > 0 and max(xs) / min(xs) > 30 else (min(xs) + max(xs)) / 2
        fig.add_trace(go.Scatter(x=[mid], y=[0.5], mode="text", text=["no infeasible or failed trials"],
                                 textfont=dict(color="#777", size=11), showlegend=False, hoverinfo="skip"), row=2, col=1)
    for state, sym, color in (("infeasible", "x", "#7f7f7f"), ("failed", "x-thin-open", "#d62728")):
        ts = [t for t in groups.get(state, []) if t.get(col) is not None]
        if ts:
            fig.add_trace(go.Scatter(x=[t.row[col] for t in ts], y=[0.5] * len(ts), mode="markers",
                                     name=f"{state}, not trained ({len(ts)})",
                                     marker=dict(symbol=sym, size=10, color=color, line=dict(width=2, color=color)),
                                     hovertext=[hover(t) for t in ts], hoverinfo="text"), row=2, col=1)


def _mark_reference(fig, go, ref_x: float, ref_in: bool, label: str, y_floor: float = 0.0) -> None:
    """The hypervolume's reference point (accuracy 0): on the frame's floor when the accuracy axis starts above 0."""
    if ref_in:
        below = "; below the frame" if y_floor > 0 else ""
        fig.add_trace(go.Scatter(x=[ref_x], y=[y_floor], mode="markers", marker=dict(symbol="cross", size=12, color="black"),
                                 name=f"reference point ({label}, acc 0{below})", hoverinfo="name", cliponaxis=False),
                      row=1, col=1)
        fig.add_vline(x=ref_x, line=dict(color="black", dash="dot", width=1))
        return
    fig.add_annotation(xref="x domain", yref="y domain", x=1.0, y=0.0, ax=-150, ay=-24, showarrow=True, arrowhead=2,
                       arrowsize=1.2, text=f"reference point ({label}, acc 0), beyond the edge",
                       font=dict(size=11, color="#333"), bgcolor="rgba(255,255,255,0.85)", xanchor="right")


def _baseline_traces(fig, go, run: Run, col: str) -> list[Trial]:
    """The study's complete baselines as open black squares with their intervals (as in the PNG); returns them."""
    bases = [b for b in baseline_rows(run) if b.state == "complete" and b.get(col) is not None
             and b.get("val_acc") is not None]
    if not bases:
        return []
    ys = [b.val_acc for b in bases]
    err = dict(type="data", symmetric=False, color="black", thickness=1,
               array=[max(0.0, (b.get("val_acc_high") or y) - y) for b, y in zip(bases, ys)],
               arrayminus=[max(0.0, y - (b.get("val_acc_low") or y)) for b, y in zip(bases, ys)])
    fig.add_trace(go.Scatter(x=[b.row[col] for b in bases], y=ys, mode="markers+text", error_y=err,
                             text=[b.name.split(":", 1)[-1] for b in bases], textposition="top right",
                             marker=dict(symbol="square-open", size=10, color="black", line=dict(width=2)),
                             name=f"baseline, not searched ({len(bases)})",
                             hovertext=[html.escape(f"{b.name}: " + acc_interval_text(b.val_acc, b.get("val_acc_low"), b.get("val_acc_high"),
                                                                          b.get("n_replicates"))) for b in bases],
                             hoverinfo="text"), row=1, col=1)
    return bases


def plotly_pareto(run: Run, objective: str, front: list[Trial], ref: dict, records: list | None = None):
    """Interactive front: ``run.trials`` are candidates (one per architecture); ``records`` the front's
    entries (with their racing ``status``)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    col, _, unit, _ = OBJECTIVES[objective]
    xlabel = x_label(run, objective)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.85, 0.15], vertical_spacing=0.03)
    statuses = [r.get("status") for r in records] if records else [None] * len(front)
    _trace_points(fig, go, state_groups(run), front, col, ref[col], statuses)
    bases = _baseline_traces(fig, go, run, col)
    bounds = [t.get(k) for k in LOW_HIGH.get(col, ()) for t in run.trials]  # error bars stay inside the frame
    log, ref_in, rng = x_frame([t.get(col) for t in run.trials] + bounds + [b.row[col] for b in bases], ref[col])
    accs = [v for t in list(run.trials) + bases if t.get("val_acc") is not None
            for v in (t.get("val_acc_low"), t.val_acc, t.get("val_acc_high")) if v is not None]
    lo, hi = (min(accs), max(accs)) if accs else (0.0, 1.0)
    pad = max(0.08 * (hi - lo), 0.01)
    y_range = [max(0.0, lo - pad), min(1.0, hi + 1.6 * pad)]  # framed on the data, as the PNG: not from 0
    _mark_reference(fig, go, ref[col], ref_in, ref_text(ref[col], unit), y_range[0])
    fig.update_yaxes(title_text="validation accuracy", tickformat=".0%", row=1, col=1, range=y_range)
    fig.update_yaxes(showticklabels=False, range=[0, 1], title_text="not trained", row=2, col=1)
    fig.update_xaxes(type="log" if log else "linear", range=rng)
    fig.update_xaxes(title_text=xlabel, row=2, col=1)
    fig.update_layout(title=f"{run.name}: mean accuracy vs {OBJECTIVES[objective][1]}", height=560, template="plotly_white",
                      legend=dict(orientation="h", y=-0.2), margin=dict(l=60, r=30, t=60, b=40))
    return fig


def _accuracy_traces(fig, go, scaling: dict, settings: list, rep: str, color: str) -> None:
    """Error bars (in the line's trace), the saturating fit with its band, significant steps as annotations."""
    line = scaling["lines"].get(rep) or {}
    drawn = fit_positions(line, settings)
    if drawn:
        fx, mid, lo, hi = drawn
        fig.add_trace(go.Scatter(x=fx + fx[::-1], y=hi + lo[::-1], fill="toself", fillcolor=color, opacity=0.15,
                                 line=dict(width=0), hoverinfo="skip", name=f"{rep}: fit band", legendgroup=rep,
                                 showlegend=False), row=1, col=1)
        fig.add_trace(go.Scatter(x=fx, y=mid, mode="lines", line=dict(color=color, dash="dash", width=1),
                                 name=f"{rep}: saturating fit", legendgroup=rep, hoverinfo="skip"), row=1, col=1)
    rows = {settings.index(tuple(r["kernels"])): r for r in scaling["rows"] if r["reparam"] == rep}
    for st in line.get("steps", []):
        if st["significant"]:
            a, b = settings.index(tuple(st["from"])), settings.index(tuple(st["to"]))
            top = max(rows[i]["val_acc_high"] or rows[i]["val_acc_mean"] for i in (a, b))
            fig.add_annotation(x=(a + b) / 2, y=top, text=f"<b>{html.escape(step_text(st).split(' [')[0])} *</b>",
                               showarrow=False, yshift=10, font=dict(size=11, color=color), row=1, col=1)


def _scaling_trace(go, scaling: dict, settings: list, key: str, rep: str, color: str, first: bool):
    rows = sorted((settings.index(tuple(r["kernels"])), r) for r in scaling["rows"]
                  if r["reparam"] == rep and r[key] is not None)
    if not rows:
        return None
    extra = {}
    if key == "val_acc_mean":
        lo = [r["val_acc_mean"] - r["val_acc_low"] if r["val_acc_low"] is not None else 0 for _, r in rows]
        hi = [r["val_acc_high"] - r["val_acc_mean"] if r["val_acc_high"] is not None else 0 for _, r in rows]
        extra = dict(error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, color=color),
                     hovertext=[f"{dot(r['kernels'])}, re-param {rep}: "
                                f"{acc_interval_text(r['val_acc_mean'], r['val_acc_low'], r['val_acc_high'], r['n_replicates'])}"
                                for _, r in rows], hoverinfo="text")
    return go.Scatter(x=[p for p, _ in rows], y=[r[key] for _, r in rows], mode="lines+markers",
                      name=f"re-param {rep}", legendgroup=rep, showlegend=first, line=dict(color=color), **extra)


def plotly_scaling(run: Run, scaling: dict):
    """2x2 panels against kernel setting; accuracy with intervals, the fit and its band, significant steps."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = [dot(k) for k in scaling["kernel_settings"]]
    settings = [tuple(k) for k in scaling["kernel_settings"]]
    how = latency_short(latency_setting(run))
    panels = (("val_acc_mean", "validation accuracy: mean, interval; * significant step"),
              ("latency_ms", "deploy latency (ms)" + (f"<br><sup>{html.escape(how)}</sup>" if how else "")),
              ("flops", "FLOPs (multiply-adds)"), ("params", "parameters"))
    fig = make_subplots(rows=2, cols=2, subplot_titles=[p[1] for p in panels])
    reps = sorted({r["reparam"] for r in scaling["rows"]}, key=lambda s: (s != "none", s))
    for i, (key, _title) in enumerate(panels):
        for j, rep in enumerate(reps):
            color = LINE_COLORS[j % len(LINE_COLORS)]
            trace = _scaling_trace(go, scaling, settings, key, rep, color, i == 0)
            if trace is not None:
                fig.add_trace(trace, row=i // 2 + 1, col=i % 2 + 1)
            if key == "val_acc_mean":
                _accuracy_traces(fig, go, scaling, settings, rep, color)
    for i in range(4):
        fig.update_xaxes(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels,
                         range=[-0.4, len(labels) - 0.6], row=i // 2 + 1, col=i % 2 + 1)
    accs = [v for r in scaling["rows"] for v in (r["val_acc_low"], r["val_acc_high"], r["val_acc_mean"]) if v is not None]
    span = (max(accs) - min(accs)) or 0.05 if accs else 0.0
    fig.update_yaxes(tickformat=".0%", row=1, col=1,  # framed on the intervals, not on the fit's band
                     range=[max(0.0, min(accs) - 0.08 * span), min(1.0, max(accs) + 0.18 * span)] if accs else None)
    fig.update_layout(title=f"{run.name}: kernel-size scaling ({blocks_label(scaling['base']['blocks'])})", height=680,
                      template="plotly_white")
    return fig
