"""The report's fidelity section: a proxy-vs-high-fidelity scatter (PNG) and its markdown, from the
``fidelity`` entry of summary.json (``lkscale.fidelity.run.statistics``)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from lkscale.fidelity.replay import fmt_range  # noqa: E402

STATS = (("kendall_tau", "Kendall tau"), ("spearman_rho", "Spearman rho"), ("front_kept", "proxy front still non-dominated"),
         ("hv_ratio", "hypervolume of the proxy front / best front"))


def _iv(d: dict | None, pct: bool = False) -> str:
    if not d or d.get("estimate") is None or not math.isfinite(d["estimate"]):
        return "n/a"
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.2f}")
    lo, hi = d.get("low"), d.get("high")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f(d["estimate"])
    return f"{f(d['estimate'])} [{f(lo)}, {f(hi)}]"


def scatter_png(rows: list[dict], path: str, stats: dict | None = None) -> str | None:
    """Proxy accuracy (x) against high-fidelity accuracy (y), front members marked; None with no rows."""
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=110)
    for role, marker, colour in (("front", "*", "tab:red"), ("spread", "o", "tab:blue")):
        pts = [(100 * float(r["proxy_acc"]), 100 * float(r["high_acc"])) for r in rows
               if r.get("role") == role or (role == "spread" and r.get("role") == "random")]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, s=90 if marker == "*" else 40, c=colour,
                       label="proxy front" if role == "front" else "rest of the sample", zorder=3)
    for r in rows:  # which network each point is: family and kernels, from the candidate's name
        label = " ".join(str(r.get("name", "")).split("-")[:2])
        if label:
            ax.annotate(label, (100 * float(r["proxy_acc"]), 100 * float(r["high_acc"])), fontsize=6.5,
                        xytext=(4, 3), textcoords="offset points", color="0.25")
    ax.set_xlabel("proxy accuracy (%)")
    ax.set_ylabel("high-fidelity accuracy (%)")
    if stats and stats.get("kendall_tau"):
        ax.set_title(f"tau {_iv(stats['kendall_tau'])}, rho {_iv(stats.get('spearman_rho'))}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def replay_lines(rp: dict) -> list[str]:
    """Markdown table of the pruning rules replayed on the run's learning curves (empty without a replay)."""
    if not rp:
        return []
    lines = ["", f"Pruning rules replayed on this run's complete learning curves ({rp['replicates']} replicate(s) x "
                 f"{rp['orders']} arrival orders, {rp['concurrency']} trials at a time; gN: first rung at epoch N, "
                 f"halving {rp['reduction_factor']:g}): mean, and its range over replicates.", "",
             "| rule | trial-epochs (share of no pruning) | proxy front kept | high-fidelity front kept | "
             "high-fidelity hypervolume ratio |", "|---|---|---|---|---|"]
    for rule, row in rp["rules"].items():
        lines.append(f"| {rule} | {fmt_range(row.get('cost'))} | {fmt_range(row.get('proxy_front_kept'))} | "
                     f"{fmt_range(row.get('hf_front_kept'))} | {fmt_range(row.get('hf_hv_ratio'), False)} |")
    return lines


def markdown_section(entry: dict, figure: str | None = None) -> str:
    """The ``## Proxy fidelity`` section of report.md from summary.json's ``fidelity`` entry."""
    s, st = entry.get("settings", {}), entry.get("proxy_vs_high", {})
    k = st.get("k", 3)
    lines = ["## Proxy fidelity", "",
             f"{st.get('n', 0)} sampled candidates (a stratified random sample: proxy front and the rest) retrained "
             f"for {s.get('epochs')} epochs ({s.get('epoch_ratio', 0):g}x the proxy's {s.get('proxy_epochs')}), "
             f"{s.get('high_train_per_class') or 'all'} training images per class, augmentation "
             f"{'on' if s.get('augment') else 'off'}, {s.get('high_input_size')} px. Intervals: 95% percentile "
             f"bootstrap over candidates; Kendall tau and Spearman rho estimate the whole search's (pairs weighted by "
             f"their inverse inclusion probability, high-fidelity noise in the interval) when the sample design is known.", "",
             "| statistic | proxy vs high fidelity |", "|---|---|"]
    for key, label in STATS[:2]:
        lines.append(f"| {label} | {_iv(st.get(key))} |")
    lines.append(f"| top-{k} recall | {_iv(st.get(f'top{k}_recall'), True)} |")
    for key, label in STATS[2:]:
        ref = st.get("reference")
        label += f" (reference: accuracy 0, {ref[1]:.3g} ms)" if key == "hv_ratio" and ref else ""
        lines.append(f"| {label} | {_iv(st.get(key), key == 'front_kept')} |")
    if st.get("warning"):
        lines += ["", f"**{st['warning']}**"]
    rungs = [r for r in entry.get("rungs", []) if r.get("kendall_tau")]
    if rungs:
        lines += ["", "Pruning rungs against the final proxy accuracy (complete trials' learning curves; pruned "
                      "trials have no final accuracy, so this is the optimistic side):", "",
                  "| rung (epoch) | trials | Kendall tau | Spearman rho | final top-k kept at the rung | "
                  "kernel size vs later gain (tau) |", "|---|---|---|---|---|---|"]
        for r in rungs:
            lines.append(f"| {r['rung']} of {r['epochs']} | {r['n']} | {_iv(r['kendall_tau'])} | "
                         f"{_iv(r['spearman_rho'])} | {100 * r['kept_topk']:.0f}% | {_iv(r.get('kernel_vs_gain'))} |")
        lines += ["", *[f"**{r['warning']}**" for r in rungs if r.get("warning")]]
    lines += replay_lines(entry.get("pruning_replay") or {})
    if figure:
        lines += ["", f"![proxy vs high fidelity]({figure})"]
    return "\n".join(lines) + "\n"
