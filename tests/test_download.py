"""CIFAR-10 download for a fresh clone: a tiny CIFAR-format archive served from the test itself on 127.0.0.1.

Never touches the internet: the source URL and checksum are overridden through the environment
(``LKSCALE_CIFAR10_URL``, ``LKSCALE_CIFAR10_MD5``), as a mirror would be.
"""
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest

import lkscale.data.locate as locate
from lkscale.data import (CIFAR10_URL, DataConfig, DataError, cifar10_source, load_arrays, load_splits, resolve_data,
                          with_download)

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _pickled(obj) -> bytes:
    # the official CIFAR-10 python format is a pickle: the stand-in has to be one too
    return pickle.dumps(obj)


def _cifar_archive() -> tuple[bytes, np.ndarray, np.ndarray]:
    """A CIFAR-10-format .tar.gz: two training batches of 20 images (2 per class), a test batch, the meta."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    y = np.tile(np.arange(10), 4)
    files = {f"data_batch_{b + 1}": {b"data": x[20 * b:20 * b + 20].reshape(20, -1),
                                     b"labels": [int(v) for v in y[20 * b:20 * b + 20]]} for b in range(2)}
    files["test_batch"] = {b"data": x[:10].reshape(10, -1), b"labels": list(range(10))}
    files["batches.meta"] = {b"label_names": [n.encode() for n in NAMES]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, obj in files.items():
            data = _pickled(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue(), x, y


@pytest.fixture(scope="module")
def archive():
    return _cifar_archive()


@pytest.fixture
def server(archive):
    """An HTTP server on 127.0.0.1 serving the archive at /cifar-10-python.tar.gz; counts the requests."""
    body = archive[0]
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits.append(self.path)
            if self.path != "/cifar-10-python.tar.gz":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch):
    """No default dataset anywhere (as on a fresh clone without ../shared), an empty cache."""
    monkeypatch.delenv("LKSCALE_DATA", raising=False)
    monkeypatch.setattr(locate, "_default_candidates", lambda: [tmp_path / "nowhere" / locate.DEFAULT_ARCHIVE])
    monkeypatch.setattr(locate, "local_cifar10_candidates", lambda cache=None: [locate.cifar10_home(cache)])
    cache = tmp_path / "cache"
    return DataConfig(val_per_class=1, train_per_class=2, input_size=None, cache_dir=str(cache)), cache


def test_official_source_and_checksum(monkeypatch):
    """The defaults agree with torchvision's CIFAR10 (an independent copy of the official URL and md5)."""
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.delenv("LKSCALE_CIFAR10_URL", raising=False)
    monkeypatch.delenv("LKSCALE_CIFAR10_MD5", raising=False)
    assert cifar10_source() == (torchvision.datasets.CIFAR10.url, torchvision.datasets.CIFAR10.tgz_md5)
    assert CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    monkeypatch.setenv("LKSCALE_CIFAR10_URL", "http://127.0.0.1:9/x.tar.gz")
    monkeypatch.setenv("LKSCALE_CIFAR10_MD5", "AB" * 16)
    assert cifar10_source() == ("http://127.0.0.1:9/x.tar.gz", "ab" * 16)


def test_fresh_clone_without_download_names_the_option(fresh_clone):
    cfg, cache = fresh_clone
    with pytest.raises(DataError) as e:
        load_arrays(cfg)
    msg = str(e.value)
    assert "no dataset found" in msg and "--download" in msg and "data.download: true" in msg
    assert "\n" not in msg
    assert not (cache / "cifar10").exists()


