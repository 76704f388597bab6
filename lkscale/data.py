"""Datasets for proxy training: decoded once, cached as uint8 arrays, held in memory as tensors.

Datasets (``DataConfig.dataset``):

- ``imagefolder``: ``train/<class>/*`` and optionally ``test/<class>/*`` image files, as a folder or a
  ``.tar.gz``/``.tgz``/``.tar`` of that layout (a single top folder around it is fine). This is how
  users bring their own data; the CIFAR-10 JPEG archive on this machine is one.
- ``cifar10``: the official python-pickle batches (``cifar-10-batches-py``, or its
  ``cifar-10-python.tar.gz``). Only ``download=True`` ever fetches it.
- ``fashion_mnist``: the IDX files (``train-images-idx3-ubyte[.gz]`` ...), as Debian's
  ``dataset-fashion-mnist`` installs them under ``/usr/share/datasets/fashion-mnist``; grey 28x28.
- ``synthetic``: seeded class-dependent random patterns, for unit tests only.

Real datasets are decoded once (Pillow) and cached as ``.npy`` under ``$LKSCALE_CACHE``
(default ``~/.cache/lkscale``), keyed by the source's path, size and mtime; the cache is written to a
temporary folder and renamed into place under a file lock, so concurrent trials on one node decode it
once and nothing half-written is ever read.

``load_splits(DataConfig)`` returns stratified, seeded train / validation (carved from train) / test
subsets as uint8 tensors; ``TensorSet.batches`` yields normalised float batches, with random-crop
(padding 4) + horizontal-flip augmentation done on whole batches in torch.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import struct
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from lkscale.config import DATASETS, DataConfig

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff")
DEFAULT_ARCHIVE = "cifar10-jpg.tar.gz"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_CACHE_FORMAT = 1


class DataError(Exception):
    """A dataset that cannot be used as asked; the message names the path or option and the problem."""


# ----------------------------------------------------------------------------------------- config
def validate_config(cfg: DataConfig) -> None:
    """Check a DataConfig built in code (study files are validated by lkscale.config already)."""
    if cfg.dataset not in DATASETS:
        raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    for name in ("train_per_class", "test_per_class"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise DataError(f"data.{name}: expected a non-negative integer or null, got {v!r}")
    if not isinstance(cfg.val_per_class, int) or isinstance(cfg.val_per_class, bool) or cfg.val_per_class < 1:
        raise DataError(f"data.val_per_class: expected an integer >= 1, got {cfg.val_per_class!r}")
    if cfg.train_per_class == 0:
        raise DataError("data.train_per_class: must be at least 1 (or null for all)")
    if cfg.input_size is not None and (not isinstance(cfg.input_size, int) or cfg.input_size < 8):
        raise DataError(f"data.input_size: expected an integer >= 8 or null, got {cfg.input_size!r}")


# ----------------------------------------------------------------------------------------- tensors
@dataclass
class TensorSet:
    """Images as uint8 (N, C, H, W) and int64 labels, plus the normalisation to apply."""

    x: torch.Tensor
    y: torch.Tensor
    mean: torch.Tensor = field(default_factory=lambda: torch.zeros(3))
    std: torch.Tensor = field(default_factory=lambda: torch.ones(3))
    augment: bool = False  # whether training on this set should augment (set from DataConfig.augment)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        xb = xb.float().div_(255.0)
        c = xb.shape[1]
        return xb.sub_(self.mean.view(1, c, 1, 1)).div_(self.std.view(1, c, 1, 1))

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` float batches (normalised; augmented if asked) by indexing the tensors."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            xb = self.x[idx]
            if augment:
                xb = random_crop_flip(xb, padding=4, generator=generator)
            xb = self.normalise(xb)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx]


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop (zero padding ``padding``) and horizontal flip of a (B, C, H, W) batch.

    One gather for the whole batch: row indices ``oy + i`` and column indices ``ox + j`` (reversed for
    flipped images) into the padded batch.
    """
    b, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = oy[:, None] + torch.arange(h)[None, :]                      # (B, H)
    j = torch.arange(w)[None, :].expand(b, w)
    cols = ox[:, None] + torch.where(flip[:, None], w - 1 - j, j)        # (B, W)
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass
class Splits:
    train: TensorSet
    val: TensorSet
    test: TensorSet | None
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    in_chans: int
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> int:
        return int(self.train.x.shape[-1])


# ----------------------------------------------------------------------------------------- locations
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def cache_dir(cfg_dir: str | None = None) -> Path:
    d = cfg_dir or os.environ.get("LKSCALE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lkscale")
    return Path(d)


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


