"""One driver per run folder (lkscale.runlock): a second one is refused with one line naming the holder; a lock
left by a dead process is taken over, never waited on; report reads with a warning while a driver writes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli
from lkscale.cli.report import warnings
from lkscale.runlock import OWNER_FILE, Owner, RunLock, RunLocked, alive, holder

HOLD = ("import sys, time\nfrom lkscale.runlock import RunLock\n"
        "with RunLock(sys.argv[1], 'search'):\n    print('held', flush=True)\n    time.sleep(120)\n")


def _hold(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _owner_file(run_dir, **over):
    d = {"verb": "search", "host": socket.gethostname(), "pid": os.getpid(), "start": None,
         "since": over.get("heartbeat", time.time()),
         "token": "other", **over}
    (run_dir / OWNER_FILE).write_text(json.dumps(d))
    hb = over.get("heartbeat")
    if hb is not None:
        os.utime(run_dir / OWNER_FILE, (hb, hb))


def test_second_driver_refused_with_holder_then_dead_holder_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir).mkdir()
    (run_dir / "study.yaml").write_text("name: x\n")
    proc = _hold(run_dir)
    try:
        with pytest.raises(RunLocked) as e:  # never waits: refused at once
            t0 = time.time()
            RunLock(str(run_dir), "search --resume").acquire()
        assert time.time() - t0 < 5
        msg = str(e.value)
        assert "\n" not in msg and f"pid {proc.pid}" in msg and socket.gethostname() in msg and "since" in msg
        assert "lkscale search" in msg and "wait for it to end" in msg
        # the CLI: exit 2, one line naming the holder (fidelity is a driver too)
        res = run_cli("fidelity", str(run_dir), env={"LKSCALE_CACHE": str(tmp_path / "cache")}, timeout=120)
        assert res.returncode == 2 and f"pid {proc.pid}" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        # a report reads a snapshot, with a warning naming the writer
        assert holder(str(run_dir)).pid == proc.pid
        assert any(f"pid {proc.pid}" in w and "snapshot" in w for w in warnings(str(run_dir)))
    finally:
        proc.send_signal(signal.SIGKILL)  # the holder dies without releasing anything
        proc.wait()
    assert holder(str(run_dir)) is None and not warnings(str(run_dir))
    with RunLock(str(run_dir), "search --resume") as lock:  # taken over at once: the kernel freed the flock
        assert lock.took_over is not None and lock.took_over.pid == proc.pid
        assert Owner.read(str(run_dir)).pid == os.getpid()
    assert not (run_dir / OWNER_FILE).exists() and (run_dir / "study.yaml").exists()


def test_owner_file_decides_where_flock_cannot(tmp_path, monkeypatch):
    """Another host (flock not shared): a fresh heartbeat refuses, a stale one is taken over; a pid that is
    alive but is another process (its start time differs) counts as dead."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _owner_file(run_dir, host="node-b", pid=12345, heartbeat=time.time() - 5)
    with pytest.raises(RunLocked, match="host node-b, pid 12345"):
        RunLock(str(run_dir), "search", stale_s=60).acquire()
    _owner_file(run_dir, host="node-b", pid=12345, heartbeat=time.time() - 61)
    with RunLock(str(run_dir), "search", stale_s=60) as lock:
        assert lock.took_over.host == "node-b"
    parent = os.getppid()
    assert alive(Owner("search", socket.gethostname(), parent, None, 0, 0, "t"))
    assert not alive(Owner("search", socket.gethostname(), parent, "1", 0, 0, "t"))  # pid reused
    assert not alive(Owner("search", socket.gethostname(), 2 ** 22 + 17, None, 0, 0, "t"))


def test_lock_heartbeat_reentrant_and_no_empty_folder_left(tmp_path):
    run_dir = tmp_path / "new"
    lock = RunLock(str(run_dir), "search", heartbeat_s=0.05).acquire()
    try:
        first = os.path.getmtime(run_dir / OWNER_FILE)
        time.sleep(0.3)
        assert os.path.getmtime(run_dir / OWNER_FILE) > first  # the heartbeat refreshes the owner file
        with RunLock(str(run_dir), "fidelity"):  # the same process (a search running its fidelity check)
            pass
        assert Owner.read(str(run_dir)).verb == "search"
    finally:
        lock.release()
    assert not run_dir.exists()  # created for the lock, nothing written: removed again
    with pytest.raises(Exception, match="no such folder"):
        RunLock(str(tmp_path / "missing"), "fidelity", create=False).acquire()
