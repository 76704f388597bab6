"""Devices and precision for training: device choice (pure logic, every machine), bf16 autocast on CPU
(real), fused vs looped optimiser, and CUDA training where a GPU is present (skipped cleanly elsewhere)."""
from __future__ import annotations

import pytest
import torch

import lkscale
from lkscale.data import DataConfig, load_splits
from lkscale.spec import ArchSpec
from lkscale.train import (TrainConfig, check_precision, evaluate, make_optimizer, pick_device, resolve_device,
                           to_device, train_model)

MICRO = {"stem": {"stride": 2},
         "stages": [{"block": "replk", "depth": 1, "width": 8, "kernel": 7, "reparam": [3]},
                    {"block": "convnext", "depth": 1, "width": 16, "kernel": 5},
                    {"block": "convnext", "depth": 1, "width": 16, "kernel": 3}]}
has_cuda = torch.cuda.is_available()
gpu = pytest.mark.skipif(not has_cuda, reason="no CUDA device on this machine")


@pytest.fixture(scope="module")
def synthetic():
    return load_splits(DataConfig(dataset="synthetic", train_per_class=16, val_per_class=4, seed=0))


def _model(splits, seed=0):
    torch.manual_seed(seed)
    return lkscale.build_model(ArchSpec.from_dict(MICRO), num_classes=len(splits.classes), in_chans=splits.in_chans)


@pytest.mark.parametrize("name,avail,count,visible,want", [
    ("auto", False, 0, None, "cpu"),              # CPU-only torch / machine
    ("auto", True, 2, None, "cuda:0"),            # a GPU machine outside Ray
    ("auto", True, 1, "3", "cuda:0"),             # a Ray trial given GPU 3 sees it as device 0
    ("auto", True, 1, "", "cpu"),                 # a Ray trial given no GPU on a GPU node
    ("cpu", True, 4, None, "cpu"),
    ("cuda", True, 1, "0", "cuda:0"),
    ("CUDA:1", True, 2, None, "cuda:1"),
])
def test_pick_device(name, avail, count, visible, want):
    assert pick_device(name, avail, count, visible) == want


@pytest.mark.parametrize("name,avail,count,visible,msg", [
    ("cuda", False, 0, None, "no CUDA"),
    ("cuda:0", True, 1, "", "CUDA_VISIBLE_DEVICES is empty"),
    ("cuda:2", True, 2, None, "only 2"),
    ("tpu", True, 1, None, "unknown"),
    ("cuda:x", True, 1, None, "cuda:N"),
])
def test_pick_device_errors(name, avail, count, visible, msg):
    with pytest.raises(ValueError, match=msg):
        pick_device(name, avail, count, visible)


def test_resolve_device_here(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    want = torch.device("cuda:0") if has_cuda else torch.device("cpu")
    assert resolve_device("auto") == want
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")     # what Ray gives a trial without GPUs
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError):
        resolve_device("cuda")


def test_precision_checks():
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        check_precision("fp16", torch.device("cpu"))
    check_precision("bf16", torch.device("cpu"))
    check_precision("fp32", torch.device("cpu"))


def test_to_device_cpu_is_the_same_set(synthetic):
    assert to_device(synthetic.train, torch.device("cpu")) is synthetic.train


