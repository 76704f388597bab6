"""A study that can build what it names (issue 23): a block family or choice no point of the space builds is
named by `lkscale plan` and refused by `lkscale search` before anything starts; the shipped studies have none."""
import glob
import os

import pytest
import yaml

from conftest import REPO
from lkscale.reachability import check_reachable, unreachable
from lkscale.study import StudyError, load_study, parse_study


def _moga_study(**space):
    """pareto.yaml's former space at 32 px: moga needs kernels >= 7, a stride-2 stem leaves the last stage 2x2.
    540 points: more than the load-time check enumerates (512), as pareto.yaml's 864 were; a smaller space
    naming such a choice already fails when it loads (``study.check_space_builds``)."""
    sp = {"stem_stride": 2, "block": ["replk", "convnext", "moga"], "kernel": [3, 5, 7, 9, 11, 13, 15, 17, 19, 21],
          "depths": [[1, 1, 2, 1], [2, 2, 2, 2], [1, 1, 3, 1]],
          "widths": [[32, 64, 128, 256], [16, 32, 64, 128], [24, 48, 96, 192]], "reparam": [[], [3]], **space}
    return {"name": "reach", "space": sp, "data": {"dataset": "synthetic", "train_per_class": 2, "val_per_class": 1},
            "budgets": {"latency": {"runtime": "torch", "rounds": 2, "repeats": 1}},
            "search": {"sampler": "nsga2", "trials": 4}}


def test_an_unbuildable_family_is_named_with_its_reason():
    r = unreachable(parse_study(_moga_study()))
    assert r.exhaustive and r.points == 3 * 10 * 3 * 3 * 2
    [u] = r.unreachable
    assert (u.knob, u.value) == ("block", "moga") and not u.by_reject
    assert u.describe() == (f"block family moga: none of the {u.points} point(s) that choose it builds a network "
                            f"(stage 3's 2x2 map clips kernels to 3, and moga's largest (dilation-3) kernel must "
                            f"be >= 7)")
    with pytest.raises(StudyError) as e:
        check_reachable(parse_study(_moga_study()))
    assert str(e.value).startswith("space.block: block family moga: none of") and "\n" not in str(e.value)


def test_moga_builds_with_a_stride_1_stem_or_three_stages():
    assert unreachable(parse_study(_moga_study(stem_stride=1))).unreachable == []
    three = _moga_study(depths=[[1, 1, 2], [2, 2, 2], [1, 1, 3]], widths=[[32, 64, 128], [16, 32, 64], [24, 48, 96]])
    assert unreachable(parse_study(three)).unreachable == []


def test_a_choice_is_named_only_where_it_applies():
    """dcn_groups only matter on dcnv3 stages: a group count that never divides a dcnv3 width is named, and
    the replk points that ignore the knob do not make it reachable (648 points: more than the load-time
    check enumerates, so only this check can name it)."""
    raw = _moga_study(block=["replk", "dcnv3"], kernel=[3, 5, 7, 9, 11, 13, 15, 17, 19], dcn_groups=[2, 5],
                      widths=[[24, 48, 96, 192], [32, 64, 128, 256], [16, 32, 64, 128]],
                      depths=[[1, 1, 2, 1], [1, 1, 3, 1], [2, 2, 2, 2]])
    r = unreachable(parse_study(raw))
    assert r.exhaustive and r.points == 2 * 9 * 3 * 3 * 2 * 2
    assert [(u.knob, u.value) for u in r.unreachable] == [("dcn_groups", 5)]
    assert r.unreachable[0].points == 9 * 3 * 3 * 2  # the dcnv3 points that choose 5 (replk ones never do)


def test_kernel_clip_reject_is_a_warning_not_a_refusal():
    raw = _moga_study(block=["replk"], kernel=[3, 13], kernel_clip="reject")
    lines = check_reachable(parse_study(raw))
    assert len(lines) == 1 and lines[0].startswith("warning: choice kernel: 13: none of the")


def test_the_shipped_studies_build_everything_they_name():
    for path in sorted(glob.glob(os.path.join(REPO, "studies", "*.yaml"))):
        r = unreachable(load_study(path))
        assert r.unreachable == [], (path, [u.describe() for u in r.unreachable])


def test_plan_warns(tmp_path, monkeypatch, capsys):
    """`lkscale plan` names the family in its output (the costing of the 540-point space itself is stubbed by
    the plan of a one-network study: what is tested here is the reachability line)."""
    import argparse

    from lkscale.cli import plan as cli_plan
    from lkscale.search import planning

    path = tmp_path / "reach.yaml"
    path.write_text(yaml.safe_dump(_moga_study()))
    tiny = parse_study({**_moga_study(block="replk", kernel=3, depths=[1, 1, 1, 1], widths=[8, 16, 16, 16],
                                      reparam=[[]]), "search": {"sampler": "grid"}})
    real = planning.make_plan
    monkeypatch.setattr(planning, "make_plan", lambda study, **kw: real(tiny, latency=False, probe=False))
    args = argparse.Namespace(study=str(path), no_latency=True, no_probe=True, download=False, json=False)
    assert cli_plan.run(args) == 0
    out = capsys.readouterr().out
    assert "  warning: block family moga: none of the 180 point(s) that choose it builds a network (stage 3's 2x2 " \
           "map clips kernels to 3, and moga's largest (dilation-3) kernel must be >= 7): `lkscale search` refuses " \
           "this space" in out


def test_search_refuses_before_anything_starts(tmp_path):
    """The search's checks (``driver.prepare``, run before Ray starts; the CLI turns StudyError into one line
    on stderr and exit 2) refuse the space; nothing is written."""
    from lkscale.search.driver import prepare

    with pytest.raises(StudyError) as e:
        prepare(parse_study(_moga_study()), output=str(tmp_path / "run"))
    assert str(e.value).startswith("space.block: block family moga: none of the 180 point(s)")
    assert not os.path.exists(tmp_path / "run")


class _Strip:
    """Records what the figure's no-result panel writes."""

    def __init__(self):
        self.texts = []

    def text(self, x, y, s, **kw):
        self.texts.append(s)

    def __getattr__(self, name):
        return lambda *a, **k: None


def test_no_result_panel_counts_draws_that_never_built():
    from lkscale.report.figures import _untrained_strip

    strip = _Strip()
    _untrained_strip(strip, {"infeasible": [], "failed": []}, "latency_ms", "x", {"complete": 9, "infeasible": 7})
    assert strip.texts == ["7 infeasible or failed trial(s), none with a measured cost (never built or never costed)"]
    strip = _Strip()
    _untrained_strip(strip, {"infeasible": [], "failed": []}, "latency_ms", "x", {"complete": 9})
    assert strip.texts == ["no infeasible or failed trials"]