def default_data_root(dataset: str = "imagefolder") -> str:
    """Where data lives when the user names none.

    imagefolder: ``$LKSCALE_DATA``, else ``../shared/data/cifar10-jpg.tar.gz`` (relative to the current
    folder, then to the repository), else ``data/cifar10-jpg.tar.gz`` in the repository.
    cifar10: ``$LKSCALE_DATA`` if it holds the batches, else ``<cache>/cifar10``.
    fashion_mnist: ``$LKSCALE_DATA`` if set, else ``/usr/share/datasets/fashion-mnist``.
    """
    env = os.environ.get("LKSCALE_DATA")
    if dataset == "synthetic":
        return "synthetic"
    if dataset == "fashion_mnist":
        return env or FASHION_MNIST_DIR
    if dataset == "cifar10":
        return env or str(cache_dir() / "cifar10")
    if env:
        if not os.path.exists(env):
            raise DataError(f"LKSCALE_DATA={env}: no such file or folder")
        return env
    for cand in _default_candidates():
        if cand.exists():
            return str(cand)
    where = "\n  ".join(str(c) for c in _default_candidates())
    raise DataError(f"no dataset found: pass a path (--data PATH / data.root), set LKSCALE_DATA, or put "
                    f"{DEFAULT_ARCHIVE} (train/<class>/*.jpg, test/<class>/*.jpg) at one of: {where}"
                    .replace("\n  ", " | "))


# ----------------------------------------------------------------------------------------- cache
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
    from filelock import FileLock

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


