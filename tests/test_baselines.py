"""Baselines (issue 23): named timm models / lkscale presets trained beside a study's candidates with the same
proxy settings and replicate seeds, never on a front, compared with the front at the study's confidence."""
import json
import math
import os

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from lkscale.baselines import Baseline
from lkscale.report import make_report
from lkscale.report.baselines import compare, comparisons, markdown_lines
from lkscale.rundir import Trial, candidates, front_of, load_run, read_trials, write_trials
from lkscale.study import StudyError, load_study, parse_study
from test_search_contracts import run, study_file, trained

SMOKE = os.path.join(REPO, "studies", "smoke.yaml")


def _smoke(**over):
    with open(SMOKE) as f:
        raw = yaml.safe_load(f)
    raw.update(over)
    return raw


# ------------------------------------------------------------------------------------------ the study section
def test_names_resolve_and_read_back():
    s = parse_study(_smoke(baselines=["resnet10t", "preset:replk_proxy", "timm:convnext_atto"]))
    assert [b.name for b in s.baselines] == ["timm:resnet10t", "preset:replk_proxy", "timm:convnext_atto"]
    assert parse_study(yaml.safe_load(s.to_yaml())).baselines == s.baselines  # study.yaml as resolved reads back
    assert load_study(os.path.join(REPO, "studies", "pareto.yaml")).baselines  # the shipped study has some


@pytest.mark.parametrize("given, needle", [
    (["resnet10"], "baselines[0]: 'resnet10' is not a timm model or an lkscale preset; did you mean resnet10t"),
    (["lcnet_050", "nope_net"], "baselines[1]: 'nope_net' is not"),
    (["convnext_tiny"], "both a timm model and an lkscale preset: write timm:convnext_tiny or preset:convnext_tiny"),
    (["timm:replk_proxy"], "'replk_proxy' is not a timm model"),
    (["lcnet_050", "timm:lcnet_050"], "timm:lcnet_050 is named twice"),
    ("lcnet_050", "expected a list of model names"),
])
def test_bad_names_are_one_error_at_load(given, needle):
    with pytest.raises(StudyError) as e:
        parse_study(_smoke(baselines=given))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_predicted_latency_cannot_time_a_timm_model():
    raw = _smoke(baselines=["lcnet_050"])
    raw["budgets"] = {"latency": {"source": "predicted", "table": "t.json"}}
    with pytest.raises(StudyError, match="baselines: baselines need budgets.latency.source: measured"):
        parse_study(raw)


def test_a_model_that_cannot_take_the_images_is_an_error_naming_it_never_a_resize(tmp_path):
    from lkscale.search.baselines import prepare_baselines
    from lkscale.search.objective import Objective

    raw = _smoke(baselines=["lcnet_050", "inception_v3"])
    raw["data"] = {"dataset": "synthetic", "train_per_class": 2, "val_per_class": 1, "input_size": 16}
    s = parse_study(raw)
    with pytest.raises(StudyError) as e:
        prepare_baselines(s, Objective(s, str(tmp_path)), lambda m: None)
    assert str(e.value).startswith("baselines[1]: inception_v3 does not run on 16 px, 3-channel images")
    assert "never resizes" in str(e.value)
    # the adaptation timm offers: another channel count and class count
    m = Baseline("timm", "lcnet_050").build(num_classes=7, in_chans=1, input_size=32).eval()
    assert m(torch.zeros(2, 1, 32, 32)).shape == (2, 7)


# ------------------------------------------------------------------------------------------ the record
def _row(name, rep, acc, lat, role="candidate", kernels=(3, 3, 3)):
    return {"trial_id": f"{name}-{rep}", "number": 0 if role == "baseline" else hash(name) % 97, "name": name,
            "state": "complete", "blocks": ["replk"] * 3 if role != "baseline" else [],
            "kernels": list(kernels) if role != "baseline" else [], "val_acc": acc, "replicate": rep, "seed": rep,
            "val_n": 1000, "latency_ms": lat, "latency_low_ms": lat * 0.98, "latency_high_ms": lat * 1.02,
            "params": 1000, "flops": 10_000, "role": role}


def test_baselines_are_never_candidates_nor_on_a_front(tmp_path):
    rows = [_row("a", r, 0.50 + 0.01 * r, 1.0) for r in range(2)] + \
           [_row("timm:big", r, 0.90, 0.5, role="baseline") for r in range(2)]  # would dominate everything
    write_trials(str(tmp_path), rows)
    back = read_trials(str(tmp_path))
    assert sorted(t.get("role") for t in back) == ["baseline", "baseline", "candidate", "candidate"]
    assert [c.name for c in candidates(back)] == ["a"]
    assert [c.name for c in front_of(back, "latency_ms")] == ["a"]
    assert [c.name for c in candidates(back, role="baseline")] == ["timm:big"]


# ------------------------------------------------------------------------------------------ the comparison
def _cand(name, accs, lat, se=0.01, role="candidate"):
    reps = {r: a for r, a in enumerate(accs)}
    half = 1.96 * se
    return Trial({"name": name, "state": "complete", "val_acc": float(np.mean(accs)), "replicates": reps,
                  "latency_ms": lat, "latency_low_ms": lat - half, "latency_high_ms": lat + half,
                  "blocks": ["replk"] * 4, "kernels": [7, 7, 7, 3], "role": role})


