"""The numbers: how a proxy ranks against high fidelity, and how a pruning rung ranks against the final
proxy accuracy (the run's own learning curves). JSON-ready dicts; each statistic with its percentile
bootstrap interval over candidates (``lkscale.rank_agreement``).

Proxy vs high fidelity on a stratified random sample (``lkscale.fidelity.sample``): Kendall tau and
Spearman rho estimate the *population's* (every complete candidate of the search) by weighting each pair
of sampled candidates by the inverse of its inclusion probability (Horvitz-Thompson: pi_ij = f(f-1) /
(N(N-1)) within a stratum of N with f sampled, pi_i pi_j across strata). Their interval is a stratified
bootstrap (a stratum taken whole is kept whole) in which every high-fidelity accuracy is also perturbed
by its own noise: the binomial sd of its validation images, plus ``high_sd`` (a replicate spread, when
known), since one high-fidelity run is itself a noisy measurement. The unweighted sample figures are
kept beside them (``sample_kendall_tau``), labelled as the sample's."""
from __future__ import annotations

import math

import numpy as np

from lkscale.config import rung_epochs
from lkscale.rundir import Trial
from lkscale.rank_agreement import fidelity_summary, rank_correlation, topk_recall


def trust_warning(tau: dict, threshold: float, what: str = "the proxy",
                  advice: str = "retrain a larger sample to be sure") -> str | None:
    """A warning when Kendall tau's point estimate is below ``threshold`` (stronger when even the upper end of
    its interval is), and a note when only the interval's lower end is; None when the ranking is fine."""
    est, low, high = tau["estimate"], tau["low"], tau["high"]
    if est is None or not math.isfinite(est):
        return f"warning: the rank agreement of {what} could not be measured (constant accuracies)"
    if math.isfinite(high) and high < threshold:
        return (f"warning: {what} cannot be trusted to rank: Kendall tau {est:.2f} and even its interval's upper "
                f"end {high:.2f} are below {threshold:g}")
    if est < threshold:
        return (f"warning: {what} ranks poorly: Kendall tau {est:.2f} is below {threshold:g} "
                f"(interval {low:.2f} .. {high:.2f})")
    if math.isfinite(low) and low < threshold:
        return (f"note: {what}'s Kendall tau {est:.2f} is above {threshold:g}, but its interval reaches down to "
                f"{low:.2f}: {advice}")
    return None


def pair_weights(roles, sampled: dict[str, int], population: dict[str, int]) -> np.ndarray:
    """(n, n) inverse pair-inclusion probabilities of a stratified sample (``roles[i]`` names i's stratum;
    ``sampled``/``population``: sizes per stratum); the diagonal is 0."""
    roles = list(roles)
    pi1 = np.array([sampled[r] / population[r] for r in roles], float)
    pi = np.outer(pi1, pi1)
    same = np.equal.outer(np.array(roles, object), np.array(roles, object))
    f = np.array([sampled[r] for r in roles], float)
    big = np.array([population[r] for r in roles], float)
    within = np.where(big > 1, f * (f - 1) / np.maximum(big * (big - 1), 1), 1.0)
    pi = np.where(same, within[:, None] * np.ones(len(roles)), pi)
    w = np.where(pi > 0, 1 / np.where(pi > 0, pi, 1), 0.0)
    np.fill_diagonal(w, 0.0)
    return w


