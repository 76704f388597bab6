"""Baselines in the report: does a front member dominate each of the study's baselines, at its confidence?

A baseline (``role: baseline`` rows of ``trials.csv``, see ``lkscale.baselines``) is compared with every
member of the latency front:

- accuracy: the mean paired difference over the replicates they share (common random numbers) with its
  two-sided interval at the study's confidence (``lkscale.comparisons.paired_test``); *significantly*
  more accurate when the one-sided paired t-test rejects at ``alpha / 2 / k`` (Bonferroni over the ``k``
  front members compared). One shared replicate gives no interval: the training noise is unknown, so
  accuracy is then compared by its point estimate only, and the sentence says so.
- latency: the ratio of medians, and *significantly* faster when the difference exceeds its error
  (``z = (lat_b - lat_m) / sqrt(se_m^2 + se_b^2) > z(1 - alpha / 2 / k)``; each ``se`` from its measured
  interval), as racing judges latency.

A member *dominates* the baseline when it is significantly better in one objective, significantly worse
in neither, and no worse in the other by its point estimate (racing's rule, ``lkscale.racing``). The
report names the dominating member with the largest accuracy gain, e.g. "replk 7-7-7-3 is 2.1 [0.8, 3.4]
points more accurate at 0.90x the latency of timm:resnet10t", or says that none does and names the
closest. Baselines are drawn on the Pareto figures as labelled squares (:func:`draw_baselines`), never as
part of a front.
"""
from __future__ import annotations

import math
import os

from scipy import special

from lkscale.comparisons import paired_test
from lkscale.report.labels import acc_interval_text, blocks_label, ms_interval_text, reparam_label
from lkscale.rundir import Run, Trial, candidates, front_of, read_trials_csv, update_summary

ROLE = "baseline"
SUMMARY_KEY = "baselines"


def baseline_rows(run: Run, confidence: float = 0.95) -> list[Trial]:
    """One row per baseline of the run (mean accuracy over replicates, interval), complete ones first."""
    rows = list(run.trials)
    if not any(t.get("role") == ROLE for t in rows) and os.path.isfile(run.dir.trials_csv):
        rows = read_trials_csv(run.dir.trials_csv)  # ``run`` holds candidates only: read the trial rows
    return candidates(rows, confidence, role=ROLE)


def _se(t: Trial, confidence: float) -> float:
    lo, hi = t.get("latency_low_ms"), t.get("latency_high_ms")
    if lo is None or hi is None:
        return 0.0
    return max(0.0, (float(hi) - float(lo)) / (2 * float(special.ndtri(0.5 + confidence / 2))))


def label(t: Trial) -> str:
    """``replk 7-7-7-3`` (block family and kernels; ``re-param 3|3|-`` where it has branches), else the name."""
    if t.get("kernels") and t.get("role") != ROLE:
        rep = reparam_label(t.get("reparam"))
        return f"{blocks_label(t.get('blocks'))} {'-'.join(map(str, t.get('kernels')))}" + \
            (f" re-param {rep}" if rep != "none" else "")
    return str(t.name)


def compare(member: Trial, base: Trial, confidence: float = 0.95, k: int = 1) -> dict:
    """``member`` vs ``base`` (see the module docstring); accuracies in points, ``k`` members compared."""
    alpha = (1 - confidence) / max(1, k)
    a, b = member.get("replicates") or {}, base.get("replicates") or {}
    shared = sorted(set(a) & set(b))
    out = {"member": member.name, "label": label(member), "baseline": base.name, "n": len(shared),
           "acc_diff": None, "acc_low": None, "acc_high": None, "acc_rel": 0}
    if shared:
        t = paired_test({r: 100 * a[r] for r in shared}, {r: 100 * b[r] for r in shared}, confidence=confidence)
        out.update(acc_diff=t.diff, acc_low=None if math.isnan(t.low) else t.low,
                   acc_high=None if math.isnan(t.high) else t.high)
        if len(shared) >= 2:
            up = paired_test({r: a[r] for r in shared}, {r: b[r] for r in shared}, alternative="greater").p
            down = paired_test({r: a[r] for r in shared}, {r: b[r] for r in shared}, alternative="less").p
            out["acc_rel"] = 1 if up <= alpha / 2 else (-1 if down <= alpha / 2 else 0)
    lm, lb = member.get("latency_ms"), base.get("latency_ms")
    out.update(lat_ratio=None, lat_rel=0)
    if lm and lb:
        se = math.hypot(_se(member, confidence), _se(base, confidence))
        z = (lb - lm) / se if se > 0 else math.copysign(math.inf, lb - lm) if lb != lm else 0.0
        zc = float(special.ndtri(1 - alpha / 2))
        out.update(lat_ratio=lm / lb, lat_rel=1 if z > zc else (-1 if z < -zc else 0))
    no_worse_acc = out["acc_diff"] is not None and out["acc_diff"] >= 0
    no_worse_lat = lm is not None and lb is not None and lm <= lb
    out["dominates"] = bool(out["acc_rel"] >= 0 and out["lat_rel"] >= 0 and (
        (out["acc_rel"] == 1 and no_worse_lat) or (out["lat_rel"] == 1 and no_worse_acc)))
    return out


