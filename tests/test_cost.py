"""Cost model: parameters, fvcore multiply-adds with explicit rules, effective kernels, latency, CLI."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lkscale
from lkscale import cost
from lkscale.cli import main
from lkscale.presets import PUBLISHED, preset_names
from lkscale.spec import ArchSpec


def _deployed(name, num_classes=10):
    return lkscale.reparameterize(lkscale.build_model(name, num_classes=num_classes))


# ------------------------------------------------------------------------------------------- FLOPs
def test_convnext_tiny_matches_timm_params_and_macs():
    import timm
    from fvcore.nn import FlopCountAnalysis

    ours = lkscale.build_model("convnext_tiny", num_classes=1000)
    ref = timm.create_model("convnext_tiny", pretrained=False, num_classes=1000)
    assert cost.count_params(ours) == cost.count_params(ref) == PUBLISHED["convnext_tiny"][0] == 28_589_128
    macs, by_op, uncounted = cost.count_flops(lkscale.reparameterize(ours), 224)
    assert uncounted == []
    assert abs(macs - 4.5e9) / 4.5e9 < 0.02, macs  # timm's table: 4.47 GMACs
    # the same rules on timm's own model give the same count (it pools with adaptive_avg_pool2d, we with mean)
    fa = cost._analysis(ref.eval(), torch.zeros(1, 3, 224, 224), {})
    assert fa.total() == macs


@pytest.mark.parametrize("name", sorted(n for n in preset_names() if n.endswith("_proxy")))
def test_every_family_fully_counted_and_matches_flop_counter_mode(name):
    """No op is skipped (train and deploy forms), and the conv/matmul part equals FlopCounterMode / 2."""
    train = lkscale.build_model(name, num_classes=10)
    model = lkscale.reparameterize(train)
    total, by_op, uncounted = cost.count_flops(model, 32)
    assert uncounted == [], uncounted
    assert total == sum(by_op.values()) > 0
    assert cost.count_flops(train, 32)[2] == []
    with FlopCounterMode(display=False) as fcm:
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
    counts = {str(k).split(".")[-1]: v for k, v in fcm.get_flop_counts()["Global"].items()}
    matmul_like = sum(by_op.get(k, 0) for k in ("conv", "linear", "addmm", "matmul", "bmm"))
    assert fcm.get_total_flops() % 2 == 0
    assert matmul_like == fcm.get_total_flops() // 2
    assert by_op["conv"] == counts["convolution"] // 2
    # what FlopCounterMode leaves out is exactly the norms, reductions and sampling we add rules for
    assert set(by_op) - {"conv", "linear", "addmm", "matmul", "bmm"} <= {
        "layer_norm", "batch_norm", "group_norm", "mean", "sum", "softmax", "adaptive_avg_pool2d",
        "grid_sampler", "affine_grid_generator"}


def test_plain_fvcore_drops_the_global_pool_we_count():
    from fvcore.nn import FlopCountAnalysis

    model = _deployed("convnext_proxy").eval()
    total, by_op, _ = cost.count_flops(model, 32)
    plain = FlopCountAnalysis(model, torch.zeros(1, 3, 32, 32)).unsupported_ops_warnings(False)
    assert total - plain.total() == by_op["mean"] == 256 * 2 * 2  # 256 channels on the last 2x2 map
    assert set(plain.unsupported_ops()) == {"aten::mean", "aten::gelu", "aten::add", "aten::mul"}


class _Warp(nn.Module):
    """affine_grid + grid_sample (bilinear and nearest) + softmax-weighted sum + global mean."""

    def __init__(self, out_hw):
        super().__init__()
        self.out_hw = out_hw
        self.theta = nn.Parameter(torch.tensor([[0.9, 0.1, 0.0], [-0.1, 0.9, 0.05]]))

    def forward(self, x):
        n, c = x.shape[:2]
        grid = F.affine_grid(self.theta.expand(n, 2, 3), [n, c, *self.out_hw], align_corners=False)
        y = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
        z = F.grid_sample(x, grid, mode="nearest", align_corners=False)
        w = torch.softmax(y, dim=1)
        return (w * z).sum(1).mean((1, 2))


def test_grid_sample_model_counted_by_hand():
    n, c, h, w, ho, wo = 1, 6, 9, 7, 5, 4
    elementwise = {}  # a non-square input: use the analysis behind count_flops directly
    fa = cost._analysis(_Warp((ho, wo)).eval(), torch.randn(n, c, h, w), elementwise)
    by_op = dict(fa.by_operator())
    assert list(fa.unsupported_ops()) == []
    out = n * c * ho * wo
    assert by_op["grid_sampler"] == 4 * out + 1 * out  # bilinear 4 per output element, nearest 1
    assert by_op["affine_grid_generator"] == n * ho * wo * 2 * 3  # (HW,3) @ (3,2)
    assert by_op["softmax"] == out  # one accumulate per element
    assert by_op["sum"] == out
    assert by_op["mean"] == n * ho * wo
    assert fa.total() == 5 * out + 6 * n * ho * wo + out + out + n * ho * wo
    assert elementwise == {"mul": out}  # elementwise: reported, 0 MACs


def test_dcnv3_core_counts_like_internimage():
    """InternImage's dcnv3_flops = 5 * HW * K*K * C: 4 bilinear (grid_sampler) + 1 mask-weighted sum."""
    spec = lkscale.get_preset("dcnv3_proxy")
    model = _deployed("dcnv3_proxy")
    _, by_op, uncounted = cost.count_flops(model, 32)
    assert uncounted == []
    maps = [s.map_hw for s in cost.effective_kernels(lkscale.build_model(spec, num_classes=10), 32)]
    samples = sum(st.depth * st.width * h * w * st.kernel ** 2 for st, (h, w) in zip(spec.stages, maps))
    assert by_op["grid_sampler"] == 4 * samples
    assert by_op["sum"] == samples
    # softmax over the K*K points of every group, one accumulate per logit
    assert by_op["softmax"] == sum(st.depth * st.dcn_groups * st.kernel ** 2 * h * w
                                   for st, (h, w) in zip(spec.stages, maps))


