"""``report.md``: settings, trial counts, fronts, scaling tables (GitHub-flavoured markdown)."""
from __future__ import annotations

import os

import yaml

from lkscale.report.labels import (OBJECTIVES, STATE_MEANING, acc_interval_text, blocks_label, dcn_label,
                                   dot, fmt_count, latency_text, ms_interval_text, pct, ref_text, reparam_label)
from lkscale.report.numbers import latency_setting
from lkscale.report.significance import X_KERNEL, mde_text, p_text, step_text, verdict_text
from lkscale.rundir import REPORT_HTML, STATES, Run

ACC_HEADER = "val acc: mean [95% interval] (n replicates)"
SCALING_HEADER = ("kernels", "re-param", "candidates (complete)", ACC_HEADER, "per replicate (%, r = 0, 1, ...)",
                  "latency ms [interval]", "FLOPs", "params", "deploy params")
STEPS_HEADER = ("re-param", "step", "accuracy change [interval]", "verdict", "p better / worse / equivalent (Holm)")
BEST_HEADER = ("re-param", "best vs", "best minus it [interval]", "verdict", "p better / worse / equivalent (Holm)")


def front_header(runtime: str | None = None, level: float = 0.95) -> tuple:
    acc = ACC_HEADER.replace("95%", f"{level:.0%}")
    lat = f"latency ms [interval] ({runtime})" if runtime else "latency ms [interval]"
    return ("#", "name", "block", "kernels", "depths", "widths", "DCN groups", "re-param", "params", "FLOPs", lat, acc,
            "status")


FRONT_HEADER = front_header()


def _table(header: tuple | list, rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def front_rows(front: list, statuses: list | None = None) -> list[list[str]]:
    """Rows of a front table; ``front`` holds candidates (Trials) or their records (dicts)."""
    statuses = statuses or [None] * len(front)
    return [[str(i), f"`{t.get('name')}`", blocks_label(t.get("blocks")), dot(t.get("kernels")), dot(t.get("depths")),
             dot(t.get("widths")), dcn_label(t.get("dcn_groups")), reparam_label(t.get("reparam")),
             fmt_count(t.get("params")), fmt_count(t.get("flops")),
             ms_interval_text(t.get("latency_ms"), t.get("latency_low_ms"), t.get("latency_high_ms")),
             acc_interval_text(t.get("val_acc"), t.get("val_acc_low"), t.get("val_acc_high"), t.get("n_replicates")),
             st or "-"]
            for i, (t, st) in enumerate(zip(front, statuses), 1)]


def scaling_rows(scaling: dict) -> list[list[str]]:
    out = []
    for r in scaling["rows"]:
        acc = acc_interval_text(r["val_acc_mean"], r["val_acc_low"], r["val_acc_high"], r["n_replicates"])
        reps = sorted(r["replicates"].items())
        plain = [k for k, _ in reps] == list(range(len(reps)))
        per = ", ".join(f"{'' if plain else f'r{k} '}{100 * v:.1f}" for k, v in reps) or "-"
        out.append([dot(r["kernels"]), r["reparam"], f"{r['trials']} ({r['complete']})", acc, per,
                    ms_interval_text(r["latency_ms"], r["latency_low_ms"], r["latency_high_ms"]),
                    fmt_count(r["flops"]), fmt_count(r["params"]), fmt_count(r["deploy_params"])])
    return out


def steps_rows(scaling: dict) -> list[list[str]]:
    return [[rep, f"{dot(st['from'])} -> {dot(st['to'])}", step_text(st), verdict_text(st), p_text(st)]
            for rep, line in scaling["lines"].items() for st in line["steps"]]


def best_rows(scaling: dict) -> list[list[str]]:
    """Every setting against the best of its line (best minus it)."""
    return [[rep, f"{dot(c['from'])} (best {dot(line['vs_best']['best'])})", step_text(c), verdict_text(c), p_text(c)]
            for rep, line in scaling["lines"].items() if line.get("vs_best") for c in line["vs_best"]["comparisons"]]


def significant_steps(scaling: dict) -> list[str]:
    """``7-7-7-3 -> 13-13-7-3 (re-param none): +6.0 pp [2.1, 9.9] *`` for every step decided better or worse."""
    return [f"{dot(st['from'])} -> {dot(st['to'])} (re-param {rep}): {step_text(st)} {st['verdict']}"
            for rep, line in scaling["lines"].items() for st in line["steps"] if st["significant"]]


def answer_lines(scalings: list[dict]) -> list[str]:
    """The study's answer in one sentence per scaling line (family, re-param), then the minimum detectable
    step of each: what the report's first lines say."""
    out = []
    for sc in scalings:
        fam = blocks_label(sc["base"]["blocks"])
        for rep, line in sc["lines"].items():
            if len(line["settings"]) < 2:
                continue
            who = fam + (f" (re-param {rep})" if len(sc["lines"]) > 1 or rep != "none" else "")
            out.append(f"**{who}**: {line['sentence']}" + (f" The {mde_text(line)}." if mde_text(line) else ""))
    return out


def fit_text(line: dict) -> str:
    fit = line.get("fit")
    if not fit:
        return (line.get("fit_note") or "").rstrip(".") + "." if line.get("fit_note") else ""
    a, b, c = fit["params"]
    x = ("the effective stage-1 kernel k (min(K, 2 x map - 1) taps: those that can touch the stage-1 map)"
         if line["x"] == X_KERNEL else "the kernel setting's index k (1, 2, ...: the stage-1 kernel does not grow "
                                       "along the settings)")
    shared = (" with a per-replicate offset (the noise a replicate shares across settings goes into the band)"
              if fit.get("level_df") else "")
    return (f"Saturating fit acc = {fit['formula']} against {x}, every replicate a point{shared}: a = {a:.2%}, "
            f"b = {b:.3g}, c = {c:.3g} ({fit['dof']} residual dof); its band is drawn on the figure.")


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
            + ". Accuracy is the mean over each setting's complete replicates with its interval (Student t over "
              "replicates; Wilson on the validation images with one replicate); costs are per architecture.")


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
        ("latency", latency_text(latency_setting(run))),
        ("replicates", replicates_text(run)),
        ("search", f"sampler {search.get('sampler', '-')}, {search.get('trials', '-')} trials, "
                   f"{search.get('concurrency', '-')} at a time, seed {search.get('seed', '-')}; pruning "
                   f"{pr.get('scheduler', '-')} (grace {pr.get('grace_epochs', '-')} epochs, "
                   f"reduction factor {pr.get('reduction_factor', '-')})"),
    ]


