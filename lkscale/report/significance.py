"""Which kernel-scaling steps are real: decisions between settings, where gains stop, a saturating fit, words.

Along one line of a scaling analysis (one base architecture, one re-param setting, kernel settings in
order) every setting has accuracies by replicate index (common random numbers: replicate r used the
same data subset, batch order and init for every candidate, so settings are paired by r).

- each step between neighbouring settings, and every setting against the best: *better*, *worse*,
  *equivalent within +-margin* or *undecided* (:func:`lkscale.comparisons.decide`, Holm within the
  line's family; an undecided one with the replicates per setting that would decide it);
- where gains stop (:func:`lkscale.scaling_fit.where_gains_stop`: only when every larger setting is
  shown less than ``margin`` above it), with the line's minimum detectable effect at the measured
  paired spread;
- a saturating curve (:func:`lkscale.scaling_fit.fit_saturating`, every replicate a point, its shared
  part taken out per replicate) against the *effective kernel of the first stage* (``min(K, 2 * map - 1)``
  taps on its ``map`` x ``map`` input) when that differs between all settings of the line and grows
  with them; otherwise against the setting's index (1, 2, ...), and the output says which. A fit the
  data cannot pin down is reported as not identifiable, with the reason, never as numbers.

Decisions work in accuracy points (the report's fractions x 100); the margin, alpha and power come from
the study's ``analysis:`` section (:class:`lkscale.config.AnalysisConfig`). With one replicate per setting
nothing can be decided: the line says so (its intervals are Wilson intervals on the validation images).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from lkscale.comparisons import Decision, decision_replicates, min_detectable_effect
from lkscale.config import AdaptiveConfig, AnalysisConfig, build
from lkscale.report.labels import dot
from lkscale.scaling_fit import fit_saturating, where_gains_stop
from lkscale.space import map_sizes

X_KERNEL = "effective stage-1 kernel"
X_INDEX = "kernel setting index"


def analysis_of(study: dict) -> AnalysisConfig:
    """The study's ``analysis:`` section (defaults for a run from before it existed).

    A study with adaptive replicates (``search.adaptive``) looked at its comparisons ``looks`` times, each at
    ``alpha / looks`` (``lkscale.search.adaptive``); the report's decisions are on the same footing, so the
    correction over the looks is not undone by deciding once more at the nominal alpha."""
    an = build(AnalysisConfig, (study or {}).get("analysis"), "analysis")
    adaptive = ((study or {}).get("search") or {}).get("adaptive") or {}
    if adaptive.get("enabled"):
        looks = int(adaptive.get("looks") or AdaptiveConfig.looks)
        an = dataclasses.replace(an, alpha=an.alpha / max(1, looks))
    return an


def stage1_effective_kernel(kernels: list, stem_stride: int | None, input_size: int | None) -> int | None:
    """Taps of the first stage's kernel that can touch its input map (``min(K, 2 * map - 1)``)."""
    if not kernels or not input_size:
        return None
    m = map_sizes(int(stem_stride or 1), 1, int(input_size))[0]
    return int(min(int(kernels[0]), 2 * m - 1))


def x_values(settings: list, stem_stride: int | None, input_size: int | None) -> tuple[list[float], str]:
    """(x of every setting, what x is): the effective stage-1 kernel when it grows strictly along the
    settings, else the index 1, 2, ..."""
    ks = [stage1_effective_kernel(s, stem_stride, input_size) for s in settings]
    if all(k is not None for k in ks) and all(a < b for a, b in zip(ks, ks[1:])):
        return [float(k) for k in ks], X_KERNEL
    return [float(i + 1) for i in range(len(settings))], X_INDEX


def _fin(v):
    return None if v is None or not math.isfinite(v) else float(v)