def test_paired_over_shared_replicates():
    """Replicate noise shared by member and baseline (common random numbers) cancels in the paired difference:
    +2 points at every replicate is significant although the replicates spread over 20 points."""
    shared = [0.40, 0.60, 0.50, 0.45, 0.55]
    m = _cand("m", [s + 0.02 + d for s, d in zip(shared, [0.003, -0.002, 0.001, 0.0, -0.001])], 1.0)
    b = _cand("timm:resnet10t", shared, 1.0, role="baseline")
    c = compare(m, b, 0.95)
    assert c["n"] == 5 and c["acc_rel"] == 1 and c["dominates"]
    assert 1.5 < c["acc_low"] < 2.0 < c["acc_high"] < 2.5
    [res] = comparisons([m], [b], 0.95)
    assert res["sentence"].startswith("replk 7-7-7-3 is 2.0 [") and "points more accurate at 1.00x the latency " \
                                                                   "of timm:resnet10t: it dominates" in res["sentence"]


def test_one_replicate_no_accuracy_claim_and_the_closest_is_named():
    m = _cand("m", [0.55], 2.0)
    b = _cand("timm:x", [0.50], 1.0, role="baseline")
    c = compare(m, b)
    assert c["acc_rel"] == 0 and c["lat_rel"] == -1 and not c["dominates"]
    [res] = comparisons([m], [b])
    assert res["sentence"].startswith("No front member dominates timm:x at 95%: the closest, replk 7-7-7-3, is 5.0 "
                                      "points more accurate at 2.00x the latency") and "one shared replicate" in \
        res["sentence"]


def test_no_false_dominance_over_a_front_of_equals():
    """Known truth: 5 front members exactly as accurate and as fast as the baseline (shared replicate noise
    sd 3 points, own noise sd 1 point, latency measured with se 2%). "Some member dominates" must stay at
    or below alpha = 0.05 — Bonferroni over the members; without it the rate is 0.073 here (measured)."""
    rng = np.random.default_rng(0)
    worlds, k, hits = 600, 5, 0
    for _ in range(worlds):
        shared = 0.5 + rng.normal(0, 0.03, 3)
        b = _cand("timm:b", list(shared + rng.normal(0, 0.01, 3)), 1.0 + rng.normal(0, 0.02), 0.02, "baseline")
        front = [_cand(f"m{i}", list(shared + rng.normal(0, 0.01, 3)), 1.0 + rng.normal(0, 0.02), 0.02)
                 for i in range(k)]
        hits += any(compare(m, b, 0.95, k)["dominates"] for m in front)
    rate, se = hits / worlds, math.sqrt(0.05 * 0.95 / worlds)
    assert rate <= 0.05 + 2 * se, rate


# ------------------------------------------------------------------------------------------ a real training
def test_a_tiny_timm_model_trains_with_the_candidates_seeds(monkeypatch, tmp_path):
    """The search's own trainable, on a timm model: real epochs, the replicate's seed fixes the initial weights
    (the same draws a candidate gets), identical results from the same seed, no weights file."""
    from ray import tune

    from lkscale.baselines import build_seeded
    from lkscale.config import DataConfig, TrainConfig, to_dict
    from lkscale.search.trainable import train_candidate

    reports = []
    monkeypatch.setattr(tune, "report", lambda m, checkpoint=None: reports.append(dict(m)))
    cfg = {"run_dir": str(tmp_path), "cpus_per_trial": 1, "name": "timm:lcnet_050", "role": "baseline", "spec": "",
           "data": to_dict(DataConfig(dataset="synthetic", train_per_class=8, val_per_class=4, input_size=16)),
           "proxy": to_dict(TrainConfig(epochs=2, batch_size=16, warmup_epochs=0)), "replicate": 1}
    train_candidate(cfg)
    first = [r for r in reports if r["epoch"]]
    reports.clear()
    train_candidate(cfg)
    assert [r["epoch"] for r in first] == [1, 2] and not any(r["failed"] for r in first), first
    assert [r["val_acc"] for r in first] == [r["val_acc"] for r in reports if r["epoch"]]
    assert not os.path.isdir(os.path.join(tmp_path, "weights"))
    a, b = build_seeded(Baseline("timm", "lcnet_050"), 1, 10, 3, 16), build_seeded(Baseline("timm", "lcnet_050"),
                                                                                   1, 10, 3, 16)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------------------------------ inside a search
