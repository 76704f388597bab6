"""Large-kernel depthwise conv: exact against F.conv2d, plain aten conv when traced/counted."""
import json
import os
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lkscale.ops import DWConv2d, depthwise_conv2d
from lkscale.ops import dwconv as dwmod
from lkscale.ops import dwconv_impl as impl

GW_NAMES = ["dwloop", "dwloop1", "dwloop4", "fft", "native_cl", "native", "unfold", "dw"]


@pytest.fixture(autouse=True)
def _fresh_tuner(monkeypatch):
    monkeypatch.delenv("LKSCALE_CACHE", raising=False)
    monkeypatch.delenv("LKSCALE_DWCONV", raising=False)
    impl.TUNER.clear()
    impl.TUNER.forced = {}
    yield
    impl.TUNER.clear()
    impl.TUNER.forced = {}


def _ref_and_ours(x, w, b, pad, dilation=1, layout_cl=False, mode="lk", monkeypatch=None):
    if layout_cl:
        x = x.contiguous(memory_format=torch.channels_last)
    leaves = [x, w] + ([b] if b is not None else [])
    ours = [t.detach().clone().requires_grad_() for t in leaves]
    ref = [t.detach().clone().requires_grad_() for t in leaves]
    monkeypatch.setenv("LKSCALE_DWCONV", mode)
    y = depthwise_conv2d(ours[0], ours[1], ours[2] if b is not None else None, pad, dilation)
    yr = F.conv2d(ref[0], ref[1], ref[2] if b is not None else None, 1, pad, dilation, w.shape[0])
    gy = torch.randn_like(yr)
    g = torch.autograd.grad(y, ours, gy)
    gr = torch.autograd.grad(yr, ref, gy)
    return y, yr, g, gr


def _close(a, b, dtype=torch.float32):
    scale = b.abs().max().clamp_min(1.0)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert a.shape == b.shape
    err = ((a - b).abs().max() / scale).item()
    assert err <= tol, err


@pytest.mark.parametrize("gw", ["dwloop", "dwloop4", "fft", "native_cl"])
def test_gradcheck_float64(gw):
    impl.TUNER.forced = {"gw": gw}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # thousands of tiny calls: thread start-up would dominate
    try:
        for (b, c, h, w, k, bias) in [(2, 2, 5, 4, 3, True), (2, 2, 3, 4, 9, False)]:
            x = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
            wt = torch.randn(c, 1, k, k, dtype=torch.float64, requires_grad=True)
            bb = torch.randn(c, dtype=torch.float64, requires_grad=True) if bias else None
            fn = lambda x, wt, bb: impl.DepthwiseConvFn.apply(x, impl.crop_weight(wt, h, w), bb)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (x, wt, bb), eps=1e-6, atol=1e-7, fast_mode=True)
    finally:
        torch.set_num_threads(threads)


def test_random_shapes_match_conv2d(monkeypatch):
    """K 3..31 on odd, non-square maps and maps smaller than the kernel, both layouts, +-bias."""
    rng = random.Random(0)
    cases = [(rng.randint(1, 3), rng.randint(1, 6), rng.randint(1, 20), rng.randint(1, 20),
              rng.choice(range(3, 32, 2)), rng.random() < 0.5, rng.random() < 0.5) for _ in range(22)]
    cases += [(2, 4, 16, 16, 31, True, False), (3, 5, 8, 8, 31, False, True), (2, 3, 2, 2, 13, True, True),
              (2, 3, 7, 3, 15, False, False)]
    for i, (b, c, h, w, k, bias, cl) in enumerate(cases):
        impl.TUNER.forced = {"gw": GW_NAMES[i % len(GW_NAMES)]}
        x, wt = torch.randn(b, c, h, w), torch.randn(c, 1, k, k)
        bb = torch.randn(c) if bias else None
        for mode in ("lk", "auto"):
            y, yr, g, gr = _ref_and_ours(x, wt, bb, k // 2, layout_cl=cl, mode=mode, monkeypatch=monkeypatch)
            _close(y, yr)
            for a, r in zip(g, gr):
                _close(a, r)
            # the caller's layout comes back (maps of one pixel are both layouts at once)
            assert y.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)


def test_cropped_taps_get_exactly_zero_gradient(monkeypatch):
    x, wt = torch.randn(2, 3, 4, 6), torch.randn(3, 1, 31, 31)
    y, yr, g, gr = _ref_and_ours(x, wt, None, 15, monkeypatch=monkeypatch)
    gw = g[1][0, 0]
    # rows further than H-1=3 from the centre, columns further than W-1=5, never meet the image
    assert torch.count_nonzero(gw[:15 - 3]) == 0 and torch.count_nonzero(gw[15 + 4:]) == 0
    assert torch.count_nonzero(gw[:, :15 - 5]) == 0 and torch.count_nonzero(gw[:, 15 + 6:]) == 0
    assert torch.count_nonzero(gw[12:19, 10:21]) == 7 * 11
    _close(g[1], gr[1])


