"""The report's answer: first lines with intervals, decisions in summary.json, one-replicate intervals said
for what they are, degenerate fits never printed as numbers (run folders built as tests/test_report.py does)."""
from __future__ import annotations

import json
import os

import numpy as np

from lkscale.config import AnalysisConfig
from lkscale.report.labels import acc_interval_text
from lkscale.report.make import make_report
from lkscale.report.markdown import fit_text
from lkscale.report.significance import analyse_line
from lkscale.search.driver import front_table
from test_report import write_replicate_run


def test_first_lines_answer_the_question_with_intervals(tmp_path):
    run, _ = write_replicate_run(str(tmp_path / "reps"))
    make_report(run, figures=False)
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read().splitlines()
    first = md[2]  # right under the title
    assert first.startswith("**replk (re-param none)**: 7-7-7-3 beats 3-3-3-3 by +8.0 [")
    assert "gains stop by 13-13-7-3 at the latest" in first and "undecided: 7-7-7-3 -> 13-13-7-3" in first
    assert "replicates would decide it" in first and "replicates per setting at the line's paired sd" in first
    assert "minimum detectable step (80% power" in first and "(90% intervals, margin +-1 point)" in first
    summary = json.load(open(os.path.join(run, "summary.json")))["report"]
    assert summary["answer"][0] in md[2]
    dec = summary["decisions"]["scaling0"]["none"]
    assert [s["verdict"] for s in dec["steps"]] == ["better", "undecided", "undecided"]
    assert dec["margin"] == 1.0 and dec["mde"] > 0 and all(s["replicates_needed"] for s in dec["steps"][1:])


def test_margin_comes_from_the_study(tmp_path):
    import yaml

    run, _ = write_replicate_run(str(tmp_path / "wide"))
    path = os.path.join(run, "study.yaml")
    study = yaml.safe_load(open(path))
    study["analysis"] = {"margin": 3.0}
    yaml.safe_dump(study, open(path, "w"))
    res = make_report(run, figures=False)
    line = res["kernel_scaling"]["lines"]["none"]
    assert line["margin"] == 3.0
    assert [s["verdict"] for s in line["steps"]] == ["better", "equivalent", "equivalent"]  # +-3 points is wide (Holm over the line)


def test_one_replicate_intervals_say_what_they_cover(tmp_path):
    assert acc_interval_text(0.361, 0.341, 0.383, 1) == "36.1% [34.1-38.3] (n=1: val sampling only)"
    assert acc_interval_text(0.361, 0.341, 0.383, 3) == "36.1% [34.1-38.3] (n=3)"
    run, _ = write_replicate_run(str(tmp_path / "one"), replicates=1)
    make_report(run, figures=False)
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "(n=1" in ln]
    assert rows and all("(n=1: val sampling only)" in ln for ln in rows)
    head = front_table(run).splitlines()[0]
    assert "n=1: the CI is validation sampling only" in head


def test_degenerate_fit_is_not_printed_as_numbers():
    settings = [[3, 3, 3, 3], [7, 7, 7, 3], [13, 13, 7, 3], [25, 25, 7, 3], [31, 29, 27, 13]]
    rng = np.random.default_rng(0)
    k = np.array([3, 7, 13, 25, 31])
    reps = [{r: float(0.40 + 0.004 * kk + rng.normal(0, 0.002)) for r in range(3)} for kk in k]  # never levels off
    line = analyse_line(settings, reps, 1, 64, analysis=AnalysisConfig())
    assert line["fit"] is None and "not identifiable" in line["fit_note"]
    text = fit_text(line)
    assert "not identifiable" in text and "a = " not in text


def test_a_setting_with_one_replicate_left_does_not_break_the_report(tmp_path):
    """A damaged row left out (or a setting racing never grew) leaves one setting with one shared replicate:
    its comparisons have a difference but no interval, and the report says so instead of crashing."""
    import csv

    run, _ = write_replicate_run(str(tmp_path / "thin"))
    path = os.path.join(run, "trials.csv")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    first = rows[0]["name"]
    kept = [r for r in rows if not (r["name"] == first and r["replicate"] not in ("0", ""))]
    assert len(kept) < len(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    make_report(run, figures=False)
    md = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    assert "one shared replicate: no interval" in md or "(n=1" in md


def test_an_adaptive_study_is_decided_at_its_per_look_alpha(tmp_path):
    """Adaptive replicates spend alpha over their looks; the report's verdicts must not re-decide at the
    nominal alpha (that would undo the correction): the line is analysed at alpha / looks."""
    import yaml

    run, _ = write_replicate_run(str(tmp_path / "adaptive"))
    path = os.path.join(run, "study.yaml")
    study = yaml.safe_load(open(path))
    study["search"]["adaptive"] = {"enabled": True, "looks": 2, "max_replicates": 6}
    yaml.safe_dump(study, open(path, "w"))
    line = make_report(run, figures=False)["kernel_scaling"]["lines"]["none"]
    assert line["alpha"] == 0.025
    study["search"]["adaptive"]["enabled"] = False
    yaml.safe_dump(study, open(path, "w"))
    assert make_report(run, figures=False)["kernel_scaling"]["lines"]["none"]["alpha"] == 0.05
