"""Restoring a path as it was at a snapshot: a file, a symlink or a whole directory.

Never overwrites: directories and symlinks are created with mkdir/symlink, which fail if
the name exists, and the top-level destination must not exist. A file is written under a
temporary name in its destination directory (created with O_EXCL) and given its final
name only once its every chunk is verified and written and its metadata set: by a rename
that fails if the name exists (renameat2 RENAME_NOREPLACE, else link + unlink), so a file
under its final name is always whole, and a file that cannot be restored leaves nothing.

Damage (a chunk that fails verification, a pack missing from the vault) costs only the
files that need it: every other file is restored, and the result lists the ones that were
not, by their path in the backup. Hard links are made after their first file is complete.

The main thread walks the catalog (its connection is single-threaded) and creates every
entry; worker threads fetch, verify and write file contents and set file metadata, so
vault reads, decompression and disk writes overlap. Runs of zeros become holes, so sparse
files stay sparse. Directory metadata is applied last, deepest first, so their mtimes stick.
"""

from __future__ import annotations

import ctypes
import errno
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
TEMP_PREFIX = b".btfs-restore-"  # a file being written; renamed when complete

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)  # glibc >= 2.28
if _renameat2 is not None:
    _renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint)
    _renameat2.restype = ctypes.c_int


def rename_noreplace(src: bytes, dst: bytes) -> None:
    """Rename `src` to `dst`, failing with EEXIST if `dst` exists: os.rename would replace
    it, and an exists-check before it would leave a window for another writer.
    renameat2(RENAME_NOREPLACE) is one atomic call; where the filesystem or kernel lacks it
    (EINVAL, ENOSYS), link(2), which never replaces a name either, and unlink(2)."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), os.fsdecode(dst))
    os.link(src, dst)
    os.unlink(src)


@dataclass
class RestoreResult:
    target: bytes
    files: int = 0  # restored whole (hard links included)
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    # (path in the backup, why) of every file that could not be restored.
    failed: list[tuple[bytes, str]] = field(default_factory=list)


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
            # item, far slower; comparing every block whole copies every block).
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
        # hand-off: more workers than cores spend their time in futex waits and
        # wake-ups, and restore slower.
        self.threads = threads or max(2, os.cpu_count() or 2)
        # Hard links: files that shared an inode at backup time (same st_ino, nlink > 1,
        # same content) are linked again within one restore, as tar and rsync -H do.
        self._links: dict[tuple[int, int], bytes] = {}
        self._later_links: list[tuple[bytes, bytes]] = []  # (first file, link), made last
        self._temp_tag = os.urandom(4).hex().encode()
        self._temps = 0
        self._dest = b""
        self._from = b""

    def restore(self, node_id: int, version: Version, snapshot_id: int, dest: bytes,
                backed_up_as: bytes = b"") -> RestoreResult:
        """Restore `version` of `node_id` to `dest`; `backed_up_as` (the path's name in the
        backup) names the files that could not be restored in `RestoreResult.failed`."""
        if os.path.lexists(dest):
            raise BtfsError(f"{display_path(dest)} exists; btfs restore never overwrites")
        parent = os.path.dirname(dest) or b"."
        if not os.path.isdir(parent):
            raise BtfsError(f"cannot restore to {display_path(dest)}: "
                            f"{display_path(parent)} is not an existing directory")
        self._dest, self._from = dest, backed_up_as or dest
        result = RestoreResult(dest)
        dirs: list[tuple[bytes, Version]] = []  # pre-order; metadata applied in reverse
        writes: deque[tuple[Future, bytes]] = deque()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="btfs-restore") as pool:
            # (node, version, path, chunk refs when known): a directory's files get theirs
            # in one batch with its listing (see below).
            stack: list[tuple[int, Version, bytes, list[ChunkRef] | None]] = [
                (node_id, version, dest, None)]
            while stack:
                node, ver, path, refs = stack.pop()
                if self._link_later(ver, path):
                    continue  # shares the inode (and metadata) of a file being restored
                if ver.type == DIR:
                    os.mkdir(path, 0o777 if self.content_only else 0o700)
                    result.dirs += 1
                    dirs.append((path, ver))
                    entries = self.catalog.history.children_at(node, snapshot_id)
                    # The main thread walks the catalog and creates every entry, so it
                    # must not query per file: its files' chunk places come in one
                    # batch per directory.
                    refs_of = self.catalog.chunks.contents_refs(
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
                        refs = self.catalog.chunks.content_refs(ver.meta.content_id)
                    temp, fd = self._create_temp(os.path.dirname(path))
                    writes.append((pool.submit(self._fill, fd, temp, path, ver, refs), path))
                    while len(writes) >= IN_FLIGHT:
                        self._collect(*writes.popleft(), result)
            while writes:
                self._collect(*writes.popleft(), result)
        self._make_links(result)
        for path, ver in reversed(dirs):
            self._finish_meta(path, ver, result)
        for warning in result.warnings:
            log.warning("%s", warning)
        return result

    def _create_temp(self, directory: bytes) -> tuple[bytes, int]:
        """A new, empty file with a name of its own in `directory`, open for writing."""
        while True:
            self._temps += 1
            temp = os.path.join(directory, b"%s%s-%d" % (TEMP_PREFIX, self._temp_tag,
                                                          self._temps))
            try:
                return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                     0o666 if self.content_only else 0o600)
            except FileExistsError:
                continue  # not ours: never touched

    def _fill(self, fd: int, temp: bytes, path: bytes, ver: Version, refs: list[ChunkRef]
              ) -> tuple[int, list[str]]:
        """Write the content to `temp`, set its metadata, give it its final name `path`;
        on any failure remove `temp`, so nothing incomplete is left behind."""
        try:
            try:
                size = write_content(fd, self.source, refs)
                # Through the fd, after the last write (which would move the mtime); a
                # rename moves neither mtime nor atime.
                warnings = [] if self.content_only else apply_meta(path, ver.meta, fd)
            finally:
                os.close(fd)
            try:
                rename_noreplace(temp, path)
            except FileExistsError:
                raise BtfsError(f"{os.fsdecode(path)} exists; btfs restore never "
                                "overwrites") from None
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        return size, warnings

    def _collect(self, future: Future, path: bytes, result: RestoreResult) -> None:
        try:
            size, warnings = future.result()
        except BtfsError as e:  # damage in the vault: this file only
            result.failed.append((self._backed_up_as(path), str(e)))
            return
        result.files += 1
        result.bytes += size
        result.warnings += warnings

    def _backed_up_as(self, path: bytes) -> bytes:
        return self._from + path[len(self._dest):]

    def _finish_meta(self, path: bytes, ver: Version, result: RestoreResult) -> None:
        if not self.content_only:
            result.warnings += apply_meta(path, ver.meta)

    def _link_later(self, ver: Version, path: bytes) -> bool:
        """Whether `path` is a further name of a hard-link group's first file: linked to
        it once that file is complete (`_make_links`)."""
        if ver.type != FILE or ver.meta.nlink < 2:
            return False
        key = (ver.meta.ino, ver.meta.content_id)
        first = self._links.get(key)
        if first is None:
            self._links[key] = path
            return False
        self._later_links.append((first, path))
        return True

    def _make_links(self, result: RestoreResult) -> None:
        failed = {path for path, _ in result.failed}
        for first, path in self._later_links:
            if self._backed_up_as(first) in failed:
                result.failed.append((self._backed_up_as(path),
                                      f"a hard link of {os.fsdecode(self._backed_up_as(first))}, "
                                      "which could not be restored"))
                continue
            os.link(first, path)
            result.files += 1
