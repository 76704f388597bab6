"""lkscale.data: image folders and archives, CIFAR-10 batches, IDX files, cache, subsets, augmentation."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from lkscale.data import (DataConfig, DataError, channel_stats, default_data_root, load_arrays, load_splits,
                          random_crop_flip, read_idx, stratified_split)

CLASSES = ["cat", "dog", "frog"]
COLOURS = {"cat": (220, 30, 30), "dog": (30, 220, 30), "frog": (30, 30, 220)}


def _write_folder(root, n_train=6, n_test=2, size=8, grey_one=True, fmt="PNG"):
    """train/<class>/*, test/<class>/*; every image a flat colour per class plus its index in pixel (0,0)."""
    for split, n in (("train", n_train), ("test", n_test)):
        if n == 0:
            continue
        for ci, c in enumerate(CLASSES):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.zeros((size, size, 3), np.uint8) + np.array(COLOURS[c], np.uint8)
                arr[0, 0] = (i, ci, 7)
                im = Image.fromarray(arr)
                if grey_one and split == "train" and c == "dog" and i == 0:
                    im = Image.fromarray(np.full((size, size), 99, np.uint8), mode="L")
                im.save(d / f"{i:03d}.{'png' if fmt == 'PNG' else 'jpg'}", fmt)
    (root / "README.txt").write_text("not an image; ignored")
    return root


def _tar(src, dest, wrapper=None):
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=wrapper or ".")
    return dest


def _cfg(root, tmp_path, **kw):
    base = dict(dataset="imagefolder", root=str(root), val_per_class=2, input_size=None, cache_dir=str(tmp_path / "cache"))
    base.update(kw)
    return DataConfig(**base)


def test_imagefolder_folder_reads_labels_pixels_and_grey(tmp_path):
    root = _write_folder(tmp_path / "ds")
    arrays, _ = load_arrays(_cfg(root, tmp_path))
    assert arrays["classes"] == CLASSES
    x, y = arrays["train_x"], arrays["train_y"]
    assert x.shape == (18, 8, 8, 3) and x.dtype == np.uint8
    assert arrays["test_x"].shape == (6, 8, 8, 3)
    assert np.bincount(y).tolist() == [6, 6, 6]
    # PNG is lossless: every pixel round-trips, labels follow sorted class order
    for k in range(len(y)):
        c = CLASSES[y[k]]
        i = k % 6  # files are read in sorted order within each class
        if c == "dog" and i == 0:
            assert (x[k] == 99).all()  # the grey image, converted to RGB by repeating the channel
            continue
        assert tuple(x[k, 0, 0]) == (i, y[k], 7)
        assert tuple(x[k, 4, 4]) == COLOURS[c]


def test_imagefolder_archive_matches_folder_and_wrapper_dir(tmp_path):
    root = _write_folder(tmp_path / "ds")
    a_dir, _ = load_arrays(_cfg(root, tmp_path))
    for name, wrapper in (("flat.tar.gz", None), ("wrapped.tgz", "mydata")):
        arc = _tar(root, tmp_path / name, wrapper)
        a_tar, src = load_arrays(_cfg(arc, tmp_path))
        assert src == str(arc)
        assert a_tar["classes"] == CLASSES
        for k in ("train_x", "train_y", "test_x", "test_y"):
            np.testing.assert_array_equal(a_tar[k], a_dir[k])


def test_all_grey_set_stays_one_channel(tmp_path):
    root = tmp_path / "grey"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((6, 6), 10 * i + (c == "b"), np.uint8)).save(root / "train" / c / f"{i}.png")
    s = load_splits(_cfg(root, tmp_path, val_per_class=1))
    assert s.in_chans == 1 and s.train.x.shape == (6, 1, 6, 6) and s.test is None
    assert s.mean.shape == (1,)


def test_mixed_sizes_and_input_size(tmp_path):
    root = _write_folder(tmp_path / "ds", n_test=0, size=8)
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(root / "train" / "cat" / "big.png")
    s = load_splits(_cfg(root, tmp_path, input_size=16, val_per_class=1))
    assert s.train.x.shape[1:] == (3, 16, 16) and s.val.x.shape[1:] == (3, 16, 16)
    # a flat colour stays that colour after resizing
    frog = s.train.x[s.train.y == 2]
    assert (frog[:, :, 4:12, 4:12] == torch.tensor(COLOURS["frog"], dtype=torch.uint8).view(1, 3, 1, 1)).all()


def test_errors_empty_class_truncated_archive_missing_path_corrupt_image(tmp_path):
    root = _write_folder(tmp_path / "ds")
    (root / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="train/empty has no images"):
        load_arrays(_cfg(root, tmp_path))
    (root / "train" / "empty").rmdir()

    arc = _tar(root, tmp_path / "ds.tar.gz")
    data = arc.read_bytes()
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        load_arrays(_cfg(bad, tmp_path))

    with pytest.raises(DataError, match="no such file or folder"):
        load_arrays(_cfg(tmp_path / "nowhere", tmp_path))

    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image"):
        load_arrays(_cfg(root, tmp_path))

    nolayout = tmp_path / "flat"
    nolayout.mkdir()
    Image.new("RGB", (4, 4)).save(nolayout / "x.png")
    with pytest.raises(DataError, match="no train/<class>/ folders"):
        load_arrays(_cfg(nolayout, tmp_path))


def test_default_root_env_and_message(tmp_path, monkeypatch):
    monkeypatch.setenv("LKSCALE_DATA", str(tmp_path))
    assert default_data_root() == str(tmp_path)
    monkeypatch.setenv("LKSCALE_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="LKSCALE_DATA"):
        default_data_root()
    monkeypatch.delenv("LKSCALE_DATA")
    import lkscale.data.locate as d

    monkeypatch.setattr(d, "_default_candidates", lambda: [tmp_path / "a" / d.DEFAULT_ARCHIVE])
    with pytest.raises(DataError, match="cifar10-jpg.tar.gz"):
        default_data_root()


def test_cache_reused_and_invalidated_when_source_changes(tmp_path, monkeypatch):
    import lkscale.data.imagefolder as d

    root = _write_folder(tmp_path / "ds")
    arc = _tar(root, tmp_path / "ds.tar.gz")
    calls = []
    real = d.decode
    monkeypatch.setattr(d, "decode", lambda r: calls.append(r) or real(r))
    cfg = _cfg(arc, tmp_path)
    a1, _ = load_arrays(cfg)
    a2, _ = load_arrays(cfg)
    assert len(calls) == 1  # second load came from the cache
    np.testing.assert_array_equal(a1["train_x"], a2["train_x"])
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(entries) == 1 and not any(".tmp-" in p.name for p in entries)
    assert sorted(f.name for f in entries[0].iterdir()) == ["meta.json", "test_x.npy", "test_y.npy",
                                                            "train_x.npy", "train_y.npy"]
    # change the source: a new class image -> re-decoded, new content
    Image.fromarray(np.full((8, 8, 3), 5, np.uint8)).save(root / "train" / "cat" / "999.png")
    _tar(root, arc)
    os.utime(arc, ns=(1, 1))  # a different mtime as well as a different size
    a3, _ = load_arrays(cfg)
    assert len(calls) == 2
    assert len(a3["train_y"]) == len(a1["train_y"]) + 1


def test_stratified_seeded_subsets(tmp_path):
    y = np.repeat(np.arange(4), 25)
    val, tr = stratified_split(y, [5, 10], seed=3, num_classes=4)
    assert np.bincount(y[val]).tolist() == [5] * 4 and np.bincount(y[tr]).tolist() == [10] * 4
    assert not set(val) & set(tr)
    val2, tr2 = stratified_split(y, [5, 10], seed=3, num_classes=4)
    np.testing.assert_array_equal(val, val2)
    np.testing.assert_array_equal(tr, tr2)
    val3, _ = stratified_split(y, [5, 10], seed=4, num_classes=4)
    assert not np.array_equal(val, val3)
    # more training images per class keeps the same validation images
    val4, tr4 = stratified_split(y, [5, None], seed=3, num_classes=4)
    np.testing.assert_array_equal(val, val4)
    assert len(tr4) == 80 and set(tr) <= set(tr4)


def test_load_splits_counts_stats_and_too_small(tmp_path):
    root = _write_folder(tmp_path / "ds")
    s = load_splits(_cfg(root, tmp_path, train_per_class=3, test_per_class=1))
    assert (len(s.train), len(s.val), len(s.test)) == (9, 6, 3)
    assert torch.bincount(s.train.y).tolist() == [3, 3, 3]
    assert s.classes == CLASSES and s.in_chans == 3
    # normalisation statistics are those of the training subset
    f = s.train.x.double() / 255
    np.testing.assert_allclose(s.mean.numpy(), f.mean((0, 2, 3)).numpy(), atol=1e-6)
    np.testing.assert_allclose(s.std.numpy(), f.std((0, 2, 3), unbiased=False).numpy(), atol=1e-6)
    xb, yb = next(s.train.batches(9))
    np.testing.assert_allclose(xb.mean((0, 2, 3)).numpy(), 0, atol=1e-5)
    with pytest.raises(DataError, match="fewer than"):
        load_splits(_cfg(root, tmp_path, train_per_class=5))


def test_random_crop_flip_is_a_shifted_window():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, padding=2, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for b in range(64):
        found = False
        for oy in range(5):
            for ox in range(5):
                win = xp[b, :, oy:oy + 8, ox:ox + 8]
                if torch.equal(out[b], win):
                    found = True
                elif torch.equal(out[b], win.flip(-1)):
                    found, flips = True, flips + 1
                if found:
                    break
            if found:
                break
        assert found, f"image {b} is not a (flipped) window of the padded input"
    assert 10 < flips < 54  # about half flipped


def test_batches_cover_everything_once(tmp_path):
    s = load_splits(DataConfig(dataset="synthetic", train_per_class=7, val_per_class=2, seed=1))
    seen = torch.cat([yb for _, yb in s.train.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == sorted(s.train.y.tolist())
    dropped = sum(len(yb) for _, yb in s.train.batches(8, shuffle=True, drop_last=True))
    assert dropped == 64
    xb, _ = next(s.train.batches(4, channels_last=True))
    assert xb.is_contiguous(memory_format=torch.channels_last) and xb.dtype == torch.float32


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def test_fashion_mnist_idx(tmp_path):
    root = tmp_path / "fm"
    root.mkdir()
    rng = np.random.default_rng(0)
    xs = {"train": rng.integers(0, 256, (30, 28, 28)), "t10k": rng.integers(0, 256, (10, 28, 28))}
    ys = {"train": np.repeat(np.arange(10), 3), "t10k": np.arange(10)}
    for p in ("train", "t10k"):
        with gzip.open(root / f"{p}-images-idx3-ubyte.gz", "wb") as f:
            f.write(_idx_bytes(xs[p]))
        (root / f"{p}-labels-idx1-ubyte").write_bytes(_idx_bytes(ys[p]))  # uncompressed works too
    np.testing.assert_array_equal(read_idx(root / "train-images-idx3-ubyte.gz"), xs["train"])
    cfg = DataConfig(dataset="fashion_mnist", root=str(root), val_per_class=1, input_size=None,
                     cache_dir=str(tmp_path / "c"))
    arrays, _ = load_arrays(cfg)
    assert arrays["train_x"].shape == (30, 28, 28, 1) and arrays["classes"][9] == "Ankle boot"
    np.testing.assert_array_equal(arrays["train_x"][:, :, :, 0], xs["train"])
    np.testing.assert_array_equal(arrays["test_y"], ys["t10k"])
    s = load_splits(cfg)
    assert s.in_chans == 1 and (len(s.train), len(s.val), len(s.test)) == (20, 10, 10)
    s32 = load_splits(DataConfig(**{**cfg.__dict__, "input_size": 32}))
    assert s32.train.x.shape[1:] == (1, 32, 32)
    # truncated file
    (root / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(ys["train"])[:-3])
    with pytest.raises(DataError, match="truncated"):
        load_arrays(DataConfig(**{**cfg.__dict__, "cache_dir": str(tmp_path / "c2")}))
    with pytest.raises(DataError, match="no such folder"):
        load_arrays(DataConfig(dataset="fashion_mnist", root=str(tmp_path / "none")))


def test_cifar10_python_batches(tmp_path):
    d = tmp_path / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    imgs, labels = [], []
    for b in range(1, 3):  # two small training batches in the official layout
        x = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
        y = [int(v) for v in np.tile(np.arange(10), 2)]
        with open(d / f"data_batch_{b}", "wb") as f:
            pickle.dump({b"data": x.reshape(20, -1), b"labels": y, b"batch_label": b"x"}, f)
        imgs.append(x)
        labels += y
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": imgs[0][:10].reshape(10, -1), b"labels": list(range(10))}, f)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    cfg = DataConfig(dataset="cifar10", root=str(tmp_path / "cifar"), val_per_class=1, input_size=None,
                     cache_dir=str(tmp_path / "c"))
    arrays, src = load_arrays(cfg)
    assert src == str(d) and arrays["classes"][0] == "airplane" and arrays["classes"][9] == "truck"
    np.testing.assert_array_equal(arrays["train_x"], np.concatenate(imgs).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(arrays["train_y"], labels)
    s = load_splits(cfg)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 10)
    # never downloads unless asked: a missing folder is an error naming the remedy
    with pytest.raises(DataError, match="--download .study file: data.download: true"):
        load_arrays(DataConfig(dataset="cifar10", root=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c")))
    (d / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        load_arrays(DataConfig(**{**cfg.__dict__, "cache_dir": str(tmp_path / "c3")}))


def test_synthetic_is_seeded_and_learnable_shape():
    a = load_splits(DataConfig(dataset="synthetic", train_per_class=5, val_per_class=2, seed=0))
    b = load_splits(DataConfig(dataset="synthetic", train_per_class=5, val_per_class=2, seed=0))
    assert torch.equal(a.train.x, b.train.x) and len(a.train) == 50 and len(a.val) == 20
    c = load_splits(DataConfig(dataset="synthetic", train_per_class=5, val_per_class=2, seed=1))
    assert not torch.equal(a.train.x, c.train.x)


def test_bad_config():
    with pytest.raises(DataError, match=r"data\.dataset: .imagenet. unknown"):
        load_splits(DataConfig(dataset="imagenet"))
    with pytest.raises(DataError, match="val_per_class"):
        load_splits(DataConfig(dataset="synthetic", val_per_class=0))


def test_channel_stats_exact():
    x = torch.randint(0, 256, (5, 2, 7, 3), dtype=torch.uint8)
    m, s = channel_stats(x)
    f = x.double() / 255
    np.testing.assert_allclose(m.numpy(), f.mean((0, 2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(s.numpy(), f.std((0, 2, 3), unbiased=False).numpy(), rtol=1e-5)
