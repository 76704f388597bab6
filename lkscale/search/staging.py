"""Data staging for cluster runs: the dataset travels once per node through Ray's object store.

The driver puts the study's data source (an archive's bytes, or a folder as an uncompressed tar) into
the object store (:func:`data_stage_payload`); a trial on a node that cannot read the data root fetches
it once per node into ``$LKSCALE_CACHE/staged/<key>/`` (:func:`node_data`). Ray is imported inside the
functions on purpose: this module is imported by trial code that must not start Ray.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile

from filelock import FileLock

from lkscale.config import DataConfig
from lkscale.data import cache_dir, default_data_root
from lkscale.study import StudyError

log = logging.getLogger("lkscale.search")


def node_id() -> str:
    """The Ray node this code runs on (12 hex digits), else the host name."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # noqa: BLE001 - outside Ray
        return os.uname().nodename


STAGE_MAX_BYTES = 4 << 30  # larger data roots are never shipped through the object store


def _stage_mode() -> str:
    """``LKSCALE_STAGE_DATA``: ``auto`` (default: stage on nodes that cannot read the data root), ``always``
    (stage everywhere: node-local copies instead of a slow shared filesystem), ``never``."""
    mode = os.environ.get("LKSCALE_STAGE_DATA", "auto").strip().lower() or "auto"
    if mode not in ("auto", "always", "never"):
        raise StudyError("LKSCALE_STAGE_DATA", f"{mode!r} unknown; allowed: auto, always, never")
    return mode


def data_stage_payload(data: DataConfig) -> dict | None:
    """Driver side of data staging for cluster runs: put the study's dataset source (an archive's bytes, or
    a folder as an uncompressed tar) into Ray's object store once. Returns a small dict for the trials
    (an ObjectRef plus the source's path, size and mtime), or None when there is nothing to stage
    (synthetic data, ``LKSCALE_STAGE_DATA=never``, or a source over ``STAGE_MAX_BYTES``)."""
    import ray  # deferred: only the driver of a cluster run stages data

    if data.dataset == "synthetic" or _stage_mode() == "never":
        return None
    src = os.path.abspath(os.path.expanduser(data.root or default_data_root(data.dataset)))
    if os.path.isdir(src):
        files = [os.path.join(dp, f) for dp, _, fs in os.walk(src) for f in fs]
        size = sum(os.path.getsize(f) for f in files)
        mtime = max([os.stat(f).st_mtime_ns for f in files] + [os.stat(src).st_mtime_ns])
        kind = "dir"
    else:
        st = os.stat(src)
        size, mtime, kind = st.st_size, st.st_mtime_ns, "file"
    if size > STAGE_MAX_BYTES:
        log.warning("data root %s is %.1f GB: not staged through the object store; every node must read it "
                    "(shared filesystem or a copy at the same path)", src, size / 1e9)
        return None
    if kind == "file":
        with open(src, "rb") as f:
            payload = f.read()
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.add(src, arcname=os.path.basename(src))
        payload = buf.getvalue()
    return {"ref": ray.put(payload), "source": src, "name": os.path.basename(src), "kind": kind, "size": size,
            "mtime_ns": mtime}


def node_data(data: DataConfig, stage: dict | None) -> DataConfig:
    """Worker side: the study's ``data`` settings for this node. Without a stage payload, unchanged; when
    the data root is readable here (and ``LKSCALE_STAGE_DATA`` is not ``always``), the root as the driver
    resolved it; otherwise the source is fetched from the object store once per node into
    ``$LKSCALE_CACHE/staged/<key>/`` (under a file lock, renamed into place when complete) and the root
    points there. ``lkscale.data`` then decodes it once per node into the same cache."""
    if not stage:
        return data
    mode = _stage_mode()
    if mode == "never" or (mode == "auto" and os.path.exists(stage["source"])):
        return dataclasses.replace(data, root=stage["source"])

    key = hashlib.sha256(f"{stage['source']}|{stage['size']}|{stage['mtime_ns']}".encode()).hexdigest()[:16]
    base = os.path.join(str(cache_dir()), "staged")
    final = os.path.join(base, key)
    dest = os.path.join(final, stage["name"])
    if not os.path.isfile(os.path.join(final, ".complete")):
        os.makedirs(base, exist_ok=True)
        with FileLock(final + ".lock"):
            if not os.path.isfile(os.path.join(final, ".complete")):
                import ray  # deferred: see the module docstring

                log.info("staging %s from the object store into %s", stage["source"], final)
                payload = ray.get(stage["ref"])
                tmp = tempfile.mkdtemp(prefix=key + ".tmp-", dir=base)
                try:
                    if stage["kind"] == "file":
                        with open(os.path.join(tmp, stage["name"]), "wb") as f:
                            f.write(payload)
                        os.utime(os.path.join(tmp, stage["name"]), ns=(stage["mtime_ns"], stage["mtime_ns"]))
                    else:
                        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tf:
                            tf.extractall(tmp, filter="data")
                    with open(os.path.join(tmp, ".complete"), "w") as f:
                        f.write(stage["source"] + "\n")
                    shutil.rmtree(final, ignore_errors=True)  # a stale, incomplete copy
                    os.replace(tmp, final)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return dataclasses.replace(data, root=dest)