def weighted_kendall(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Kendall tau-b with pair weights ``w`` (..., n, n); x, y (..., n): the last axis is the candidates."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    den = np.sqrt(np.sum(w * np.abs(sx), (-2, -1)) * np.sum(w * np.abs(sy), (-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, np.sum(w * sx * sy, (-2, -1)) / np.where(den > 0, den, 1), np.nan)


def weighted_spearman(x: np.ndarray, y: np.ndarray, wi: np.ndarray) -> np.ndarray:
    """Spearman rho of the population ranks estimated with unit weights ``wi`` (..., n) (Horvitz-Thompson
    counts of the candidates below), as a ``wi``-weighted Pearson correlation."""
    def ranks(v):
        below = (v[..., None, :] < v[..., :, None]) + 0.5 * (v[..., None, :] == v[..., :, None])
        return np.sum(wi[..., None, :] * below, -1)
    rx, ry = ranks(x), ranks(y)
    sw = np.sum(wi, -1, keepdims=True)
    mx, my = np.sum(wi * rx, -1, keepdims=True) / sw, np.sum(wi * ry, -1, keepdims=True) / sw
    cov = np.sum(wi * (rx - mx) * (ry - my), -1)
    den = np.sqrt(np.sum(wi * (rx - mx) ** 2, -1) * np.sum(wi * (ry - my) ** 2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, cov / np.where(den > 0, den, 1), np.nan)


def population_agreement(proxy, high, roles, population: dict[str, int], high_sd=None, n_resamples: int = 1000,
                         confidence: float = 0.95, seed: int = 0) -> dict:
    """Kendall tau and Spearman rho of the population, estimated from a stratified random sample (see the
    module doc): {"kendall_tau": Interval dict, "spearman_rho": Interval dict}. ``high_sd``: per candidate, the
    noise sd of its high-fidelity accuracy (same unit), used to perturb it in every bootstrap resample."""
    x, y = np.asarray(proxy, float), np.asarray(high, float)
    roles = np.array(list(roles), object)
    n = len(x)
    sampled = {r: int(np.sum(roles == r)) for r in set(roles)}
    pop = {r: max(int(population.get(r, 0)), sampled[r]) for r in sampled}
    w = pair_weights(roles, sampled, pop)
    wi = np.array([pop[r] / sampled[r] for r in roles], float)
    rng = np.random.default_rng(seed)
    idx = np.empty((n_resamples, n), int)  # stratified resampling; a stratum sampled whole stays whole
    for r in sampled:
        members = np.flatnonzero(roles == r)
        idx[:, members] = members if sampled[r] >= pop[r] else rng.choice(members, (n_resamples, len(members)))
    sd = np.zeros(n) if high_sd is None else np.asarray(high_sd, float)
    yb = y[idx] + rng.normal(0, 1, idx.shape) * sd[idx]
    xb = x[idx]
    wb = w[idx[:, :, None], idx[:, None, :]] * (idx[:, :, None] != idx[:, None, :])
    q = [50 * (1 - confidence), 50 * (1 + confidence)]
    out = {}
    for name, est, boot in (("kendall_tau", weighted_kendall(x, y, w), weighted_kendall(xb, yb, wb)),
                            ("spearman_rho", weighted_spearman(x, y, wi), weighted_spearman(xb, yb, wi[idx]))):
        ok = boot[np.isfinite(boot)]
        lo, hi = np.percentile(ok, q) if ok.size else (np.nan, np.nan)
        out[name] = {"estimate": float(est), "low": float(lo), "high": float(hi), "n": n, "confidence": confidence,
                     "method": f"{name.split('_')[0]} weighted to the population (Horvitz-Thompson), stratified "
                               f"bootstrap with high-fidelity noise"}
    return out


def high_noise_sd(rows: list[dict], high_sd: float | None = None) -> np.ndarray:
    """Per row: the sd of its high-fidelity accuracy (a fraction): binomial over its ``val_n`` validation
    images (0 when unknown), plus ``high_sd`` (a replicate spread, fraction) when given."""
    out = []
    for r in rows:
        p, vn = float(r["high_acc"]), r.get("val_n")
        binom = p * (1 - p) / float(vn) if vn else 0.0
        out.append(math.sqrt(binom + (high_sd or 0.0) ** 2))
    return np.array(out)


def fidelity_statistics(rows: list[dict], reference: tuple[float, float], k: int = 3, warn_tau: float = 0.5,
                        seed: int = 0, n_resamples: int = 1000, population: dict[str, int] | None = None,
                        high_sd: float | None = None) -> dict:
    """Proxy vs high fidelity over the finished retrains in ``rows`` (``proxy_acc``, ``high_acc``,
    ``latency_ms``, ``role``): tau, rho, top-k recall, front kept, hypervolume ratio, each with a 95% interval.

    ``population``: the stratum sizes the sample was drawn from (``lkscale.fidelity.sample.strata``); with it,
    tau and rho estimate the population's (the sample's own stay as ``sample_kendall_tau``/``sample_spearman_rho``);
    without it they are the sample's and ``population_estimate`` is False."""
    done = [r for r in rows if r.get("state") == "complete" and r.get("high_acc") is not None
            and r.get("proxy_acc") is not None and r.get("latency_ms") is not None]
    out: dict = {"n": len(done), "reference": list(reference), "k": k, "warn_tau": warn_tau}
    if len(done) < 3:
        out["warning"] = f"warning: {len(done)} finished retrain(s): too few for rank statistics (need 3)"
        return out
    cols = [[float(r[c]) for r in done] for c in ("proxy_acc", "high_acc", "latency_ms")]
    stats = fidelity_summary(*cols, reference=reference, k=min(k, len(done)), n_resamples=n_resamples, seed=seed)
    out.update({name: iv.to_dict() for name, iv in stats.items()})
    roles = [r.get("role") or "" for r in done]
    out["population_estimate"] = bool(population) and all(population.get(r) for r in roles)
    if out["population_estimate"]:
        out["sample_kendall_tau"], out["sample_spearman_rho"] = out["kendall_tau"], out["spearman_rho"]
        out.update(population_agreement(cols[0], cols[1], roles, population, high_noise_sd(done, high_sd),
                                        n_resamples, seed=seed))
        out["population"] = dict(population)
    out["warning"] = trust_warning(out["kendall_tau"], warn_tau)
    return out


def _mean_kernel(t: Trial) -> float:
    ks = t.get("kernels") or []
    return float(np.mean(ks)) if ks else float("nan")


def rung_statistics(trials: list[Trial], rung: int, epochs: int, k: int = 3, keep: float = 0.5,
                    warn_tau: float = 0.5, seed: int = 0, n_resamples: int = 1000) -> dict:
    """Accuracy at epoch ``rung`` against the final proxy accuracy, over complete trials' learning curves.

    ``keep``: the share a rung keeps (1 / reduction factor); ``kept_topk`` is the share of the final top-k
    that would have been in the rung's top ``keep`` share. ``kernel_vs_gain``: Kendall tau of the mean
    kernel size against the gain after the rung (final - rung); positive means large kernels learn later.
    Only complete trials have a final accuracy, so pruned ones are left out: they were stopped for a low
    rung accuracy, and the agreement measured on the survivors is the optimistic side.
    """
    pool = [t for t in trials if t.state == "complete" and len(t.get("val_acc_epochs") or []) >= max(rung, epochs)]
    out: dict = {"rung": rung, "epochs": epochs, "n": len(pool), "k": k, "keep": keep,
                 "left_out_pruned": sum(1 for t in trials if t.state == "pruned")}
    if len(pool) < 3 or rung >= epochs:
        out["warning"] = (f"warning: {len(pool)} complete trial(s) with learning curves: too few for rung statistics"
                          if rung < epochs else f"rung {rung} is not before the last epoch {epochs}")
        return out
    at_rung = np.array([t.val_acc_epochs[rung - 1] for t in pool], float)
    final = np.array([t.val_acc_epochs[epochs - 1] for t in pool], float)
    for name, method in (("kendall_tau", "kendall"), ("spearman_rho", "spearman")):
        out[name] = rank_correlation(at_rung, final, method, n_resamples, seed=seed).to_dict()
    kk = min(k, len(pool))
    out[f"top{k}_recall"] = topk_recall(at_rung, final, kk)
    kept = set(np.argsort(-at_rung, kind="stable")[: max(1, math.ceil(keep * len(pool)))].tolist())
    best = np.argsort(-final, kind="stable")[:kk].tolist()
    out["kept_topk"] = sum(i in kept for i in best) / kk
    kern = np.array([_mean_kernel(t) for t in pool])
    if np.all(np.isfinite(kern)) and np.ptp(kern) > 0:
        out["kernel_vs_gain"] = rank_correlation(kern, final - at_rung, "kendall", n_resamples, seed=seed).to_dict()
        out["gain_by_kernel"] = {f"{kv:g}": float(np.mean((final - at_rung)[kern == kv])) for kv in sorted(set(kern))}
    out["warning"] = trust_warning(out["kendall_tau"], warn_tau, f"pruning at epoch {rung}",
                                   "a run with more complete trials would narrow it")
    return out


pruning_rungs = rung_epochs  # (epochs, grace, reduction_factor) -> the epochs a rung decides at


__all__ = ["fidelity_statistics", "rung_statistics", "trust_warning", "pruning_rungs"]