# ----------------------------------------------------------------------------------------- imagefolder
def _decode_image(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("L", "I;16", "I", "F", "1", "P", "LA", "PA") and not _palette_has_colour(im):
                arr = np.asarray(im.convert("L"))
            else:
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{name}: not a readable image ({e})") from None
    return arr


def _palette_has_colour(im) -> bool:
    if im.mode not in ("P", "PA"):
        return False
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def _split_member(parts: list[str]) -> tuple[str, str] | None:
    """('train'|'test', class) for a path split into parts, allowing one wrapper folder."""
    for off in (0, 1):
        if len(parts) == off + 3 and parts[off] in ("train", "test"):
            return parts[off], parts[off + 1]
    return None


def _iter_folder(root: Path) -> tuple[dict, set]:
    """{(split, class): [(name, bytes)]} and the set of class folders seen (possibly empty)."""
    files: dict = {}
    dirs: set = set()
    base = root
    if not (root / "train").is_dir():
        subs = [d for d in root.iterdir() if d.is_dir() and (d / "train").is_dir()]
        if len(subs) == 1:
            base = subs[0]
    for split in ("train", "test"):
        sd = base / split
        if not sd.is_dir():
            continue
        for cdir in sorted(d for d in sd.iterdir() if d.is_dir()):
            dirs.add((split, cdir.name))
            for f in sorted(cdir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    files.setdefault((split, cdir.name), []).append((str(f), f.read_bytes()))
    return files, dirs


def _iter_tar(root: Path) -> tuple[dict, set]:
    files: dict = {}
    dirs: set = set()
    try:
        with tarfile.open(root, "r:*") as tf:
            for m in tf:
                parts = [p for p in m.name.replace("\\", "/").split("/") if p not in ("", ".")]
                if m.isdir():
                    for off in (0, 1):
                        if len(parts) == off + 2 and parts[off] in ("train", "test"):
                            dirs.add((parts[off], parts[off + 1]))
                    continue
                if not m.isfile():
                    continue
                key = _split_member(parts)
                if key is None or os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                if parts[-1].startswith("._"):  # macOS resource forks
                    continue
                dirs.add(key)
                fh = tf.extractfile(m)
                files.setdefault(key, []).append((f"{root}:{m.name}", fh.read() if fh else b""))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{root}: corrupt or truncated archive ({type(e).__name__}: {e}); "
                        "re-copy it or point --data at an image folder") from None
    return files, dirs


def _decode_imagefolder(root: Path) -> Arrays:
    """Decode every image; mixed sizes are resized to the most common one (input_size is applied later)."""
    if root.is_dir():
        files, dirs = _iter_folder(root)
    else:
        files, dirs = _iter_tar(root)
    train_classes = sorted(c for s, c in dirs if s == "train")
    if not train_classes:
        raise DataError(f"{root}: no train/<class>/ folders with images; expected train/<class>/*.jpg "
                        "(and optionally test/<class>/*.jpg)")
    for s, c in sorted(dirs):
        if not files.get((s, c)):
            raise DataError(f"{root}: class folder {s}/{c} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    test_classes = sorted(c for s, c in dirs if s == "test")
    extra = sorted(set(test_classes) - set(train_classes))
    if extra:
        raise DataError(f"{root}: test/{extra[0]} is a class that train/ does not have")
    if len(train_classes) < 2:
        raise DataError(f"{root}: only one class ({train_classes[0]}); need at least 2 class folders")
    out: Arrays = {"classes": train_classes}
    imgs: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for ci, c in enumerate(train_classes):
            for name, data in sorted(files.get((split, c), [])):
                imgs[split].append(_decode_image(data, name))
                labels[split].append(ci)
    all_imgs = imgs["train"] + imgs["test"]
    colour = any(a.ndim == 3 for a in all_imgs)
    sizes: dict = {}
    for a in all_imgs:
        sizes[a.shape[:2]] = sizes.get(a.shape[:2], 0) + 1
    target = max(sizes, key=lambda s: (sizes[s], s)) if len(sizes) > 1 else None
    for split in ("train", "test"):
        if not imgs[split]:
            continue
        arrs = [_fit(a, colour, target) for a in imgs[split]]
        out[f"{split}_x"] = np.stack(arrs)
        out[f"{split}_y"] = np.asarray(labels[split], dtype=np.int64)
    return out


def _fit(a: np.ndarray, colour: bool, target: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    if target is not None and a.shape[:2] != target:
        a = np.asarray(Image.fromarray(a).resize((target[1], target[0]), Image.BILINEAR))
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2) if colour else a[:, :, None]
    return a


# ----------------------------------------------------------------------------------------- cifar10
def _cifar_dir(root: Path) -> Path | None:
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "data_batch_1").exists():
            return cand
    return None


def download_cifar10(root: Path) -> None:
    """Fetch and unpack the official archive into ``root`` (only called with download=True)."""
    import urllib.request

    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    if not archive.exists():
        tmp = archive.with_suffix(".part")
        try:
            urllib.request.urlretrieve(CIFAR10_URL, tmp)
        except OSError as e:
            raise DataError(f"cifar10: download from {CIFAR10_URL} failed ({e}); copy cifar-10-python.tar.gz "
                            f"into {root} instead") from None
        os.replace(tmp, archive)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    if md5 != CIFAR10_MD5:
        raise DataError(f"{archive}: md5 {md5} does not match the official {CIFAR10_MD5}; delete it and retry")
    try:
        with tarfile.open(archive, "r:gz") as tf:
            tf.extractall(root, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive}: corrupt or truncated archive ({e})") from None


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


def _decode_cifar10(d: Path) -> Arrays:
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


# ----------------------------------------------------------------------------------------- fashion-mnist
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


def _decode_fashion_mnist(root: Path) -> Arrays:
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


# ----------------------------------------------------------------------------------------- synthetic
def _synthetic(cfg: DataConfig) -> Arrays:
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


# ----------------------------------------------------------------------------------------- splits
def load_arrays(cfg: DataConfig) -> tuple[Arrays, str]:
    """Decoded (cached) arrays for the configured dataset and the source they came from."""
    validate_config(cfg)
    if cfg.dataset == "synthetic":
        return _synthetic(cfg), "synthetic"
    root = Path(os.path.expanduser(cfg.root or default_data_root(cfg.dataset)))
    cache = cache_dir(cfg.cache_dir)
    if cfg.dataset == "imagefolder":
        if not root.exists():
            raise DataError(f"{root}: no such file or folder (expected an image folder or a .tar.gz of "
                            "train/<class>/*.jpg)")
        if root.is_file() and not tarfile.is_tarfile(root) and not _looks_like_tar_name(root):
            raise DataError(f"{root}: not a folder or a tar archive")
        arrays = cached_arrays("imagefolder", root, lambda: _decode_imagefolder(root), [root], cache)
        return arrays, str(root)
    if cfg.dataset == "cifar10":
        d = _cifar_dir(root)
        if d is None and ((root / "cifar-10-python.tar.gz").exists() or (root.is_file() and root.name.endswith("gz"))):
            archive = root if root.is_file() else root / "cifar-10-python.tar.gz"
            d = _extract_cifar(archive, cache)
        if d is None and cfg.download:
            download_cifar10(root)
            d = _cifar_dir(root)
        if d is None:
            raise DataError(f"{root}: no CIFAR-10 python batches (cifar-10-batches-py/data_batch_1 ...); copy "
                            "cifar-10-python.tar.gz there, or pass download=True where there is internet")
        return cached_arrays("cifar10", d, lambda: _decode_cifar10(d), [d], cache), str(d)
    # fashion_mnist
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (fashion_mnist wants the IDX .gz files, as Debian's "
                        "dataset-fashion-mnist installs them under /usr/share/datasets/fashion-mnist)")
    return cached_arrays("fashion_mnist", root, lambda: _decode_fashion_mnist(root), [root], cache), str(root)


def _looks_like_tar_name(p: Path) -> bool:
    return p.name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz"))


def _extract_cifar(archive: Path, cache: Path) -> Path:
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache / f"cifar10-src-{key}"
    if _cifar_dir(dest) is None:
        from filelock import FileLock

        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest) + ".lock"):
            if _cifar_dir(dest) is None:
                tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=cache))
                try:
                    with tarfile.open(archive, "r:*") as tf:
                        tf.extractall(tmp, filter="data")
                    os.replace(tmp, dest)
                except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
                    raise DataError(f"{archive}: corrupt or truncated archive ({e})") from None
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    d = _cifar_dir(dest)
    if d is None:
        raise DataError(f"{archive}: has no cifar-10-batches-py/data_batch_1")
    return d


