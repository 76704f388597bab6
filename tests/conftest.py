import os
import shutil
import sys

if not shutil.which("nvidia-smi"):  # no GPU: Triton kernels run in its interpreter, set before anything imports it
    os.environ.setdefault("TRITON_INTERPRET", "1")

import lkscale  # noqa: F401  (first: its torchvision fix must precede any timm import)
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CIFAR = os.path.join(REPO, "..", "shared", "data", "cifar10-jpg.tar.gz")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and deterministic; tests that need more set it
    yield


@pytest.fixture
def shared_cifar():
    path = os.path.abspath(SHARED_CIFAR)
    if not os.path.isfile(path):
        pytest.skip(f"real image data not found at {path} (see README: Data)")
    return path


def run_cli(*args, env=None, timeout=600):
    """Run the installed CLI in a fresh process; returns CompletedProcess."""
    import subprocess

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "lkscale", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Run the real smoke study once per test session, through the CLI as a user would."""
    if not os.path.isfile(os.path.abspath(SHARED_CIFAR)) and not os.environ.get("LKSCALE_DATA"):
        pytest.skip("real image data not found (see README: Data)")
    out = str(tmp_path_factory.mktemp("smoke") / "run")
    res = run_cli("search", "studies/smoke.yaml", "--output", out, "--json",
                  env={"LKSCALE_CACHE": str(tmp_path_factory.getbasetemp() / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    return out
