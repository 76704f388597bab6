"""Non-dominated sorting and 2-D hypervolume, checked against independent brute-force computations."""
import itertools

import numpy as np
import pytest

from lkscale.pareto import crowding_distance, dominates, hypervolume_2d, non_dominated_sort, pareto_front


def _dominates_brute(a, b):
    """acc (max), cost (min): a is no worse in both and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def _hv_brute(points, ref):
    """Area of the union of rectangles [cost, ref_cost] x [0 .. acc - ref_acc], by coordinate compression.

    Every cell of the grid spanned by all point coordinates is either fully covered or not; a cell is
    covered if some point has cost <= cell's left edge and acc >= cell's top edge.
    """
    pts = [(a, c) for a, c in points if a > ref[0] and c < ref[1]]
    if not pts:
        return 0.0
    xs = sorted({c for _, c in pts} | {ref[1]})
    ys = sorted({a for a, _ in pts} | {ref[0]})
    area = 0.0
    for x0, x1 in zip(xs, xs[1:]):
        for y0, y1 in zip(ys, ys[1:]):
            if any(c <= x0 and a >= y1 for a, c in pts):
                area += (x1 - x0) * (y1 - y0)
    return area


def _random_points(seed, n=40, ties=True):
    g = np.random.default_rng(seed)
    acc = g.uniform(0.1, 0.9, n)
    cost = g.uniform(1.0, 50.0, n)
    if ties:  # repeated values and exact duplicates, as discrete search spaces produce
        acc[: n // 4] = np.round(acc[: n // 4], 1)
        cost[n // 2: n // 2 + 5] = cost[0]
        acc[-1], cost[-1] = acc[0], cost[0]
    return list(zip(acc.tolist(), cost.tolist()))


@pytest.mark.parametrize("seed", range(6))
def test_front_matches_brute_force(seed):
    pts = _random_points(seed)
    front = set(pareto_front(pts))
    for i, p in enumerate(pts):
        dominated = any(_dominates_brute(q, p) for q in pts)
        assert (i in front) == (not dominated), (i, p)


@pytest.mark.parametrize("seed", range(4))
def test_non_dominated_sort_layers(seed):
    pts = _random_points(seed, n=60)
    fronts = non_dominated_sort(pts)
    assert sorted(i for f in fronts for i in f) == list(range(len(pts)))  # a partition
    for k, f in enumerate(fronts):
        for i, j in itertools.permutations(f, 2):
            assert not _dominates_brute(pts[i], pts[j])
        if k:  # every member of front k is dominated by some member of front k-1
            for j in f:
                assert any(_dominates_brute(pts[i], pts[j]) for i in fronts[k - 1])
    assert len(fronts) > 2


def test_hypervolume_by_hand():
    pts = [(0.5, 10), (0.6, 20), (0.4, 5), (0.55, 30)]
    # staircase: [5,10) x 0.4 + [10,20) x 0.5 + [20,40) x 0.6
    assert hypervolume_2d(pts, (0.0, 40.0)) == pytest.approx(5 * 0.4 + 10 * 0.5 + 20 * 0.6)
    # a point beyond the reference latency adds nothing; a reference inside the data clips
    assert hypervolume_2d(pts + [(0.99, 40.0)], (0.0, 40.0)) == pytest.approx(19.0)
    assert hypervolume_2d(pts, (0.0, 12.0)) == pytest.approx(5 * 0.4 + 2 * 0.5)
    assert hypervolume_2d(pts, (0.45, 40.0)) == pytest.approx(10 * 0.05 + 20 * 0.15)
    assert hypervolume_2d([], (0.0, 40.0)) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_matches_rectangle_union(seed):
    pts = _random_points(seed)
    for ref in ((0.0, 60.0), (0.3, 25.0)):
        assert hypervolume_2d(pts, ref) == pytest.approx(_hv_brute(pts, ref), rel=1e-12, abs=1e-12)
    # only the front matters
    front = [pts[i] for i in pareto_front(pts)]
    assert hypervolume_2d(front, (0.0, 60.0)) == pytest.approx(hypervolume_2d(pts, (0.0, 60.0)))


def test_senses_and_errors():
    pts = [(0.5, 10.0), (0.6, 20.0)]
    flipped = [(-a, c) for a, c in pts]
    assert hypervolume_2d(flipped, (0.0, 40.0), ("min", "min")) == pytest.approx(hypervolume_2d(pts, (0.0, 40.0)))
    assert dominates((0.6, 5.0), (0.5, 5.0)) and not dominates((0.5, 5.0), (0.5, 5.0))
    assert dominates((10.0, 5.0), (9.0, 5.0), ("min", "min")) is False
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([(float("nan"), 1.0)])
    with pytest.raises(ValueError, match="reference"):
        hypervolume_2d(pts, (0.0, float("inf")))
    with pytest.raises(ValueError, match="sense"):
        pareto_front(pts, ("up", "min"))


def test_crowding_distance():
    front = [(0.4, 5.0), (0.5, 10.0), (0.6, 20.0), (0.7, 40.0)]
    d = crowding_distance(front)
    assert np.isinf(d[0]) and np.isinf(d[-1])
    # interior: normalised neighbour gaps summed over both objectives
    assert d[1] == pytest.approx((0.6 - 0.4) / 0.3 + (20 - 5) / 35)
    assert d[2] == pytest.approx((0.7 - 0.5) / 0.3 + (40 - 10) / 35)
