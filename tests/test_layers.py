"""Imports run one way: the layers and the Ray boundary declared in pyproject.toml ([tool.importlinter]) hold.

``lint-imports`` reads every module's imports (those inside functions too), so a back-arrow (the search
importing fidelity, a module below the search importing Ray, a new module placed in no layer) fails here
with the chain that breaks the contract."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return exe


def test_import_contracts_are_kept():
    res = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"an import contract is broken:\n{out[-4000:]}"
    assert "0 broken" in out and "2 kept" in out, out[-2000:]


def test_a_back_arrow_breaks_the_layers(tmp_path):
    """The contract as declared catches a back-arrow: a copy of the package where the search imports fidelity."""
    pkg = tmp_path / "lkscale"
    shutil.copytree(os.path.join(ROOT, "lkscale"), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    with open(pkg / "search" / "driver.py", "a", encoding="utf-8") as f:
        f.write("\nfrom lkscale.fidelity import run as _back_arrow  # noqa: E402,F401\n")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    res = subprocess.run([_lint_imports(), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=env)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-2000:]
    assert "lkscale.search.driver -> lkscale.fidelity.run" in out, out[-2000:]


def test_no_module_is_over_400_lines():
    """A module past ~400 lines is two modules (the house rule the architecture doc states)."""
    long = []
    for base, _dirs, files in os.walk(os.path.join(ROOT, "lkscale")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(base, f)
                n = sum(1 for _ in open(path, encoding="utf-8"))
                if n > 400:
                    long.append(f"{os.path.relpath(path, ROOT)}: {n} lines")
    assert not long, "split these modules: " + "; ".join(long)
