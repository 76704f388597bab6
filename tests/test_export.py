"""`lkscale export`: round trips (train and deploy form), ONNX, timm, safety, selection, retraining."""
import csv
import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import lkscale
from lkscale.cli import main as cli_main
from lkscale.weights import FORMAT as WEIGHTS_FORMAT, read_meta
from lkscale.export import (ExportError, check_name, export_winners, load, read_export, register_export, safe_child,
                            timm_name)

COLUMNS = ["trial_id", "number", "name", "state", "blocks", "kernels", "depths", "widths", "dcn_groups", "reparam",
           "stem_stride", "params", "deploy_params", "flops", "latency_ms", "val_acc", "val_acc_epochs", "epochs_done",
           "epochs_budget", "seconds", "node", "error", "notes", "seed", "spec"]


def _spec(k0, k1, reparam):
    return lkscale.ArchSpec.from_dict({"stem": {"stride": 2}, "stages": [
        {"block": "replk", "depth": 1, "width": 8, "kernel": k0, "reparam": reparam},
        {"block": "replk", "depth": 1, "width": 16, "kernel": k1, "reparam": reparam},
        {"block": "replk", "depth": 1, "width": 16, "kernel": 3}]})


def _trained_like(spec, seed):
    """A model whose outputs are O(1) and whose BN statistics are not the identity (as after training)."""
    torch.manual_seed(seed)
    model = lkscale.build_model(spec, num_classes=10)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.uniform_(0.5, 2.0)
                elif name.endswith("running_mean"):
                    t.normal_(0, 0.2)
                elif "gamma" in name or "scale" in name:
                    t.fill_(0.5)
                else:
                    t.add_(torch.randn_like(t) * 0.2)
    return model.eval()


# (spec, state, val_acc, latency_ms, has weights)
def _trials():
    a, b, c, d = _spec(7, 5, [3]), _spec(5, 3, []), _spec(9, 5, [3]), _spec(7, 7, [])
    return [(a, "complete", 0.60, 2.0, True), (b, "complete", 0.50, 1.0, True), (c, "complete", 0.55, 3.0, True),
            (d, "pruned", 0.90, 0.5, True), (_spec(11, 5, []), "infeasible", None, 0.2, False),
            (_spec(11, 7, []), "failed", 0.95, 0.3, False)]


