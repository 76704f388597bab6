"""Which kernel-scaling steps are real: paired tests between neighbouring settings, a saturating fit, words.

Along one line of a scaling analysis (one base architecture, one re-param setting, kernel settings in
order) every setting has accuracies by replicate index (common random numbers: replicate r used the
same data subset, batch order and init for every candidate, so settings are paired by r).

- each step between neighbouring settings: paired t-test over the replicates both have, Holm-corrected
  within the line (:func:`lkscale.scaling_fit.step_tests`);
- a saturating curve (:func:`lkscale.scaling_fit.fit_saturating`, every replicate a point) against the
  *effective kernel of the first stage* (``min(K, 2 * map - 1)`` taps on its ``map`` x ``map`` input,
  the taps that can touch the image) when that differs between all settings of the line and grows
  with them; otherwise against the setting's index (1, 2, ...), and the output says which;
- one sentence from :func:`lkscale.scaling_fit.where_gains_stop`.

With one replicate per setting nothing can be tested: the line says so (its intervals are Wilson
intervals on the validation images).
"""
from __future__ import annotations

import math

import numpy as np

from lkscale.report.labels import dot
from lkscale.space import map_sizes
from lkscale.scaling_fit import fit_saturating, step_tests, where_gains_stop

X_KERNEL = "effective stage-1 kernel"
X_INDEX = "kernel setting index"


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


def _step_record(step, settings: list, xs: list) -> dict:
    lo, hi = xs.index(step.lower), xs.index(step.upper)
    t = step.test
    fin = (lambda v: None if v is None or not math.isfinite(v) else float(v))
    return {"from": list(settings[lo]), "to": list(settings[hi]), "diff": fin(t.diff), "low": fin(t.low),
            "high": fin(t.high), "p": fin(t.p), "p_holm": fin(step.p_holm), "n": t.n, "significant": step.significant}


def _fit(xs: list, reps: list[dict], confidence: float) -> tuple[dict | None, str]:
    kx = [x for x, r in zip(xs, reps) for _ in r]
    ky = [a for r in reps for a in r.values()]
    if len(kx) < 4 or len(set(kx)) < 3:
        return None, f"No curve fitted: it needs >= 4 results at >= 3 settings ({len(kx)} at {len(set(kx))})"
    try:
        fit = fit_saturating(kx, ky)
    except (RuntimeError, ValueError) as e:
        return None, f"No curve fitted ({str(e).splitlines()[0]})"
    grid = np.linspace(min(xs), max(xs), 101)
    low, high = fit.band(grid, confidence)
    if not np.all(np.isfinite(low)):
        low, high = np.full_like(grid, np.nan), np.full_like(grid, np.nan)
    return ({**fit.to_dict(), "grid": grid.tolist(), "mid": fit.predict(grid).tolist(),
             "band_low": [None if not math.isfinite(v) else float(v) for v in low],
             "band_high": [None if not math.isfinite(v) else float(v) for v in high],
             "_fit": fit}, "")


def _sentence(xs: list, x_kind: str, settings: list, reps: list[dict], steps: list[dict], alpha: float,
              fit) -> tuple[str, float | None]:
    if max(len(r) for r in reps) < 2:
        return ("Steps cannot be tested: one replicate per setting (a setting's interval is then the Wilson interval "
                "on its validation images, none where trials.csv has no val_n); run the study with "
                "search.replicates >= 2 (3 or more to find real steps)."), None
    if x_kind == X_KERNEL:
        verdict = where_gains_stop(xs, reps, alpha, fit, what=x_kind)
        text = verdict.sentence
    else:
        verdict = where_gains_stop(xs, reps, alpha, None, what="setting")
        text = verdict.sentence + " (Settings: " + ", ".join(f"{i + 1} = {dot(s)}" for i, s in enumerate(settings)) + ")"
    if steps and steps[-1]["significant"] and (steps[-1]["diff"] or 0) > 0:
        text += f" The last step ({dot(steps[-1]['from'])} -> {dot(steps[-1]['to'])}) is still a significant gain: " \
                "larger kernels than those tried may help further."
    drops = [s for s in steps if s["significant"] and (s["diff"] or 0) < 0]
    if drops:
        text += " Significant drops: " + ", ".join(f"{dot(s['from'])} -> {dot(s['to'])}" for s in drops) + "."
    return text, verdict.setting


def analyse_line(settings: list, reps: list[dict], stem_stride: int | None, input_size: int | None,
                 confidence: float = 0.95) -> dict:
    """Steps, fit and verdict of one line: ``settings`` (kernel lists, in order) with ``reps`` (per setting
    ``{replicate: accuracy}``, complete results only; settings without any are left out by the caller)."""
    alpha = 1 - confidence
    xs, x_kind = x_values(settings, stem_stride, input_size)
    out: dict = {"settings": [list(s) for s in settings], "x": x_kind, "x_values": xs, "alpha": alpha, "steps": [], "fit": None, "fit_note": "",
                 "sentence": "", "gains_stop_at": None}
    if len(settings) < 2:
        out["sentence"] = "Only one kernel setting has a complete result: no step to test."
        return out
    testable = max(len(r) for r in reps) >= 2
    if testable:
        out["steps"] = [_step_record(s, settings, xs) for s in step_tests(xs, reps, alpha)]
    else:
        out["steps"] = [{"from": list(a), "to": list(b), "diff": next(iter(rb.values())) - next(iter(ra.values())),
                         "low": None, "high": None, "p": None, "p_holm": None, "n": 1, "significant": False}
                        for a, b, ra, rb in zip(settings, settings[1:], reps, reps[1:])]
    fit, out["fit_note"] = _fit(xs, reps, confidence) if testable else (None, "No curve fitted: one replicate per setting")
    fit_obj = fit.pop("_fit") if fit else None
    out["fit"] = fit
    out["sentence"], gains_x = _sentence(xs, x_kind, settings, reps, out["steps"], alpha, fit_obj)
    if gains_x is not None and gains_x in xs:
        out["gains_stop_at"] = list(settings[xs.index(gains_x)])
    return out


def step_text(step: dict) -> str:
    """``+2.1 pp [0.4, 3.8] *`` (difference of mean accuracy in percentage points, its interval, * if
    significant after Holm); ``+2.1 pp (not testable)`` with one replicate."""
    if step["diff"] is None:
        return "-"
    d = f"{100 * step['diff']:+.1f} pp"
    if step["low"] is None:
        return d + (" (not testable: one shared replicate)" if step.get("n", 0) <= 1 else "")
    return f"{d} [{100 * step['low']:+.1f}, {100 * step['high']:+.1f}]" + (" *" if step["significant"] else "")


def p_text(step: dict) -> str:
    if step["p"] is None:
        return "-"
    return f"{step['p']:.3g} / {step['p_holm']:.3g}"
