"""Memory of one trial: a per-trial limit, so a candidate whose training would exceed it fails as that trial
(recorded ``failed`` with the reason) while the search goes on, and the peak a trial is expected to reach.

The limit is ``resources.memory_per_trial_mb`` of growth over what the trial process already maps when it
starts (``RLIMIT_AS``: address space, so the interpreter, torch and Ray's shared memory already mapped do
not count against it). An allocation past it raises in the trial (``MemoryError``, or torch's "can't
allocate memory"), which the trainable reports as a failed trial; the limit is lifted when the trial
ends. Linux and macOS; elsewhere no limit is set (said once in the log). Ray's own memory monitor still
guards the node as a whole.
"""
from __future__ import annotations

import contextlib
import logging
import os
import resource
from typing import Iterator

log = logging.getLogger("lkscale.search")
MiB = 1024 * 1024
_OOM_WORDS = ("can't allocate memory", "cannot allocate memory", "out of memory", "std::bad_alloc",
              "could not create a primitive")  # oneDNN, when its scratch memory cannot be allocated


def mapped_bytes() -> int | None:
    """Address space this process maps now (``/proc/self/statm``, Linux); None where unknown."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MiB (``getrusage``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MiB if os.uname().sysname == "Darwin" else 1024)


@contextlib.contextmanager
def trial_memory_limit(mb: float | None) -> Iterator[None]:
    """Allow this process ``mb`` MiB more address space than it maps now, until the block ends (None: no limit)."""
    now = mapped_bytes() if mb else None
    if not mb or now is None:
        if mb:
            log.warning("no per-trial memory limit on this system (no /proc/self/statm)")
        yield
        return
    old = resource.getrlimit(resource.RLIMIT_AS)
    limit = now + int(mb * MiB)
    if old[1] != resource.RLIM_INFINITY:
        limit = min(limit, old[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or any(w in str(e).lower() for w in _OOM_WORDS)


def out_of_memory_reason(e: BaseException, mb: float | None) -> str:
    """The reason recorded for a trial that ran out of memory."""
    limit = f"its limit of {mb:g} MiB (resources.memory_per_trial_mb)" if mb else "the memory available"
    return (f"out of memory: training this candidate needed more than {limit}; a smaller proxy.batch_size or "
            f"a larger limit fits it ({type(e).__name__}: {str(e)[:160]})")


__all__ = ["trial_memory_limit", "is_out_of_memory", "out_of_memory_reason", "peak_rss_mb", "mapped_bytes"]
