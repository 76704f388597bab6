"""One driver per run folder: a lock that search, resume and fidelity hold for their whole lifetime.

Two files in the run folder::

    .lkscale.lock          an OS lock (``flock`` through ``filelock``), held while the driver lives
    .lkscale.owner.json    who holds it: verb, host, pid, the process's start time, since, heartbeat

A second driver does not wait: it gets ``RunLocked`` (a ``RunDirError``, so the CLI exits 2) with one
line naming the holder (verb, host, pid, since when, last heartbeat) and how to proceed. ``lkscale report``
takes no lock; it reads with a warning while a live driver holds one (``holder``), since a report is a
snapshot and must never stop a search from resuming.

What it guarantees, and what not:
- **One machine, local filesystem**: exclusive. The kernel releases ``flock`` when its process dies in any
  way (``kill -9`` included), so a lock left by a dead driver is taken over at once; the owner file it
  left behind is replaced, and the take-over is said (``RunLock.took_over``).
- **Same host, flock unavailable** (some FUSE or network mounts): the owner file alone decides; the holder
  is alive when its pid runs with the same start time (``/proc``), so a reused pid does not count.
- **Several hosts on a shared filesystem**: NFSv4 (and v3 with NLM) maps ``flock`` onto byte-range locks the
  server arbitrates, so two hosts exclude each other; a lost node's lock is freed when its lease expires
  (about 90 s). Mounts with ``local_lock=flock`` (or ``nolock``) keep flock on each host only: then the owner
  file decides, by its heartbeat (refreshed every ``HEARTBEAT_S`` by a thread of the holder): a holder on
  another host whose heartbeat is older than ``STALE_S`` is taken as lost and taken over. Not guaranteed
  there: two drivers on two hosts starting within the same second can both pass (the owner file is written
  by rename, the later one wins, and the earlier driver notices the change at its next heartbeat and logs an
  error); a holder suspended (SIGSTOP, a frozen VM) longer than ``STALE_S`` is taken over although it may
  wake up; clocks of the hosts must agree to within a fraction of ``STALE_S``.
- Never waits: acquiring is non-blocking (a bounded poll of ``ACQUIRE_S`` seconds at most), nothing blocks
  forever on a lock whose holder is gone.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from filelock import FileLock, Timeout

from lkscale.rundir import RunDirError, atomic_write

log = logging.getLogger("lkscale.runlock")

LOCK_FILE = ".lkscale.lock"
OWNER_FILE = ".lkscale.owner.json"
HEARTBEAT_S = 15.0   # the holder refreshes its owner file this often
STALE_S = 120.0      # a holder on another host silent this long is taken as lost
ACQUIRE_S = 0.5      # how long a driver polls for the OS lock before it says who holds it

_held: dict[str, int] = {}  # run folder -> nesting depth of the locks this process holds (a search runs fidelity)
_held_mutex = threading.Lock()


class RunLocked(RunDirError):
    """The run folder is held by another live driver (exit code 2)."""


@dataclass(frozen=True)
class Owner:
    verb: str
    host: str
    pid: int
    start: str | None      # the process's start time (``/proc/PID/stat`` field 22), against pid reuse
    since: float
    heartbeat: float
    token: str

    @classmethod
    def read(cls, run_dir: str) -> "Owner | None":
        path = os.path.join(run_dir, OWNER_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
            hb = os.path.getmtime(path)
            return cls(str(d["verb"]), str(d["host"]), int(d["pid"]), d.get("start"), float(d["since"]),
                       max(hb, float(d.get("since", 0))), str(d.get("token", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # none, or half a file from a driver killed while writing it: no owner

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return (f"lkscale {self.verb} (host {self.host}, pid {self.pid}, since {since}, "
                f"heartbeat {max(0.0, time.time() - self.heartbeat):.0f} s ago)")


def _host() -> str:
    return socket.gethostname()


def _start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux); None where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    now = _start_time(pid)
    return start is None or now is None or now == start


def alive(owner: Owner, stale_s: float = STALE_S) -> bool:
    """Is the owner still running? Same host: its pid (with its start time); another host: its heartbeat."""
    if owner.host == _host():
        return owner.pid == os.getpid() or _pid_alive(owner.pid, owner.start)
    return time.time() - owner.heartbeat < stale_s


def holder(run_dir: str, stale_s: float = STALE_S) -> Owner | None:
    """The live driver holding ``run_dir`` (another process), or None. Reads only: takes no lock."""
    owner = Owner.read(run_dir)
    if owner is None or owner.pid == os.getpid() and owner.host == _host():
        return None
    return owner if alive(owner, stale_s) else None


class RunLock:
    """Hold ``run_dir`` for a driver's lifetime: ``with RunLock(run_dir, "search"): ...``.

    Creates the folder when it is missing, and removes it again on release when the driver left nothing in
    it (a bad input found after the lock was taken leaves no empty run folder behind). Re-entrant within a
    process (a search that runs its fidelity check holds the folder once)."""

    def __init__(self, run_dir: str, verb: str, stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S,
                 create: bool = True):
        self.run_dir = os.path.abspath(run_dir)
        self.create = create
        self.verb, self.stale_s, self.heartbeat_s = verb, stale_s, heartbeat_s
        self.took_over: Owner | None = None   # the dead holder whose lock this one replaced
        self._os_lock: FileLock | None = None
        self._created = False
        self._outer = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._token = f"{_host()}:{os.getpid()}:{time.time_ns()}"

    # ------------------------------------------------------------------------------------------ acquire
    def acquire(self) -> "RunLock":
        with _held_mutex:
            if _held.get(self.run_dir):
                _held[self.run_dir] += 1
                return self
        if not os.path.isdir(self.run_dir):
            if not self.create:
                raise RunDirError(f"{self.run_dir}: no such folder")
            os.makedirs(self.run_dir, exist_ok=True)
            self._created = True
        try:
            self._lock_os()
            self._claim()
        except BaseException:
            self._release_os()
            self._remove_if_empty()
            raise
        with _held_mutex:
            _held[self.run_dir] = 1
        self._outer = True
        self._beat = threading.Thread(target=self._heartbeat, name="lkscale-runlock", daemon=True)
        self._beat.start()
        return self

    def _lock_os(self) -> None:
        lock = FileLock(os.path.join(self.run_dir, LOCK_FILE), timeout=ACQUIRE_S, fallback_to_soft=False,
                        preserve_lock_file=True)
        try:
            lock.acquire()
        except Timeout:
            owner = Owner.read(self.run_dir)
            raise RunLocked(self._refusal(owner)) from None
        except (NotImplementedError, OSError) as e:  # no flock on this filesystem: the owner file decides
            log.warning("%s: no OS lock on this filesystem (%s); relying on the owner file", self.run_dir, e)
            return
        self._os_lock = lock

    def _claim(self) -> None:
        owner = Owner.read(self.run_dir)
        if owner is not None and owner.token != self._token:
            if self._os_lock is None or owner.host != _host():
                if alive(owner, self.stale_s):  # flock cannot tell (none here, or not shared between hosts)
                    raise RunLocked(self._refusal(owner))
            self.took_over = owner  # the OS lock was free: that holder is gone
        now = time.time()
        atomic_write(os.path.join(self.run_dir, OWNER_FILE), json.dumps({
            "verb": self.verb, "host": _host(), "pid": os.getpid(), "start": _start_time(os.getpid()),
            "since": now, "token": self._token}))

    def _refusal(self, owner: Owner | None) -> str:
        who = owner.describe() if owner is not None else "another lkscale process (its owner file is unreadable)"
        return (f"{self.run_dir} is in use by {who}; wait for it to end or stop it, then run again "
                f"(a lock left by a dead process is taken over by itself: on this host at once, from another "
                f"host after {self.stale_s:.0f} s without a heartbeat)")

    # ------------------------------------------------------------------------------------------ hold
    def _heartbeat(self) -> None:
        path = os.path.join(self.run_dir, OWNER_FILE)
        while not self._stop.wait(self.heartbeat_s):
            owner = Owner.read(self.run_dir)
            if owner is not None and owner.token != self._token:
                log.error("%s: the run-folder lock was taken over by %s while this driver runs", self.run_dir,
                          owner.describe())
                return
            try:
                os.utime(path)
            except OSError as e:
                log.warning("%s: could not refresh the run-folder lock's heartbeat: %s", self.run_dir, e)

    # ------------------------------------------------------------------------------------------ release
    def release(self) -> None:
        with _held_mutex:
            depth = _held.get(self.run_dir, 0)
            if not self._outer:
                if depth > 1:
                    _held[self.run_dir] = depth - 1
                return
            _held.pop(self.run_dir, None)
        self._stop.set()
        owner = Owner.read(self.run_dir)
        if owner is not None and owner.token == self._token:
            try:
                os.remove(os.path.join(self.run_dir, OWNER_FILE))
            except OSError:
                pass
        self._release_os()
        self._remove_if_empty()

    def _release_os(self) -> None:
        if self._os_lock is not None:
            self._os_lock.release()
            self._os_lock = None

    def _remove_if_empty(self) -> None:
        if not self._created:
            return
        try:
            left = set(os.listdir(self.run_dir)) - {LOCK_FILE, OWNER_FILE}
            if not left:
                for f in (LOCK_FILE, OWNER_FILE):
                    if os.path.exists(os.path.join(self.run_dir, f)):
                        os.remove(os.path.join(self.run_dir, f))
                os.rmdir(self.run_dir)
        except OSError:
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["RunLock", "RunLocked", "Owner", "holder", "alive", "LOCK_FILE", "OWNER_FILE", "HEARTBEAT_S", "STALE_S"]
