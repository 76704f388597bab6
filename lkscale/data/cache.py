"""Decode once: decoded arrays cached as ``.npy`` under ``$LKSCALE_CACHE``, keyed by the source's path, size
and mtime; written to a temporary folder and renamed into place under a file lock, so concurrent trials on
one node decode once and nothing half-written is ever read."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

from lkscale.config import default_cache_dir

log = logging.getLogger(__name__)
_CACHE_FORMAT = 1


def cache_dir(cfg_dir: str | None = None) -> Path:
    return Path(default_cache_dir(cfg_dir))


def _source_stamp(paths: list[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file that makes up the source (a folder: every file in it)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file()))
        elif p.exists():
            files.append(p)
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f.resolve()), st.st_size, st.st_mtime_ns))
    return out


def _cache_key(kind: str, root: Path, stamp: list, extra: str = "") -> str:
    h = hashlib.sha256(json.dumps([_CACHE_FORMAT, kind, str(root.resolve()), stamp, extra]).encode()).hexdigest()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in root.name)[:40]
    return f"{kind}-{safe}-{h[:16]}"


Arrays = dict  # {"train_x", "train_y", ["test_x", "test_y"]} numpy arrays + "classes" list


def _write_cache(final: Path, arrays: Arrays) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
    try:
        for k, v in arrays.items():
            if k != "classes":
                np.save(tmp / f"{k}.npy", v)
        (tmp / "meta.json").write_text(json.dumps({"classes": arrays["classes"], "format": _CACHE_FORMAT}))
        try:
            os.replace(tmp, final)   # atomic; fails if another process put a complete copy there first
        except OSError:
            if not (final / "meta.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(path: Path) -> Arrays | None:
    meta = path / "meta.json"
    if not meta.exists():
        return None
    try:
        out: Arrays = {"classes": json.loads(meta.read_text())["classes"]}
        for f in path.glob("*.npy"):
            out[f.stem] = np.load(f, mmap_mode="r")  # only the rows a subset needs are read
        return out if "train_x" in out else None
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable cache %s: %s", path, e)
        return None


def cached_arrays(kind: str, root: Path, decode: Callable[[], Arrays], stamp_paths: list[Path],
                  cache: Path, extra: str = "") -> Arrays:
    """Arrays from the cache, decoding (under a file lock, written atomically) on a miss."""
    key = _cache_key(kind, root, _source_stamp(stamp_paths), extra)
    final = cache / key
    hit = _read_cache(final)
    if hit is not None:
        return hit
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{key}.lock")):
        hit = _read_cache(final)  # another process may have finished while we waited
        if hit is not None:
            return hit
        log.info("decoding %s (%s) into %s", root, kind, final)
        arrays = decode()
        if final.exists():  # a stale, incomplete folder (killed before meta.json): replace it
            shutil.rmtree(final, ignore_errors=True)
        _write_cache(final, arrays)
    return arrays