def test_dilation_and_no_grad_paths_match(monkeypatch):
    x, wt = torch.randn(2, 4, 9, 7), torch.randn(4, 1, 5, 5)
    y, yr, g, gr = _ref_and_ours(x, wt, torch.randn(4), 4, dilation=2, monkeypatch=monkeypatch)
    _close(y, yr)
    for a, r in zip(g, gr):
        _close(a, r)
    for cl in (False, True):
        xx = torch.randn(3, 4, 6, 5)
        xx = xx.contiguous(memory_format=torch.channels_last) if cl else xx
        w31, bias = torch.randn(4, 1, 31, 31), torch.randn(4)
        with torch.no_grad():
            _close(depthwise_conv2d(xx, w31, bias, 15), F.conv2d(xx, w31, bias, 1, 15, 1, 4))
        assert depthwise_conv2d(xx, w31, bias, 15).is_contiguous(
            memory_format=torch.channels_last if cl else torch.contiguous_format)


def test_dispatch_and_env_switch(monkeypatch):
    m = DWConv2d(8, 31)
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    assert type(m(x).grad_fn).__name__ == "DepthwiseConvFnBackward"
    monkeypatch.setenv("LKSCALE_DWCONV", "torch")
    assert type(m(x).grad_fn).__name__ == "ConvolutionBackward0"
    monkeypatch.setenv("LKSCALE_DWCONV", "auto")
    small = DWConv2d(8, 3)

    def autograd_nodes(y):
        names, todo = set(), [y.grad_fn]
        while todo:
            node = todo.pop()
            if node is not None and type(node).__name__ not in names:
                names.add(type(node).__name__)
                todo.extend(n for n, _ in node.next_functions)
        return names

    nodes = autograd_nodes(small(x))           # below LARGE_KERNEL_MIN: PyTorch's conv + autograd
    assert "ConvolutionBackward0" in nodes and "DepthwiseConvFnBackward" not in nodes
    # a 31 kernel on a 2x2 map acts as a 3x3 one: PyTorch's conv of the cropped kernel
    nodes = autograd_nodes(m(torch.randn(2, 8, 2, 2)))
    assert "ConvolutionBackward0" in nodes and "SliceBackward0" in nodes
    monkeypatch.setenv("LKSCALE_DWCONV", "fast")
    with pytest.raises(ValueError, match="LKSCALE_DWCONV"):
        m(x)


def test_traced_and_counted_forward_is_a_plain_convolution():
    m = DWConv2d(6, 31).eval()
    x = torch.randn(1, 6, 8, 8)
    traced = torch.jit.trace(m, x)
    graph = str(traced.graph)
    assert "aten::_convolution" in graph
    assert "DepthwiseConvFn" not in graph
    torch.testing.assert_close(traced(x), m(x), rtol=1e-5, atol=1e-5)

    from torch.utils.flop_counter import FlopCounterMode
    plain = nn.Conv2d(6, 6, 31, padding=15, groups=6)
    counts = []
    for mod in (m.train(), plain):
        x2 = torch.randn(2, 6, 8, 8, requires_grad=True)
        with FlopCounterMode(display=False) as fc:
            mod(x2).sum().backward()
        counts.append(fc.get_total_flops())
    # the counter sees the full 31x31 kernel, forward and backward, exactly as for nn.Conv2d
    assert counts[0] == counts[1] and counts[0] >= 3 * 2 * 2 * 6 * 8 * 8 * 31 * 31


def test_onnx_export_flag_takes_plain_path(monkeypatch):
    calls = []
    monkeypatch.setattr(impl.DepthwiseConvFn, "apply", lambda *a: calls.append(a))
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    m = DWConv2d(4, 15)
    y = m(torch.randn(2, 4, 10, 10, requires_grad=True))
    assert calls == [] and type(y.grad_fn).__name__ == "ConvolutionBackward0"


def test_state_dict_and_class_unchanged():
    m = DWConv2d(16, 13, dilation=1, bias=True)
    assert isinstance(m, nn.Conv2d)
    assert list(m.state_dict()) == ["weight", "bias"]
    assert list(DWConv2d(16, 5, 2, bias=False).state_dict()) == ["weight"]
    plain = nn.Conv2d(16, 16, 13, padding=6, groups=16)
    m.load_state_dict(plain.state_dict())
    x = torch.randn(2, 16, 9, 9)
    torch.testing.assert_close(m(x), plain(x), rtol=1e-5, atol=1e-5)


def test_autotuner_persists_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("LKSCALE_CACHE", str(tmp_path))
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    DWConv2d(4, 9)(x).sum().backward()
    path = tmp_path / impl.Autotuner.FILE
    saved = json.loads(path.read_text())
    key = [k for k in saved if k.startswith("gw|2x4x6x6|k9x9|")]
    assert len(key) == 1 and saved[key[0]] in impl.gw_candidates(x, 9, 9)
    # a fresh process (here: a cleared tuner) reuses the stored choice without timing anything
    impl.TUNER.clear()
    saved[key[0]] = "dwloop2"
    path.write_text(json.dumps(saved))
    picked = impl.TUNER.pick("gw", key[0][3:], {"dwloop2": lambda: torch.zeros(1), "fft": lambda: 1 / 0})
    assert picked[0] == "dwloop2"


