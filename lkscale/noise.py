"""Where the noise of a paired accuracy difference comes from: variance components under common random numbers.

A replicate of a study fixes four seeds for every network alike: the validation sample, the training
subset, the initial weights and the batch order. ``lkscale noise`` trains one pair of networks (A, B) at a
base setting and then changes one seed at a time (``subset``, ``init``, ``order`` groups, the validation
sample held fixed) and all four at once (``all``: what a study's replicates do), and scores every trained
pair image by image on a large validation sample, nested so that its first ``small`` images per class are
the study's own validation size.

The quantity of interest is the paired difference ``D = acc(A) - acc(B)`` of one replicate, on ``n``
validation images. Conditional on the trained pair, ``D`` is a mean of ``n`` per-image differences
``d_i = correct_A(i) - correct_B(i)`` with mean ``Delta`` (the pair's population difference) and variance
``S2``. So, exactly, for a fresh validation sample per replicate::

    Var(D_n) = Var(Delta)  +  E[S2] / n
               training       validation sampling

- validation sampling: ``E[S2] / n``, from the per-image differences of every trained pair (precise:
  thousands of images per pair); its interval is a t interval over the pairs.
- training, per group: on a validation set held fixed, ``Var(D_N)`` also holds the per-image churn of
  predictions between trainings (``mean_i Var(d_i) / N``); removing it gives the variance of the
  population difference, ``Var(Delta) = (Var(D_N) - mean_i Var(d_i) / N) * N / (N - 1)`` (the mean
  covariance of two different images' ``d``). Where the validation sample changes with the run (group
  ``all``), ``Var(Delta) = Var(D_N) - mean S2 / N``. The interval is the chi-square interval of
  ``Var(D_N)`` (``k - 1`` degrees of freedom for ``k`` runs) with the same correction.

One factor at a time does not assume the components add up: a network's training is chaotic, and
changing any one seed may move ``Delta`` nearly as much as changing all of them. ``additivity`` compares
the sum of the one-factor variances with the all-at-once one.

Checked by simulation with known components in ``tests/test_noise.py``.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

NOISE_JSON = "noise.json"           # the record ``lkscale noise`` writes into a study's output folder
SEED_NAMES = ("val", "subset", "init", "order")
GROUPS = ("subset", "init", "order", "all")


# ------------------------------------------------------------------------------------------ design
def design(seeds: int, base: int = 0) -> list[dict]:
    """The runs of a measurement: the base setting, then ``seeds - 1`` settings per group (the base is every
    group's first member). Ordered so that a cut-short measurement still has the base and the ``all``
    group first, then one more member of each one-factor group at a time."""
    if seeds < 2:
        raise ValueError("seeds must be >= 2 (a variance needs two runs per group)")
    runs = [{"val": base, "subset": base, "init": base, "order": base}]
    for k in range(1, seeds):
        s = base + k
        runs.append({"val": s, "subset": s, "init": s, "order": s})
    for k in range(1, seeds):
        for g in ("subset", "init", "order"):
            runs.append({**runs[0], g: base + k})
    return runs


def groups_of(seeds: dict, base: dict) -> list[str]:
    """The groups a run belongs to (the base belongs to all)."""
    diff = [k for k in SEED_NAMES if seeds[k] != base[k]]
    if not diff:
        return list(GROUPS)
    if len(diff) == 1 and diff[0] != "val":
        return [diff[0]]
    if len(diff) == len(SEED_NAMES):
        return ["all"]
    return []


# ------------------------------------------------------------------------------------------ per-image vectors
def pack(correct: np.ndarray) -> str:
    """A boolean per-image vector as base64 text (for the JSON record)."""
    return base64.b64encode(np.packbits(np.asarray(correct, bool)).tobytes()).decode()


def unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:n].astype(bool)


# ------------------------------------------------------------------------------------------ estimators
@dataclass
class Component:
    """A variance of the paired difference, in squared accuracy points, with its 95% interval."""
    name: str
    var: float
    low: float
    high: float
    runs: int
    raw_var: float = float("nan")   # Var(D_N) over the runs, before the churn correction
    note: str = ""

    @property
    def sd(self) -> float:
        return math.sqrt(max(0.0, self.var))

    def to_dict(self) -> dict:
        return {"name": self.name, "var": self.var, "sd": self.sd, "low": self.low, "high": self.high,
                "sd_low": math.sqrt(max(0.0, self.low)), "sd_high": math.sqrt(max(0.0, self.high)),
                "runs": self.runs, "raw_var": self.raw_var, "note": self.note}


def _chi2_interval(s2: float, df: int, confidence: float) -> tuple[float, float]:
    a = 1 - confidence
    return df * s2 / stats.chi2.ppf(1 - a / 2, df), df * s2 / stats.chi2.ppf(a / 2, df)


def fixed_set_component(name: str, d: np.ndarray, confidence: float = 0.95, scale: float = 100.0,
                        correct_churn: bool = True) -> Component:
    """``d``: runs x images per-image differences (-1, 0, 1) on ONE validation set. The variance of the
    population difference across the runs (the churn of single predictions removed), in points^2."""
    d = np.asarray(d, float)
    k, n = d.shape
    if k < 2:
        return Component(name, float("nan"), float("nan"), float("nan"), k, note="fewer than 2 runs")
    s2 = float(np.var(d.mean(axis=1), ddof=1))
    churn = float(np.var(d, axis=0, ddof=1).mean()) / n if correct_churn else 0.0
    f = n / (n - 1) if correct_churn else 1.0
    lo, hi = _chi2_interval(s2, k - 1, confidence)
    sc = scale ** 2
    return Component(name, sc * f * (s2 - churn), sc * max(0.0, f * (lo - churn)), sc * max(0.0, f * (hi - churn)),
                     k, raw_var=sc * s2)


def fresh_set_component(name: str, d_runs: list[np.ndarray], confidence: float = 0.95,
                        scale: float = 100.0) -> Component:
    """Runs each scored on its own validation sample (``d_runs[r]``: its per-image differences): the
    variance of the population difference, ``Var(D) - mean S2 / n`` (n: images per run, equal)."""
    k = len(d_runs)
    if k < 2:
        return Component(name, float("nan"), float("nan"), float("nan"), k, note="fewer than 2 runs")
    n = len(d_runs[0])
    means = np.array([np.mean(x) for x in d_runs], float)
    s2 = float(np.var(means, ddof=1))
    within = float(np.mean([np.var(np.asarray(x, float), ddof=1) for x in d_runs])) / n
    lo, hi = _chi2_interval(s2, k - 1, confidence)
    sc = scale ** 2
    return Component(name, sc * (s2 - within), sc * max(0.0, lo - within), sc * max(0.0, hi - within), k,
                     raw_var=sc * s2)


def validation_component(d_runs: list[np.ndarray], n: int, confidence: float = 0.95,
                         scale: float = 100.0) -> Component:
    """Validation sampling at ``n`` images: ``E[S2] / n``, S2 the per-image variance of ``d`` of each
    trained pair (a t interval over the pairs)."""
    s2s = np.array([np.var(np.asarray(x, float), ddof=1) for x in d_runs], float)
    k = len(s2s)
    m = float(s2s.mean())
    if k >= 2:
        half = float(stats.t.ppf(0.5 + confidence / 2, k - 1) * s2s.std(ddof=1) / math.sqrt(k))
    else:
        half = float("nan")
    sc = scale ** 2 / n
    return Component(f"validation ({n} images)", sc * m, sc * max(0.0, m - half), sc * (m + half), k)


# ------------------------------------------------------------------------------------------ the record
def analyse(record: dict, confidence: float = 0.95) -> dict:
    """Variance components of a measurement record (``lkscale noise``'s ``runs``), in points^2.

    Returns ``{"components": {group: Component}, "validation": {n: Component}, "observed": {n: sd of D in
    the all group}, "predicted": {n: sd}, "additivity": ...}``; ``n`` the two validation sizes."""
    n_small, n_big = int(record["val_small"]), int(record["val_big"])
    base = record["base"]
    runs = [r for r in record["runs"] if r.get("a") and r.get("b")]
    vecs = []
    for r in runs:
        big = unpack(r["a"]["correct"], n_big).astype(np.int8) - unpack(r["b"]["correct"], n_big).astype(np.int8)
        small_mask = unpack(r["a"]["small_mask"], n_big)
        vecs.append((r, big, small_mask))
    comps = {}
    for g in GROUPS:
        members = [(r, big, m) for r, big, m in vecs if g in groups_of(r["seeds"], base)]
        if g == "all":
            comps[g] = fresh_set_component(g, [big for _, big, _ in members], confidence)
        else:
            comps[g] = fixed_set_component(g, np.stack([big for _, big, _ in members]) if members else
                                           np.zeros((0, n_big)), confidence)
    val = {n_small: validation_component([big[m] for _, big, m in vecs], n_small, confidence),
           n_big: validation_component([big for _, big, _ in vecs], n_big, confidence)}
    all_members = [(big, m) for r, big, m in vecs if "all" in groups_of(r["seeds"], base)]
    observed, predicted = {}, {}
    for n, pick in ((n_small, lambda big, m: big[m]), (n_big, lambda big, m: big)):
        ds = [100.0 * float(np.mean(pick(big, m))) for big, m in all_members]
        observed[n] = {"sd": float(np.std(ds, ddof=1)) if len(ds) > 1 else float("nan"), "runs": len(ds),
                       "diffs": ds}
        predicted[n] = math.sqrt(max(0.0, comps["all"].var) + val[n].var)
    # pooled training variance: every group estimates it if one seed alone moves Delta as much as all do
    # (chaotic training; the data so far do not reject it); df-weighted, used where it exceeds the 'all' one
    dfs = {g: comps[g].runs - 1 for g in GROUPS if comps[g].runs >= 2 and comps[g].var == comps[g].var}
    pooled = sum(comps[g].var * dfs[g] for g in dfs) / sum(dfs.values()) if dfs else float("nan")
    comps["pooled"] = Component("pooled", pooled, float("nan"), float("nan"), sum(dfs.values()) + 1,
                                note="df-weighted mean of the four groups")
    train = max(comps["all"].var, pooled) if pooled == pooled else comps["all"].var
    for n in predicted:
        predicted[n] = math.sqrt(max(0.0, train) + val[n].var)
    one = [comps[g].var for g in ("subset", "init", "order")]
    additivity = {"sum_one_factor": float(sum(one)), "all_at_once": comps["all"].var}
    return {"components": comps, "validation": val, "observed": observed, "predicted": predicted,
            "additivity": additivity, "runs": len(vecs)}


def paired_sd(record: dict, n: int) -> float:
    """The predicted sd of one replicate's paired difference (points) with ``n`` validation images:
    ``sqrt(Var(Delta) + E[S2] / n)`` from the measurement (any ``n``: the validation part scales as 1/n);
    Var(Delta) the larger of the all-at-once and the pooled estimate (the cautious one)."""
    a = analyse(record)
    n_big = int(record["val_big"])
    c = a["components"]
    train = max(c["all"].var, c["pooled"].var) if c["pooled"].var == c["pooled"].var else c["all"].var
    return math.sqrt(max(0.0, train) + a["validation"][n_big].var * n_big / n)


def cost_seconds(record: dict, n: int, evals: float | None = None) -> float:
    """Seconds of one replicate of the pair with ``n`` validation images, each network on one thread:
    training plus ``evals`` scorings of ``n`` images (default: every epoch) at the measured per-image time.
    Wall seconds of the measurement's trainings: on a loaded machine, compare settings by their ratio."""
    runs = [r for r in record["runs"] if r.get("a") and r.get("b")]
    epochs = float(record["epochs"])
    tot = []
    for r in runs:
        s = 0.0
        for side in ("a", "b"):
            x = r[side]
            per_image = x["eval_big_s"] / int(record["val_big"])
            s += x["train_s"] - epochs * x["eval_small_s"] + (epochs if evals is None else evals) * per_image * n
        tot.append(s)
    return float(np.mean(tot)) if tot else float("nan")


def replicate_spread(rows: list[dict]) -> tuple[float, int]:
    """Pooled sd (points) of the paired difference between settings over their common replicates, from a
    run's trial rows (``name``, ``replicate``, ``val_acc`` as a fraction, complete ones); (nan, 0) when
    no two settings share two replicates. Returns (sd, pairs pooled)."""
    by: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.get("state", "complete") == "complete" and r.get("val_acc") not in (None, ""):
            by.setdefault(str(r["name"]), {})[int(float(r.get("replicate") or 0))] = 100.0 * float(r["val_acc"])
    names, vs = sorted(by), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(set(by[a]) & set(by[b]))
            if len(common) >= 2:
                vs.append(float(np.var([by[a][k] - by[b][k] for k in common], ddof=1)))
    return (math.sqrt(float(np.mean(vs))), len(vs)) if vs else (float("nan"), 0)


def to_json(analysis: dict) -> dict:
    """The analysis as plain data."""
    return {"components": {g: c.to_dict() for g, c in analysis["components"].items()},
            "validation": {str(n): c.to_dict() for n, c in analysis["validation"].items()},
            "observed": {str(n): v for n, v in analysis["observed"].items()},
            "predicted_sd": {str(n): v for n, v in analysis["predicted"].items()},
            "additivity": analysis["additivity"], "runs": analysis["runs"]}


__all__ = ["NOISE_JSON", "replicate_spread", "design", "groups_of", "pack", "unpack", "Component", "fixed_set_component", "fresh_set_component",
           "validation_component", "analyse", "paired_sd", "cost_seconds", "to_json", "SEED_NAMES", "GROUPS"]