def test_every_family_has_a_proxy():
    from lkscale.blocks import REGISTRY

    assert {lkscale.get_preset(n).stages[0].block for n in preset_names() if n.endswith("_proxy")} == set(REGISTRY)


def test_unknown_op_is_reported_not_dropped():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1)

    total, by_op, uncounted = cost.count_flops(Odd(), 4)
    assert uncounted == ["aten::cumsum"]
    cost.register_flop_handle("aten::cumsum", lambda inputs, outputs: 7)
    try:
        assert cost.count_flops(Odd(), 4)[:3:2] == (7, [])
    finally:
        cost._EXTRA_HANDLES.pop("aten::cumsum")


# -------------------------------------------------------------------------------- effective kernel
def _ek_spec():
    # stem stride 4, 32 px -> 8/4/2/1 maps; kernels 17/9/7/3 with 3x3, dilated and 5x5 branches
    return ArchSpec.from_dict({"stem": {"stride": 4}, "stages": [
        {"block": "replk", "depth": 1, "width": 8, "kernel": 17, "reparam": [5]},
        {"block": "replk", "depth": 1, "width": 16, "kernel": 9, "reparam": ["3d3"]},
        {"block": "replk", "depth": 1, "width": 32, "kernel": 7, "reparam": [3, "3d2"]},
        {"block": "replk", "depth": 1, "width": 64, "kernel": 3},
    ]})


def test_effective_kernels_and_dead_params_by_hand():
    model = lkscale.build_model(_ek_spec(), num_classes=10)
    stages = cost.effective_kernels(model, 32)
    assert [s.map_hw for s in stages] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert [s.kernel for s in stages] == [17, 9, 7, 3]
    assert [s.effective_kernel for s in stages] == [(15, 15), (7, 7), (3, 3), (1, 1)]  # 2H-1
    # per channel: taps outside the central (2H-1)^2 window, for every depthwise conv of the stage
    expected = [
        8 * (17 ** 2 - 15 ** 2),  # 17x17 on 8x8; the 5x5 branch fits
        16 * (9 ** 2 - 7 ** 2),  # 9x9 on 4x4; 3x3 dil 3 (offsets -3,0,3) fits; ds 3x3 s2 8->4 reads real pixels
        32 * (7 ** 2 - 3 ** 2) + 32 * (3 ** 2 - 1),  # 7x7 on 2x2; 3x3 dil 2 keeps only its centre; 3x3 fits
        64 * (3 ** 2 - 1) + 64 * (9 - 4),  # 3x3 on 1x1; ds 3x3 s2 pad 1 on 2x2 -> 1x1 reads rows/cols 0,1 only
    ]
    assert [s.dead_params for s in stages] == expected
    assert [s.dw_params for s in stages] == [8 * (289 + 25), 16 * (81 + 9) + 16 * 9, 32 * (49 + 9 + 9) + 32 * 9,
                                             64 * 9 + 64 * 9]


