"""Dataset formats other than image folders: CIFAR-10 python batches, Fashion-MNIST IDX files, synthetic."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock

from lkscale.config import DataConfig
from lkscale.data.cache import Arrays
from lkscale.data.errors import DataError

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]


def cifar_dir(root: Path) -> Path | None:
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "data_batch_1").exists():
            return cand
    return None


def extract_cifar(archive: Path, cache: Path) -> Path:
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache / f"cifar10-src-{key}"
    if cifar_dir(dest) is None:
        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest) + ".lock"):
            if cifar_dir(dest) is None:
                tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=cache))
                try:
                    with tarfile.open(archive, "r:*") as tf:
                        tf.extractall(tmp, filter="data")
                    os.replace(tmp, dest)
                except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
                    raise DataError(f"{archive}: corrupt or truncated archive ({e})") from None
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    d = cifar_dir(dest)
    if d is None:
        raise DataError(f"{archive}: has no cifar-10-batches-py/data_batch_1")
    return d


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # The official CIFAR-10 python format is a pickle; it is the one place lkscale reads one.
    import pickle

    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # noqa: S301 - official dataset format only
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except FileNotFoundError:
        raise DataError(f"{path}: missing CIFAR-10 batch file") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if len(x) != len(labels):
        raise DataError(f"{path}: {len(x)} images but {len(labels)} labels")
    return np.ascontiguousarray(x), labels


def decode_cifar10(d: Path) -> Arrays:
    import pickle

    batches = sorted(d.glob("data_batch_*"))
    xs, ys = zip(*(_load_cifar_batch(b) for b in batches))
    out: Arrays = {"train_x": np.concatenate(xs), "train_y": np.concatenate(ys)}
    if (d / "test_batch").exists():
        out["test_x"], out["test_y"] = _load_cifar_batch(d / "test_batch")
    classes = [f"class{i}" for i in range(10)]
    if (d / "batches.meta").exists():
        try:
            with open(d / "batches.meta", "rb") as f:
                meta = pickle.load(f, encoding="bytes")  # noqa: S301 - official dataset format only
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[b"label_names"]]
        except (pickle.UnpicklingError, EOFError, KeyError) as e:
            raise DataError(f"{d / 'batches.meta'}: unreadable ({e})") from None
    out["classes"] = classes
    return out


def _idx_file(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a uint8 array of its stated shape."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated file ({type(e).__name__}: {e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX element type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    n = int(np.prod(shape)) if shape else 0
    body = raw[4 + 4 * ndim:]
    if len(body) != n:
        raise DataError(f"{path}: IDX header says {n} bytes of data, file has {len(body)} (truncated?)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def decode_fashion_mnist(root: Path) -> Arrays:
    out: Arrays = {"classes": list(FASHION_MNIST_CLASSES)}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ip, lp = _idx_file(root, f"{prefix}-images-idx3-ubyte"), _idx_file(root, f"{prefix}-labels-idx1-ubyte")
        if ip is None or lp is None:
            if split == "train":
                raise DataError(f"{root}: no {prefix}-images-idx3-ubyte.gz / {prefix}-labels-idx1-ubyte.gz "
                                "(install Debian's dataset-fashion-mnist or copy the IDX files there)")
            continue
        x, y = read_idx(ip), read_idx(lp)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{ip}: images {x.shape} and labels {y.shape} do not match")
        if y.size and y.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{lp}: label {int(y.max())} out of range 0-9")
        out[f"{split}_x"] = np.ascontiguousarray(x[:, :, :, None])
        out[f"{split}_y"] = y.astype(np.int64)
    return out


def synthetic(cfg: DataConfig) -> Arrays:
    """Class-dependent patterns: a per-class random low-frequency colour field plus per-image noise and shift."""
    g = np.random.default_rng(12345 + cfg.seed)
    size = cfg.input_size or 32
    k = cfg.synthetic_classes
    protos = g.uniform(0, 255, size=(k, 4, 4, 3))
    protos = np.stack([np.asarray(_resize_np(p, size)) for p in protos])
    n_train = (cfg.train_per_class or 50) + cfg.val_per_class
    n_test = 20 if cfg.test_per_class is None else cfg.test_per_class
    out: Arrays = {"classes": [f"c{i}" for i in range(k)]}
    for split, n in (("train", n_train), ("test", n_test)):
        if n == 0:
            continue
        y = np.repeat(np.arange(k), n)
        noise = g.normal(0, 40, size=(len(y), size, size, 3))
        x = np.clip(protos[y] + noise, 0, 255).astype(np.uint8)
        out[f"{split}_x"], out[f"{split}_y"] = x, y.astype(np.int64)
    return out


def _resize_np(a: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
