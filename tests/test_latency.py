"""Latency measurement protocol (interleaving, repeat-on-noise, quiet slot), runtimes and the predictor.

Protocol tests drive ``run_protocol`` with a synthetic clock standing in for the real one, so they do
not depend on how fast or busy this machine is; runtimes are run for real on tiny models.
"""
import dataclasses
import json
import math

import lkscale
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from lkscale.config import LatencyConfig
from lkscale.cost import latency as L
from lkscale.cost import predictor as P
from lkscale.cost import quiet as Q
from lkscale.cost.runtimes import make_runner


def _tiny(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 4)).eval()


class SyntheticClock:
    """Stands in for the clock: seconds per call from a function of (name, this candidate's visit, global step)."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.visits: list[str] = []
        self.count: dict[str, int] = {}

    def __call__(self, name, runner, n):
        self.visits.append(name)
        visit = self.count[name] = self.count.get(name, 0) + 1
        return [self.seconds(name, visit - 2, len(self.visits) - 1)] * n  # round index; the warm-up is -1


def _runners(names):
    return {n: None for n in names}  # the synthetic clock never calls a runner


# ------------------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 9, 14, 30])
def test_median_ci_is_the_tightest_order_statistic_interval_with_95_coverage(n):
    x = np.random.default_rng(n).normal(size=n)
    lo, hi, cov = L.median_ci(x)
    s = np.sort(x)
    k = int(np.searchsorted(s, lo)) + 1  # rank of the lower end
    assert s[n - k] == hi
    assert cov == pytest.approx(1 - 2 * stats.binom.cdf(k - 1, n, 0.5) if n > 1 else 0.0)
    if 1 - 2 * stats.binom.cdf(0, n, 0.5) >= 0.95:
        assert cov >= 0.95 and 1 - 2 * stats.binom.cdf(k, n, 0.5) < 0.95  # one rank further in is too narrow
    else:
        assert (lo, hi) == (s[0], s[-1])


def test_median_ci_coverage_by_simulation():
    rng = np.random.default_rng(0)
    hits = sum(lo <= 0.0 <= hi for lo, hi, _ in (L.median_ci(rng.standard_cauchy(9)) for _ in range(4000)))
    assert abs(hits / 4000 - L.median_ci(np.arange(9))[2]) < 0.02


def test_robust_cv_matches_scipy():
    x = np.random.default_rng(1).lognormal(0, 0.3, 25)
    want = stats.median_abs_deviation(x, scale="normal") / np.median(x)
    assert L.robust_cv(x) == pytest.approx(want, rel=1e-4)
    assert L.robust_cv([2.0]) == 0.0


# ------------------------------------------------------------------------------------------- protocol
def test_every_round_visits_every_candidate_once_in_a_fresh_order():
    clock = SyntheticClock(lambda name, i, step: {"a": 1e-3, "b": 2e-3, "c": 3e-3, "d": 4e-3}[name])
    cfg = LatencyConfig(rounds=8, repeats=3)
    values, noisy = L.run_protocol(_runners("abcd"), cfg, timer=clock, seed=3)
    assert clock.visits[:4] == list("abcd")  # warm-up, one visit each
    rounds = [clock.visits[4 + 4 * r: 8 + 4 * r] for r in range(8)]
    assert len(clock.visits) == 4 + 32 and all(sorted(r) == list("abcd") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # shuffled, not one fixed order
    assert noisy == set() and {k: len(v) for k, v in values.items()} == dict.fromkeys("abcd", 8)


def test_interleaving_shares_a_load_ramp_between_candidates():
    """Load rising over the measurement: interleaved rounds keep the true 2x ratio, back-to-back timing does not."""
    base = {"small": 1e-3, "large": 2e-3}
    ramp = lambda name, i, step: base[name] * (1 + 0.05 * step)  # noqa: E731
    cfg = LatencyConfig(rounds=9, repeats=5, max_cv=10.0)
    values, _ = L.run_protocol(_runners(base), cfg, timer=SyntheticClock(ramp), seed=0)
    ratio = np.median(values["large"]) / np.median(values["small"])
    assert ratio == pytest.approx(2.0, rel=0.05)
    seq = {}
    clock = SyntheticClock(ramp)
    for name in base:  # the old way: one candidate's runs, then the next one's
        seq[name] = L.run_protocol({name: None}, cfg, timer=clock)[0][name]
    assert np.median(seq["large"]) / np.median(seq["small"]) > 2.6


def test_wide_candidates_get_extra_rounds_then_are_flagged():
    first = [1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 1.5]  # robust cv 0.30 over the first 7 rounds

    def seconds(name, i, step):
        if name == "steady":
            return 1e-3
        if name == "settles":  # spread at first, then steady: extra rounds bring the spread down
            return 1e-3 * (first[i] if i < 7 else 1.5)
        return 1e-3 * (1.0 + 0.5 * (i % 3))  # wild: always spread

    cfg = LatencyConfig(rounds=7, repeats=2, max_cv=0.1, max_extra_rounds=10)
    clock = SyntheticClock(seconds)
    values, noisy = L.run_protocol(_runners(["steady", "settles", "wild"]), cfg, timer=clock)
    cv = lambda v: stats.median_abs_deviation(v, scale="normal") / np.median(v)  # noqa: E731
    need = next(m for m in range(11) if cv(first + [1.5] * m) <= 0.1)
    assert len(values["steady"]) == 7
    assert len(values["settles"]) == 7 + need
    assert len(values["wild"]) == 7 + 10
    assert noisy == {"wild"}
    assert clock.visits.count("steady") == 1 + 7  # extra rounds visit the wide ones only


def test_measure_interleaved_reports_a_flagged_noisy_result():
    clock = SyntheticClock(lambda name, i, step: 1e-3 * (1 + (i % 3)) if name == "b" else 1e-3)
    cfg = LatencyConfig(runtime="torch", rounds=5, repeats=2, max_cv=0.1, max_extra_rounds=2, input_size=8)
    res = L.measure_interleaved({"a": _tiny(), "b": _tiny()}, cfg, timer=clock)
    assert not res["a"].noisy and res["b"].noisy and res["b"].rounds == 7 and res["a"].rounds == 5
    assert res["a"].median_ms == pytest.approx(1.0) and res["a"].cv == 0.0
    assert "NOISY" in res["b"].describe() and "NOISY" not in res["a"].describe()


# ----------------------------------------------------------------------------------------- quiet slot
def test_quiet_check_compares_with_its_own_calibration_and_the_load():
    Q.reset_calibration()
    ref = iter([1.0, 1.1, 0.9, 1.0, 2.5, 0.95])
    load = iter([0.2, 0.2, 3.0])
    s1 = Q.quiet_check(reference=lambda: next(ref), load=lambda: next(load), max_load=1.0, key="t")
    assert s1.quiet and s1.baseline_ms == 0.9 and s1.ratio == pytest.approx(1.0 / 0.9)
    s2 = Q.quiet_check(reference=lambda: next(ref), load=lambda: next(load), max_load=1.0, key="t")
    assert not s2.quiet and "reference workload" in s2.reason and s2.ratio == pytest.approx(2.5 / 0.9)
    s3 = Q.quiet_check(reference=lambda: next(ref), load=lambda: next(load), max_load=1.0, key="t")
    assert not s3.quiet and s3.reason.startswith("load 3.00") and s3.baseline_ms == 0.9
    Q.reset_calibration()


def test_wait_for_quiet_polls_until_quiet_or_deadline():
    now = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    statuses = iter([False, False, True])
    check = lambda: Q.QuietStatus(next(statuses), 1, 1, 1, None, "busy")  # noqa: E731
    assert Q.wait_for_quiet(60, 5, check=check, sleep=sleep, clock=lambda: now[0]).quiet and sleeps == [5, 5]
    sleeps.clear()
    busy = lambda: Q.QuietStatus(False, 2, 1, 2, None, "busy")  # noqa: E731
    last = Q.wait_for_quiet(12, 5, check=busy, sleep=sleep, clock=lambda: now[0])
    assert not last.quiet and sleeps == [5, 5, 5]


def test_reference_workload_is_real():
    Q.reset_calibration()
    s = Q.quiet_check()
    assert s.reference_ms > 0 and s.baseline_ms <= s.reference_ms and s.ratio >= 1.0
    assert s.load_per_cpu is None or s.load_per_cpu >= 0
    Q.reset_calibration()


# ------------------------------------------------------------------------------------------- runtimes
@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_runtime_computes_the_model_and_times_it(runtime):
    model = _tiny()
    runner = make_runner(model, runtime, batch_size=2, input_size=8, n_threads=1, seed=5)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    got = runner()
    got = torch.from_numpy(got[0]) if runtime == "onnxruntime" else got
    with torch.no_grad():
        assert torch.allclose(got, model(x), atol=1e-5)
    t = runner.time_calls(4)
    assert len(t) == 4 and all(v > 0 for v in t) and runner.runtime == runtime


def test_measure_interleaved_for_real():
    before = torch.get_num_threads()
    cfg = LatencyConfig(rounds=3, repeats=3, input_size=8, batch_size=2, max_extra_rounds=1)
    res = L.measure_interleaved({"a": _tiny(8), "b": _tiny(16)}, cfg)
    assert torch.get_num_threads() == before
    for r in res.values():
        assert r.runtime == "onnxruntime" and r.source == "measured" and "onnxruntime" in r.note
        assert 0 < r.ci_low_ms <= r.median_ms <= r.ci_high_ms and r.rounds >= 3
        assert r.throughput_ips == pytest.approx(2 / (r.median_ms / 1e3))
        assert (r.batch_size, r.threads, r.input_size) == (2, 1, 8)
        assert L.LatencyResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_unknown_runtime_is_an_error():
    with pytest.raises(ValueError, match="unknown runtime"):
        make_runner(_tiny(), "tensorrt", 1, 8)


@pytest.mark.slow
def test_compile_runtime_or_loud_fallback():
    model = _tiny()
    runner = make_runner(model, "compile", batch_size=1, input_size=8, seed=0)
    assert runner.runtime == "compile" or (runner.runtime == "torch" and "torch.compile failed" in runner.note)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(runner(), model(x), atol=1e-5)
    assert len(runner.time_calls(2)) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_runtime_synchronised():
    cfg = LatencyConfig(runtime="cuda", rounds=3, repeats=3, input_size=32)
    res = L.measure_interleaved({"replk": lkscale.reparameterize(lkscale.build_model("replk_proxy", num_classes=10))},
                                cfg)
    r = res["replk"]
    assert r.runtime == "cuda" and 0 < r.ci_low_ms <= r.median_ms <= r.ci_high_ms and "CUDA events" in r.note


def test_cuda_runtime_refused_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="needs a GPU"):
        make_runner(_tiny(), "cuda", 1, 8)


# ------------------------------------------------------------------------------------------ predictor
SPECS = ["replk_proxy", "convnext_proxy", "dcnv3_proxy", "moga_proxy"]


@pytest.mark.parametrize("preset", SPECS)
def test_part_keys_match_the_shapes_the_network_runs_at(preset):
    spec = lkscale.get_preset(preset)
    mods = P.part_modules(spec, 32)
    parts = P.network_parts(spec, 32)
    assert list(mods) == [k for k, _ in parts]
    assert sum(c for k, c in parts if k.startswith("block")) == sum(spec.depths)
    for key, (_, shape) in mods.items():
        assert key.split("@")[1].split()[0] == str(shape[-1])  # map size in the key = the real input map


def _kernels(spec, fn):
    """``spec`` with each stage's kernel mapped by ``fn`` and no re-param branches."""
    return spec.replace(stages=tuple(dataclasses.replace(st, kernel=fn(st.kernel), reparam=()) for st in spec.stages))