def _diff_text(c: dict) -> str:
    d, lo, hi = c["acc_diff"], c["acc_low"], c["acc_high"]
    if d < 0:  # said as "less accurate": the interval of the baseline's lead
        d, lo, hi = -d, (None if hi is None else -hi), (None if lo is None else -lo)
    iv = f" [{lo:.1f}, {hi:.1f}]" if lo is not None else ""
    return f"{d:.1f}{iv} points {'more' if c['acc_diff'] >= 0 else 'less'} accurate"


def sentence(c: dict | None, base: Trial, confidence: float, k: int) -> str:
    """One sentence: the dominating member with the largest accuracy gain, or that none dominates."""
    name = base.name
    if c is None:
        return f"{name}: no complete front member to compare with."
    how = f"at {c['lat_ratio']:.2f}x the latency of {name}" if c["lat_ratio"] else f"than {name}"
    one = " (one shared replicate: accuracy by its point estimate, no interval)" if c["n"] < 2 else ""
    if c["dominates"]:
        return f"{c['label']} is {_diff_text(c)} {how}: it dominates {name} at {100 * confidence:.0f}% " \
               f"(Bonferroni over {k} front member(s)){one}."
    if c["acc_diff"] is None:
        return f"{name}: no front member shares a replicate with it."
    return f"No front member dominates {name} at {100 * confidence:.0f}%: the closest, {c['label']}, is " \
           f"{_diff_text(c)} {how}{one}."


def closest(cs: list[dict]) -> dict | None:
    """The most accurate member at most as slow as the baseline, else the fastest member."""
    fast = [c for c in cs if c["lat_ratio"] is not None and c["lat_ratio"] <= 1]
    if fast:
        return max(fast, key=lambda c: c["acc_diff"])
    timed = [c for c in cs if c["lat_ratio"] is not None]
    return min(timed, key=lambda c: c["lat_ratio"]) if timed else (cs[0] if cs else None)


def comparisons(front: list[Trial], bases: list[Trial], confidence: float = 0.95) -> list[dict]:
    """Per complete baseline: its numbers, every front member's comparison, the verdict and its sentence."""
    out = []
    k = max(1, len(front))
    for b in bases:
        if b.state != "complete":
            out.append({"baseline": b.name, "state": b.state, "sentence": f"{b.name}: {b.state}, no result."})
            continue
        cs = [compare(m, b, confidence, k) for m in front]
        dom = [c for c in cs if c["dominates"]]
        known = [c for c in cs if c["acc_diff"] is not None]
        pick = max(dom, key=lambda c: c["acc_diff"]) if dom else closest(known)
        out.append({"baseline": b.name, "state": "complete", "val_acc": b.get("val_acc"),
                    "val_acc_low": b.get("val_acc_low"), "val_acc_high": b.get("val_acc_high"),
                    "n_replicates": b.get("n_replicates"), "latency_ms": b.get("latency_ms"),
                    "params": b.get("params"), "flops": b.get("flops"),
                    "dominated_by": [c["member"] for c in dom], "comparisons": cs,
                    "sentence": sentence(pick, b, confidence, k)})
    return out


