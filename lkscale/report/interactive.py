"""Interactive figures of a run (plotly) for ``report.html``.

The axes are framed on the data: a reference point far beyond the measured costs (a loose budget) would
squeeze every trial into a sliver of the plot, so it is then marked by an arrow at the right edge instead.
"""
from __future__ import annotations

import html
import math

from lkscale.report.figures import state_groups
from lkscale.report.labels import OBJECTIVES, blocks_label, dcn_label, dot, fmt_count, ref_text, reparam_label
from lkscale.rundir import Run, Trial

_STYLE = {"complete": dict(color="#1f77b4", symbol="circle"), "pruned": dict(color="#ff7f0e", symbol="circle-open"),
          "running": dict(color="#9467bd", symbol="diamond-open")}
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def hover(t: Trial) -> str:
    acc = "-" if t.get("val_acc") is None else f"{t.val_acc:.2%}"
    lat = "-" if t.get("latency_ms") is None else f"{t.latency_ms:.3g} ms"
    return (f"<b>{html.escape(str(t.name))}</b><br>state: {t.state}<br>block: {blocks_label(t.get('blocks'))}"
            f"<br>kernels: {dot(t.get('kernels'))}<br>depths: {dot(t.get('depths'))}<br>widths: "
            f"{dot(t.get('widths'))}<br>re-param: {reparam_label(t.get('reparam'))}<br>DCN groups: "
            f"{dcn_label(t.get('dcn_groups'))}<br>params: {fmt_count(t.get('params'))}<br>FLOPs: "
            f"{fmt_count(t.get('flops'))}<br>latency: {lat}<br>val acc: {acc}"
            f"<br>epochs: {t.get('epochs_done', '-')}/{t.get('epochs_budget', '-')}"
            + (f"<br>error: {html.escape(str(t.get('error'))[:120])}" if t.get("error") else ""))


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


def _trace_points(fig, go, groups: dict, front: list[Trial], col: str, ref_x: float) -> None:
    for state in ("complete", "pruned", "running"):
        ts = [t for t in groups.get(state, []) if t.get(col) is not None and t.get("val_acc") is not None]
        if ts:
            fig.add_trace(go.Scatter(x=[t.row[col] for t in ts], y=[t.val_acc for t in ts], mode="markers",
                                     name=f"{state} ({len(ts)})", marker=dict(size=9, **_STYLE[state]),
                                     hovertext=[hover(t) for t in ts], hoverinfo="text"), row=1, col=1)
    if front:
        fig.add_trace(go.Scatter(x=[t.row[col] for t in front], y=[t.val_acc for t in front], mode="lines+markers",
                                 line=dict(shape="hv", color="#d62728"), marker=dict(symbol="star", size=14),
                                 name=f"Pareto front ({len(front)})", hovertext=[hover(t) for t in front],
                                 hoverinfo="text"), row=1, col=1)
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


def _mark_reference(fig, go, ref_x: float, ref_in: bool, label: str) -> None:
    if ref_in:
        fig.add_trace(go.Scatter(x=[ref_x], y=[0], mode="markers", marker=dict(symbol="cross", size=12, color="black"),
                                 name=f"reference point ({label}, acc 0)", hoverinfo="name", cliponaxis=False),
                      row=1, col=1)
        fig.add_vline(x=ref_x, line=dict(color="black", dash="dot", width=1))
        return
    fig.add_annotation(xref="x domain", yref="y domain", x=1.0, y=0.0, ax=-150, ay=-24, showarrow=True, arrowhead=2,
                       arrowsize=1.2, text=f"reference point ({label}, acc 0), beyond the edge",
                       font=dict(size=11, color="#333"), bgcolor="rgba(255,255,255,0.85)", xanchor="right")


def plotly_pareto(run: Run, objective: str, front: list[Trial], ref: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    col, xlabel, unit, _ = OBJECTIVES[objective]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.85, 0.15], vertical_spacing=0.03)
    _trace_points(fig, go, state_groups(run), front, col, ref[col])
    log, ref_in, rng = x_frame([t.get(col) for t in run.trials], ref[col])
    _mark_reference(fig, go, ref[col], ref_in, ref_text(ref[col], unit))
    accs = [t.val_acc for t in run.trials if t.get("val_acc") is not None]
    fig.update_yaxes(title_text="validation accuracy", tickformat=".0%", row=1, col=1,
                     range=[0, min(1.0, (max(accs) if accs else 1.0) * 1.12 + 0.02)])
    fig.update_yaxes(showticklabels=False, range=[0, 1], title_text="not trained", row=2, col=1)
    fig.update_xaxes(type="log" if log else "linear", range=rng)
    fig.update_xaxes(title_text=xlabel, row=2, col=1)
    fig.update_layout(title=f"{run.name}: accuracy vs {xlabel}", height=560, template="plotly_white",
                      legend=dict(orientation="h", y=-0.2), margin=dict(l=60, r=30, t=60, b=40))
    return fig


def plotly_scaling(run: Run, scaling: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = [dot(k) for k in scaling["kernel_settings"]]
    settings = [tuple(k) for k in scaling["kernel_settings"]]
    panels = (("val_acc_mean", "validation accuracy"), ("latency_ms", "deploy latency (ms)"),
              ("flops", "FLOPs (multiply-adds)"), ("params", "parameters"))
    fig = make_subplots(rows=2, cols=2, subplot_titles=[p[1] for p in panels])
    reps = sorted({r["reparam"] for r in scaling["rows"]}, key=lambda s: (s != "none", s))
    for i, (key, _title) in enumerate(panels):
        for j, rep in enumerate(reps):
            pts = sorted((settings.index(tuple(r["kernels"])), r[key]) for r in scaling["rows"]
                         if r["reparam"] == rep and r[key] is not None)
            if pts:
                fig.add_trace(go.Scatter(x=[labels[p[0]] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                         name=f"re-param {rep}", legendgroup=rep, showlegend=(i == 0),
                                         line=dict(color=_COLORS[j % len(_COLORS)])),
                              row=i // 2 + 1, col=i % 2 + 1)
    for i in range(4):
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels, row=i // 2 + 1, col=i % 2 + 1)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_layout(title=f"{run.name}: kernel-size scaling ({blocks_label(scaling['base']['blocks'])})", height=620,
                      template="plotly_white")
    return fig
