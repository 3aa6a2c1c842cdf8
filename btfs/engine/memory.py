"""Process-wide tuning, set once per process: the allocator, the cyclic garbage collector
and the GIL's switch interval, for a process that runs backups or serves a mount.

These are settings of the whole process, not of one run: a daemon runs many backups in one
process, and a run that set and restored them would undo another's. So each is set by one
idempotent call, before worker threads start, by whoever owns the process
(`btfs.repo.Repo.backup`, `btfs.fuse.mount.serve`); nothing here is ever undone.

The allocator. Worker threads allocate read buffers and compressed chunks that the main
thread frees. With glibc's defaults every thread gets its own malloc arena, and the mmap
threshold rises after the first large free, so those buffers end up in fragmented arenas
that never shrink: resident memory grows far past what is in use. Two arenas, and a fixed
mmap threshold just above the largest chunk (pack buffers are always mmapped, hence
returned on free, while chunk-sized buffers reuse heap memory without a page-fault storm),
keep it near the live data; a lower threshold saves a little more memory but makes every
chunk an mmap and its page faults. Setting the mmap threshold by hand also pins the trim
threshold at 128 KiB, so freeing a chunk at the top of the heap would hand the memory back
to the kernel and the next chunk fault it in again: the trim threshold keeps that much free
heap. A no-op where glibc's mallopt is unavailable. Figures: the commit that set them.

Never: change a setting per run, or import anything of btfs (any process may call this).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sys

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_M_TRIM_THRESHOLD = -1
ARENAS = 2  # enough for the main thread and its workers to rarely wait on a lock
MMAP_THRESHOLD = 4 * 1024 * 1024 + 1  # the largest chunk (chunk_max default) stays on the heap
TRIM_THRESHOLD = 16 * 1024 * 1024  # free heap kept for the next chunks instead of unmapped
# A backup makes millions of objects but almost no cycles: reference counting frees what it
# makes, so the collector runs rarely and the objects from before (imports, the config)
# are frozen out of its full passes; the default (700, 10, 10) ran it hundreds of times a
# backup, with the GIL held, to find a few hundred objects in cycles.
GC_THRESHOLDS = (50_000, 20, 100)
# The main thread (scan, catalog, bookkeeping) is what an initial backup waits on, and it
# lets go of the GIL at every syscall and SQLite statement; at the default 5 ms interval,
# getting it back from workers running Python kept it waiting. The mount does not set it:
# its readers wait on the kernel, not on the GIL.
SWITCH_INTERVAL_S = 0.0005

_tuned: set[str] = set()  # what this process has been tuned for


def _mallopt(*settings: tuple[int, int]) -> None:
    """glibc's mallopt for each (parameter, value); a no-op (logged) without glibc."""
    try:
        # The process's own symbols, libc's among them. Not find_library("c"): it runs
        # `ldconfig -p` in a subprocess, a delay before a mount answers or a backup starts.
        libc = ctypes.CDLL(None)
        for param, value in settings:
            libc.mallopt(param, value)
    except (OSError, AttributeError):
        log.debug("mallopt unavailable; allocator left as is")


def tune_process_for_backup() -> None:
    """Two arenas, the fixed mmap and trim thresholds, rare garbage collections and a short
    switch interval, for a process that runs backups. Idempotent; call before the
    backup's worker threads start."""
    if "backup" in _tuned:
        return
    _tuned.add("backup")
    _mallopt((_M_ARENA_MAX, ARENAS), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
             (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    log.debug("process tuned for backups")


def tune_process_for_mount() -> None:
    """Two arenas only, for the mount's process; idempotent, call before its worker threads
    start. Its threads fetch and verify chunks, and in an arena each, freed read-ahead
    buffers and cached chunks fragment memory. The backup's fixed mmap threshold would
    save a little more here, but makes every reply-sized buffer an mmap and its page
    faults, which slows a cold sequential read."""
    if "mount" in _tuned:
        return
    _tuned.add("mount")
    _mallopt((_M_ARENA_MAX, ARENAS))
