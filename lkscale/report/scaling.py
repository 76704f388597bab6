"""Kernel-size scaling of a run: accuracy (mean over replicates with its interval) and costs against kernel
setting, the steps between neighbouring settings tested over replicates, beside RepLKNet's Table 5.

Works on *candidates* (``lkscale.rundir.candidates``: one row per architecture, accuracy the mean over
its complete replicates with ``val_acc_low``/``val_acc_high``), not on trial rows.
"""
from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict

from lkscale.config import AnalysisConfig
from lkscale.intervals import accuracy_interval
from lkscale.report.labels import REPLKNET_TABLE5, reparam_label
from lkscale.report.significance import analyse_line, analysis_of
from lkscale.rundir import Run, Trial


def kernel_scaling(run: Run, confidence: float = 0.95) -> dict | None:
    """Accuracy, latency, FLOPs and params against kernel size, one line per re-param setting.

    ``run.trials`` are candidates (one per architecture). Only candidates sharing one base (blocks,
    depths, widths, DCN groups, stem stride: the most common base among those with several kernel
    settings) are compared, so the kernel is the only thing changing along a line. ``None`` when the
    study does not vary kernel size.
    """
    found = kernel_scalings(run, confidence)
    return found[0] if found else None


def kernel_scalings(run: Run, confidence: float = 0.95) -> list[dict]:
    """One scaling analysis per base architecture that was tried with several kernel settings (e.g. one for
    RepLK and one for ConvNeXt blocks in a study that varies the family too), most kernel settings first."""
    costed = [t for t in run.trials if t.get("kernels") and t.get("flops") is not None]
    bases: dict[str, list[Trial]] = defaultdict(list)
    for t in costed:
        key = json.dumps([t.get("blocks"), t.get("depths"), t.get("widths"), t.get("dcn_groups"), t.get("stem_stride")])
        bases[key].append(t)
    ranked = sorted(((len({tuple(t.kernels) for t in ts}), len(ts), key) for key, ts in bases.items()), reverse=True)
    input_size = (run.study.get("data") or {}).get("input_size")
    analysis = analysis_of(run.study)
    return [_scaling_of(key, bases[key], len(costed), confidence, input_size, analysis)
            for n_k, _n, key in ranked if n_k > 1]


def setting_replicates(done: list[Trial]) -> dict[int, float]:
    """{replicate: accuracy} of a setting: per replicate index, the mean over its complete candidates (one
    candidate per setting in the usual case: then its own replicates)."""
    acc: dict[int, list[float]] = defaultdict(list)
    for t in done:
        for r, a in (t.get("replicates") or {0: t.val_acc}).items():
            acc[int(r)].append(float(a))
    return {r: statistics.fmean(v) for r, v in sorted(acc.items())}


def _accuracy(done: list[Trial], confidence: float) -> dict:
    if not done:
        return {"val_acc_mean": None, "val_acc_low": None, "val_acc_high": None, "val_acc_best": None,
                "n_replicates": 0, "replicates": {}, "interval": "", "val_n": None}
    reps = setting_replicates(done)
    if len(done) == 1 and done[0].get("val_acc_low") is not None:
        t = done[0]
        low, high, method = t.val_acc_low, t.val_acc_high, t.get("interval_method", "")
    else:
        iv = accuracy_interval(reps, n_val=done[0].get("val_n"), confidence=confidence)
        low, high, method = iv.low, iv.high, iv.method
    finite = (lambda v: None if v is None or v != v else float(v))
    return {"val_acc_mean": statistics.fmean(reps.values()), "val_acc_low": finite(low), "val_acc_high": finite(high),
            "val_acc_best": max(t.val_acc for t in done), "n_replicates": len(reps), "replicates": reps,
            "interval": method, "val_n": done[0].get("val_n")}


_DROPPED = re.compile(r"stage (\d+): branches \[(.*?)\] dropped")


def requested_reparam(t: Trial) -> str:
    """The re-param setting the study asked for: the branches kept plus those dropped where the kernel was not
    larger (named in the trial's notes), so e.g. 3-3-3-3 (branch dropped everywhere) and 7-7-7-3 + 5x5 lie on
    one scaling line."""
    rep = [list(st) for st in (t.get("reparam") or [])]
    for m in _DROPPED.finditer(t.get("notes") or ""):
        i = int(m.group(1))
        if i < len(rep):
            rep[i] += [b.strip().strip("'\"") for b in m.group(2).split(",") if b.strip()]
    return reparam_label(rep)


def _scaling_rows(members: list, kernel_order: list, confidence: float) -> list[dict]:
    def med(ts: list, key: str):
        vals = [t.row[key] for t in ts if t.get(key) is not None]
        return statistics.median(vals) if vals else None

    groups: dict[tuple, list[Trial]] = defaultdict(list)
    for t in members:
        groups[(tuple(t.kernels), requested_reparam(t))].append(t)
    rows = []
    for (kern, rep), ts in sorted(groups.items(), key=lambda kv: (kernel_order.index(kv[0][0]), kv[0][1] != "none", kv[0][1])):
        done = [t for t in ts if t.state == "complete" and t.get("val_acc") is not None]
        rows.append({
            "kernels": list(kern), "reparam": rep, "trials": len(ts), "complete": len(done),
            **_accuracy(done, confidence),
            "latency_ms": med(ts, "latency_ms"), "latency_low_ms": med(ts, "latency_low_ms"),
            "latency_high_ms": med(ts, "latency_high_ms"), "flops": med(ts, "flops"), "params": med(ts, "params"),
            "deploy_params": med(ts, "deploy_params"),
        })
    return rows


def _lines(rows: list[dict], stride, input_size, confidence: float, analysis: AnalysisConfig) -> dict[str, dict]:
    """Decisions, fit and verdict per re-param setting (settings with a complete result, in kernel order)."""
    out = {}
    for rep in sorted({r["reparam"] for r in rows}, key=lambda s: (s != "none", s)):
        line = [r for r in rows if r["reparam"] == rep and r["replicates"]]
        val_n = [int(r["val_n"]) for r in line if r.get("val_n")]
        out[rep] = analyse_line([r["kernels"] for r in line], [r["replicates"] for r in line], stride, input_size,
                                confidence, analysis, 100 / max(val_n) if val_n else None)
    return out


def _scaling_of(base_key: str, members: list, n_costed: int, confidence: float, input_size,
                analysis: AnalysisConfig) -> dict:
    blocks, depths, widths, dcn, stride = json.loads(base_key)
    kernel_order = sorted({tuple(t.kernels) for t in members}, key=lambda k: (max(k), sum(k), k))
    rows = _scaling_rows(members, kernel_order, confidence)

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
        "lines": _lines(rows, stride, input_size, confidence, analysis),
        "confidence": confidence,
        "change": {"from": list(lo), "to": list(hi), "params": change("params"), "deploy_params": change("deploy_params"),
                   "flops": change("flops"), "latency_ms": change("latency_ms")},
        "replknet_table5": REPLKNET_TABLE5,
        "same_setting_as_replknet": comparable,
        "excluded_trials": n_costed - len(members),
    }