def _record(lower, upper, d: Decision) -> dict:
    """A decision of ``upper - lower`` as plain data: differences in fractions (as the report's accuracies),
    the spread in points, Holm-adjusted p-values, the verdict and the replicates that would decide it."""
    return {"from": list(lower), "to": list(upper), "diff": _fin(d.diff / 100), "low": _fin(d.low / 100),
            "high": _fin(d.high / 100), "n": d.n, "sd_points": _fin(d.sd), "verdict": d.verdict,
            "p_better": _fin(d.p_better), "p_worse": _fin(d.p_worse), "p_equivalent": _fin(d.p_equivalent),
            "significant": d.verdict in ("better", "worse"), "replicates_needed": d.replicates_needed,
            "margin": d.margin, "confidence": 1 - 2 * d.alpha}


def _fit(xs: list, reps: list[dict], confidence: float) -> tuple[dict | None, str]:
    kx = [x for x, r in zip(xs, reps) for _ in r]
    ky = [a for r in reps for a in r.values()]
    kr = [i for r in reps for i in r]
    if len(kx) < 4 or len(set(kx)) < 3:
        return None, f"No curve fitted: it needs >= 4 results at >= 3 settings ({len(kx)} at {len(set(kx))})"
    try:
        fit = fit_saturating(kx, ky, replicate=kr if len(set(kr)) > 1 else None)
    except (RuntimeError, ValueError) as e:
        return None, f"No curve fitted ({str(e).splitlines()[0]})"
    if not fit.identifiable:
        return None, f"Saturating fit not identifiable: {fit.why}; no parameters shown"
    grid = np.linspace(min(xs), max(xs), 101)
    low, high = fit.band(grid, confidence)
    if not np.all(np.isfinite(low)):
        low, high = np.full_like(grid, np.nan), np.full_like(grid, np.nan)
    return ({**fit.to_dict(), "grid": grid.tolist(), "mid": fit.predict(grid).tolist(),
             "band_low": [None if not math.isfinite(v) else float(v) for v in low],
             "band_high": [None if not math.isfinite(v) else float(v) for v in high],
             "_fit": fit}, "")


def _pooled_sd(records: list[dict]) -> float | None:
    """The line's paired spread (points): root mean square of its neighbouring steps' spreads (each floored)."""
    sds = [r["sd_points"] for r in records if r.get("sd_points")]
    return float(np.sqrt(np.mean(np.square(sds)))) if sds else None


