"""The numbers: how a proxy ranks against high fidelity, and how a pruning rung ranks against the final
proxy accuracy (the run's own learning curves). JSON-ready dicts; each statistic with its percentile
bootstrap interval over candidates (``lkscale.rank_agreement``)."""
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


def fidelity_statistics(rows: list[dict], reference: tuple[float, float], k: int = 3, warn_tau: float = 0.5,
                        seed: int = 0, n_resamples: int = 1000) -> dict:
    """Proxy vs high fidelity over the finished retrains in ``rows`` (``proxy_acc``, ``high_acc``,
    ``latency_ms``): tau, rho, top-k recall, front kept, hypervolume ratio, each with a 95% interval."""
    done = [r for r in rows if r.get("state") == "complete" and r.get("high_acc") is not None
            and r.get("proxy_acc") is not None and r.get("latency_ms") is not None]
    out: dict = {"n": len(done), "reference": list(reference), "k": k, "warn_tau": warn_tau}
    if len(done) < 3:
        out["warning"] = f"warning: {len(done)} finished retrain(s): too few for rank statistics (need 3)"
        return out
    cols = [[float(r[c]) for r in done] for c in ("proxy_acc", "high_acc", "latency_ms")]
    stats = fidelity_summary(*cols, reference=reference, k=min(k, len(done)), n_resamples=n_resamples, seed=seed)
    out.update({name: iv.to_dict() for name, iv in stats.items()})
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
