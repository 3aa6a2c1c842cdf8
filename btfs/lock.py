"""The writer lock: one backup (or prune) per catalog at a time.

An flock on a file in the data directory. The kernel drops it when its holder dies, even by
kill -9, so a dead writer's lock is broken without any staleness guessing; the pid written
into the file is only for the message. Readers never take it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import LockedError


class WriterLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, wait: bool = False, what: str = "backup") -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise LockedError(f"{what} already running (pid {holder}); "
                                      "use --wait to wait for it") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return text or "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
