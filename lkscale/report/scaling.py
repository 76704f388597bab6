"""Kernel-size scaling of a run: accuracy and costs against kernel setting, beside RepLKNet's Table 5."""
from __future__ import annotations

import json
import statistics
from collections import defaultdict

from lkscale.report.labels import REPLKNET_TABLE5, reparam_label
from lkscale.rundir import Run, Trial


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


def _scaling_rows(members: list, kernel_order: list) -> list[dict]:
    def med(ts: list, key: str):
        vals = [t.row[key] for t in ts if t.get(key) is not None]
        return statistics.median(vals) if vals else None

    groups: dict[tuple, list[Trial]] = defaultdict(list)
    for t in members:
        groups[(tuple(t.kernels), reparam_label(t.get("reparam")))].append(t)
    rows = []
    for (kern, rep), ts in sorted(groups.items(), key=lambda kv: (kernel_order.index(kv[0][0]), kv[0][1])):
        accs = [t.val_acc for t in ts if t.state == "complete" and t.get("val_acc") is not None]
        rows.append({
            "kernels": list(kern), "reparam": rep, "trials": len(ts), "complete": len(accs),
            "val_acc_mean": statistics.fmean(accs) if accs else None, "val_acc_best": max(accs) if accs else None,
            "latency_ms": med(ts, "latency_ms"), "flops": med(ts, "flops"), "params": med(ts, "params"),
            "deploy_params": med(ts, "deploy_params"),
        })
    return rows


def _scaling_of(base_key: str, members: list, n_costed: int) -> dict:
    blocks, depths, widths, dcn, stride = json.loads(base_key)
    kernel_order = sorted({tuple(t.kernels) for t in members}, key=lambda k: (max(k), sum(k), k))
    rows = _scaling_rows(members, kernel_order)

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
