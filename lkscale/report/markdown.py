"""``report.md``: settings, trial counts, fronts, scaling tables (GitHub-flavoured markdown)."""
from __future__ import annotations

import os

import yaml

from lkscale.report.labels import (OBJECTIVES, STATE_MEANING, acc_text, blocks_label, dcn_label, dot, fmt_count,
                                   ms_text, pct, ref_text, reparam_label)
from lkscale.rundir import REPORT_HTML, STATES, Run, Trial

FRONT_HEADER = ("#", "name", "block", "kernels", "depths", "widths", "DCN groups", "re-param", "params", "FLOPs",
                "latency (ms)", "val acc")
SCALING_HEADER = ("kernels", "re-param", "trials (complete)", "val acc mean (best)", "latency (ms)", "FLOPs", "params",
                  "deploy params")


def _table(header: tuple | list, rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def front_rows(front: list[Trial]) -> list[list[str]]:
    return [[str(i), f"`{t.name}`", blocks_label(t.get("blocks")), dot(t.get("kernels")), dot(t.get("depths")),
             dot(t.get("widths")), dcn_label(t.get("dcn_groups")), reparam_label(t.get("reparam")),
             fmt_count(t.get("params")), fmt_count(t.get("flops")), ms_text(t.get("latency_ms")), acc_text(t.val_acc)]
            for i, t in enumerate(front, 1)]


def scaling_rows(scaling: dict) -> list[list[str]]:
    out = []
    for r in scaling["rows"]:
        acc = "-" if r["val_acc_mean"] is None else f"{r['val_acc_mean']:.2%} ({r['val_acc_best']:.2%})"
        out.append([dot(r["kernels"]), r["reparam"], f"{r['trials']} ({r['complete']})", acc, ms_text(r["latency_ms"]),
                    fmt_count(r["flops"]), fmt_count(r["params"]), fmt_count(r["deploy_params"])])
    return out


def comparison_rows(run: Run, scaling: dict) -> list[list[str]]:
    """This study's relative change from the smallest to the largest kernel beside RepLKNet's Table 5."""
    c, t5 = scaling["change"], scaling["replknet_table5"]
    size = (run.study.get("data") or {}).get("input_size", "?")
    return [["RepLKNet Table 5 (ImageNet, 224 px)", dot(t5["from"]), dot(t5["to"]),
             f"{pct(t5['params_change'])} (71.8M -> 79.3M)", f"{pct(t5['flops_change'])} (12.9G -> 15.3G)", "-"],
            [f"this study ({size} px)", dot(c["from"]), dot(c["to"]),
             f"{pct(c['deploy_params'])} (deploy form; train form {pct(c['params'])})", pct(c["flops"]),
             pct(c["latency_ms"])]]


def scaling_note(scaling: dict) -> str:
    if scaling["same_setting_as_replknet"]:
        return ("Same kernel range and block family as RepLKNet's Table 5, so the trend is directly comparable "
                "(the base is smaller and the input smaller, which shifts the share of depthwise weights).")
    return ("The study's base or kernel range differs from RepLKNet's ([3,3,3,3] -> [31,29,27,13] on a 4-stage "
            "RepLKNet), so the comparison shows the direction of the trend only.")


def base_text(scaling: dict) -> str:
    b = scaling["base"]
    return (f"Base: {blocks_label(b['blocks'])}, depths {dot(b['depths'])}, widths {dot(b['widths'])}, "
            f"DCN groups {dcn_label(b['dcn_groups'])}, stem stride {b['stem_stride']}"
            + (f" ({scaling['excluded_trials']} trials with another base shown separately or left out)"
               if scaling["excluded_trials"] else "")
            + ". Accuracy is the mean over complete trials (best in brackets); costs are per architecture.")


def settings_rows(run: Run, code: str = "`") -> list[tuple[str, str]]:
    """(setting, value) rows of the study; ``code`` wraps the study name (markdown backticks, or none)."""
    s, b = run.study, run.budgets
    data, proxy, search = s.get("data") or {}, s.get("proxy") or {}, s.get("search") or {}
    pr = search.get("pruning") or {}
    return [
        ("study", f"{code}{run.name}{code}" + (f" — {s['description']}" if s.get("description") else "")),
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


def front_text(fr: dict, col: str, unit: str, n_complete: int) -> list[str]:
    ref = fr["reference"]
    return [f"{len(fr['front'])} of {n_complete} complete trials are non-dominated (maximise accuracy, minimise {col}).",
            f"Hypervolume: **{fr['hypervolume']:.6g}** (accuracy x {unit}); normalised by the reference box: "
            f"**{fr['hypervolume_normalized']:.4f}**. Reference point: accuracy 0, {col} = {ref_text(ref[col], unit)} "
            f"({ref['source']}). Trials at or beyond the reference add nothing."]


def _trials_section(result: dict) -> list[str]:
    counts = result["counts"]
    rows = [[s, str(counts.get(s, 0)), STATE_MEANING[s]] for s in STATES]
    rows += [[s, str(counts[s]), ""] for s in sorted(set(counts) - set(STATES))]
    rows.append(["**total**", f"**{sum(counts.values())}**", ""])
    saved, budget = result["trial_epochs_saved"], result.get("trial_epochs_budget")
    return (["", "## Trials", ""] + _table(("state", "trials", "meaning"), rows)
            + ["", f"Trial-epochs saved by pruning: **{saved}**" + (f" of {budget} budgeted" if budget else "")
               + " (sum over pruned trials of epochs budgeted minus epochs trained)."])


def _fronts_section(result: dict, fronts: dict, figures: dict) -> list[str]:
    L: list[str] = []
    for key, (col, xlabel, unit, _b) in OBJECTIVES.items():
        fr = result["fronts"][key]
        L += ["", f"## Pareto front: validation accuracy vs {xlabel}", ""]
        L += [line for p in front_text(fr, col, unit, result["counts"].get("complete", 0)) for line in (p, "")]
        L += _table(FRONT_HEADER, front_rows(fronts[key])) if fr["front"] else ["_No complete trials yet: no front._"]
        if figures.get(key):
            L += ["", f"![accuracy vs {col}]({os.path.basename(figures[key])})"]
    return L


def _scaling_section(run: Run, scalings: list[dict], figures: dict) -> list[str]:
    L = ["", "## Kernel-size scaling", ""]
    if not scalings:
        L.append("_This study does not vary kernel size within one base architecture: no scaling table._")
    for n, scaling in enumerate(scalings):
        if len(scalings) > 1:
            L += [f"### {blocks_label(scaling['base']['blocks'])}", ""]
        L += [base_text(scaling), ""] + _table(SCALING_HEADER, scaling_rows(scaling))
        L += ["", "Relative change from the smallest to the largest kernel setting, beside RepLKNet (Ding et al. 2022, "
                  "Table 5):", ""]
        L += _table(("", "from", "to", "params", "FLOPs", "latency"), comparison_rows(run, scaling))
        L += ["", scaling_note(scaling)]
        if figures.get(f"scaling{n}"):
            L += ["", f"![kernel-size scaling]({os.path.basename(figures[f'scaling{n}'])})", ""]
    return L


def markdown(run: Run, result: dict, fronts: dict, scalings: list[dict], figures: dict) -> str:
    """The whole ``report.md``; ``fronts`` maps objective -> the front's Trials, ``figures`` name -> PNG path."""
    L: list[str] = [f"# Search report: {run.name}", "", f"Run folder: `{run.path}`", "", "## Study settings", ""]
    L += _table(("setting", "value"), [list(r) for r in settings_rows(run)])
    if run.study:
        L += ["", "<details><summary>study.yaml (resolved)</summary>", "", "```yaml",
              yaml.safe_dump(run.study, sort_keys=False, default_flow_style=None).rstrip(), "```", "", "</details>"]
    L += _trials_section(result)
    L += _fronts_section(result, fronts, figures)
    L += _scaling_section(run, scalings, figures)
    L += ["", "## Files", ""] + [f"- `{os.path.basename(p)}` ({k})" for k, p in figures.items() if p]
    L += [f"- `{REPORT_HTML}`: the same tables and the figures, interactive (hover a point for its architecture; "
          "filter the trials table)", ""]
    return "\n".join(L)
