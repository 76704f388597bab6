"""lkscale.weights: the one safetensors reader/writer, its schema, the older schemas, and folders written by
`lkscale train --save` that lkscale.load rebuilds."""
import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

import lkscale
from lkscale.cli import main as cli_main
from lkscale.weights import FORMAT, WeightsError, read_meta, read_weights, save_weights

SPEC = lkscale.ArchSpec.from_dict({"stem": {"stride": 2}, "stages": [
    {"block": "replk", "depth": 1, "width": w, "kernel": k, "reparam": [3] if k > 3 else []}
    for w, k in ((8, 7), (16, 5), (16, 3))]})


def _model(num_classes=6, in_chans=3):
    torch.manual_seed(1)
    return lkscale.build_model(SPEC, num_classes=num_classes, in_chans=in_chans).eval()


def test_round_trip_all_fields(tmp_path):
    model = _model(num_classes=6, in_chans=1)
    path = str(tmp_path / "w.safetensors")
    save_weights(path, model, SPEC, num_classes=6, in_chans=1, classes=list("abcdef"), mean=[0.5], std=[0.25],
                 input_size=28, extra={"val_acc": 0.625, "epochs": 3, "note": "x"})
    state, meta = read_weights(path)
    ref = model.state_dict()
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)
    assert meta.format == FORMAT and meta.spec == SPEC and meta.form == "train"
    assert (meta.num_classes, meta.in_chans, meta.input_size) == (6, 1, 28)
    assert meta.classes == tuple("abcdef") and meta.mean == (0.5,) and meta.std == (0.25,)
    assert dict(meta.extra) == {"val_acc": 0.625, "epochs": 3, "note": "x"}
    assert read_meta(path) == meta
    # atomic write: nothing else left in the folder; readable like the other files (not 0600)
    assert os.listdir(tmp_path) == ["w.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_state_dict_input_and_optional_fields(tmp_path):
    path = str(tmp_path / "w.safetensors")
    save_weights(path, _model().state_dict(), SPEC, num_classes=6, form="deploy")
    meta = read_meta(path)
    assert meta.form == "deploy" and meta.classes is None and meta.mean is None and meta.input_size is None
    assert dict(meta.extra) == {}


def _old(path, metadata):
    save_file({k: v.contiguous() for k, v in _model().state_dict().items()}, path, metadata=metadata)


def test_reads_the_three_older_schemas(tmp_path):
    classes = json.dumps([f"c{i}" for i in range(6)])
    search = str(tmp_path / "search.safetensors")  # lkscale.search before lkscale.weights (no format tag)
    _old(search, {"spec": SPEC.to_json(), "num_classes": "6", "in_chans": "3", "classes": classes,
                  "mean": "[0.4, 0.5, 0.6]", "std": "[0.2, 0.2, 0.2]"})
    m = read_meta(search)
    assert m.spec == SPEC and m.num_classes == 6 and m.mean == (0.4, 0.5, 0.6) and m.classes[-1] == "c5"
    export = str(tmp_path / "export.safetensors")  # lkscale export before lkscale.weights
    _old(export, {"format": "lkscale-export/1", "spec": SPEC.to_json(), "num_classes": "6", "in_chans": "3",
                  "input_size": "32", "classes": "null", "mean": "null", "std": "null", "form": "deploy",
                  "lkscale_version": "0.1.0"})
    m = read_meta(export)
    assert m.form == "deploy" and m.input_size == 32 and m.classes is None and m.extra == {"lkscale_version": "0.1.0"}
    train = str(tmp_path / "train.safetensors")  # `lkscale train --save` before: no spec, no class count
    _old(train, {"format": "lkscale", "spec_name": SPEC.name, "classes": classes, "in_chans": "3",
                 "input_size": "32", "val_acc": "0.5"})
    m = read_meta(train)
    assert m.spec is None and m.num_classes == 6 and m.extra == {"spec_name": SPEC.name, "val_acc": "0.5"}
    bare = str(tmp_path / "bare.safetensors")
    _old(bare, {"format": "lkscale", "spec_name": SPEC.name})
    with pytest.raises(WeightsError, match="neither num_classes nor classes"):
        read_meta(bare)


def test_refuses_pickle_paths_unknown_formats_and_bad_arguments(tmp_path):
    with pytest.raises(WeightsError, match="only .safetensors"):
        read_weights(str(tmp_path / "model.pt"))
    with pytest.raises(WeightsError, match="no such weights file"):
        read_meta(str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match=".safetensors only"):
        save_weights(str(tmp_path / "model.pt"), _model(), SPEC, num_classes=6)
    with pytest.raises(WeightsError, match="num_classes"):
        save_weights(str(tmp_path / "a.safetensors"), _model(), SPEC, num_classes=-1)
    odd = str(tmp_path / "odd.safetensors")
    _old(odd, {"format": "someone-else/2", "num_classes": "6"})
    with pytest.raises(WeightsError, match="unknown weights format"):
        read_meta(odd)


def test_train_save_folder_loads_back(tmp_path, capsys, monkeypatch):
    """`lkscale train --save DIR` -> `lkscale.load(DIR)`: right class count and spec, the same outputs
    (before lkscale.weights, the folder had no spec or class count and load built a 1000-class head)."""
    import pickle

    def no_pickle(*a, **k):
        raise AssertionError("pickle used")

    for mod, fn in ((torch, "save"), (torch, "load"), (pickle, "dump"), (pickle, "dumps"), (pickle, "load")):
        monkeypatch.setattr(mod, fn, no_pickle)
    spec_file = tmp_path / "tiny.yaml"
    SPEC.save(str(spec_file))
    out = tmp_path / "saved"
    rc = cli_main(["train", "--spec", str(spec_file), "--dataset", "synthetic", "--epochs", "1", "--subset", "4",
                   "--val", "2", "--threads", "1", "--save", str(out), "--json", "--no-progress"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    model = lkscale.load(str(out))
    assert model.spec == SPEC and model.num_classes == res["classes"] == 10  # not a 1000-class head
    meta = read_meta(str(out / "model.safetensors"))
    assert meta.spec == SPEC and meta.num_classes == 10 and len(meta.classes) == 10 and meta.input_size == 32
    assert meta.extra["val_acc"] == pytest.approx(res["val_acc"]) and meta.extra["epochs"] == res["epochs"]
    assert model.pretrained_cfg["mean"] == meta.mean and model.pretrained_cfg["num_classes"] == 10
    # the deploy form of a train folder: its weights re-parameterised
    deploy = lkscale.load(str(out), deploy=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert ref.abs().max() > 0.01
        torch.testing.assert_close(deploy(x), ref, rtol=1e-4, atol=1e-4)
    assert deploy.deployed and not model.deployed


def test_search_weights_carry_the_schema(smoke_run):
    """Every weights file of a real search run is safetensors whose metadata rebuilds the model."""
    wdir = os.path.join(smoke_run, "weights")
    files = sorted(os.listdir(wdir))
    assert files and all(f.endswith(".safetensors") for f in files)  # nothing pickled
    for f in files:
        state, meta = read_weights(os.path.join(wdir, f))
        assert meta.spec is not None and f == f"{meta.spec.name}.safetensors"
        model = lkscale.build_model(meta.spec, num_classes=meta.num_classes, in_chans=meta.in_chans)
        model.load_state_dict(state, strict=True)
        assert meta.classes is not None and len(meta.classes) == meta.num_classes and len(meta.mean) == meta.in_chans


def test_load_reads_a_train_folder_of_the_old_schema(tmp_path):
    """A `lkscale train --save` folder written before lkscale.weights (no spec, no class count in the
    metadata; spec.yaml beside it) still loads, sized from its class names."""
    model = _model(num_classes=6)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"),
              metadata={"format": "lkscale", "spec_name": SPEC.name, "classes": json.dumps(list("abcdef")),
                        "mean": "[0.4, 0.5, 0.6]", "std": "[0.2, 0.2, 0.2]", "input_size": "32", "in_chans": "3"})
    SPEC.save(str(tmp_path / "spec.yaml"))
    loaded = lkscale.load(str(tmp_path))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert loaded.num_classes == 6 and torch.equal(loaded(x), model(x))
    assert loaded.pretrained_cfg["mean"] == (0.4, 0.5, 0.6) and loaded.pretrained_cfg["label_names"] == tuple("abcdef")