def test_reparam_module_trains_through_fast_path():
    """A RepLK-style large kernel + small branch learns the same as with PyTorch's path."""
    from lkscale.blocks.common import ReparamDWConv
    from lkscale.spec import Branch

    def run(mode):
        os.environ["LKSCALE_DWCONV"] = mode
        try:
            torch.manual_seed(1)
            m = ReparamDWConv(8, 17, (Branch(3, 1), Branch(3, 2)))
            opt = torch.optim.SGD(m.parameters(), lr=0.1)
            x, t = torch.randn(4, 8, 10, 10), torch.randn(4, 8, 10, 10)
            for _ in range(3):
                opt.zero_grad()
                F.mse_loss(m(x), t).backward()
                opt.step()
            return m.lk.weight.detach().clone()
        finally:
            os.environ.pop("LKSCALE_DWCONV", None)

    torch.testing.assert_close(run("lk"), run("torch"), rtol=1e-4, atol=1e-5)


def test_other_dtypes_take_plain_path(monkeypatch):
    calls = []
    monkeypatch.setattr(impl.DepthwiseConvFn, "apply", lambda *a: calls.append(a))
    m = DWConv2d(4, 15)
    m.to(torch.bfloat16)(torch.randn(2, 4, 10, 10, dtype=torch.bfloat16, requires_grad=True)).sum().backward()
    assert calls == []


def test_cpu_autocast_runs_fp32_fast_path(monkeypatch):
    """Under bf16 autocast on CPU the depthwise conv runs in fp32 (our path), matching fp32 F.conv2d."""
    monkeypatch.delenv("LKSCALE_DWCONV", raising=False)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(4, 1, 13, 13, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = depthwise_conv2d(x.to(torch.bfloat16), w, None, 6)
    assert y.dtype == torch.float32 and "DepthwiseConvFn" in type(y.grad_fn).__name__
    ref = F.conv2d(x.to(torch.bfloat16).float(), w, None, 1, 6, 1, 4)
    _close(y.detach(), ref.detach())
    y.sum().backward()
    assert w.grad is not None and x.grad is not None and x.grad.dtype == torch.float32


def test_autotuner_takes_a_choice_another_process_made_meanwhile(tmp_path, monkeypatch):
    monkeypatch.setenv("LKSCALE_CACHE", str(tmp_path))
    impl.TUNER.clear()
    impl.TUNER.pick("gw", "other-key", {"dwloop2": lambda: torch.zeros(1)})  # the file is loaded and written
    path = tmp_path / impl.Autotuner.FILE
    saved = json.loads(path.read_text())
    saved["gw|shared-key"] = "fft"  # written by another process after this one loaded the file
    path.write_text(json.dumps(saved))
    picked = impl.TUNER.pick("gw", "shared-key", {"dwloop2": lambda: 1 / 0, "fft": lambda: 1 / 0})
    assert picked == ("fft", None)  # nothing timed: the machine's decision stands


def test_autotuner_choices_persist_in_the_default_cache_when_none_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("LKSCALE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    impl.TUNER.clear()
    impl.TUNER.pick("gw", "k", {"dwloop2": lambda: torch.zeros(1)})
    assert json.loads((tmp_path / ".cache" / "lkscale" / impl.Autotuner.FILE).read_text()) == {"gw|k": "dwloop2"}


def test_concurrent_processes_make_one_autotune_decision_per_key(tmp_path):
    """Two processes meeting the same new shape at once end with the same grad-weight method (the file lock
    serialises the decision), so the same seed trains the same network in both."""
    import subprocess
    import sys

    code = ("import json, torch; from lkscale.ops import DWConv2d; from lkscale.ops import dwconv_impl as impl\n"
            "torch.manual_seed(0); torch.set_num_threads(1)\n"
            "x = torch.randn(16, 32, 16, 16, requires_grad=True); m = DWConv2d(32, 31)\n"
            "m(x).sum().backward()\n"
            "print(json.dumps({'choices': impl.TUNER.choices(), 'grad': m.weight.grad.flatten()[:50].tolist()}))\n")
    env = dict(os.environ, LKSCALE_CACHE=str(tmp_path), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    a, b = (json.loads(o.strip().splitlines()[-1]) for o, _ in outs)
    gw = {k: v for k, v in a["choices"].items() if k.startswith("gw|")}
    assert gw and gw == {k: v for k, v in b["choices"].items() if k.startswith("gw|")}
    assert a["grad"] == b["grad"]  # bit-identical gradients


def test_autotuner_without_a_writable_cache_still_decides(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("LKSCALE_CACHE", str(blocker))  # the cache "folder" is a file: no lock, no saving
    impl.TUNER.clear()
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    DWConv2d(4, 9)(x).sum().backward()
    assert x.grad is not None and any(k.startswith("gw|2x4x6x6|k9x9|") for k in impl.TUNER.choices())
