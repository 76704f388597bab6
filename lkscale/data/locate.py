"""Where data lives when the user names none."""
from __future__ import annotations

import os
from pathlib import Path

from lkscale.data.cache import cache_dir
from lkscale.data.errors import DataError

DEFAULT_ARCHIVE = "cifar10-jpg.tar.gz"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DOWNLOAD_HINT = ("or pass --download (study file: data.download: true) to fetch CIFAR-10 from its official source "
                 "into the cache")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _default_candidates() -> list[Path]:
    out = []
    for base in (Path.cwd(), repo_root()):
        out.append(base.parent / "shared" / "data" / DEFAULT_ARCHIVE)
    for base in (repo_root(), Path.cwd()):
        out.append(base / "data" / DEFAULT_ARCHIVE)
    seen, uniq = set(), []
    for p in out:
        if str(p) not in seen:
            seen.add(str(p))
            uniq.append(p)
    return uniq


def cifar10_home(cfg_cache_dir: str | None = None) -> Path:
    """Where a downloaded CIFAR-10 lives: ``<cache>/cifar10`` (``cifar-10-batches-py/`` inside)."""
    return cache_dir(cfg_cache_dir) / "cifar10"


def local_cifar10_candidates(cfg_cache_dir: str | None = None) -> list[Path]:
    """Places a CIFAR-10 python copy is looked for when the default JPEG archive is missing: a previous
    download in the cache, then ``cifar-10-python.tar.gz`` in ``./data`` or ``../shared/data``."""
    out = [cifar10_home(cfg_cache_dir)]
    for base in (repo_root() / "data", Path.cwd() / "data", repo_root().parent / "shared" / "data"):
        out += [base / "cifar-10-batches-py", base / "cifar-10-python.tar.gz"]
    return out


def default_data_root(dataset: str = "imagefolder") -> str:
    """Where data lives when the user names none.

    imagefolder: ``$LKSCALE_DATA``, else ``../shared/data/cifar10-jpg.tar.gz`` (relative to the current
    folder, then to the repository), else ``data/cifar10-jpg.tar.gz`` in the repository.
    cifar10: ``$LKSCALE_DATA`` if set, else ``<cache>/cifar10``.
    fashion_mnist: ``$LKSCALE_DATA`` if set, else ``/usr/share/datasets/fashion-mnist``.
    """
    env = os.environ.get("LKSCALE_DATA")
    if dataset == "synthetic":
        return "synthetic"
    if dataset == "fashion_mnist":
        return env or FASHION_MNIST_DIR
    if dataset == "cifar10":
        return env or str(cifar10_home())
    if env:
        if not os.path.exists(env):
            raise DataError(f"LKSCALE_DATA={env}: no such file or folder")
        return env
    for cand in _default_candidates():
        if cand.exists():
            return str(cand)
    where = " | ".join(str(c) for c in _default_candidates())
    raise DataError(f"no dataset found: pass a path (--data PATH / data.root), set LKSCALE_DATA, put "
                    f"{DEFAULT_ARCHIVE} (train/<class>/*.jpg, test/<class>/*.jpg) at one of: {where}; {DOWNLOAD_HINT}")
