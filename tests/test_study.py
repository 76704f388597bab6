"""Study files: validation names the field; the space samples conditional knobs and clips kernels."""
import os

import optuna
import pytest
import yaml

from lkscale.config import DataConfig, TrainConfig
from lkscale.space import candidate, grid, map_sizes, suggest
from lkscale.study import StudyError, load_study, parse_study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(REPO, "studies"))))
def test_bundled_studies_load(name):
    st = load_study(os.path.join(REPO, "studies", name))
    assert st.name == name.removesuffix(".yaml")


def minimal(**over):
    raw = {"name": "t", "space": {"base": "replk_proxy", "kernel": [3, 7, 13]}}
    raw.update(over)
    return raw


@pytest.mark.parametrize("raw, path", [
    (minimal(search={"sampler": "bayes"}), "search.sampler"),
    (minimal(search={"pruning": {"scheduler": "hyperband"}}), "search.pruning.scheduler"),
    (minimal(budgets={"max_latency_ms": -1}), "budgets.max_latency_ms"),
    (minimal(proxy={"epochs": 0}), "proxy.epochs"),
    (minimal(proxy={"epoch": 3}), "proxy.epoch"),
    (minimal(space={"base": "replk_proxy", "block": ["replk", "vit"]}), "space.block"),
    (minimal(space={"base": "nope"}), "space.base"),
    (minimal(space={"base": "replk_proxy", "kernel": [4]}), "space.kernel"),
    (minimal(space={"base": "replk_proxy", "kernels": [[3, 3, 3, 3, 3]]}), "space.kernels"),
    (minimal(space={"base": "replk_proxy", "stages": [{"kernel": 3}] * 5}), "space.stages"),
    (minimal(space={"base": "replk_proxy", "stages": [{"colour": 1}] * 4}), "space.stages[0].colour"),
    (minimal(data={"dataset": "imagenet"}), "data.dataset"),
    (minimal(name="bad name!"), "name"),
    (minimal(extra=1), "extra"),
    ({"name": "t"}, "space"),
])
def test_errors_name_the_field(raw, path):
    with pytest.raises(StudyError) as e:
        parse_study(raw)
    assert e.value.field_path == path, str(e.value)
    assert "\n" not in str(e.value)


def test_malformed_yaml_and_missing_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: t\nspace: {base: [\n")
    with pytest.raises(StudyError, match="not valid YAML"):
        load_study(str(p))
    with pytest.raises(StudyError, match="no such file"):
        load_study(str(tmp_path / "missing.yaml"))


def test_defaults_filled():
    st = parse_study(minimal())
    assert st.proxy.epochs == TrainConfig().epochs and st.search.pruning.scheduler == "moasha"
    assert st.latency.input_size == st.data.input_size == 32
    assert yaml.safe_load(st.to_yaml())["search"]["sampler"] == "tpe"
    # one set of defaults: a study section left out equals the library's own config object
    assert st.data == DataConfig() and st.proxy == TrainConfig()
    assert parse_study(yaml.safe_load(st.to_yaml())) == st  # the resolved study reads back to an equal one


def test_old_flat_latency_keys_still_read():
    st = parse_study(minimal(budgets={"latency_threads": 2, "latency_batch_size": 4}))
    assert st.budgets.latency.threads == 2 and st.budgets.latency.batch_size == 4


@pytest.mark.parametrize("space,field,words", [
    ({"base": "replk_proxy", "depth": 0}, "space", "depth"),
    ({"base": "replk_proxy", "width": 16.5}, "space", "width"),
    ({"base": "dcnv3_proxy", "dcn_groups": 7}, "space", "divisible"),
    ({"base": "replk_proxy", "stem_stride": 3}, "space", "stride"),
    ({"base": "replk_proxy", "reparam": [[], ["9x"]]}, "space.reparam", "never builds"),
    ({"base": "replk_proxy", "depth": [1, 0]}, "space.depth", "never builds"),
])
def test_statically_invalid_knobs_fail_when_the_study_loads(space, field, words):
    with pytest.raises(StudyError) as e:
        parse_study(minimal(space=space))
    assert e.value.field_path == field and words in str(e.value), str(e.value)


def test_scaling_mode_needs_the_grid_and_bad_sections_name_the_field():
    with pytest.raises(StudyError, match="search.sampler.*scaling"):
        parse_study(minimal(search={"mode": "scaling", "sampler": "tpe"}))
    with pytest.raises(StudyError, match=r"^budgets.latency.runtime: 'tflite' unknown"):
        parse_study(minimal(budgets={"latency": {"runtime": "tflite"}}))
    with pytest.raises(StudyError, match=r"^search.replicates: 0 must be an integer >= 1"):
        parse_study(minimal(search={"replicates": 0}))
    with pytest.raises(StudyError, match=r"^resources.gpus_per_trial"):
        parse_study(minimal(resources={"gpus_per_trial": -1}))


def test_map_sizes_and_kernel_clipping():
    assert map_sizes(2, 4, 32) == [16, 8, 4, 2]
    assert map_sizes(4, 4, 32) == [8, 4, 2, 1]
    st = parse_study(minimal(space={"base": "replk_proxy", "kernels": [[31, 29, 27, 13]], "reparam": [5]}))
    c = candidate(st.space, {}, 32)
    assert c.spec.kernels == (31, 15, 7, 3)  # 2H-1 with H = 16/8/4/2
    assert [len(s.reparam) for s in c.spec.stages] == [1, 1, 1, 0]  # 5x5 branch dropped on the 3x3 stage
    assert any("27 -> 7" in n for n in c.notes)
    st = parse_study(minimal(space={"base": "replk_proxy", "kernels": [[3, 3, 3, 3], [31, 29, 27, 13]],
                                    "kernel_clip": "reject"}))
    c = candidate(st.space, {"kernels": "[31, 29, 27, 13]"}, 32)
    assert c.spec is None and "exceeds" in c.error
    with pytest.raises(StudyError, match="exceeds"):  # only rejected points: the study cannot load
        parse_study(minimal(space={"base": "replk_proxy", "kernels": [[31, 29, 27, 13]], "kernel_clip": "reject"}))


def test_conditional_knobs_and_roundtrip():
    raw = {"name": "t", "space": {"stem_stride": 2, "block": ["replk", "dcnv3", "convnext"], "kernel": [3, 5],
                                  "depth": 1, "widths": [[16, 32, 64, 128]], "dcn_groups": [2, 4],
                                  "reparam": [[], [3]]}}
    st = parse_study(raw)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        cand = suggest(trial, st.space, 32)
        blocks = set(cand.spec.blocks)
        seen |= blocks
        if "dcnv3" in blocks:
            assert "dcn_groups" in trial.params and "reparam" not in trial.params
        else:
            assert "dcn_groups" not in trial.params and "reparam" in trial.params
        again = candidate(st.space, trial.params, 32)  # the stored params rebuild the same spec
        assert again.spec == cand.spec
        study.tell(trial, [0.5, 1.0])
    assert seen == {"replk", "dcnv3", "convnext"}


def test_grid_enumerates_choices():
    st = load_study(os.path.join(REPO, "studies", "kernel_size.yaml"))
    g = grid(st.space)
    assert set(g) == {"block", "kernels"} and len(g["kernels"]) == 5
    assert st.search.mode == "scaling" and st.search.replicates >= 3