def test_bf16_autocast_on_cpu_trains_in_bf16(synthetic):
    s = synthetic
    model = _model(s)
    seen = []
    linears = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    linears[-1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    cfg = TrainConfig(epochs=2, batch_size=16, lr=2e-3, threads=1, seed=0, precision="bf16", device="cpu")
    res = train_model(model, s, cfg)
    assert res.status == "ok" and res.precision == "bf16" and res.device == "cpu"
    assert all(h["device"] == "cpu" and h["precision"] == "bf16" for h in res.history)   # per-epoch metrics
    assert torch.bfloat16 in seen
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"] + 0.5
    ref = train_model(_model(s), s, TrainConfig(epochs=2, batch_size=16, lr=2e-3, threads=1, seed=0))
    assert ref.precision == "fp32"
    # same data, init and schedule: bf16 rounding moves the losses only a little
    assert abs(res.history[0]["train_loss"] - ref.history[0]["train_loss"]) < 0.1
    with pytest.raises(ValueError, match="fp16"):
        train_model(_model(s), s, TrainConfig(epochs=1, batch_size=16, threads=1, precision="fp16", device="cpu"))


def test_fused_optimizer_matches_loops(synthetic):
    """The fast path (fused AdamW, foreach clipping) follows the looped path to float rounding."""
    s = synthetic
    kw = dict(epochs=2, batch_size=16, lr=2e-3, threads=1, seed=3)
    a = train_model(_model(s, 3), s, TrainConfig(fused_optimizer=True, **kw))
    b = train_model(_model(s, 3), s, TrainConfig(fused_optimizer=False, **kw))
    assert a.status == b.status == "ok"
    for ha, hb in zip(a.history, b.history):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)
        assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-3)
    # one step from the same gradients: the same update to float rounding (over many steps Adam's
    # normalised updates of near-zero gradients amplify rounding, as a change of thread count does)
    ma, mb = _model(s, 5), _model(s, 5)
    xb, yb = next(s.train.batches(16))
    for m in (ma, mb):
        torch.nn.functional.cross_entropy(m(xb), yb).backward()
    oa = make_optimizer(ma, TrainConfig(fused_optimizer=True))
    ob = make_optimizer(mb, TrainConfig(fused_optimizer=False))
    assert oa.defaults["fused"] and not ob.defaults["fused"]
    for _ in range(3):
        oa.step()
        ob.step()
    for (k, va), (_, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        torch.testing.assert_close(va, vb, rtol=1e-6, atol=1e-7, msg=k)


@gpu
def test_gpu_training_matches_cpu_and_returns_cpu_model(synthetic):
    s = synthetic
    kw = dict(epochs=2, batch_size=16, lr=2e-3, threads=1, seed=0)
    g = train_model(_model(s), s, TrainConfig(device="cuda", **kw))
    c = train_model(_model(s), s, TrainConfig(device="cpu", **kw))
    assert g.status == "ok" and g.device == "cuda:0" and c.device == "cpu"
    assert next(g.model.parameters()).device.type == "cpu"
    assert s.train.x.device.type == "cpu"             # the caller's data is not moved
    # cuDNN (TF32 convs by default) and CPU kernels round differently: the same run within noise
    assert g.history[0]["train_loss"] == pytest.approx(c.history[0]["train_loss"], rel=2e-2)
    loss, acc = evaluate(g.model, s.val)
    assert acc == pytest.approx(g.val_acc, abs=1 / len(s.val) + 1e-9)


@gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_mixed_precision_trains(synthetic, precision):
    s = synthetic
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bf16")
    res = train_model(_model(s), s, TrainConfig(epochs=2, batch_size=16, lr=2e-3, seed=0, device="cuda",
                                                precision=precision, augment=True))
    assert res.status == "ok" and res.precision == precision and res.device.startswith("cuda")
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"] + 0.5


@gpu
def test_gpu_batches_are_made_on_the_device(synthetic):
    ts = to_device(synthetic.train, torch.device("cuda"))
    xb, yb = next(ts.batches(8, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0),
                             channels_last=True))
    assert xb.device.type == "cuda" and yb.device.type == "cuda" and xb.dtype == torch.float32
    ref, _ = next(synthetic.train.batches(8, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(xb.cpu(), ref, rtol=0, atol=1e-6)


def test_cli_device_and_precision(capsys):
    import json

    from lkscale.cli import main

    args = ["train", "--preset", "convnext_proxy", "--dataset", "synthetic", "--epochs", "1", "--subset", "4",
            "--val", "2", "--threads", "1", "--no-progress"]
    assert main(args + ["--precision", "bf16", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["device"] == "cpu" and out["precision"] == "bf16"
    if not has_cuda:
        assert main(args + ["--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "no CUDA device" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(args + ["--device", "cpu", "--precision", "fp16"]) == 2