def replicates_text(run: Run) -> str:
    search = run.study.get("search") or {}
    n = run.summary.get("replicates", search.get("replicates"))
    mode = run.summary.get("mode", search.get("mode"))
    level = ((search.get("confirm") or {}).get("confidence")) or 0.95
    seen = sorted({int(t.get("replicate", 0)) for t in run.trials if t.state == "complete"})
    return (f"{n if n is not None else '-'} per candidate (common random numbers: replicate r uses seed proxy.seed + r "
            f"for data subset, batch order and init){f', mode {mode}' if mode else ''}; replicate indices with complete "
            f"results: {dot(seen) if seen else '-'}; intervals at {level:.0%}")


def member_text(rec: dict) -> str:
    return (f"`{rec.get('name')}` ({dot(rec.get('kernels'))}, "
            f"{acc_interval_text(rec.get('val_acc'), rec.get('val_acc_low'), rec.get('val_acc_high'), rec.get('n_replicates'))}, "
            f"{ms_interval_text(rec.get('latency_ms'), rec.get('latency_low_ms'), rec.get('latency_high_ms'))} ms)")


def racing_lines(racing: dict) -> tuple[str, str]:
    """The "Confirmed front" and "Tied within noise" lines (markdown)."""
    if not racing["known"]:
        why = "not determined: summary.json has no racing status (a run from before replicates, or one still running)"
        return f"**Confirmed front**: {why}.", "**Tied within noise**: not determined."
    conf = ", ".join(member_text(r) for r in racing["confirmed"]) or \
        "none (no front member is significantly better than every rival in accuracy or latency)"
    tied = ", ".join(member_text(r) for r in racing["tied"]) or "none"
    return f"**Confirmed front**: {conf}.", f"**Tied within noise**: {tied}."


def front_text(fr: dict, col: str, unit: str, n_complete: int) -> list[str]:
    ref = fr["reference"]
    return [f"{len(fr['front'])} of {n_complete} complete candidates are non-dominated on their mean accuracy over "
            f"replicates (maximise accuracy, minimise {col}).",
            f"Hypervolume: **{fr['hypervolume']:.6g}** (accuracy x {unit}); normalised by the reference box: "
            f"**{fr['hypervolume_normalized']:.4f}**. Reference point: accuracy 0, {col} = {ref_text(ref[col], unit)} "
            f"({ref['source']}). Trials at or beyond the reference add nothing."]


def trials_note(result: dict) -> str:
    return (f"{result['trials']} trial rows (one per architecture and replicate) for {result['candidates']} "
            f"architectures, {result['candidates_complete']} of them with a complete result.")


def _trials_section(result: dict) -> list[str]:
    counts = result["counts"]
    rows = [[s, str(counts.get(s, 0)), STATE_MEANING[s]] for s in STATES]
    rows += [[s, str(counts[s]), ""] for s in sorted(set(counts) - set(STATES))]
    rows.append(["**total**", f"**{sum(counts.values())}**", ""])
    saved, budget = result["trial_epochs_saved"], result.get("trial_epochs_budget")
    return (["", "## Trials", "", trials_note(result), ""] + _table(("state", "trials", "meaning"), rows)
            + ["", f"Trial-epochs saved by pruning: **{saved}**" + (f" of {budget} budgeted" if budget else "")
               + " (sum over pruned trials of epochs budgeted minus epochs trained)."])


def front_runtime(front: list) -> str | None:
    """The runtime the front's latencies were measured with (several: joined), None when none is recorded."""
    rts = sorted({str(t.get("latency_runtime")) for t in front if t.get("latency_runtime")})
    return ", ".join(rts) or None


