"""Multi-objective successive halving keeps the fast end of the front that ASHA on accuracy cuts off."""
import math

from ray.tune.schedulers import TrialScheduler

from lkscale.pruning import crowding, keep_top, nondominated_layers
from lkscale.search.schedulers import MultiObjectiveASHA


class FakeTrial:
    def __init__(self, tid):
        self.trial_id = tid


def test_layers_and_crowding():
    pts = {"a": (0.9, 10.0), "b": (0.5, 1.0), "c": (0.7, 5.0), "d": (0.6, 6.0), "e": (0.4, 20.0)}
    assert nondominated_layers(pts) == [["a", "b", "c"], ["d"], ["e"]]
    cd = crowding(pts, ["a", "b", "c"])
    assert math.isinf(cd["a"]) and math.isinf(cd["b"]) and cd["c"] > 0


def test_keep_top_keeps_fast_small_model():
    # accuracy-only ranking would drop "fast" (lowest accuracy); it is non-dominated on latency
    pts = {"big": (0.80, 40.0), "mid": (0.75, 30.0), "worse": (0.70, 35.0), "fast": (0.50, 2.0)}
    kept = keep_top(pts, 0.5)
    assert "fast" in kept and "big" in kept and "worse" not in kept


def test_scheduler_rungs_and_decisions():
    s = MultiObjectiveASHA(max_t=4, grace_period=1, reduction_factor=2)
    assert s.rungs == [1, 2]
    res = lambda acc, lat, ep: {"epoch": ep, "val_acc": acc, "latency_ms": lat}  # noqa: E731
    assert s.on_trial_result(None, FakeTrial("big"), res(0.8, 40, 1)) == TrialScheduler.CONTINUE  # too few to judge
    assert s.on_trial_result(None, FakeTrial("fast"), res(0.3, 1, 1)) == TrialScheduler.CONTINUE  # non-dominated
    assert s.on_trial_result(None, FakeTrial("bad"), res(0.2, 50, 1)) == TrialScheduler.STOP  # dominated by both
    # each trial is judged once per rung; infeasible/failed results are never judged
    assert s.on_trial_result(None, FakeTrial("big"), res(0.8, 40, 1)) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, FakeTrial("x"), {**res(0.0, 99, 1), "infeasible": True}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, FakeTrial("big"), res(0.85, 40, 4)) == TrialScheduler.CONTINUE  # final epoch