def _lines(front: list[Trial], bases: list[Trial], budgets: dict, confidence: float) -> tuple[list[str], list[dict]]:
    result = comparisons(front, bases, confidence)
    L = [f"Each baseline was trained with the study's proxy settings and the candidates' replicate seeds (same data "
         f"subset, batch order and initial-weight seed), its latency measured with the study's protocol, side by "
         f"side with the candidates. Compared with each of the {len(front)} latency-front member(s): paired accuracy "
         f"difference over shared replicates with its {100 * confidence:.0f}% interval, latency ratio; a member "
         f"dominates a baseline when significantly better in one objective (Bonferroni over the front), "
         f"significantly worse in neither and no worse in the other.", "",
         "| baseline | params | MACs | latency ms | accuracy % | n | dominated by |", "|---|---|---|---|---|---|---|"]
    for b, r in zip(bases, result):
        over = [k for k, key in (("params", "max_params"), ("flops", "max_flops"), ("latency_ms", "max_latency_ms"))
                if budgets.get(key) and b.get(k) is not None and b.get(k) > float(budgets[key])]
        L.append(f"| {b.name}{' (over ' + ', '.join(over) + ' budget)' if over else ''} | "
                 f"{(b.get('params') or 0) / 1e6:.2f}M | {(b.get('flops') or 0) / 1e6:.1f}M | "
                 f"{ms_interval_text(b.get('latency_ms'), b.get('latency_low_ms'), b.get('latency_high_ms'))} | "
                 f"{acc_interval_text(b.get('val_acc'), b.get('val_acc_low'), b.get('val_acc_high'), b.get('n_replicates'))}"
                 f" | {b.get('n_replicates') or 0} | {', '.join(r.get('dominated_by') or []) or 'none'} |")
    return L + [""] + [f"- {r['sentence']}" for r in result], result


def markdown_lines(cands: Run, confidence: float = 0.95) -> list[str]:
    """The report's baseline section for ``cands`` (the run with one row per candidate, as the report builds
    it); empty when the run has no baselines. The comparisons are stored in summary.json (``baselines``)."""
    bases = baseline_rows(cands, confidence)
    if not bases:
        return []
    front = front_of([t for t in cands.trials if t.get("role") != ROLE], "latency_ms")
    lines, result = _lines(front, bases, cands.budgets, confidence)
    if os.path.isdir(cands.path):
        update_summary(cands.path, {SUMMARY_KEY: result})
    return ["", "## Baselines", ""] + lines


def html_lines(run: Run, front: list[Trial], confidence: float = 0.95) -> list[str]:
    """The same section as markdown lines without its heading, for report.html (``front``: latency front)."""
    bases = baseline_rows(run, confidence)
    return _lines(front, bases, run.budgets, confidence)[0] if bases else []


def draw_baselines(ax, run: Run, col: str) -> list[float]:
    """Complete baselines on a Pareto axes as labelled black squares with their intervals; returns their x
    values (for the axis limits). Raises the accuracy axis to show them."""
    bases = [b for b in baseline_rows(run) if b.state == "complete" and b.get(col) is not None
             and b.get("val_acc") is not None]
    if not bases:
        return []
    xs, ys = [b.row[col] for b in bases], [b.val_acc for b in bases]
    ax.scatter(xs, ys, marker="s", s=46, facecolors="white", edgecolors="black", linewidths=1.4, zorder=6,
               label=f"baseline, not searched ({len(bases)})")
    for b, x, y in zip(bases, xs, ys):
        lo, hi = b.get("val_acc_low"), b.get("val_acc_high")
        xlo, xhi = (b.get("latency_low_ms"), b.get("latency_high_ms")) if col == "latency_ms" else (None, None)
        yerr = [[max(0.0, y - lo)], [max(0.0, hi - y)]] if lo is not None and hi is not None else None
        xerr = [[max(0.0, x - xlo)], [max(0.0, xhi - x)]] if xlo is not None and xhi is not None else None
        if yerr or xerr:
            ax.errorbar([x], [y], yerr=yerr, xerr=xerr, fmt="none", ecolor="black", elinewidth=0.8, capsize=2,
                        zorder=5)
        ax.annotate(b.name.split(":", 1)[-1], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
    top = max((b.get("val_acc_high") or b.val_acc) for b in bases)
    lo, hi = ax.get_ylim()
    if top * 1.08 > hi:
        ax.set_ylim(lo, min(1.0, top * 1.12 + 0.02))
    return xs


__all__ = ["baseline_rows", "compare", "closest", "comparisons", "sentence", "markdown_lines", "html_lines", "draw_baselines"]