def _table(parts: dict, **kw) -> P.LatencyTable:
    full = {k: {"median_ms": v, "ci_low_ms": 0.9 * v, "ci_high_ms": 1.1 * v, "cv": 0.01, "noisy": False}
            for k, v in parts.items()}
    return P.LatencyTable("onnxruntime", 1, 1, 32, 3, 10, full, **kw)


def test_predict_sums_parts_plus_overhead_and_interpolates_kernels():
    spec = lkscale.get_preset("replk_proxy")
    parts = P.network_parts(spec, 32)
    vals = {k: 0.1 * (i + 1) for i, (k, _) in enumerate(parts)}
    sk = P.skeleton(spec)
    t = _table(vals, overheads={sk: 0.25}, overhead_ms=0.25, error_pct=3.0)
    r = P.predict(spec, t)
    assert r.source == "predicted" and r.error_pct == 3.0 and r.rounds == 0
    assert r.median_ms == pytest.approx(0.25 + sum(c * vals[k] for k, c in parts))
    # stage 0's block at another kernel: interpolated linearly in kernel area from two measured kernels
    k0 = spec.stages[0].kernel
    key0 = next(k for k, _ in parts if k.startswith("block") and k.endswith(f" k{k0}"))
    group = key0.rpartition(" k")[0]
    vals2 = {**vals, f"{group} k3": 1.0, f"{group} k{k0 + 8}": 3.0}
    del vals2[key0]
    r2 = P.predict(spec, _table(vals2, overheads={sk: 0.25}))
    want_k0 = 1.0 + 2.0 * (k0 ** 2 - 9) / ((k0 + 8) ** 2 - 9)
    assert r2.median_ms == pytest.approx(r.median_ms + (want_k0 - vals[key0]) * spec.stages[0].depth)
    assert "interpolated" in r2.note
    del vals2[f"{group} k3"]
    with pytest.raises(KeyError, match="fewer than 2 kernels"):
        P.predict(spec, _table(vals2))
    with pytest.raises(KeyError, match="stem"):
        P.predict(spec, _table({k: v for k, v in vals.items() if not k.startswith("stem")}))