def analyse_line(settings: list, reps: list[dict], stem_stride: int | None, input_size: int | None,
                 confidence: float = 0.95, analysis: AnalysisConfig | None = None,
                 resolution: float | None = None) -> dict:
    """Decisions, fit and verdict of one line: ``settings`` (kernel lists, in order) with ``reps`` (per setting
    ``{replicate: accuracy}`` as fractions, complete results only; settings without any are left out by the
    caller). ``resolution``: the accuracy grid in points (100 / val_n) for the spread floor."""
    an = analysis or AnalysisConfig()
    xs, x_kind = x_values(settings, stem_stride, input_size)
    out: dict = {"settings": [list(s) for s in settings], "x": x_kind, "x_values": xs, "alpha": an.alpha,
                 "margin": an.margin, "power": an.power, "steps": [], "vs_best": None, "fit": None, "fit_note": "",
                 "sentence": "", "gains_stop_at": None, "gains_to": None, "paired_sd": None, "replicates": 0,
                 "mde": None, "decidable": False}
    if len(settings) < 2:
        out["sentence"] = "Only one kernel setting has a complete result: no step to decide."
        return out
    n = min(len(r) for r in reps)
    out["replicates"] = n
    if max(len(r) for r in reps) < 2:
        out["steps"] = [{"from": list(a), "to": list(b), "diff": next(iter(rb.values())) - next(iter(ra.values())),
                         "low": None, "high": None, "n": 1, "verdict": "undecided", "significant": False,
                         "replicates_needed": None, "p_better": None, "p_worse": None, "p_equivalent": None}
                        for a, b, ra, rb in zip(settings, settings[1:], reps, reps[1:])]
        out["fit_note"] = "No curve fitted: one replicate per setting"
        out["sentence"] = ("Nothing can be decided: one replicate per setting (a setting's interval is then the Wilson "
                           "interval of its validation images: validation sampling only, not training noise); run "
                           "the study with search.replicates >= 3.")
        return out
    pts = [{r: 100 * v for r, v in rep.items()} for rep in reps]
    what = "kernel" if x_kind == X_KERNEL else "setting"
    fit, out["fit_note"] = _fit(xs, reps, confidence)
    fit_obj = fit.pop("_fit") if fit else None
    out["fit"] = fit
    v = where_gains_stop(xs, pts, an.margin, an.alpha, resolution, fit=None, what=what, power=an.power)
    label = {x: s for x, s in zip(xs, settings)}
    out["steps"] = [_record(label[st.lower], label[st.upper], st.decision) for st in v.steps]
    out["vs_best"] = {"best": list(label[v.best]),
                      "comparisons": [_record(label[st.lower], label[st.upper], st.decision) for st in v.vs_best]}
    out["gains_stop_at"] = list(label[v.setting]) if v.setting is not None else None
    out["gains_to"] = list(label[v.gains_to]) if v.gains_to is not None else None
    out["decidable"] = True
    sd = _pooled_sd(out["steps"])
    out["paired_sd"] = sd
    if sd:
        out["mde"] = min_detectable_effect(sd, n, an.alpha, an.power, two_sided=False)
        # one sd with 2 df is too noisy to plan with: the replicates an undecided comparison needs are at the line's
        # pooled paired sd (and its own measured difference), each test at alpha / the family's size (Holm's first)
        for fam in (out["steps"], out["vs_best"]["comparisons"]):
            for rec in fam:
                if rec["verdict"] == "undecided" and rec["diff"] is not None:
                    rec["replicates_needed"] = decision_replicates(sd, an.margin, 100 * rec["diff"],
                                                                   an.alpha / len(fam), an.power)
    if fit_obj is not None and fit_obj.identifiable:
        grid = np.linspace(min(xs), max(xs), 2001)
        within = np.flatnonzero(fit_obj.params[0] - fit_obj.predict(grid) <= an.margin / 100)
        out["plateau_from"] = float(grid[within[0]]) if len(within) else None
    out["sentence"] = line_sentence(out)
    return out


def _name(setting) -> str:
    return dot(setting)


def _iv(rec: dict) -> str:
    if rec.get("diff") is None:
        return "n/a (no shared replicate)"
    if rec.get("low") is None or rec.get("high") is None:  # one shared replicate: no interval to give
        return f"{100 * rec['diff']:+.1f} (one shared replicate: no interval)"
    return f"{100 * rec['diff']:+.1f} [{100 * rec['low']:+.1f}, {100 * rec['high']:+.1f}]"


def raw_verdict(rec: dict) -> str:
    """The verdict the comparison's own interval gives, before Holm over the line."""
    m, lo, hi = rec["margin"], rec["low"], rec["high"]
    if lo is None:
        return "undecided"
    return ("equivalent" if -m < 100 * lo and 100 * hi < m else "better" if lo > 0 else "worse" if hi < 0
            else "undecided")


