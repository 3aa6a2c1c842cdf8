"""The kernel's view of changes: inotify watches on every directory of the tracked trees.

Turns inotify events into (path, deep) changes for btfs.watch.settle, keeping one watch
per directory: new directories are watched as they appear (and reported deep, so files
made before their watch was added are not missed); a directory renamed or deleted loses
its watches, and reappears under its new name as new. Excluded directories are not
watched; excluded entries and the [watch] skip patterns make no change.

Two ways inotify loses events are never silent: IN_Q_OVERFLOW (the kernel's queue was
full) is reported to the caller, which scans everything; ENOSPC from inotify_add_watch
(the per-user watch limit) is logged once with the sysctl that would lift it, and the
periodic full scan covers the unwatched directories.

Runs on the daemon's trio thread: `read()` never blocks (the daemon waits on the
descriptor with trio's wait_readable). Watching a new tree walks it synchronously, its
directories only.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from inotify_simple import INotify, flags

from ..config import TrackedDir
from ..engine.excludes import Matcher

log = logging.getLogger(__name__)

MASK = (flags.CREATE | flags.DELETE | flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_FROM
        | flags.MOVED_TO | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF
        | flags.ONLYDIR | flags.DONT_FOLLOW | flags.EXCL_UNLINK)
MAX_WATCHES_FILE = "/proc/sys/fs/inotify/max_user_watches"


@dataclass(frozen=True, slots=True)
class Change:
    path: bytes
    deep: bool = False  # everything below it may be new


@dataclass(slots=True)
class _Root:
    path: bytes
    matcher: Matcher


def _max_user_watches() -> int:
    try:
        with open(MAX_WATCHES_FILE) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


class Watches:
    def __init__(self, tracked: Iterable[TrackedDir], excludes: tuple[str, ...],
                 skip: tuple[str, ...], never: Iterable[bytes] = ()):
        self.inotify = INotify(nonblocking=True)
        self.roots = [_Root(os.fsencode(t.path),
                            Matcher(tuple(excludes) + t.excludes, t.includes))
                      for t in tracked]
        self.skip = tuple(os.fsencode(p) for p in skip)
        self.never = frozenset(never)
        self._path: dict[int, tuple[bytes, _Root]] = {}  # wd -> directory, its root
        self._wd: dict[bytes, int] = {}
        self.limit_hit = False
        self.unwatched = 0  # directories not watched because of the limit
        self._limit_logged = False

    def fileno(self) -> int:
        return self.inotify.fileno()

    def close(self) -> None:
        self.inotify.close()

    @property
    def watched(self) -> int:
        return len(self._wd)

    def watch_all(self) -> None:
        """Watch every tracked tree; again after an overflow or at a full scan, to pick up
        directories made while events were lost (a watched one costs one syscall)."""
        self.limit_hit, self.unwatched = False, 0
        for root in self.roots:
            self.watch_tree(root.path, root)

    def watch_tree(self, top: bytes, root: _Root) -> None:
        """Watch `top` and every directory below it that is backed up."""
        missed = 0
        stack = [top]
        while stack:
            path = stack.pop()
            if not self._add(path, root):
                missed += 1
                continue  # gone, unreadable or over the limit: the scans cover it
            try:
                with os.scandir(path) as it:
                    for entry in it:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        child = entry.path
                        rel = child[len(root.path.rstrip(b"/")) + 1:]
                        if child in self.never or root.matcher.excluded(rel, True):
                            continue
                        stack.append(child)
            except OSError:
                continue
        if missed and self.limit_hit:
            self.unwatched += missed
            self._log_limit()

    def _add(self, path: bytes, root: _Root) -> bool:
        if self.limit_hit:
            return False
        try:
            wd = self.inotify.add_watch(path, MASK)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                self.limit_hit = True
            return False
        old = self._path.get(wd)
        if old is not None and old[0] != path:
            self._wd.pop(old[0], None)  # the same directory under a new name
        self._path[wd] = (path, root)
        self._wd[path] = wd
        return True

    def _log_limit(self) -> None:
        if self._limit_logged:
            return
        self._limit_logged = True
        current = _max_user_watches()
        # Room for what is watched now, what is not, and growth; in round thousands.
        wanted = -(-(current + 2 * self.unwatched + 1024) // 1024) * 1024
        log.warning("inotify watch limit reached: %d directories are not watched, their "
                    "changes wait for the full scan; to watch them all run: "
                    "sysctl fs.inotify.max_user_watches=%d", self.unwatched, wanted)

    def _forget_below(self, top: bytes) -> None:
        prefix = top + b"/"
        for path in [p for p in self._wd if p == top or p.startswith(prefix)]:
            wd = self._wd.pop(path)
            self._path.pop(wd, None)
            try:
                self.inotify.rm_watch(wd)
            except OSError:
                pass  # already gone with its directory

    def read(self) -> tuple[list[Change], bool]:
        """The changes queued now (never blocks) and whether the queue overflowed."""
        changes: list[Change] = []
        overflow = False
        for event in self.inotify.read(timeout=0):
            mask = event.mask
            if event.wd == -1 or mask & flags.Q_OVERFLOW:
                overflow = True
                continue
            where = self._path.get(event.wd)
            if where is None:
                continue
            directory, root = where
            if mask & flags.IGNORED:
                if self._wd.get(directory) == event.wd:
                    del self._wd[directory]
                del self._path[event.wd]
                continue
            name = os.fsencode(event.name)
            if not name:
                # The directory itself: its attributes, or it went away (its parent's
                # listing says so; a tracked root has no parent here, so report it).
                if mask & flags.ATTRIB or directory == root.path:
                    changes.append(Change(directory))
                continue
            is_dir = bool(mask & flags.ISDIR)
            if not is_dir and any(fnmatch.fnmatchcase(name, p) for p in self.skip):
                continue
            path = directory + b"/" + name if directory != b"/" else b"/" + name
            rel = path[len(root.path.rstrip(b"/")) + 1:]
            if path in self.never or root.matcher.entry_excluded(rel, name, is_dir):
                continue
            if is_dir and mask & flags.MOVED_FROM:
                # Its watches would go on reporting the old paths. (A deleted directory
                # was empty; IN_IGNORED ends its one watch.)
                self._forget_below(path)
            if is_dir and mask & (flags.CREATE | flags.MOVED_TO):
                self.watch_tree(path, root)
                changes.append(Change(path, deep=True))
            else:
                changes.append(Change(path))
        return changes, overflow
