"""Study files: validation names the field; the space samples conditional knobs and clips kernels."""
import os

import optuna
import pytest
import yaml

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
    assert st.proxy["epochs"] == 4 and st.search["pruning"]["scheduler"] == "moasha"
    assert st.budgets["latency_input_size"] == st.data["input_size"] == 32
    assert yaml.safe_load(st.to_yaml())["search"]["sampler"] == "tpe"


def test_map_sizes_and_kernel_clipping():
    assert map_sizes(2, 4, 32) == [16, 8, 4, 2]
    assert map_sizes(4, 4, 32) == [8, 4, 2, 1]
    st = parse_study(minimal(space={"base": "replk_proxy", "kernels": [[31, 29, 27, 13]], "reparam": [5]}))
    c = candidate(st.space, {}, 32)
    assert c.spec.kernels == (31, 15, 7, 3)  # 2H-1 with H = 16/8/4/2
    assert [len(s.reparam) for s in c.spec.stages] == [1, 1, 1, 0]  # 5x5 branch dropped on the 3x3 stage
    assert any("27 -> 7" in n for n in c.notes)
    st = parse_study(minimal(space={"base": "replk_proxy", "kernels": [[31, 29, 27, 13]], "kernel_clip": "reject"}))
    c = candidate(st.space, {}, 32)
    assert c.spec is None and "exceeds" in c.error


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
    assert set(g) == {"block", "kernels", "reparam"} and len(g["kernels"]) == 8