def line_sentence(line: dict) -> str:
    """One or two quotable sentences on a decided line (points, 1 - 2*alpha intervals): the gain shown, where
    gains stop (or that they are not shown to), the steps shown equivalent, what is undecided and its cost."""
    m, steps, settings = line["margin"], line["steps"], line["settings"]
    pts = f"{m:g} point{'s' if m != 1 else ''}"
    stop, parts = line["gains_stop_at"], []
    best = line.get("vs_best") or {}
    wins = [s for s in steps if s["verdict"] == "better"]
    bwins = [c for c in best.get("comparisons", []) if c["verdict"] == "better"
             and settings.index(c["from"]) < settings.index(best["best"])]
    if bwins:  # the best against the nearest smaller setting it is shown to beat
        w = max(bwins, key=lambda c: settings.index(c["from"]))
        if not wins or settings.index(w["from"]) >= settings.index(wins[-1]["to"]):  # only when it adds a gain
            wins = wins + [dict(w, **{"from": w["from"], "to": best["best"]})]
    if wins:
        parts.append("; ".join(f"{_name(w['to'])} beats {_name(w['from'])} by {_iv(w)} points" for w in wins[-2:]))
    if stop is not None:
        larger = settings[settings.index(stop) + 1:]
        each = "is" if len(larger) == 1 else "are each"
        if stop == settings[0]:
            parts.append(f"no setting gains {pts} or more over {_name(stop)} ({_span(larger)} {each} less than "
                         f"{pts} above it)")
        else:
            parts.append(f"gains stop by {_name(stop)} at the latest ({_span(larger)} {each} less than {pts} above it)")
    elif wins:
        parts.append("gains are not shown to stop")
    eq = [s for s in steps if s["verdict"] == "equivalent"]
    if eq:
        parts.append(", ".join(f"{_name(s['from'])} -> {_name(s['to'])}" for s in eq)
                     + f" {'is' if len(eq) == 1 else 'are each'} equivalent (within +-{pts})")
    und = [s for s in steps if s["verdict"] == "undecided"]
    if und:
        spread = f"; replicates per setting at the line's paired sd {line['paired_sd']:.2g} points" \
            if line.get("paired_sd") else ""
        parts.append("undecided: " + "; ".join(
            f"{_name(s['from'])} -> {_name(s['to'])} {_iv(s)}" + _und_note(s) for s in und) + spread)
    if not parts:
        parts.append("undecided")
    conf = f"{1 - 2 * line['alpha']:.0%}"
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + f" ({conf} intervals, margin +-{pts})."


def _und_note(rec: dict) -> str:
    notes = []
    if raw_verdict(rec) != "undecided":
        notes.append(f"{raw_verdict(rec)} alone, not after Holm over the line")
    if rec.get("replicates_needed"):
        notes.append(f"~{rec['replicates_needed']} replicates would decide it")
    return f" ({'; '.join(notes)})" if notes else ""


def _span(settings: list) -> str:
    names = [_name(s) for s in settings]
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"


def mde_text(line: dict) -> str:
    """The minimum detectable effect of the line's replicates at its measured paired spread."""
    if not line.get("mde"):
        return ""
    return (f"minimum detectable step ({line['power']:.0%} power, one-sided at {line['alpha']:g}, "
            f"n = {line['replicates']} replicates, measured paired sd {line['paired_sd']:.2g} points): "
            f"{line['mde']:.2g} points")


def step_text(step: dict) -> str:
    """``+2.1 pp [0.4, 3.8] better`` (difference of mean accuracy in percentage points, its interval, the
    verdict); ``+2.1 pp (not testable)`` with one replicate."""
    if step["diff"] is None:
        return "-"
    d = f"{100 * step['diff']:+.1f} pp"
    if step["low"] is None:
        return d + (" (not testable: one shared replicate)" if step.get("n", 0) <= 1 else "")
    return f"{d} [{100 * step['low']:+.1f}, {100 * step['high']:+.1f}]" + (" *" if step["significant"] else "")


def verdict_text(step: dict) -> str:
    """``better``, ``equivalent (+-1)``, ``undecided: needs ~9 replicates``; ``not testable`` with one replicate."""
    if step.get("low") is None:
        return "not testable"
    v = step["verdict"]
    if v == "equivalent":
        return f"equivalent (+-{step['margin']:g})"
    if v == "undecided":
        holm = f" ({raw_verdict(step)} alone, not after Holm)" if raw_verdict(step) != "undecided" else ""
        return "undecided" + holm + (f": needs ~{step['replicates_needed']} replicates" if step.get("replicates_needed")
                                     else "")
    return f"**{v}**"


def p_text(step: dict) -> str:
    """Holm-adjusted p-values of better / worse / equivalent."""
    if step.get("p_better") is None:
        return "-"
    return f"{step['p_better']:.2g} / {step['p_worse']:.2g} / {step['p_equivalent']:.2g}"