def test_fit_table_recovers_per_skeleton_overheads_and_scores_held_out():
    specs = {s.name: s for s in (lkscale.get_preset("replk_proxy"), lkscale.get_preset("convnext_proxy"))}
    more = {s.name: s for s in (_kernels(sp, lambda k: 3) for sp in specs.values())}
    allspecs = {**specs, **more}
    parts = {k: 0.05 for s in allspecs.values() for k, _ in P.network_parts(s, 32)}
    t = _table(parts)
    true_over = {P.skeleton(s): (0.3 if "replk" in P.skeleton(s) else -0.1) for s in allspecs.values()}
    raw = {n: P.predict(s, dataclasses.replace(t, overheads={}, overhead_ms=0.0)).median_ms for n, s in allspecs.items()}
    measured = {n: raw[n] + true_over[P.skeleton(s)] * (1.1 if n in more else 1.0) for n, s in allspecs.items()}
    t = P.fit_table(t, allspecs, measured, fit=2)
    assert t.overheads == pytest.approx(true_over)
    held = [n for n in more]
    want = np.mean([abs(raw[n] + true_over[P.skeleton(allspecs[n])] - measured[n]) / measured[n] for n in held]) * 100
    assert t.error_pct == pytest.approx(want) and [r["name"] for r in t.holdout] == held


