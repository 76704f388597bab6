"""The torchvision op-schema fix must hold in a fresh process (as in a Ray worker)."""
import subprocess
import sys


def test_import_lkscale_then_timm_in_fresh_process():
    code = (
        "import lkscale, timm, torchvision\n"
        "m = timm.create_model('convnext_atto', num_classes=3)\n"
        "print(sum(p.numel() for p in m.parameters()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) > 3_000_000


def test_patch_is_a_noop_when_ops_exist():
    # Calling again after torchvision is imported must not redefine anything.
    import lkscale._compat as c
    import torchvision  # noqa: F401

    assert c.ensure_torchvision_importable() is False
