"""Restoring a path as it was at a snapshot: a file, a symlink or a whole directory.

Never overwrites: every entry is created with O_EXCL (or mkdir/symlink, which fail if the
name exists), and the top-level destination must not exist. Content is streamed chunk by
chunk, every chunk verified; runs of zeros become holes, so sparse files stay sparse.
Directory metadata is applied after their contents, so their mtimes stick.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..catalog import DIR, FILE, SYMLINK, Catalog, Version
from ..errors import BtfsError
from .meta import apply_meta
from .reader import ChunkSource

log = logging.getLogger(__name__)

HOLE_BLOCK = 64 * 1024


@dataclass
class RestoreResult:
    target: bytes
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def _write_content(fd: int, source: ChunkSource, catalog: Catalog, content_id: int) -> int:
    content = catalog.content(content_id)
    refs = catalog.chunk_refs(content.chunk_ids)
    zero = bytes(HOLE_BLOCK)
    pos = 0
    for ref in refs:
        data = source.chunk(ref)
        view = memoryview(data)
        for start in range(0, len(data), HOLE_BLOCK):
            block = view[start:start + HOLE_BLOCK]
            if block == zero[:len(block)]:
                continue  # leave a hole; ftruncate below sets the length
            os.pwrite(fd, block, pos + start)
        pos += len(data)
    os.ftruncate(fd, pos)
    return pos


class Restorer:
    def __init__(self, catalog: Catalog, source: ChunkSource, *, content_only: bool = False):
        self.catalog = catalog
        self.source = source
        self.content_only = content_only
        # Hard links: files that shared an inode at backup time (same st_ino, nlink > 1,
        # same content) are linked again within one restore, as tar and rsync -H do.
        self._links: dict[tuple[int, int], bytes] = {}

    def restore(self, node_id: int, version: Version, snapshot_id: int, dest: bytes
                ) -> RestoreResult:
        if os.path.lexists(dest):
            raise BtfsError(f"{os.fsdecode(dest)} exists; btfs restore never overwrites")
        result = RestoreResult(dest)
        # Post-order metadata: (path, version) of directories, applied deepest first.
        dirs: list[tuple[bytes, Version]] = []
        stack = [(node_id, version, dest)]
        while stack:
            node, ver, path = stack.pop()
            if self._link_existing(ver, path, result):
                continue  # shares the inode (and metadata) of a file already restored
            self._create(ver, path, result)
            if ver.type == DIR:
                dirs.append((path, ver))
                for entry in self.catalog.children_at(node, snapshot_id):
                    stack.append((entry.node_id, entry.version, os.path.join(path, entry.name)))
            elif not self.content_only:
                result.warnings += apply_meta(path, ver.meta)
        if not self.content_only:
            for path, ver in reversed(dirs):
                result.warnings += apply_meta(path, ver.meta)
        for warning in result.warnings:
            log.warning("%s", warning)
        return result

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

    def _create(self, ver: Version, path: bytes, result: RestoreResult) -> None:
        # Private until apply_meta sets the real mode; with --content-only the umask rules.
        private = not self.content_only
        if ver.type == DIR:
            os.mkdir(path, 0o700 if private else 0o777)
            result.dirs += 1
        elif ver.type == SYMLINK:
            os.symlink(ver.meta.target, path)
            result.symlinks += 1
        elif ver.type == FILE:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o600 if private else 0o666)
            try:
                result.bytes += _write_content(fd, self.source, self.catalog,
                                               ver.meta.content_id)
            finally:
                os.close(fd)
            result.files += 1