def test_split_fit_covers_every_skeleton():
    names = [f"n{i}" for i in range(10)]
    sk = {n: ("A" if i < 8 else "B") for i, n in enumerate(names)}
    chosen = P.split_fit(names, sk, fit=2, holdout=5, seed=1)
    assert {sk[n] for n in chosen[:2]} == {"A", "B"} and len(chosen) == 7 and len(set(chosen)) == 7


def test_calibrate_for_real_and_table_roundtrip(tmp_path):
    base = lkscale.get_preset("replk_proxy")
    specs = [_kernels(base, lambda k, m=m: min(k, m)) for m in (3, 5, 7)]
    cfg = LatencyConfig(rounds=3, repeats=3, input_size=32)
    t = P.calibrate(specs, cfg, fit=1, holdout=2)
    assert set(t.parts) == {k for s in specs for k, _ in P.network_parts(s, 32)}
    assert len(t.fit) == 1 and len(t.holdout) == 2 and math.isfinite(t.error_pct)
    assert t.host["hostname"] and t.runtime == "onnxruntime"
    t.save(str(tmp_path / "t.json"))
    t2 = P.LatencyTable.load(str(tmp_path / "t.json"))
    assert t2 == t
    assert P.predict(specs[0], t2).median_ms == P.predict(specs[0], t).median_ms > 0


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_latency_measures_side_by_side(capsys):
    from lkscale.cli import main

    assert main(["latency", "--preset", "replk_proxy", "--preset", "convnext_proxy", "--rounds", "3",
                 "--repeats", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["runtime"] == "onnxruntime" and out["config"]["rounds"] == 3
    assert set(out["quiet"]) >= {"quiet", "ratio", "load_per_cpu"}
    names = {lkscale.get_preset(n).name for n in ("replk_proxy", "convnext_proxy")}
    assert set(out["results"]) == names
    for r in out["results"].values():
        assert r["ci_low_ms"] <= r["median_ms"] <= r["ci_high_ms"] and r["rounds"] >= 3 and r["flops"] > 0


def test_cli_latency_calibrates_a_study_table(tmp_path, capsys):
    from lkscale.cli import main

    out = tmp_path / "table.json"
    assert main(["latency", "--study", "studies/smoke.yaml", "--calibrate", str(out), "--fit", "1",
                 "--holdout", "2", "--rounds", "3", "--repeats", "3"]) == 0
    t = P.LatencyTable.load(str(out))
    assert t.runtime == "onnxruntime" and len(t.holdout) == 2 and t.error_pct is not None
    assert f"{t.error_pct:.1f}%" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--preset", "replk_proxy", "--rounds", "0"],
                                  ["--preset", "replk_proxy", "--runtime", "tensorrt"],
                                  ["--study", "no/such/study.yaml"]])
