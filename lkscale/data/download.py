"""CIFAR-10 from its official source: streamed into the cache, md5-verified, unpacked.

Only runs where the user allows it (``--download`` / ``data.download: true``). ``LKSCALE_CIFAR10_URL`` and
``LKSCALE_CIFAR10_MD5`` override the source (a mirror, or a local stand-in in tests).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable

from filelock import FileLock

from lkscale.data.errors import DataError
from lkscale.data.sources import cifar_dir

log = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # as in torchvision.datasets.CIFAR10.tgz_md5
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
URL_ENV, MD5_ENV = "LKSCALE_CIFAR10_URL", "LKSCALE_CIFAR10_MD5"
_CHUNK = 1 << 20


def cifar10_source() -> tuple[str, str]:
    """(url, md5) of the CIFAR-10 archive: the official ones unless the environment overrides them."""
    return os.environ.get(URL_ENV) or CIFAR10_URL, (os.environ.get(MD5_ENV) or CIFAR10_MD5).lower()


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, md5: str, progress: Callable[[str], None] | None = None, timeout: float = 60) -> Path:
    """Stream ``url`` into ``dest`` (through a temporary file beside it), checking its md5 on the way.

    A failed download or a checksum mismatch deletes what was fetched and raises one DataError."""
    say = progress or log.info
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp, h, done = Path(tmp_name), hashlib.md5(), 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            total = int(resp.headers.get("Content-Length") or 0)
            say(f"downloading {url}" + (f" ({total / 1e6:.0f} MB)" if total else ""))
            next_note = 0.25
            for block in iter(lambda: resp.read(_CHUNK), b""):
                out.write(block)
                h.update(block)
                done += len(block)
                if total and done / total >= next_note:
                    say(f"downloaded {done / 1e6:.0f} of {total / 1e6:.0f} MB")
                    next_note += 0.25
    except (OSError, urllib.error.URLError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed ({getattr(e, 'reason', None) or e}); copy the archive to "
                        f"{dest} instead, or set {URL_ENV} to a mirror") from None
    if h.hexdigest() != md5.lower():
        tmp.unlink(missing_ok=True)
        raise DataError(f"{url}: md5 {h.hexdigest()} of the {done} bytes fetched does not match {md5}; "
                        "deleted (a broken download or a wrong mirror)")
    os.replace(tmp, dest)
    return dest


def _unpack(archive: Path, root: Path) -> Path:
    """Extract ``cifar-10-batches-py/`` from the archive into ``root`` (complete or not at all)."""
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        with tarfile.open(archive, "r:*") as tf:
            tf.extractall(tmp, filter="data")
        src = cifar_dir(tmp)
        if src is None:
            raise DataError(f"{archive}: has no cifar-10-batches-py/data_batch_1")
        os.replace(src, root / "cifar-10-batches-py")
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: corrupt or truncated archive ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "cifar-10-batches-py"


def download_cifar10(root: Path, progress: Callable[[str], None] | None = None) -> Path:
    """CIFAR-10's python batches under ``root``, fetched and verified first if they are not there yet.

    Under a file lock, so concurrent trials on one node download once. Returns the batches folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".download.lock")):
        found = cifar_dir(root)
        if found is not None:
            return found
        url, md5 = cifar10_source()
        archive = root / CIFAR10_ARCHIVE
        if archive.exists() and md5_of(archive) != md5:
            archive.unlink()  # a stale or foreign archive: fetch it again
        if not archive.exists():
            fetch(url, archive, md5, progress)
        d = _unpack(archive, root)
        archive.unlink()  # the batches are what is read; the archive would double the disk use
        (progress or log.info)(f"CIFAR-10 ready in {d}")
        return d
