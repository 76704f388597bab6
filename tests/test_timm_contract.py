"""timm's model contract for every registered lkscale preset and for an exported winner, with checks modelled
on timm's own tests/test_models.py (default cfgs, forward_intermediates, features_only, reset_classifier)."""
import os
import subprocess
import sys

import pytest
import timm
import torch
from timm.models import FeatureInfo

import lkscale
from lkscale.export import export_winners, read_export, timm_name

NAMES = lkscale.register_timm()
PRESETS = [n for n in NAMES if n != "lkscale_spec"]
CFG_KEYS = ("architecture", "num_classes", "input_size", "mean", "std", "first_conv", "classifier", "interpolation",
            "crop_pct")


def _size(model) -> int:
    """A small input: stage maps of 8, 4, 2, 1 px (stem stride 4) or 16..2 px (stem stride 2)."""
    return 16 * model.spec.stem.stride // 2 if model.spec.stem.stride > 1 else 16


def _input(model, batch=2):
    s = _size(model)
    return torch.randn(batch, model.in_chans, s, s, generator=torch.Generator().manual_seed(0))


def test_nothing_registered_at_import():
    code = ("import lkscale, lkscale.export, lkscale.model, timm; "
            "assert not timm.list_models('lkscale_*'), timm.list_models('lkscale_*'); "
            "lkscale.register_timm(); assert 'lkscale_replk_proxy' in timm.list_models('lkscale_*')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.parametrize("name", PRESETS)
def test_default_cfg_head_and_intermediates(name):
    model = timm.create_model(name, num_classes=5).eval()
    cfg = model.pretrained_cfg
    assert all(k in cfg for k in CFG_KEYS), [k for k in CFG_KEYS if k not in cfg]
    assert len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0] == 3
    state = model.state_dict()
    assert cfg["classifier"] + ".weight" in state and state[cfg["classifier"] + ".weight"].shape[0] == 5
    assert cfg["first_conv"] + ".weight" in state and state[cfg["first_conv"] + ".weight"].shape[1] == 3
    x = _input(model)
    info = FeatureInfo(model.feature_info, list(range(len(model.feature_info))))
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
        assert logits.shape == (2, 5)
        torch.testing.assert_close(model.forward_head(feats), logits, rtol=0, atol=0)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, feats, rtol=0, atol=0)
        assert [t.shape[1] for t in inter] == info.channels()
        assert [x.shape[-1] // t.shape[-1] for t in inter] == info.reduction()
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True, stop_early=True)
        assert len(last2) == 2 and all(torch.equal(a, b) for a, b in zip(last2, inter[-2:]))
        model.reset_classifier(0)
        assert model(x).shape == (2, model.head_hidden_size) and isinstance(model.get_classifier(), torch.nn.Identity)
        model.reset_classifier(0, "")  # no pooling: a feature map
        assert model(x).ndim == 4
        model.reset_classifier(7, "avg")
        assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)


@pytest.mark.parametrize("name", PRESETS)
def test_features_only_matches_feature_info_and_intermediates(name):
    torch.manual_seed(0)
    feat = timm.create_model(name, features_only=True).eval()
    torch.manual_seed(0)
    full = timm.create_model(name).eval()
    getter = timm.create_model(name, features_only=True, feature_cls="getter", out_indices=(1, 2)).eval()
    getter.load_state_dict(feat.state_dict(), strict=False)
    x = _input(full)
    with torch.no_grad():
        outs = feat(x)
        ref = full.forward_intermediates(x, intermediates_only=True)
        got = getter(x)
    assert len(outs) == len(full.feature_info) == len(feat.feature_info.channels())
    for o, c, r in zip(outs, feat.feature_info.channels(), feat.feature_info.reduction()):
        assert o.shape[1] == c and o.shape[-1] == x.shape[-1] // r
    for o, t in zip(outs, ref):  # same init seed: the same network
        torch.testing.assert_close(o, t, rtol=1e-5, atol=1e-5)
    assert [o.shape[1] for o in got] == [full.feature_info[i]["num_chs"] for i in (1, 2)]
    assert "mean" in feat.pretrained_cfg and "std" in feat.pretrained_cfg


def test_prune_intermediate_layers():
    model = timm.create_model("lkscale_convnext_proxy").eval()
    x = _input(model)
    with torch.no_grad():
        ref = model.forward_intermediates(x, intermediates_only=True)
        kept = model.prune_intermediate_layers(indices=[0, 1])
        got = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert kept == [0, 1] and len(model.stages) == 2 and model.num_features == model.feature_info[1]["num_chs"]
    assert all(torch.equal(a, b) for a, b in zip(got, ref[:2]))


@pytest.fixture(scope="module")
def winner(tmp_path_factory):
    from test_export import _trials, write_run  # the fake run folder of test_export (old search weights schema)

    root = tmp_path_factory.mktemp("timm")
    run, out = str(root / "run"), str(root / "out")
    write_run(run, _trials()[:2])
    (path,) = export_winners(run, out, top=1, onnx=False)
    return path


def test_exported_winner_through_timm(winner, monkeypatch):
    def no_pickle(*a, **k):
        raise AssertionError("torch.load (pickle) used")

    monkeypatch.setattr(torch, "load", no_pickle)
    rec = read_export(winner)
    ref = lkscale.load(winner)
    name = lkscale.register_export(winner)
    assert name == timm_name(rec["name"])
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x)
        want_feats = ref.forward_intermediates(x, intermediates_only=True)
        for model_name in (name, f"local-dir:{winner}"):
            m = timm.create_model(model_name, pretrained=True).eval()
            assert torch.equal(m(x), want)
            cfg = m.pretrained_cfg
            assert cfg["num_classes"] == 10 and tuple(cfg["input_size"]) == (3, 32, 32)
            assert tuple(cfg["mean"]) == pytest.approx(tuple(rec["normalisation"]["mean"]))
            assert tuple(cfg["std"]) == pytest.approx(tuple(rec["normalisation"]["std"]))
            assert cfg["classifier"] == "head.fc" and cfg["first_conv"] == "stem.0.conv"
            f = timm.create_model(model_name, pretrained=True, features_only=True).eval()
            assert all(torch.equal(a, b) for a, b in zip(f(x), want_feats))
            assert f.feature_info.channels() == [st["width"] for st in rec["spec"]["stages"]]
        # fine-tuning: a new classifier, the backbone's weights kept; one input channel: the first conv adapted
        m3 = timm.create_model(name, pretrained=True, num_classes=3).eval()
        assert m3(x).shape == (2, 3)
        assert all(torch.equal(a, b) for a, b in zip(m3.forward_intermediates(x, intermediates_only=True), want_feats))
        gray = timm.create_model(name, pretrained=True, in_chans=1).eval()
        w = ref.state_dict()["stem.0.conv.weight"]
        torch.testing.assert_close(gray.state_dict()["stem.0.conv.weight"], w.sum(1, keepdim=True))
    data = timm.data.resolve_data_config({}, model=m3)  # what timm's transforms use for this model
    assert data["input_size"] == (3, 32, 32) and data["mean"] == pytest.approx(tuple(rec["normalisation"]["mean"]))


def test_pretrained_needs_a_safetensors_file(tmp_path):
    with pytest.raises(RuntimeError, match="no pretrained weights"):
        timm.create_model("lkscale_replk_proxy", pretrained=True)
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(RuntimeError, match="safetensors"):
        timm.create_model("lkscale_replk_proxy", pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))
    assert os.path.isfile(bad)
