"""From a DataConfig to decoded arrays and to train / validation / test tensors."""
from __future__ import annotations

import dataclasses
import os
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lkscale.config import DataConfig
from lkscale.data import imagefolder, locate, sources
from lkscale.data.cache import Arrays, cache_dir, cached_arrays
from lkscale.data.download import download_cifar10
from lkscale.data.errors import DataError, validate_config
from lkscale.data.locate import DOWNLOAD_HINT, cifar10_home, default_data_root
from lkscale.data.split import carve_val_train, stratified_split
from lkscale.data.tensors import Splits, TensorSet, channel_stats, to_tensor


def with_download(cfg: DataConfig, allowed: bool = True) -> DataConfig:
    """``cfg`` with downloading allowed (what ``--download`` sets)."""
    return dataclasses.replace(cfg, download=allowed)


def _cifar_batches(root: Path, cache: Path) -> Path | None:
    """The batches folder at ``root`` (a folder of them, or an archive unpacked once into the cache)."""
    d = sources.cifar_dir(root) if root.is_dir() else None
    if d is None and root.is_dir() and (root / "cifar-10-python.tar.gz").exists():
        d = sources.extract_cifar(root / "cifar-10-python.tar.gz", cache)
    if d is None and root.is_file() and root.name.endswith("gz"):
        d = sources.extract_cifar(root, cache)
    return d


def _default_or_cifar10(cfg: DataConfig, progress: Callable[[str], None] | None) -> DataConfig:
    """No root named for the default dataset: the JPEG archive, else a local CIFAR-10 copy, else (when
    allowed) CIFAR-10 downloaded into the cache."""
    try:
        return dataclasses.replace(cfg, root=default_data_root("imagefolder"))
    except DataError:
        cache = cache_dir(cfg.cache_dir)
        for cand in locate.local_cifar10_candidates(cfg.cache_dir):
            d = _cifar_batches(cand, cache) if cand.exists() else None
            if d is not None:
                return dataclasses.replace(cfg, dataset="cifar10", root=str(d))
        if not cfg.download:
            raise
    d = download_cifar10(cifar10_home(cfg.cache_dir), progress)
    return dataclasses.replace(cfg, dataset="cifar10", root=str(d))


def resolve_data(cfg: DataConfig, progress: Callable[[str], None] | None = None) -> DataConfig:
    """The config with the concrete ``dataset`` and ``root`` it reads; downloads CIFAR-10 (into the cache,
    verified) when no local copy is found and ``cfg.download`` allows it. Call it once in the driver."""
    validate_config(cfg)
    if cfg.dataset == "synthetic":
        return cfg
    if cfg.dataset == "imagefolder" and not cfg.root and not os.environ.get("LKSCALE_DATA"):
        return _default_or_cifar10(cfg, progress)
    root = Path(os.path.expanduser(cfg.root or default_data_root(cfg.dataset)))
    if cfg.dataset != "cifar10":
        return dataclasses.replace(cfg, root=str(root))
    d = _cifar_batches(root, cache_dir(cfg.cache_dir))
    if d is None and cfg.download:
        d = download_cifar10(root if not root.is_file() else root.parent, progress)
    if d is None:
        raise DataError(f"{root}: no CIFAR-10 python batches (cifar-10-batches-py/data_batch_1 ...); copy "
                        f"cifar-10-python.tar.gz there, {DOWNLOAD_HINT}")
    return dataclasses.replace(cfg, root=str(d))


def _looks_like_tar_name(p: Path) -> bool:
    return p.name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz"))


def load_arrays(cfg: DataConfig, progress: Callable[[str], None] | None = None) -> tuple[Arrays, str]:
    """Decoded (cached) arrays for the configured dataset and the source they came from."""
    cfg = resolve_data(cfg, progress)
    if cfg.dataset == "synthetic":
        return sources.synthetic(cfg), "synthetic"
    root, cache = Path(cfg.root), cache_dir(cfg.cache_dir)
    if cfg.dataset == "imagefolder":
        if not root.exists():
            raise DataError(f"{root}: no such file or folder (expected an image folder or a .tar.gz of "
                            "train/<class>/*.jpg)")
        if root.is_file() and not tarfile.is_tarfile(root) and not _looks_like_tar_name(root):
            raise DataError(f"{root}: not a folder or a tar archive")
        return cached_arrays("imagefolder", root, lambda: imagefolder.decode(root), [root], cache), str(root)
    if cfg.dataset == "cifar10":
        return cached_arrays("cifar10", root, lambda: sources.decode_cifar10(root), [root], cache), str(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (fashion_mnist wants the IDX .gz files, as Debian's "
                        "dataset-fashion-mnist installs them under /usr/share/datasets/fashion-mnist)")
    return cached_arrays("fashion_mnist", root, lambda: sources.decode_fashion_mnist(root), [root], cache), str(root)


def _check_counts(classes: list[str], ty: np.ndarray, cfg: DataConfig, source: str) -> None:
    per_class = np.bincount(ty, minlength=len(classes))
    need = cfg.val_per_class + (cfg.train_per_class or 1)
    short = [i for i in range(len(classes)) if per_class[i] < need]
    if short:
        i = short[0]
        raise DataError(f"{source}: class {classes[i]!r} has {per_class[i]} training images, fewer than "
                        f"val_per_class + train_per_class = {need}; lower --subset or data.val_per_class")


def load_splits(cfg: DataConfig, progress: Callable[[str], None] | None = None) -> Splits:
    """Stratified, seeded train / val (from train) / test subsets, as in-memory uint8 tensors."""
    arrays, source = load_arrays(cfg, progress)
    classes = list(arrays["classes"])
    k, ty = len(classes), arrays["train_y"]
    _check_counts(classes, ty, cfg, source)
    if cfg.val_seed is None or cfg.val_seed == cfg.seed:
        val_idx, train_idx = stratified_split(ty, [cfg.val_per_class, cfg.train_per_class], cfg.seed, k)
    else:  # the validation sample and the training subset drawn with their own seeds
        val_idx, train_idx = carve_val_train(ty, cfg.val_per_class, cfg.train_per_class, cfg.val_seed, cfg.seed, k)
    train_x = to_tensor(arrays["train_x"][train_idx], cfg.input_size)
    val_x = to_tensor(arrays["train_x"][val_idx], cfg.input_size)
    mean, std = channel_stats(train_x)
    train = TensorSet(train_x, torch.from_numpy(ty[train_idx]).long(), mean, std, augment=cfg.augment)
    val = TensorSet(val_x, torch.from_numpy(ty[val_idx]).long(), mean, std)
    test = None
    if "test_x" in arrays and cfg.test_per_class != 0:
        (test_idx,) = stratified_split(arrays["test_y"], [cfg.test_per_class], cfg.seed, k)
        test = TensorSet(to_tensor(arrays["test_x"][test_idx], cfg.input_size),
                         torch.from_numpy(arrays["test_y"][test_idx]).long(), mean, std)
    return Splits(train=train, val=val, test=test, classes=classes, mean=mean, std=std,
                  in_chans=int(train_x.shape[1]), source=source)