def test_dead_params_really_get_no_gradient():
    """Replay every depthwise conv on an all-ones input of the shape it saw: dead taps get exactly 0 grad."""
    model = lkscale.build_model(_ek_spec(), num_classes=10).eval()
    seen, hooks = [], []
    for i, st in enumerate(model.stages):
        for m in st.modules():
            if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1:
                hooks.append(m.register_forward_hook(lambda mod, a, o, i=i: seen.append((i, mod, a[0].shape))))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    zero = [0, 0, 0, 0]
    for i, m, shape in seen:
        w = m.weight.detach().clone().requires_grad_()
        y = F.conv2d(torch.ones(shape), w, None, m.stride, m.padding, m.dilation, m.groups)
        (y * (torch.rand_like(y) + 0.1)).sum().backward()  # positive upstream gradient: no cancellation
        zero[i] += int((w.grad == 0).sum())
    assert len(seen) == 11  # lk + branches in each stage, plus the stride-2 dw conv of stages 1-3
    assert zero == [s.dead_params for s in cost.effective_kernels(model, 32)]


def test_padding_macs_brute_force():
    """Wasted conv MACs = nominal - (taps on real pixels), counted by convolving ones with ones."""
    for name in ("replk_proxy", "moga_proxy"):
        model = _deployed(name)
        seen = []
        hooks = [m.register_forward_hook(lambda mod, a, o: seen.append((mod, a[0].shape, o.shape)))
                 for m in model.modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        wasted = 0
        for m, xs, ys in seen:
            ones = F.conv2d(torch.ones(1, 1, *xs[-2:]), torch.ones(1, 1, *m.kernel_size), None, m.stride, m.padding,
                            m.dilation)
            pairs = m.out_channels * m.in_channels // m.groups
            wasted += pairs * (math.prod(m.kernel_size) * math.prod(ys[-2:]) - int(ones.sum()))
        assert cost.padding_macs(model, 32) == wasted > 0
    # by hand: one 3x3 conv, padding 1, on 4x4: per axis the outputs see 2+3+3+2 = 10 real taps
    conv = nn.Conv2d(1, 1, 3, padding=1)
    assert cost.padding_macs(conv, 4, in_chans=1) == 9 * 16 - 10 * 10


def test_dilated_effective_kernel_moga():
    spec = lkscale.get_preset("moga_proxy")  # 7x7 dilation 3 (span 19) on 16/8/4/2 maps
    stages = cost.effective_kernels(lkscale.build_model(spec, num_classes=10), 32)
    # taps at offsets 3*(t-3); live while |offset| <= H-1
    live = [sum(abs(3 * (t - 3)) <= h - 1 for t in range(7)) for h in (16, 8, 4, 2)]
    assert live == [7, 5, 3, 1]
    assert [s.effective_kernel for s in stages] == [(v, v) for v in live]


# ---------------------------------------------------------------------------------------- latency
def test_latency_summary_and_threads_restored():
    model = _deployed("replk_proxy")
    before = torch.get_num_threads()
    r = cost.measure_latency(model, 32, batch_size=2, threads=1, warmup=2, repeats=7, min_seconds=0.0)
    assert torch.get_num_threads() == before
    assert r["n"] == 7 and r["batch_size"] == 2 and r["threads"] == 1
    assert 0 < r["min_ms"] <= r["p25_ms"] <= r["median_ms"] <= r["p75_ms"]
    t = cost.measure_train_step(lkscale.build_model("replk_proxy", num_classes=10), 32, batch_size=2,
                                warmup=1, repeats=3)
    assert t["n"] == 3 and 0 < t["min_ms"] <= t["median_ms"]
    assert torch.get_num_threads() == before


def test_estimate_report():
    spec = lkscale.get_preset("replk_proxy")
    r = cost.estimate(spec, input_size=32, num_classes=10, repeats=5, warmup=1, min_seconds=0.0, train_step=True)
    model = lkscale.build_model(spec, num_classes=10)
    deployed = lkscale.reparameterize(model)
    assert r.name == spec.name
    assert r.params == cost.count_params(model) and r.deploy_params == cost.count_params(deployed)
    assert r.deploy_params < r.params  # BNs and 5x5 branches folded away
    assert (r.flops, r.flops_by_op, r.uncounted_ops) == cost.count_flops(deployed, 32)
    assert r.latency_min_ms <= r.latency_p25_ms <= r.latency_ms <= r.latency_p75_ms and r.latency_min_ms > 0
    lat = r.latency  # the protocol's result: default runtime, interval around the median, the spread, rounds
    assert lat["runtime"] == "onnxruntime" and lat["source"] == "measured" and lat["rounds"] == r.latency_runs >= 7
    assert lat["ci_low_ms"] <= lat["median_ms"] == r.latency_ms <= lat["ci_high_ms"] and lat["cv"] >= 0
    assert r.train_step_ms > 0 and r.train_batch_size == 2
    assert r.useful_flops == r.flops - cost.padding_macs(deployed, 32) < r.flops
    d = json.loads(json.dumps(r.to_dict()))
    assert d["stages"][0]["map_hw"] == [16, 16] and len(d["stages"]) == 4
    assert d["flops"] == r.flops and "multiply-adds" in d["flops_unit"]


# -------------------------------------------------------------------------------------------- CLI
def test_cli_json_and_table(capsys):
    assert main(["cost", "--preset", "replk_proxy", "--json", "--repeats", "3", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    d = json.loads(out)
    assert d["preset"] == "replk_proxy" and d["input_size"] == 32 and d["num_classes"] == 10
    assert d["uncounted_ops"] == [] and d["latency_ms"] > 0 and d["flops"] > 0
    assert d["latency"]["runtime"] == "onnxruntime" and d["latency"]["ci_low_ms"] <= d["latency_ms"]
    assert "lkscale cost:" in err  # progress on stderr only
    assert main(["cost", "--preset", "convnext_proxy", "--no-latency"]) == 0
    out, _ = capsys.readouterr()
    assert "FLOPs are multiply-adds (fvcore convention)" in out and "MMACs" in out
    assert "latency" not in out  # --no-latency
    assert "2x2" in out and "3x3" in out  # last stage: 7x7 kernel on a 2x2 map -> 3x3 effective


def test_cli_spec_file(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    _ek_spec().save(str(path))
    assert main(["cost", "--spec", str(path), "--no-latency", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [s["effective_kernel"] for s in d["stages"]] == [[15, 15], [7, 7], [3, 3], [1, 1]]
    assert d["dead_params"] == sum(s["dead_params"] for s in d["stages"]) > 0


@pytest.mark.parametrize("args, needle", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--spec", "/no/such/file.yaml"], "no such file"),
    (["--preset", "replk_proxy", "--input-size", "0"], "--input-size must be >= 1"),
    (["--preset", "replk_proxy", "--input-size", "8"], "smaller than the network's total stride 16"),
    (["--preset", "replk_proxy", "--threads", "0"], "--threads must be >= 1"),
])
def test_cli_bad_input_exit_2(args, needle, capsys):
    assert main(["cost", *args, "--no-latency"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and needle in err and err.startswith("lkscale cost: error:")


def test_cli_invalid_spec_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("stages:\n  - {block: replk, depth: 1, width: 8, kernel: 4}\n"
                    "  - {block: replk, depth: 1, width: 8, kernel: 3}\n"
                    "  - {block: replk, depth: 1, width: 8, kernel: 3}\n")
    assert main(["cost", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stages[0].kernel" in err