def front_statuses(fr: dict) -> list:
    return [r.get("status") for r in fr["front"]]


def _fronts_section(result: dict, fronts: dict, figures: dict) -> list[str]:
    L: list[str] = []
    for key, (col, xlabel, unit, _b) in OBJECTIVES.items():
        fr = result["fronts"][key]
        L += ["", f"## Pareto front: validation accuracy vs {xlabel}", ""]
        L += [line for p in front_text(fr, col, unit, result["candidates_complete"]) for line in (p, "")]
        if key == "latency":
            L += [line for p in racing_lines(result["racing"]) for line in (p, "")]
        else:
            L += ["Racing statuses (confirmed / tied) refer to the latency front; FLOPs are exact, so only accuracy "
                  "is uncertain here.", ""]
        header = front_header(front_runtime(fronts[key]) if key == "latency" else None, result["confidence"])
        L += _table(header, front_rows(fronts[key], front_statuses(fr))) if fr["front"] else \
            ["_No complete trials yet: no front._"]
        if figures.get(key):
            L += ["", f"![accuracy vs {col}]({os.path.basename(figures[key])})"]
    return L


STEPS_NOTE = ("Steps between neighbouring kernel settings (same re-param setting): mean paired difference over the "
              "replicates both have, in percentage points, with its {conf} interval. Verdict: better / worse when "
              "the one-sided paired t-test at {alpha} rejects (the interval lies above / below 0), equivalent when "
              "two one-sided tests put it within +-{margin} points (the interval lies inside; this wins over a "
              "significant difference smaller than the margin), else undecided, with the replicates per setting "
              "that would decide it at the measured paired spread; p-values Holm-adjusted within each re-param "
              "line; accuracies on the validation grid get a spread floor, so identical differences never give "
              "p = 0. `*` = better or worse.")


def steps_note(scaling: dict) -> str:
    """What the steps table's intervals, verdicts and p-values mean, at the study's alpha and margin."""
    line = next(iter(scaling["lines"].values()), None) or {}
    alpha, margin = line.get("alpha", 0.05), line.get("margin", 1.0)
    return STEPS_NOTE.format(conf=f"{1 - 2 * alpha:.0%}", alpha=f"{alpha:g}", margin=f"{margin:g}")


def _scaling_section(run: Run, scalings: list[dict], figures: dict) -> list[str]:
    L = ["", "## Kernel-size scaling", ""]
    if not scalings:
        L.append("_This study does not vary kernel size within one base architecture: no scaling table._")
    for n, scaling in enumerate(scalings):
        if len(scalings) > 1:
            L += [f"### {blocks_label(scaling['base']['blocks'])}", ""]
        L += [base_text(scaling), ""] + _table(SCALING_HEADER, scaling_rows(scaling))
        L += ["", steps_note(scaling), ""]
        steps = steps_rows(scaling)
        L += _table(STEPS_HEADER, steps) if steps else ["_No two kernel settings of one re-param line both have a "
                                                        "complete result: no step to test._"]
        best = best_rows(scaling)
        if best:
            L += ["", "Every setting against the best of its line (same tests, Holm over the line):", ""]
            L += _table(BEST_HEADER, best)
        for rep, line in scaling["lines"].items():
            L += ["", f"- re-param {rep}: {line['sentence']} {fit_text(line)}".rstrip()]
        L += ["", "Relative change from the smallest to the largest kernel setting, beside RepLKNet (Ding et al. 2022, "
                  "Table 5):", ""]
        L += _table(("", "from", "to", "params", "FLOPs", "latency"), comparison_rows(run, scaling))
        L += ["", scaling_note(scaling)]
        if figures.get(f"scaling{n}"):
            L += ["", f"![kernel-size scaling]({os.path.basename(figures[f'scaling{n}'])})", ""]
    return L


def conclusions(result: dict, scalings: list[dict]) -> list[str]:
    """What the run shows, each claim with its evidence: the answer per scaling line, the confirmed front,
    the members tied within noise, the kernel-scaling steps decided better or worse."""
    conf, tied = racing_lines(result["racing"])
    L = ["", "## Conclusions", ""] + [f"- {a}" for a in answer_lines(scalings)] + [f"- {conf}", f"- {tied}"]
    for sc in scalings:
        fam = blocks_label(sc["base"]["blocks"])
        sig = significant_steps(sc)
        L.append(f"- **Kernel steps decided better or worse** ({fam}): " + ("; ".join(sig) if sig else "none") + ".")
    return L


def markdown(run: Run, result: dict, fronts: dict, scalings: list[dict], figures: dict) -> str:
    """The whole ``report.md``; ``fronts`` maps objective -> the front's candidates, ``figures`` name -> PNG path."""
    L: list[str] = [f"# Search report: {run.name}", ""]
    answer = answer_lines(scalings)
    if answer:
        L += [" ".join(answer), ""]
    L += [f"Run folder: `{run.path}`"]
    L += conclusions(result, scalings)
    L += ["", "## Study settings", ""]
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
