"""lkscale.train: real learning on real CIFAR-10 images, determinism, NaN handling, early stop, CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import lkscale
from lkscale.data import DataConfig, default_data_root, load_splits
from lkscale.spec import ArchSpec
from lkscale.train import STOP, TrainConfig, evaluate, lr_at, train_model

# A small ConvNeXt-block proxy: 3 stages, stem stride 2 (32 px -> 16/8/4 maps).
TINY = {"stem": {"stride": 2}, "layer_scale": 1.0,
        "stages": [{"block": "convnext", "depth": 1, "width": w, "kernel": 3} for w in (24, 48, 96)]}
MICRO = {"stem": {"stride": 2},
         "stages": [{"block": "convnext", "depth": 1, "width": w, "kernel": 3} for w in (8, 16, 32)]}


def _cifar_root() -> str:
    try:
        root = default_data_root("imagefolder")
    except Exception as e:  # DataError: no archive on this machine
        pytest.skip(f"CIFAR-10 JPEG archive not found ({e}); put cifar10-jpg.tar.gz in ../shared/data or set LKSCALE_DATA")
    if "cifar10" not in Path(root).name:
        pytest.skip(f"default data root {root} is not the CIFAR-10 JPEG archive")
    return root


@pytest.fixture(scope="module")
def cifar_small():
    root = _cifar_root()
    return load_splits(DataConfig(root=root, train_per_class=200, val_per_class=50, test_per_class=20, seed=0))


@pytest.fixture(scope="module")
def synthetic():
    return load_splits(DataConfig(dataset="synthetic", train_per_class=16, val_per_class=4, seed=0))


def _model(spec=TINY, splits=None, seed=0):
    torch.manual_seed(seed)
    return lkscale.build_model(ArchSpec.from_dict(spec), num_classes=len(splits.classes), in_chans=splits.in_chans)


def test_learns_cifar10_well_above_chance(cifar_small):
    s = cifar_small
    assert (len(s.train), len(s.val), len(s.test)) == (2000, 500, 200)
    hist = []
    res = train_model(_model(TINY, s), s, TrainConfig(epochs=3, batch_size=32, lr=3e-3, warmup_epochs=0.3,
                                                      augment=False, threads=1, seed=0), callback=hist.append)
    assert res.status == "ok" and res.epochs_done == 3 and len(res.history) == 3 == len(hist)
    assert res.val_acc > 0.25, f"val acc {res.val_acc:.3f} after 3 epochs on 2000 CIFAR-10 images (chance 0.10)"
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    for m in hist:
        assert set(m) >= {"epoch", "train_loss", "val_loss", "val_acc", "epoch_seconds", "images_per_s", "lr"}
        assert m["images_per_s"] > 0 and m["epoch_seconds"] > 0
    loss, acc = evaluate(res.model, s.val, 250)
    assert acc == pytest.approx(res.val_acc) and loss == pytest.approx(res.val_loss, rel=1e-5)
    _, test_acc = evaluate(res.model, s.test, 100)
    assert test_acc > 0.18  # held-out test images (200) are also well above chance


def test_same_seed_one_thread_is_identical(synthetic):
    s = synthetic
    cfg = TrainConfig(epochs=2, batch_size=16, lr=2e-3, threads=1, seed=7)
    a = train_model(_model(MICRO, s, seed=7), s, cfg)
    b = train_model(_model(MICRO, s, seed=7), s, cfg)
    assert a.status == b.status == "ok"
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert a.val_acc == b.val_acc and a.val_loss == b.val_loss
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), k
    c = train_model(_model(MICRO, s, seed=7), s, TrainConfig(epochs=2, batch_size=16, lr=2e-3, threads=1, seed=8))
    assert [h["train_loss"] for h in c.history] != [h["train_loss"] for h in a.history]


def test_nan_loss_ends_run_cleanly(synthetic):
    s = synthetic
    res = train_model(_model(MICRO, s), s, TrainConfig(epochs=2, batch_size=16, lr=1e9, warmup_epochs=0,
                                                       clip_grad=None, threads=1))
    assert res.status == "nan" and "diverged" in res.message
    # a hook injecting NaN into the forward pass
    model = _model(MICRO, s)
    model.stem.register_forward_hook(lambda m, i, o: o * float("nan"))
    res = train_model(model, s, TrainConfig(epochs=1, batch_size=16, threads=1))
    assert res.status == "nan" and "loss is nan" in res.message and res.history == []


def test_callback_stops_early(synthetic):
    s = synthetic
    seen = []

    def cb(m):
        seen.append(m["epoch"])
        return STOP if m["epoch"] == 2 else None

    res = train_model(_model(MICRO, s), s, TrainConfig(epochs=5, batch_size=32, threads=1), callback=cb)
    assert res.status == "stopped" and seen == [1, 2] and res.epochs_done == 2
    res = train_model(_model(MICRO, s), s, TrainConfig(epochs=3, batch_size=32, threads=1), callback=lambda m: True)
    assert res.status == "stopped" and res.epochs_done == 1


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup_start=0.0, min_lr_ratio=0.0)
    lrs = [lr_at(i, 100, 10, cfg) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.5, abs=1e-9)  # cosine half-way
    assert lr_at(99, 100, 0, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_threads_restored_and_steps_counted(synthetic):
    s = synthetic
    before = torch.get_num_threads()
    steps = []
    res = train_model(_model(MICRO, s), s, TrainConfig(epochs=1.5, batch_size=32, threads=1),
                      on_step=lambda i, n, loss: steps.append((i, n)))
    assert torch.get_num_threads() == before
    # 160 images, batch 32 -> 5 steps per epoch; 1.5 epochs -> 8 steps (the second epoch partial)
    assert steps[-1] == (8, 8) and len(steps) == 8 and res.epochs_done == 2


def test_cli_train_save_and_json(tmp_path, capsys):
    from safetensors.torch import load_file

    from lkscale.cli import main

    spec_file = tmp_path / "tiny.yaml"
    ArchSpec.from_dict(MICRO).save(str(spec_file))
    out = tmp_path / "run"
    rc = main(["train", "--spec", str(spec_file), "--dataset", "synthetic", "--epochs", "1", "--subset", "8",
               "--val", "2", "--threads", "1", "--save", str(out), "--test", "--json", "--no-progress"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["status"] == "ok" and res["train_images"] == 80 and 0 <= res["test_acc"] <= 1
    sd = load_file(str(out / "model.safetensors"))
    model = lkscale.build_model(ArchSpec.load(str(out / "spec.yaml")), num_classes=10)
    model.load_state_dict(sd)  # strict: every tensor saved, nothing pickled
    assert ArchSpec.load(str(out / "spec.yaml")).name == ArchSpec.from_dict(MICRO).name
    rc = main(["train", "--spec", str(spec_file), "--data", str(tmp_path / "missing"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "no such file or folder" in err and "Traceback" not in err
    assert main(["train", "--preset", "convnext_proxy", "--epochs", "0"]) == 2


# ------------------------------------------------------------------ evaluation in inference form (issue 22)
REPLK_BN = {"stem": {"stride": 2}, "layer_scale": 1.0,
            "stages": [{"block": "replk", "depth": 1, "width": w, "kernel": 7, "reparam": [3]} for w in (8, 16, 32)]}


def test_evaluate_deploy_form_equals_eval_mode_and_leaves_model_alone(synthetic):
    """The re-parameterised copy (BN and the 3x3 branch folded) gives the eval-mode model's loss within
    float rounding and the same accuracy; the trained model keeps its BN and branches."""
    s = synthetic
    model = _model(REPLK_BN, s, seed=3)
    train_model(model, s, TrainConfig(epochs=1, batch_size=16, threads=1, seed=3))  # non-trivial BN statistics
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    loss_d, acc_d = evaluate(model, s.val, 7, deploy=True)
    loss_e, acc_e = evaluate(model, s.val, 7, deploy=False)
    assert n_bn > 0 and sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn
    assert loss_d == pytest.approx(loss_e, rel=1e-5) and acc_d == acc_e
    with torch.no_grad():  # the reference: the plain eval-mode forward, one batch
        xb, yb = next(s.val.batches(len(s.val), channels_last=True))
        ref = torch.nn.functional.cross_entropy(model.eval()(xb), yb).item()
    assert loss_e == pytest.approx(ref, rel=1e-6)


def test_val_every_epoch_false_validates_once_at_the_end(synthetic):
    """A scaling study's run: no BN recalibration or validation before the last epoch, the same final
    weights and accuracy as validating every epoch (validation does not touch the training stream)."""
    s = synthetic
    calls, ends = [], []
    cfg = TrainConfig(epochs=3, batch_size=16, threads=1, seed=5)
    every = train_model(_model(REPLK_BN, s, seed=5), s, cfg)
    last = train_model(_model(REPLK_BN, s, seed=5), s, TrainConfig(**{**cfg.__dict__, "val_every_epoch": False}),
                       callback=calls.append, on_epoch_end=lambda e, sec: ends.append((e, sec, len(calls))))
    assert [m["epoch"] for m in calls] == [3] and len(every.history) == 3 and last.epochs_done == 3
    assert [(e, n) for e, _, n in ends] == [(1, 0), (2, 0), (3, 0)] and all(sec > 0 for _, sec, _ in ends)  # progress
    # every epoch, validated or not, before the callback
    assert last.val_acc == every.val_acc and last.val_loss == every.val_loss
    assert calls[0]["seconds_train"] > 0 and calls[0]["seconds_eval"] > 0 and calls[0]["seconds_bn"] > 0
    assert every.history[-1]["seconds_eval"] > every.history[0]["seconds_eval"] > 0  # cumulative
    assert calls[0]["epoch_seconds"] >= calls[0]["seconds_train"]  # the span covers the three epochs
