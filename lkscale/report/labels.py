"""Names, units and short text labels of what a report shows (no I/O, no plotting)."""
from __future__ import annotations

from typing import Any

OBJECTIVES = {  # key -> (column, axis label, unit label, budget key)
    "latency": ("latency_ms", "deploy latency (ms)", "ms", "max_latency_ms"),
    "flops": ("flops", "FLOPs (multiply-adds, deploy form)", "MACs", "max_flops"),
}
# RepLKNet (Ding et al., CVPR 2022), Table 5: RepLKNet-31B-style base on ImageNet at 224 px, kernel sizes
# [3,3,3,3] -> [31,29,27,13]: params 71.8M -> 79.3M (+10.4%), FLOPs 12.9G -> 15.3G (+18.6%).
REPLKNET_TABLE5 = {"from": [3, 3, 3, 3], "to": [31, 29, 27, 13], "params": (71.8e6, 79.3e6), "flops": (12.9e9, 15.3e9),
                   "params_change": 0.104, "flops_change": 0.186}
STATE_MEANING = {"complete": "trained for the full proxy budget (only these can be on a front)",
                 "pruned": "stopped early by the scheduler (partial accuracy)",
                 "infeasible": "over a cost budget, never trained", "failed": "error or NaN during training",
                 "running": "not finished when this report was made"}


def fmt_count(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.4g}{suf}{unit}"
    return f"{v:.0f}{unit}"


def dot(xs: Any) -> str:
    """``[3, 3, 7]`` -> ``3-3-7``; empty -> ``-``."""
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
    return dot(groups)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def acc_text(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def ms_text(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _known(*xs: float | None) -> bool:
    return all(x is not None and x == x for x in xs)  # not None, not NaN


def acc_interval_text(mean: float | None, low: float | None, high: float | None, n: int | None) -> str:
    """``61.3% [59.0-63.6] (n=3)``: mean accuracy over replicates, its interval, the replicates behind it;
    ``36.1% [34.1-38.3] (n=1: val sampling only)`` for one replicate (a Wilson interval of its validation images,
    which leaves out training noise)."""
    if mean is None:
        return "-"
    iv = f" [{100 * low:.1f}-{100 * high:.1f}]" if _known(low, high) else ""
    if n == 1 and iv:  # a Wilson interval of the validation images: it leaves out training noise
        return f"{100 * mean:.1f}%{iv} (n=1: val sampling only)"
    return f"{100 * mean:.1f}%{iv}" + (f" (n={n})" if n else "")


def sig3(x: float) -> str:
    """Three significant digits, trailing zeros kept (``2.00``, ``12.5``, ``130``)."""
    return f"{x:#.3g}".rstrip(".")


def ms_interval_text(median: float | None, low: float | None, high: float | None) -> str:
    """``2.01 [1.98-2.05]``: latency median (ms) with its interval."""
    if median is None:
        return "-"
    iv = f" [{sig3(low)}-{sig3(high)}]" if _known(low, high) else ""
    return f"{sig3(median)}{iv}"


def latency_short(lat: dict) -> str:
    """``onnxruntime, batch 1, 1 thread(s), measured-final`` (axis labels); empty when nothing is recorded."""
    if not lat.get("runtime"):
        return ""
    seen = lat.get("sources_in_trials") or []
    src = "measured-final" if "measured-final" in seen and lat.get("source") != "predicted" else (lat.get("source") or "")
    if src == "predicted" and lat.get("mape_pct") is not None:
        src += f" (MAPE {lat['mape_pct']:.1f}%)"
    parts = [lat["runtime"], f"batch {lat.get('batch_size') or '?'}", f"{lat.get('threads') or '?'} thread(s)", src]
    return ", ".join(p for p in parts if p)


def latency_text(lat: dict) -> str:
    """One line on what latency means in a run (``lkscale.report.numbers.latency_setting``)."""
    if not any(lat.get(k) for k in ("runtime", "batch_size", "threads", "source")):
        return "not recorded (a run from before latency settings were written)"
    head = (f"{lat.get('runtime') or '?'}, batch {lat.get('batch_size') or '?'}, {lat.get('threads') or '?'} "
            f"thread(s), {lat.get('input_size') or '?'} px, deploy form")
    src, seen = lat.get("source"), lat.get("sources_in_trials") or []
    if src == "predicted":
        err = f"held-out MAPE {lat['mape_pct']:.1f}%" if lat.get("mape_pct") is not None else \
            "MAPE unknown: the table could not be read"
        return f"{head}; predicted from table {lat.get('table') or '?'} ({err})"
    if "measured-final" in seen:
        rest = [s for s in seen if s != "measured-final"]
        return (f"{head}; measured-final: complete candidates measured again side by side after training "
                "(median of interleaved rounds with its interval)"
                + (f"; other rows: {', '.join(rest)} (as the sampler saw them)" if rest else ""))
    return f"{head}; {src or '?'}" + (f" (rows: {', '.join(seen)})" if seen else "") + \
        " (not measured again after training: values are what the sampler saw)"


def ref_text(value: float, unit: str) -> str:
    """A reference point's cost as text: ``50 ms`` or ``100M MACs``."""
    return fmt_count(value, " MACs") if unit == "MACs" else f"{value:g} {unit}"


# private names kept for callers of the old single-module report (export, pipelines)
_dot = dot
_pct = pct
