"""The writer lock: one backup (or prune) per catalog at a time, and whether one is running.

An open-file-description (OFD) lock, fcntl F_OFD_SETLK, on a file in the data directory.
Like flock, the kernel drops it when its holder dies, even by kill -9, so a dead writer's
lock is broken without any staleness guessing; the pid written into the file is only for
the message. Unlike flock, F_OFD_GETLK asks "is it held?" without taking it: `btfs
snapshots` and the mount use that to tell a backup still running from one that was killed
(its snapshot stays 'running' in the catalog until the next writer marks it). A reader
that took the lock for a moment to find out would make a backup starting at that moment
fail with "already running". Classic POSIX fcntl locks would answer too, but belong to
the process, so a second open in the same process would neither conflict nor survive the
first close; OFD locks belong to the open file, as flock does. Readers never take it.

A writer takes an flock on the same file too: older btfs versions locked with flock
only (the two kinds do not see each other), and a backup of such a version may still be
running while a new one starts after an upgrade.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from pathlib import Path

from .errors import LockedError

# struct flock: l_type, l_whence, l_start, l_len, l_pid (off_t is 64-bit in Python's
# build); native alignment, as the kernel expects. l_pid must be 0 for OFD locks.
_FLOCK = "hhqqi"
_FLOCK_SIZE = struct.calcsize(_FLOCK)


def _flock(lock_type: int) -> bytes:
    # The whole file (start 0, length 0 = to the end); padded to the C struct's size.
    return struct.pack(_FLOCK, lock_type, os.SEEK_SET, 0, 0, 0).ljust(_FLOCK_SIZE + 8, b"\0")


class WriterLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, wait: bool = False, what: str = "backup") -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK))
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:  # EAGAIN or EACCES: held by another open file
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if not wait:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise LockedError(f"{what} already running (pid {holder}); "
                                      "use --wait to wait for it") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def is_held(self) -> bool:
        """Whether a writer holds the lock now, asked without taking it (by anyone,
        this process included). False when no writer ever created the file."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            reply = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK))
        finally:
            os.close(fd)
        return struct.unpack_from(_FLOCK, reply)[0] != fcntl.F_UNLCK

    @staticmethod
    def _holder(fd: int) -> str:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return text or "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor of the open file drops both
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
