"""Restoring a path as it was at a snapshot: a file, a symlink or a whole directory.

Never overwrites: every entry is created with O_EXCL (or mkdir/symlink, which fail if the
name exists), and the top-level destination must not exist. The main thread walks the
catalog (its connection is single-threaded) and creates every entry; worker threads fetch,
verify and write file contents and set file metadata, so vault reads, decompression and
disk writes overlap. Runs of zeros become holes, so sparse files stay sparse. Directory
metadata is applied last, deepest first, so their mtimes stick.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..catalog import DIR, FILE, SYMLINK, Catalog, ChunkRef, Version
from ..errors import BtfsError
from ..text import display_path
from .meta import apply_meta
from .reader import ChunkSource

log = logging.getLogger(__name__)

HOLE_BLOCK = 64 * 1024
IN_FLIGHT = 64  # files being written at once (each holds an open descriptor)


@dataclass
class RestoreResult:
    target: bytes
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def write_content(fd: int, source: ChunkSource, refs: list[ChunkRef]) -> int:
    """Write verified chunks to `fd`, leaving holes for zero blocks; returns the size."""
    zero = bytes(HOLE_BLOCK)
    pos = written = 0
    for ref in refs:
        data = source.chunk(ref)
        view = memoryview(data)
        for start in range(0, len(data), HOLE_BLOCK):
            block = view[start:start + HOLE_BLOCK]
            # Most blocks show data in their first or last byte; only the others are
            # compared whole (bytes == bytes is a memcmp; a memoryview compares item by
            # item, ~50x slower; both copy, which was a fifth of a restore's worker time).
            if not (block[0] or block[-1]) and bytes(block) == zero[:len(block)]:
                continue  # leave a hole; ftruncate below sets the length
            os.pwrite(fd, block, pos + start)
            written = pos + start + len(block)
        pos += len(data)
    if written < pos:  # ends in a hole
        os.ftruncate(fd, pos)
    return pos


class Restorer:
    def __init__(self, catalog: Catalog, source: ChunkSource, *, content_only: bool = False,
                 threads: int | None = None):
        self.catalog = catalog
        self.source = source
        self.content_only = content_only
        # One worker per core. Each file costs its worker ~10 syscalls, each a GIL
        # hand-off; with 4 workers on 2 cores, perf put ~28% of the restore's CPU time in
        # futex waits and wake-ups, and 2 workers restored linux-6.1 faster (9.8-13.1 s
        # against 13.8-15.0 s).
        self.threads = threads or max(2, os.cpu_count() or 2)
        # Hard links: files that shared an inode at backup time (same st_ino, nlink > 1,
        # same content) are linked again within one restore, as tar and rsync -H do.
        self._links: dict[tuple[int, int], bytes] = {}

    def restore(self, node_id: int, version: Version, snapshot_id: int, dest: bytes
                ) -> RestoreResult:
        if os.path.lexists(dest):
            raise BtfsError(f"{display_path(dest)} exists; btfs restore never overwrites")
        parent = os.path.dirname(dest) or b"."
        if not os.path.isdir(parent):
            raise BtfsError(f"cannot restore to {display_path(dest)}: "
                            f"{display_path(parent)} is not an existing directory")
        result = RestoreResult(dest)
        dirs: list[tuple[bytes, Version]] = []  # pre-order; metadata applied in reverse
        writes: deque[Future] = deque()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="btfs-restore") as pool:
            # (node, version, path, chunk refs when known): a directory's files get theirs
            # in one batch with its listing (see below).
            stack: list[tuple[int, Version, bytes, list[ChunkRef] | None]] = [
                (node_id, version, dest, None)]
            while stack:
                node, ver, path, refs = stack.pop()
                if self._link_existing(ver, path, result):
                    continue  # shares the inode (and metadata) of a file already restored
                if ver.type == DIR:
                    os.mkdir(path, 0o777 if self.content_only else 0o700)
                    result.dirs += 1
                    dirs.append((path, ver))
                    entries = self.catalog.children_at(node, snapshot_id)
                    # The main thread walks the catalog and creates every entry: two
                    # queries per file for its chunks' places were ~45% of its py-spy
                    # samples; now it is two more queries per directory.
                    refs_of = self.catalog.contents_refs(
                        e.version.meta.content_id for e in entries if e.version.type == FILE)
                    # Pushed in reverse so they are taken in name order: the order a
                    # backup packs them in, so each pack is read forwards.
                    for entry in reversed(entries):
                        stack.append((entry.node_id, entry.version,
                                      os.path.join(path, entry.name),
                                      refs_of.get(entry.version.meta.content_id)))
                elif ver.type == SYMLINK:
                    os.symlink(ver.meta.target, path)
                    result.symlinks += 1
                    self._finish_meta(path, ver, result)
                elif ver.type == FILE:
                    if refs is None:
                        refs = self.catalog.content_refs(ver.meta.content_id)
                    # Created here, so a hard link to it can follow at once.
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                 0o666 if self.content_only else 0o600)
                    writes.append(pool.submit(self._fill, fd, path, ver, refs))
                    result.files += 1
                    while len(writes) >= IN_FLIGHT:
                        self._collect(writes.popleft(), result)
            while writes:
                self._collect(writes.popleft(), result)
        for path, ver in reversed(dirs):
            self._finish_meta(path, ver, result)
        for warning in result.warnings:
            log.warning("%s", warning)
        return result

    def _fill(self, fd: int, path: bytes, ver: Version, refs: list[ChunkRef]
              ) -> tuple[int, list[str]]:
        try:
            size = write_content(fd, self.source, refs)
            # Through the fd, after the last write (which would move the mtime).
            return size, [] if self.content_only else apply_meta(path, ver.meta, fd)
        finally:
            os.close(fd)

    @staticmethod
    def _collect(future: Future, result: RestoreResult) -> None:
        size, warnings = future.result()
        result.bytes += size
        result.warnings += warnings

    def _finish_meta(self, path: bytes, ver: Version, result: RestoreResult) -> None:
        if not self.content_only:
            result.warnings += apply_meta(path, ver.meta)

    def _link_existing(self, ver: Version, path: bytes, result: RestoreResult) -> bool:
        if ver.type != FILE or ver.meta.nlink < 2:
            return False
        key = (ver.meta.ino, ver.meta.content_id)
        first = self._links.get(key)
        if first is None:
            self._links[key] = path
            return False
        os.link(first, path)
        result.files += 1
        return True