def stratified_split(y: np.ndarray, counts: list[int | None], seed: int,
                     num_classes: int) -> list[np.ndarray]:
    """Disjoint per-class index sets: ``counts[i]`` images of every class for part i (None: the rest).

    Each class's images are shuffled once with ``seed``; part 0 takes the first ones, part 1 the next
    ones, so asking for more training images keeps the same validation set. Indices come back sorted.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in counts]
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for i, n in enumerate(counts):
            take = idx[start:] if n is None else idx[start:start + n]
            parts[i].append(take)
            start += len(take)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def _to_tensor(x: np.ndarray, input_size: int | None) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    if input_size and tuple(t.shape[-2:]) != (input_size, input_size):
        chunks = []
        for i in range(0, len(t), 2048):
            f = F.interpolate(t[i:i + 2048].float(), size=(input_size, input_size), mode="bilinear",
                              align_corners=False, antialias=input_size < t.shape[-1])
            chunks.append(f.round_().clamp_(0, 255).to(torch.uint8))
        t = torch.cat(chunks) if chunks else t.new_zeros((0, t.shape[1], input_size, input_size))
    return t


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (in [0, 1] units) of a uint8 (N, C, H, W) tensor, from exact histograms."""
    c = x.shape[1]
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    mean = torch.zeros(c, dtype=torch.float64)
    std = torch.zeros(c, dtype=torch.float64)
    for ch in range(c):
        hist = torch.bincount(x[:, ch].reshape(-1).long(), minlength=256).to(torch.float64)
        n = hist.sum().clamp_min(1)
        m = (hist * levels).sum() / n
        mean[ch] = m
        std[ch] = ((hist * (levels - m).square()).sum() / n).sqrt()
    return mean.float(), std.clamp_min(1e-3).float()


def load_splits(cfg: DataConfig) -> Splits:
    """Stratified, seeded train / val (from train) / test subsets, as in-memory uint8 tensors."""
    arrays, source = load_arrays(cfg)
    classes = list(arrays["classes"])
    k = len(classes)
    ty = arrays["train_y"]
    per_class = np.bincount(ty, minlength=k)
    need = cfg.val_per_class + (cfg.train_per_class or 1)
    short = [classes[i] for i in range(k) if per_class[i] < need]
    if short:
        i = classes.index(short[0])
        raise DataError(f"{source}: class {short[0]!r} has {per_class[i]} training images, fewer than "
                        f"val_per_class + train_per_class = {need}; lower --subset or data.val_per_class")
    val_idx, train_idx = stratified_split(ty, [cfg.val_per_class, cfg.train_per_class], cfg.seed, k)
    train_x = _to_tensor(arrays["train_x"][train_idx], cfg.input_size)
    val_x = _to_tensor(arrays["train_x"][val_idx], cfg.input_size)
    mean, std = channel_stats(train_x)
    train = TensorSet(train_x, torch.from_numpy(ty[train_idx]).long(), mean, std, augment=cfg.augment)
    val = TensorSet(val_x, torch.from_numpy(ty[val_idx]).long(), mean, std)
    test = None
    if "test_x" in arrays and cfg.test_per_class != 0:
        (test_idx,) = stratified_split(arrays["test_y"], [cfg.test_per_class], cfg.seed, k)
        test = TensorSet(_to_tensor(arrays["test_x"][test_idx], cfg.input_size),
                         torch.from_numpy(arrays["test_y"][test_idx]).long(), mean, std)
    return Splits(train=train, val=val, test=test, classes=classes, mean=mean, std=std,
                  in_chans=int(train_x.shape[1]), source=source)


__all__ = ["DataConfig", "DataError", "Splits", "TensorSet", "load_splits", "load_arrays", "default_data_root",
           "cache_dir", "random_crop_flip", "stratified_split", "channel_stats", "read_idx", "DATASETS"]
