"""The dwconv autotuner: which of several equivalent implementations to run for a shape, decided once per
machine.

Candidates (e.g. the grad-weight methods of :mod:`lkscale.ops.dwconv_impl`) are timed the first time a key is
met; the fastest is kept in ``dwconv_autotune.json`` in lkscale's cache directory (``$LKSCALE_CACHE``, default
``~/.cache/lkscale``). The candidates agree only to rounding, and rounding differences grow through training,
so for runs to be reproducible every process on a machine must use the same candidate for a key: a process
that misses re-reads the file under a file lock (another may just have decided) and only times the
candidates when nobody has; the first decision stands. Delete the file to re-time.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable

import torch
from filelock import FileLock

from lkscale.config import default_cache_dir

log = logging.getLogger(__name__)


class Autotuner:
    """Chooses between candidate implementations by timing them once per key; caches the choice."""

    FILE = "dwconv_autotune.json"

    def __init__(self):
        self._cache: dict[str, str] = {}
        self._loaded_from: str | None = None
        self._lock = threading.Lock()
        self.forced: dict[str, str] = {}      # op -> candidate (tests / benchmarks)

    def _path(self) -> str:
        return os.path.join(default_cache_dir(), self.FILE)

    def _load(self, again: bool = False) -> None:
        """Merge the file's choices into the in-process cache (once per path, or ``again``)."""
        path = self._path()
        if path == self._loaded_from and not again:
            return
        self._loaded_from = path
        try:
            with open(path) as f:
                data = json.load(f)
            if isinstance(data, dict):
                for k, v in data.items():
                    self._cache.setdefault(str(k), str(v))
        except (OSError, ValueError):
            pass

    def _save(self) -> None:
        path = self._path()
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(self._cache, f, indent=0, sort_keys=True)
            os.replace(tmp, path)
        except OSError as e:  # a cache we cannot write is only a missed speed-up
            log.debug("dwconv autotune cache not saved: %s", e)

    def clear(self) -> None:
        self._cache.clear()
        self._loaded_from = None

    def choices(self) -> dict[str, str]:
        return dict(self._cache)

    def pick(self, op: str, key: str, candidates: dict[str, Callable[[], torch.Tensor]]) -> tuple[str, torch.Tensor | None]:
        """Name of the candidate to use for ``key``; times them when the key is new.

        Returns (name, result) where result is the chosen candidate's output when it was computed
        during tuning (saves one call), else None.
        """
        if op in self.forced and self.forced[op] in candidates:
            return self.forced[op], None
        full = f"{op}|{key}"
        with self._lock:
            self._load()
            name = self._cache.get(full)
        if name in candidates:
            return name, None
        with self._lock, self._machine_lock():  # decided once per machine: see the module docstring
            self._load(again=True)
            name = self._cache.get(full)
            if name in candidates:
                return name, None
            name, result = self._time(full, candidates)
            self._cache[full] = name
            self._save()
        return name, result

    @contextlib.contextmanager
    def _machine_lock(self):
        """The machine-wide lock on the choices file; without a writable cache this process decides alone."""
        path = self._path()
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            lock = FileLock(path + ".lock", timeout=600)
            lock.acquire()
        except OSError as e:  # read-only home, no permission: a missed guarantee, never a failed backward pass
            log.debug("dwconv autotune lock unavailable: %s", e)
            yield
            return
        try:
            yield
        finally:
            lock.release()

    @staticmethod
    def _time(full: str, candidates: dict[str, Callable[[], torch.Tensor]]) -> tuple[str, torch.Tensor]:
        """Time every candidate (twice, unless clearly worse on the first call); the fastest and its output."""
        times: dict[str, float] = {}
        results: dict[str, torch.Tensor] = {}
        for cand, fn in candidates.items():
            t0 = time.perf_counter()
            results[cand] = fn()                       # first call: includes plan/primitive set-up
            first = time.perf_counter() - t0
            best = min(times.values(), default=float("inf"))
            if first > 4 * best:                       # clearly worse: do not spend more time on it
                times[cand] = first
                continue
            t0 = time.perf_counter()
            results[cand] = fn()
            times[cand] = min(first, time.perf_counter() - t0)
        name = min(times, key=times.get)
        log.debug("dwconv autotune %s -> %s (%s)", full, name,
                  ", ".join(f"{k}={v * 1e3:.1f}ms" for k, v in times.items()))
        return name, results[name]


TUNER = Autotuner()


__all__ = ["Autotuner", "TUNER"]
