"""How well a cheap proxy ranks candidates against high fidelity: rank correlations, recall, bootstrap.

- :func:`bootstrap_ci` (seeded percentile bootstrap, resampling rows of paired arrays together),
  :func:`kendall_tau_b`, :func:`spearman_rho`, :func:`rank_correlation` (estimate + bootstrap CI),
  :func:`topk_recall`, :func:`fidelity_summary` (all of these for a proxy against high fidelity).

numpy/scipy only; nothing here prints. Checked against scipy in ``tests/test_stats.py``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

from .intervals import Interval
from .pareto import hypervolume_2d, pareto_front


def bootstrap_ci(data: Sequence, statistic: Callable[..., float], n_resamples: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``statistic(*data)``, resampling the rows of ``data`` together.

    ``data`` is a tuple of equal-length arrays (paired observations: one array for a plain sample).
    The resampled indices are ``default_rng(seed).integers(0, n, (n_resamples, n))``, exactly as
    ``scipy.stats.bootstrap(..., paired=True, method='percentile', rng=default_rng(seed))`` draws
    them. Resamples where the statistic is undefined (NaN, e.g. a constant resample for a
    correlation) are left out of the quantiles.
    """
    arrays = [np.asarray(d, dtype=float) for d in data]
    n = len(arrays[0])
    if n < 2 or any(len(a) != n for a in arrays):
        raise ValueError("bootstrap_ci needs equal-length arrays with at least 2 rows")
    idx = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    theta = np.array([statistic(*(a[i] for a in arrays)) for i in idx], dtype=float)
    theta = theta[~np.isnan(theta)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(theta, [alpha, 1 - alpha]) if len(theta) else (np.nan, np.nan)
    return Interval(float(statistic(*arrays)), float(low), float(high), n, confidence, "bootstrap")


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (ties corrected), from all pairs: (C - D) / sqrt((n0 - n1)(n0 - n2))."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    iu = np.triu_indices(len(x), k=1)
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    denom = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float(np.sum(sx * sy) / denom) if denom > 0 else float("nan")


def spearman_rho(x, y) -> float:
    """Spearman's rho: Pearson correlation of the ranks (ties get their average rank)."""
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def rank_correlation(x, y, method: str = "kendall", n_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Kendall tau-b or Spearman rho of paired scores with a percentile bootstrap interval over pairs."""
    fn = {"kendall": kendall_tau_b, "spearman": spearman_rho}.get(method)
    if fn is None:
        raise ValueError(f"method {method!r} not understood; use 'kendall' or 'spearman'")
    out = bootstrap_ci((x, y), fn, n_resamples, confidence, seed)
    return Interval(out.estimate, out.low, out.high, out.n, confidence, method)


def _front_kept(proxy, high, latency) -> float:
    """Share of the proxy's (accuracy, latency) front that is still non-dominated at high fidelity."""
    front = set(pareto_front(np.c_[proxy, latency]))
    return len(front & set(pareto_front(np.c_[high, latency]))) / len(front)


def _hv_ratio(proxy, high, latency, reference) -> float:
    """Hypervolume at high fidelity of the proxy's front over that of the best (high-fidelity) front."""
    best = hypervolume_2d(np.c_[high, latency], reference)
    front = pareto_front(np.c_[proxy, latency])
    return hypervolume_2d(np.c_[high, latency][front], reference) / best if best > 0 else float("nan")


def fidelity_summary(proxy, high, latency, reference, k: int = 3, n_resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, Interval]:
    """How well a proxy ranks candidates, against high-fidelity accuracies of the same candidates.

    Kendall tau-b, Spearman rho, top-k recall, the share of the proxy's front still non-dominated
    at high fidelity, and the hypervolume ratio (reference point ``(acc, latency)``, as in
    :func:`lkscale.pareto.hypervolume_2d`), each with a percentile bootstrap over candidates.
    """
    data = tuple(np.asarray(v, dtype=float) for v in (proxy, high, latency))
    stats = {"kendall_tau": lambda p, h, _: kendall_tau_b(p, h), "spearman_rho": lambda p, h, _: spearman_rho(p, h),
             f"top{k}_recall": lambda p, h, _: topk_recall(p, h, min(k, len(p))), "front_kept": _front_kept,
             "hv_ratio": lambda p, h, lat: _hv_ratio(p, h, lat, reference)}
    return {name: bootstrap_ci(data, fn, n_resamples, confidence, seed) for name, fn in stats.items()}


def topk_recall(proxy, truth, k: int) -> float:
    """Share of the ``k`` best items by ``truth`` that are also among the ``k`` best by ``proxy``.

    Higher is better for both; ties are broken by input order (a stable sort), so the result is
    deterministic.
    """
    proxy, truth = np.asarray(proxy, dtype=float), np.asarray(truth, dtype=float)
    if not 0 < k <= len(truth) or len(proxy) != len(truth):
        raise ValueError(f"need 0 < k <= n and equal lengths, got k={k}, n={len(truth)}")
    top_p = set(np.argsort(-proxy, kind="stable")[:k].tolist())
    top_t = set(np.argsort(-truth, kind="stable")[:k].tolist())
    return len(top_p & top_t) / k
