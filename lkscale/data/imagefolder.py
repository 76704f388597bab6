"""``imagefolder``: ``train/<class>/*`` (+ ``test/<class>/*``) images, as a folder or a tar archive of that
layout (one wrapper folder around it is fine)."""
from __future__ import annotations

import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from lkscale.data.cache import Arrays
from lkscale.data.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff")


def decode_image(data: bytes, name: str) -> np.ndarray:
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


def decode(root: Path) -> Arrays:
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
                imgs[split].append(decode_image(data, name))
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