def test_download_fallback_loads_and_is_reused(fresh_clone, server, archive, monkeypatch):
    cfg, cache = fresh_clone
    base, hits = server
    body, x, y = archive
    monkeypatch.setenv("LKSCALE_CIFAR10_URL", f"{base}/cifar-10-python.tar.gz")
    monkeypatch.setenv("LKSCALE_CIFAR10_MD5", hashlib.md5(body).hexdigest())
    notes = []
    resolved = resolve_data(with_download(cfg), progress=notes.append)
    assert resolved.dataset == "cifar10" and hits == ["/cifar-10-python.tar.gz"]
    assert resolved.root == str(cache / "cifar10" / "cifar-10-batches-py")
    assert any("downloading" in n for n in notes)
    arrays, src = load_arrays(with_download(cfg))
    assert src == resolved.root and list(arrays["classes"]) == NAMES
    np.testing.assert_array_equal(arrays["train_x"], x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(arrays["train_y"], y)
    splits = load_splits(cfg)  # a later run without --download finds the copy in the cache
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 10, 10)
    assert hits == ["/cifar-10-python.tar.gz"]  # fetched once
    leftovers = [p.name for p in (cache / "cifar10").iterdir() if p.name.endswith((".part", ".tar.gz"))]
    assert leftovers == []


def test_bad_checksum_fails_cleanly(fresh_clone, server, monkeypatch):
    cfg, cache = fresh_clone
    base, hits = server
    monkeypatch.setenv("LKSCALE_CIFAR10_URL", f"{base}/cifar-10-python.tar.gz")
    monkeypatch.setenv("LKSCALE_CIFAR10_MD5", "0" * 32)
    with pytest.raises(DataError, match="does not match") as e:
        load_arrays(with_download(cfg))
    assert "\n" not in str(e.value) and hits == ["/cifar-10-python.tar.gz"]
    home = cache / "cifar10"
    assert sorted(p.name for p in home.iterdir() if not p.name.endswith(".lock")) == []  # nothing half-kept


def test_unreachable_source_is_one_line(fresh_clone, server, monkeypatch):
    cfg, _ = fresh_clone
    base, _hits = server
    monkeypatch.setenv("LKSCALE_CIFAR10_URL", f"{base}/missing.tar.gz")  # 404
    monkeypatch.setenv("LKSCALE_CIFAR10_MD5", "0" * 32)
    with pytest.raises(DataError, match="download of .*missing.tar.gz failed") as e:
        load_arrays(with_download(cfg))
    assert "\n" not in str(e.value)


def test_explicit_cifar10_dataset_downloads_into_its_root(tmp_path, server, archive, monkeypatch):
    base, hits = server
    monkeypatch.setenv("LKSCALE_CIFAR10_URL", f"{base}/cifar-10-python.tar.gz")
    monkeypatch.setenv("LKSCALE_CIFAR10_MD5", hashlib.md5(archive[0]).hexdigest())
    cfg = DataConfig(dataset="cifar10", root=str(tmp_path / "c10"), val_per_class=1, input_size=None,
                     cache_dir=str(tmp_path / "cache"), download=True)
    arrays, src = load_arrays(cfg)
    assert src == str(tmp_path / "c10" / "cifar-10-batches-py") and arrays["train_x"].shape == (40, 32, 32, 3)
    assert len(hits) == 1


def test_local_archive_without_internet(tmp_path, archive, monkeypatch):
    """Offline: cifar-10-python.tar.gz dropped into the clone's data/ is used without --download."""
    monkeypatch.delenv("LKSCALE_DATA", raising=False)
    monkeypatch.setenv("LKSCALE_CIFAR10_URL", "http://127.0.0.1:9/never-fetched.tar.gz")
    monkeypatch.setattr(locate, "_default_candidates", lambda: [tmp_path / "nowhere" / locate.DEFAULT_ARCHIVE])
    monkeypatch.setattr(locate, "repo_root", lambda: tmp_path / "clone")
    (tmp_path / "clone" / "data").mkdir(parents=True)
    (tmp_path / "clone" / "data" / "cifar-10-python.tar.gz").write_bytes(archive[0])
    cfg = DataConfig(val_per_class=1, input_size=None, cache_dir=str(tmp_path / "cache"))
    arrays, src = load_arrays(cfg)
    assert resolve_data(cfg).dataset == "cifar10" and src.startswith(str(tmp_path / "cache"))
    np.testing.assert_array_equal(arrays["train_y"], archive[2])
