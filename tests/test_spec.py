import json

import pytest

from lkscale.blocks import REGISTRY
from lkscale.spec import ArchSpec, Branch, SpecError, KNOWN_BLOCKS


def small(block="replk", **over):
    st = {"block": block, "depth": 1, "width": 16, "kernel": 7}
    if block == "dcnv3":
        st["dcn_groups"] = 4
    st.update(over)
    return {"stem": {"stride": 2}, "stages": [dict(st), dict(st, width=32), dict(st, width=64)]}


def test_registry_and_spec_agree():
    assert set(KNOWN_BLOCKS) == set(REGISTRY)


def test_roundtrip_yaml_json_and_stable_name():
    s = ArchSpec.from_dict(small(reparam=[5, "3d2"]))
    assert ArchSpec.from_yaml(s.to_yaml()) == s
    assert ArchSpec.from_json(s.to_json()) == s
    assert s.stages[0].reparam == (Branch(5, 1), Branch(3, 2))
    # name is stable across processes/serialisation and changes with the architecture
    assert ArchSpec.from_json(s.to_json()).name == s.name
    assert s.name.startswith("rep-k7.7.7-d1.1.1-w16.32.64-")
    t = s.replace_stage(0, kernel=9)
    assert t.name != s.name
    assert json.loads(s.to_json())["name"] == s.name


def test_immutable():
    s = ArchSpec.from_dict(small())
    with pytest.raises(Exception):
        s.stages = ()


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["stages"][1].update(kernel=6), "stages[1].kernel"),
    (lambda d: d["stages"][0].update(block="transformer"), "stages[0].block"),
    (lambda d: d["stages"][2].update(width=30), "stages[2].dcn_groups"),
    (lambda d: d["stages"].append(dict(d["stages"][0])) or d["stages"].append(dict(d["stages"][0])), "stages"),
    (lambda d: d["stages"][0].update(depth=0), "stages[0].depth"),
    (lambda d: d["stages"][0].update(reparam=[9]), "stages[0].reparam[0]"),
    (lambda d: d["stages"][0].update(reparam=[4]), "stages[0].reparam[0]"),
    (lambda d: d.update(stem={"stride": 3}), "stem.stride"),
    (lambda d: d["stages"][0].update(colour="red"), "stages[0].colour"),
])
def test_invalid_specs_name_the_field(mutate, field):
    d = small("dcnv3")
    mutate(d)
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(d)
    assert e.value.field_path == f"spec.{field}", str(e.value)
    assert "\n" not in str(e.value)


def test_dcn_groups_only_on_dcnv3():
    d = small("replk")
    d["stages"][0]["dcn_groups"] = 2
    with pytest.raises(SpecError, match="only dcnv3"):
        ArchSpec.from_dict(d)


def test_load_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        ArchSpec.load(str(tmp_path / "nope.yaml"))


def test_malformed_yaml():
    with pytest.raises(SpecError, match="not valid YAML"):
        ArchSpec.from_yaml("stages: [1, 2\n")


def test_spec_sits_below_the_blocks():
    """spec.py imports no block code, and block modules read no spec at run time (TYPE_CHECKING only)."""
    import ast
    import os
    import subprocess
    import sys

    code = "import sys, lkscale.spec; bad = [m for m in sys.modules if m.startswith('lkscale.blocks')]; assert not bad, bad"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lkscale", "blocks")
    for fname in sorted(os.listdir(root)):
        if not fname.endswith(".py") or fname == "__init__.py":
            continue
        tree = ast.parse(open(os.path.join(root, fname)).read())
        runtime = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        mods = [n.module for n in runtime if isinstance(n, ast.ImportFrom)] + [a.name for n in runtime
                                                                              if isinstance(n, ast.Import) for a in n.names]
        assert "lkscale.spec" not in mods, fname
