"""Datasets for proxy training: decoded once, cached as uint8 arrays, held in memory as tensors.

Datasets (``DataConfig.dataset``, from ``lkscale.config``):

- ``imagefolder``: ``train/<class>/*`` and optionally ``test/<class>/*`` image files, as a folder or a
  ``.tar.gz``/``.tgz``/``.tar`` of that layout (a single top folder around it is fine). This is how
  users bring their own data; the CIFAR-10 JPEG archive (the default dataset) is one.
- ``cifar10``: the official python-pickle batches (``cifar-10-batches-py``, or its
  ``cifar-10-python.tar.gz``). Fetched from the official source only when downloading is allowed
  (``--download`` / ``data.download: true``); also the fallback for the default dataset then.
- ``fashion_mnist``: the IDX files (``train-images-idx3-ubyte[.gz]`` ...), as Debian's
  ``dataset-fashion-mnist`` installs them under ``/usr/share/datasets/fashion-mnist``; grey 28x28.
- ``synthetic``: seeded class-dependent random patterns, for unit tests only.

Modules: ``locate`` (default roots), ``imagefolder`` and ``sources`` (formats), ``download``, ``cache``
(decode-once cache), ``split`` (stratified subsets), ``tensors`` (TensorSet, augmentation,
normalisation), ``load`` (``resolve_data``, ``load_arrays``, ``load_splits``).
"""
from __future__ import annotations

from lkscale.config import DATASETS, DataConfig
from lkscale.data.cache import Arrays, cache_dir, cached_arrays
from lkscale.data.download import CIFAR10_MD5, CIFAR10_URL, cifar10_source, download_cifar10, fetch
from lkscale.data.errors import DataError, validate_config
from lkscale.data.imagefolder import IMAGE_EXTENSIONS
from lkscale.data.load import load_arrays, load_splits, resolve_data, with_download
from lkscale.data.locate import DEFAULT_ARCHIVE, FASHION_MNIST_DIR, default_data_root, repo_root
from lkscale.data.sources import FASHION_MNIST_CLASSES, read_idx
from lkscale.data.split import stratified_split
from lkscale.data.tensors import Splits, TensorSet, channel_stats, random_crop_flip

__all__ = ["DataConfig", "DataError", "Splits", "TensorSet", "load_splits", "load_arrays", "resolve_data",
           "with_download", "default_data_root", "cache_dir", "random_crop_flip", "stratified_split", "channel_stats",
           "read_idx", "DATASETS", "download_cifar10", "fetch", "cifar10_source", "CIFAR10_URL", "CIFAR10_MD5",
           "DEFAULT_ARCHIVE", "FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS", "Arrays",
           "cached_arrays", "validate_config", "repo_root"]
