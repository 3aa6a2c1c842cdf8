"""A local disk cache of byte ranges read from a remote vault, bounded, least recently used.

Layout: `<dir>/<vault id>/<first 2 chars of the pack>/<pack>-<offset>-<length>`, one file
per range read, so a second look at the same chunks (the mount, a restore after it) costs a
local read instead of a GET. Entries are written to `<dir>/<vault id>/tmp/` and renamed into
place, so a reader sees a whole entry or none; a hit touches the file's mtime, which is the
LRU order. The bound is kept by whichever process finds it exceeded: it lists the entries
and removes the oldest until a fraction below the bound (each process recounts the entries
after adding a sixteenth of the bound, so processes filling it together overshoot by a
fraction of it, not by a multiple). Several threads and several processes (a mount and a
restore) share one cache safely: entries are immutable, a removed entry is just a miss,
and an open entry stays readable while another process removes it.

The cache never vouches for its bytes: every chunk read from it is still verified by the
codec, and a range that fails (`drop`) is removed so that it is read from the vault again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

_EVICT_TO = 0.8  # after eviction, the cache holds at most this fraction of its bound
_RESCAN_EVERY = 16  # a process recounts the cache after adding 1/16 of its bound


class RangeCache:
    def __init__(self, root: Path, capacity: int):
        self.root = root
        self.capacity = capacity
        self._tmp = root / "tmp"
        self._lock = threading.Lock()
        self._estimate: int | None = None  # bytes, as this process believes; None: unknown
        self._since_scan = 0  # bytes this process added since it last counted the cache

    def _path(self, pack: str, offset: int, length: int) -> Path:
        return self.root / pack[:2] / f"{pack}-{offset}-{length}"

    def get(self, pack: str, offset: int, length: int) -> bytes | None:
        path = self._path(pack, offset, length)
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.read()
            os.utime(path)
        except OSError:
            return None  # not cached, or removed by another process meanwhile
        if len(data) != length:
            self.drop(pack, offset, length)
            return None
        return data

    def put(self, pack: str, offset: int, length: int, data: bytes) -> None:
        """Keep `data` (best effort: a full disk or an unwritable cache only logs)."""
        if self.capacity <= 0 or len(data) > self.capacity // 8:
            return
        path = self._path(pack, offset, length)
        tmp = self._tmp / f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        try:
            self._tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(tmp, path)
        except OSError as e:
            log.debug("read cache: cannot keep %s: %s", path.name, e)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        with self._lock:
            self._since_scan += len(data)
            if self._estimate is None or self._since_scan > self.capacity // _RESCAN_EVERY:
                # Other processes fill the cache too: count what is really there now
                # and then, so together they overshoot by a fraction, not a multiple.
                self._estimate = self._total()
                self._since_scan = 0
            else:
                self._estimate += len(data)
            over = self._estimate > self.capacity
        if over:
            self._evict()

    def drop(self, pack: str, offset: int, length: int) -> None:
        try:
            os.unlink(self._path(pack, offset, length))
        except OSError:
            pass

    def _entries(self) -> list[tuple[float, int, str]]:
        """(mtime, size, path) of every entry."""
        found = []
        try:
            subdirs = [e for e in os.scandir(self.root) if e.is_dir() and e.name != "tmp"]
        except FileNotFoundError:
            return []
        for sub in subdirs:
            try:
                for entry in os.scandir(sub.path):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    found.append((st.st_mtime, st.st_size, entry.path))
            except FileNotFoundError:
                continue
        return found

    def _total(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self) -> None:
        """Remove the least recently used entries until the cache is below its bound.
        Runs outside the lock: two threads evicting at once only remove a little more."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        goal = int(self.capacity * _EVICT_TO)
        for _, size, path in entries:
            if total <= goal:
                break
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            total -= size
        with self._lock:
            self._estimate = total