def test_cli_latency_bad_input_exits_2(args, capsys):
    from lkscale.cli import main

    with pytest.raises(SystemExit) as e:  # argparse rejects an unknown runtime itself
        code = main(["latency", *args])
        raise SystemExit(code)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and ("error" in err[-1])


def test_round_value_is_the_fastest_call_of_its_block_unless_median_is_asked():
    def preempted(name, runner, n):  # more than half the calls of every block preempted (+4 ms)
        return [1e-3 if i < n // 2 else 5e-3 for i in range(n)]

    values, _ = L.run_protocol({"a": None}, LatencyConfig(rounds=3, repeats=7), timer=preempted)
    assert values["a"] == [1e-3] * 3
    values, _ = L.run_protocol({"a": None}, LatencyConfig(rounds=3, repeats=7, block_stat="median"), timer=preempted)
    assert values["a"] == [5e-3] * 3
    with pytest.raises(ValueError, match="block_stat"):
        L.run_protocol({"a": None}, LatencyConfig(block_stat="mean"), timer=preempted)


# ----------------------------------------------------------------------------- specs: measured | predicted
def test_measure_specs_shares_a_deploy_form_and_latency_of_predicts_from_a_table(tmp_path):
    from lkscale.cost import measure as M

    base = lkscale.get_preset("replk_proxy")  # has a 5x5 re-param branch: same deploy form as without
    specs = [base, base.without_reparam(), _kernels(base, lambda k: 3)]
    cfg = LatencyConfig(rounds=3, repeats=3, input_size=32)
    res = M.measure_specs(specs, cfg)
    assert res[base.name] is res[base.without_reparam().name] and res[specs[2].name].source == "measured"
    table = P.calibrate(specs, cfg, fit=1, holdout=1)
    table.save(str(tmp_path / "t.json"))
    pcfg = dataclasses.replace(cfg, source="predicted", table=str(tmp_path / "t.json"))
    pred = M.latency_of(specs, pcfg)
    assert all(r.source == "predicted" and r.error_pct == table.error_pct for r in pred.values())
    with pytest.raises(ValueError, match="calibrated at 32 px"):
        M.latency_of(specs, dataclasses.replace(pcfg, input_size=64))
    with pytest.raises(ValueError, match="needs a calibration table"):
        M.latency_of(specs, dataclasses.replace(cfg, source="predicted"))