@pytest.mark.slow
def test_search_trains_baselines_with_the_replicate_seeds_and_reports_them(tmp_path):
    """A real Ray Tune search with fixed learning curves (tests/curves.py): each baseline x replicate trained
    once, after the search, with the candidates' replicate seeds; latency measured again side by side with
    them; never on the front; the report says who dominates whom; a resume trains nothing again."""
    study = study_file(tmp_path, name="bases", search={"sampler": "grid", "trials": 3, "concurrency": 2,
                                                       "replicates": 2, "mode": "scaling"},
                       space={"stem_stride": 2, "block": "replk", "kernels": [[3, 3, 3], [13, 7, 3]],
                              "stages": [{"depth": 1, "width": 16}, {"depth": 1, "width": 32},
                                         {"depth": 1, "width": 32}]},
                       baselines=["lcnet_050", "mobilenetv3_small_050"])
    out, log = tmp_path / "run", tmp_path / "trained.log"
    run(study, out, env={"CURVES_LOG": str(log)})
    rows = read_trials(str(out))
    bases = [t for t in rows if t.get("role") == "baseline"]
    assert sorted((t.name, t.replicate) for t in bases) == [(n, r) for n in ("timm:lcnet_050",
                                                                            "timm:mobilenetv3_small_050")
                                                            for r in (0, 1)]
    seeds = {t.replicate: t.seed for t in rows if t.get("role") == "candidate"}
    assert all(t.state == "complete" and t.seed == seeds[t.replicate] for t in bases)
    assert all(t.latency_source == "measured-final" and t.params for t in bases)
    assert all(t.get("role") != "baseline" for t in front_of(candidates(rows), "latency_ms"))
    make_report(str(out))  # as `lkscale search` does at its end
    summary = load_run(str(out)).summary
    verdict = {r["baseline"]: r for r in summary["baselines"]}
    assert verdict["timm:mobilenetv3_small_050"]["dominated_by"] == []  # 60% beats every candidate's curve
    assert verdict["timm:lcnet_050"]["dominated_by"]  # 40%, slower than these tiny candidates
    assert "No front member dominates timm:mobilenetv3_small_050" in open(out / "report.md").read()
    assert "## Baselines" in open(out / "report.md").read() and "id='baselines'" in open(out / "report.html").read()
    before = trained(log)
    assert all(before[(n, str(r))] == 1 for n in ("timm:lcnet_050", "timm:mobilenetv3_small_050") for r in (0, 1))
    run(study, out, "--resume", env={"CURVES_LOG": str(log)})
    assert trained(log) == before  # nothing trained twice


def test_markdown_section_from_a_run_folder(tmp_path):
    rows = [_row("a", r, 0.50 + 0.002 * r, 1.0) for r in range(3)] + \
           [_row("timm:small", r, 0.40 + 0.002 * r + 0.001 * (r == 1), 2.0, role="baseline") for r in range(3)]
    write_trials(str(tmp_path), rows)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({"name": "x", "budgets": {"max_latency_ms": 1.5}}))
    run_ = load_run(str(tmp_path))
    import dataclasses

    cands = dataclasses.replace(run_, trials=candidates(run_.trials))
    text = "\n".join(markdown_lines(cands))
    assert "| timm:small (over latency_ms budget) |" in text
    assert "replk 3-3-3 is 10.0 [" in text and "0.50x the latency of timm:small: it dominates" in text
    assert json.load(open(tmp_path / "summary.json"))["baselines"][0]["dominated_by"] == ["a"]


def test_a_baseline_travels_to_a_remote_latency_measurement_as_a_spec_does():
    """budgets.latency.resources measures on another node from ``to_json`` texts (search.remote_latency)."""
    from lkscale.baselines import spec_from_json
    from lkscale.presets import get_preset

    b = Baseline("timm", "lcnet_050")
    assert spec_from_json(b.to_json()) == b and b.without_reparam() is b
    spec = get_preset("replk_proxy")
    assert spec_from_json(spec.to_json()) == spec


def test_interactive_front_draws_baselines_and_frames_accuracy_on_the_data(tmp_path):
    """report.html's plotly front: the baselines as their own trace (name, interval in the hover), never on the
    front line; the accuracy axis framed on what is drawn, not from 0 (issue 19: as the PNG does)."""
    import dataclasses

    from lkscale.report.interactive import plotly_pareto

    rows = [_row("a", r, 0.50 + 0.002 * r, 1.0) for r in range(3)] + [_row("b", r, 0.55 + 0.002 * r, 2.0) for r in range(3)] + \
           [_row("timm:small", r, 0.40 + 0.002 * r + 0.001 * (r == 1), 2.0, role="baseline") for r in range(3)]
    write_trials(str(tmp_path), rows)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({"name": "x"}))
    run_ = load_run(str(tmp_path))
    cands = dataclasses.replace(run_, trials=candidates(run_.trials))
    front = front_of(cands.trials, "latency_ms")
    fig = plotly_pareto(cands, "latency", front, {"latency_ms": 3.0}, None)
    base = [t for t in fig.data if (t.name or "").startswith("baseline")]
    assert len(base) == 1 and list(base[0].x) == [2.0] and list(base[0].text) == ["small"]
    assert "timm:small: 40." in base[0].hovertext[0]
    assert not any("timm:small" in str(t.text) for t in fig.data if t is not base[0])  # not a candidate
    low, high = fig.layout.yaxis.range
    assert 0.3 < low < 0.40 and 0.55 < high < 0.7, (low, high)  # the baseline (40%) and candidates inside