def write_run(path, trials, names=None):
    os.makedirs(os.path.join(path, "weights"), exist_ok=True)
    import yaml

    with open(os.path.join(path, "study.yaml"), "w") as f:
        yaml.safe_dump({"name": "exp", "data": {"dataset": "synthetic", "train_per_class": 12, "val_per_class": 4,
                                                "test_per_class": 6, "input_size": 32, "augment": False},
                        "proxy": {"epochs": 2, "batch_size": 40, "lr": 0.004, "seed": 0},
                        "budgets": {"max_latency_ms": 10.0, "latency_input_size": 32, "latency_batch_size": 1,
                                    "latency_threads": 1}}, f)
    models = {}
    with open(os.path.join(path, "trials.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for i, (spec, state, acc, lat, has_w) in enumerate(trials):
            name = (names or {}).get(i, spec.name)
            if has_w:
                m = _trained_like(spec, i)
                models[spec.name] = m
                save_file({k: v.contiguous() for k, v in m.state_dict().items()},
                          os.path.join(path, "weights", f"{spec.name}.safetensors"),
                          metadata={"spec": spec.to_json(), "num_classes": "10", "in_chans": "3",
                                    "classes": json.dumps([f"c{j}" for j in range(10)])})
            w.writerow({"trial_id": f"t{i}", "number": i, "name": name, "state": state,
                        "blocks": json.dumps(list(spec.blocks)), "kernels": json.dumps(list(spec.kernels)),
                        "depths": json.dumps(list(spec.depths)), "widths": json.dumps(list(spec.widths)),
                        "dcn_groups": "[null, null, null]", "reparam": "[]", "stem_stride": 2, "params": 1000,
                        "deploy_params": 900, "flops": 12345, "latency_ms": lat, "val_acc": "" if acc is None else acc,
                        "val_acc_epochs": "[]", "epochs_done": 2 if state == "complete" else 1, "epochs_budget": 2,
                        "seconds": 1, "node": "n", "error": "", "notes": "", "seed": 7, "spec": spec.to_json()})
    return models


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    run, out = str(root / "run"), str(root / "out")
    models = write_run(run, _trials())

    def no_pickle(*a, **k):
        raise AssertionError("pickle/torch.load used")

    with pytest.MonkeyPatch.context() as mp:  # weights are never read or written through pickle
        mp.setattr(torch, "load", no_pickle)
        mp.setattr(torch, "save", no_pickle)
        mp.setattr(pickle, "load", no_pickle)
        mp.setattr(pickle, "loads", no_pickle)
        paths = export_winners(run, out, pareto=True)
        loaded = {os.path.basename(p): (load(p), load(p, deploy=True)) for p in paths}
    return run, out, models, paths, loaded


def test_pareto_export_selects_complete_front(exported):
    run, out, models, paths, _ = exported
    trials = _trials()
    # front of complete trials: b (1.0 ms, 0.50) and a (2.0 ms, 0.60); c is dominated by a;
    # the pruned and failed trials are faster and more accurate but never exported
    assert [os.path.basename(p) for p in paths] == [trials[1][0].name, trials[0][0].name]
    for p in paths:
        assert os.path.dirname(p) == os.path.realpath(out)
        for f in ("spec.yaml", "model.safetensors", "deploy.safetensors", "model.onnx", "card.md", "export.json",
                  "config.json"):
            assert os.path.isfile(os.path.join(p, f)), f
    index = json.load(open(os.path.join(out, "exports.json")))
    assert [e["name"] for e in index["exports"]] == [os.path.basename(p) for p in paths]


def test_round_trip_train_and_deploy(exported):
    _, _, models, paths, loaded = exported
    x = torch.randn(4, 3, 32, 32)
    for p in paths:
        name = os.path.basename(p)
        orig = models[name]
        train, deploy = loaded[name]
        assert lkscale.ArchSpec.load(os.path.join(p, "spec.yaml")) == orig.spec
        with torch.no_grad():
            ref = orig(x)
            assert ref.abs().max() > 0.1  # a meaningful comparison, not of near-zero outputs
            assert torch.equal(train(x), ref)
            assert torch.equal(deploy(x), lkscale.reparameterize(orig)(x))
            torch.testing.assert_close(deploy(x), ref, rtol=1e-4, atol=1e-4)
        assert deploy.deployed and not train.deployed
        assert set(load_file(os.path.join(p, "deploy.safetensors"))) == set(deploy.state_dict())
        for fname, form in (("model.safetensors", "train"), ("deploy.safetensors", "deploy")):  # one schema
            meta = read_meta(os.path.join(p, fname))
            assert meta.format == WEIGHTS_FORMAT and meta.form == form and meta.spec == orig.spec
            assert meta.num_classes == 10 and meta.input_size == 32 and len(meta.mean) == 3
            assert meta.extra["lkscale_version"] == lkscale.__version__
        # the public entry point gives the same model
        with torch.no_grad():
            assert torch.equal(lkscale.load(p, deploy=True)(x), deploy(x))


def test_onnx_matches_pytorch(exported):
    import onnxruntime as ort

    _, _, _, paths, loaded = exported
    x = torch.randn(5, 3, 32, 32)  # a batch size the export never saw
    for p in paths:
        rec = read_export(p)
        assert rec["checks"]["onnx"]["max_abs_diff"] <= 1e-4
        card = open(os.path.join(p, "card.md")).read()
        assert f"{rec['checks']['onnx']['max_abs_diff']:.2e}" in card
        sess = ort.InferenceSession(os.path.join(p, "model.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = loaded[os.path.basename(p)][1](x).numpy()
        assert got.shape == (5, 10)
        assert np.abs(got - want).max() <= 1e-4


def test_card_and_record(exported):
    run, _, _, paths, _ = exported
    rec = read_export(paths[0])
    assert rec["provenance"]["study"] == "exp" and rec["provenance"]["trial_number"] == 1
    assert rec["provenance"]["seed"] == 7 and rec["provenance"]["lkscale_version"] == lkscale.__version__
    assert rec["metrics"]["val_acc"] == 0.5 and rec["num_classes"] == 10
    assert len(rec["effective_kernels"]) == 3
    # 32 px, stem stride 2: the first stage runs on 16x16, so a 5x5 kernel is fully effective
    assert rec["effective_kernels"][0]["map"] == [16, 16]
    card = open(os.path.join(paths[0], "card.md")).read()
    for s in ("## Metrics", "## Costs", "## Provenance", "effective kernel", "model.safetensors", rec["timm_name"]):
        assert s in card
    # input normalisation recomputed from the study's seeded data subset
    assert rec["normalisation"]["mean"] is not None and len(rec["normalisation"]["mean"]) == 3


def test_timm_create_model(exported):
    import timm

    _, _, models, paths, _ = exported
    lkscale.register_timm()
    p = paths[0]
    name = os.path.basename(p)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = models[name](x)
        m1 = timm.create_model(f"local-dir:{p}", pretrained=True).eval()
        assert torch.equal(m1(x), ref)
        tname = register_export(p)
        assert tname == timm_name(name) and "." not in tname
        assert torch.equal(timm.create_model(tname, pretrained=True).eval()(x), ref)
        m3 = timm.create_model("lkscale_spec", spec=models[name].spec.to_dict(), pretrained=True,
                               pretrained_cfg_overlay=dict(file=os.path.join(p, "model.safetensors"))).eval()
        assert torch.equal(m3(x), ref)
    assert timm.data.resolve_data_config({}, model=m1)["input_size"] == (3, 32, 32)
    preset = timm.create_model("lkscale_replk_proxy", num_classes=7)
    assert preset.num_classes == 7 and preset.spec == lkscale.get_preset("replk_proxy")
    with pytest.raises(RuntimeError, match="no pretrained weights"):
        timm.create_model("lkscale_replk_proxy", pretrained=True)


@pytest.mark.parametrize("bad", ["..", "../evil", "a/../../b", "/abs", "a/b", "a\\b", "", ".hidden", "x" * 200, None,
                                 "a..b"])
def test_unsafe_names_rejected(bad):
    with pytest.raises(ExportError, match="unsafe"):
        check_name(bad)


def test_traversal_from_results_folder(tmp_path):
    run, out = str(tmp_path / "run"), str(tmp_path / "out")
    trials = _trials()[:2]
    write_run(run, trials, names={0: "../../escaped"})
    with pytest.raises(ExportError, match="unsafe"):
        export_winners(run, out, top=2, onnx=False)
    assert not os.path.exists(tmp_path / "escaped") and not os.path.exists(tmp_path.parent / "escaped")
    # a name that is safe but does not match its spec is refused too
    write_run(run, trials, names={0: "rep-innocent"})
    with pytest.raises(ExportError, match="does not match its spec"):
        export_winners(run, out, top=1, onnx=False)
    # a symlink planted in the output folder cannot redirect the export outside it
    os.makedirs(out, exist_ok=True)
    os.symlink(str(tmp_path), os.path.join(out, "link"))
    with pytest.raises(ExportError, match="outside"):
        safe_child(out, "link")


def test_top_n_and_cli(tmp_path, capsys):
    run, out = str(tmp_path / "run"), str(tmp_path / "out")
    write_run(run, _trials())
    assert cli_main(["export", run, "--top", "5", "--out", out, "--no-onnx", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    trials = _trials()
    # only the three complete trials exist to rank, best validation accuracy first
    assert [r["name"] for r in res] == [trials[0][0].name, trials[2][0].name, trials[1][0].name]
    assert not os.path.exists(os.path.join(out, trials[0][0].name, "model.onnx"))
    assert cli_main(["export", run, "--top", "0", "--out", out]) == 2
    assert cli_main(["export", str(tmp_path / "nope"), "--pareto", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--top must be >= 1" in err and "no such folder" in err
    with pytest.raises(ExportError, match="not an lkscale export folder"):
        load(run)


def test_retrain_reports_test_accuracy(tmp_path):
    run, out = str(tmp_path / "run"), str(tmp_path / "out")
    models = write_run(run, _trials()[:2])
    (path,) = export_winners(run, out, top=1, retrain_epochs=1, onnx=False)
    rec = read_export(path)
    m = rec["metrics"]
    assert m["retrain_epochs"] == 1 and m["test_images"] == 10 * 6
    assert 0.0 <= m["test_acc"] <= 1.0 and 0.0 <= m["retrain_val_acc"] <= 1.0
    assert "test accuracy (retrained)" in open(os.path.join(path, "card.md")).read()
    assert rec["normalisation"]["source"] == "training subset"
    # the exported weights are the retrained ones, not the proxy ones
    name = os.path.basename(path)
    new = load_file(os.path.join(path, "model.safetensors"))
    old = models[name].state_dict()
    assert any(not torch.equal(new[k], old[k]) for k in old if old[k].dtype.is_floating_point)
