"""Reading a file's content for a backup: the work done in worker threads.

Small files are read, hashed and compressed whole in one job; large files are cut by the
main thread and each chunk hashed and compressed in its own job. Both check that the file
did not change while it was read (size, mtime, ctime and inode before and after; for a
small file "before" is the scan's lstat) and read it again a few times if it did. BLAKE3
and zstd release the GIL, so the jobs use every core.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pyfastcdc.cy import FastCDC

from .. import digest
from .codec import Codec, group_runs
from .meta import read_xattrs

log = logging.getLogger(__name__)

RETRIES = 3


@dataclass(frozen=True, slots=True)
class Piece:
    """One chunk of a file as read: its id, raw size and stored form (None: already stored)."""

    hash: bytes
    size: int
    stored: bytes | None
    checked_at: int = -1  # the store's commit generation when it was found new


@dataclass(frozen=True, slots=True)
class WholeFile:
    """A file as read: stat after reading, digest of the content, its pieces (empty when
    `cut_file` handed them to a callback instead), xattrs read through the open fd."""

    st: os.stat_result
    digest: bytes
    pieces: list[Piece]
    unstable: bool  # still changing after RETRIES reads: recorded as read, with a warning
    xattrs: bytes | None = None


def open_for_backup(path: bytes) -> int:
    """Open without following a symlink swapped in since the scan, and without touching
    the atime when the kernel lets us (O_NOATIME needs ownership or CAP_FOWNER)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError as e:
        if e.errno != errno.EPERM:
            raise
        return os.open(path, flags)


def same_content_stat(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether a file read between two stats of it was left alone: the rule of
    catalog.model.UNCHANGED_BY_STAT, without its type (it cannot change under an open
    descriptor), spelled out because it runs for every file read."""
    return (a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns
            and a.st_ctime_ns == b.st_ctime_ns and a.st_ino == b.st_ino)


def make_piece(data: bytes, codec: Codec, lookup: Callable[[bytes], int | None]) -> Piece:
    """Hash a chunk and compress it unless `lookup` (ChunkStore.lookup) knows it."""
    h = codec.chunk_hash(data)
    generation = lookup(h)
    if generation is None:
        return Piece(h, len(data), None)
    return Piece(h, len(data), codec.encode(data), generation)


def read_up_to(fd: int, size: int) -> bytes:
    """`size` bytes from `fd`'s position, or fewer if the file ends first."""
    parts = []
    while size > 0:
        block = os.read(fd, size)
        if not block:
            break
        parts.append(block)
        size -= len(block)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_small(path: bytes, scanned: os.stat_result
                ) -> tuple[bytes, os.stat_result, bool, bytes | None]:
    """(content, stat after reading, stable, xattrs) of a file read whole. The scan's
    lstat stands for the stat before the first read: a file changed since is read again."""
    for attempt in range(RETRIES):
        fd = open_for_backup(path)
        try:
            before = os.fstat(fd) if attempt else scanned
            # Up to the size `before` gives: growth since shows in the fstat after, so
            # no extra read() to look for EOF.
            data = read_up_to(fd, before.st_size)
            after = os.fstat(fd)
            xattrs = read_xattrs(fd)
        finally:
            os.close(fd)
        stable = same_content_stat(before, after) and len(data) == after.st_size
        if stable or attempt == RETRIES - 1:
            return data, after, stable, xattrs
    raise AssertionError("unreachable")


@dataclass(slots=True)
class Group:
    """Small new chunks stored together (Codec.encode_group); members are
    (hash, raw size, checked_at), as a Piece has them."""

    stored: bytes
    members: list[tuple[bytes, int, int]]


@dataclass(slots=True)
class Batch:
    """What a worker made of several small files: each file as read (or its error) and the
    groups its new chunks are stored in. A grouped chunk's Piece has no stored form of
    its own: the store has it from the group, which is taken first."""

    files: list[WholeFile | OSError]
    groups: list[Group]


def read_batch(paths: list[bytes], scanned: list[os.stat_result], codec: Codec,
               lookup_many: Callable[[list[bytes]], list[int | None]]) -> Batch:
    """Several small files (each under the chunker's minimum, so one chunk) in one worker
    job: read and hash them all, ask the store once which chunks it lacks
    (ChunkStore.lookup_many), compress those together in groups of about
    codec.GROUP_BYTES. An error is returned in its file's place."""
    reads: list[tuple[bytes, os.stat_result, bool, bytes | None] | OSError] = []
    for path, st in zip(paths, scanned, strict=True):
        try:
            reads.append(_read_small(path, st))
        except OSError as e:
            reads.append(e)
    contents = [r[0] for r in reads if not isinstance(r, OSError)]
    hashes = [codec.chunk_hash(data) for data in contents]
    generations = dict(zip(hashes, lookup_many(hashes), strict=True))
    new = {h: data for h, data in zip(hashes, contents, strict=True)
           if data and generations[h] is not None}
    groups, alone = _groups_of(new, generations, codec)
    hash_of = iter(hashes)
    files: list[WholeFile | OSError] = []
    for r in reads:
        if isinstance(r, OSError):
            files.append(r)
            continue
        data, after, stable, xattrs = r
        h = next(hash_of)
        stored = alone.pop(h, None)  # once: an equal file later in the batch is a duplicate
        if not data:
            pieces = []
        elif stored is None:
            pieces = [Piece(h, len(data), None)]  # stored already, or in a group
        else:
            pieces = [Piece(h, len(data), stored, generations[h])]
        files.append(WholeFile(after, h, pieces, not stable, xattrs))
    return Batch(files, groups)


def _groups_of(new: dict[bytes, bytes], generations: dict[bytes, int | None], codec: Codec
               ) -> tuple[list[Group], dict[bytes, bytes]]:
    """New chunks in order, cut into groups of about GROUP_BYTES; returns the groups and
    the stored form of each chunk that is not in one (alone, or its group did not pay)."""
    groups: list[Group] = []
    alone: dict[bytes, bytes] = {}
    for run in group_runs(list(new.items())):
        stored = codec.encode_group(run) if len(run) > 1 else None
        if stored is None:
            alone.update((m, codec.encode(d)) for m, d in run)
        else:
            groups.append(Group(stored, [(m, len(d), generations[m]) for m, d in run]))
    return groups, alone


class Chunker:
    """Content-defined chunking (FastCDC) of a file descriptor into bytes chunks.

    Cuts exactly where pyfastcdc's `cut_stream` does, but reuses one buffer of two
    maximum chunks for every file: `cut_stream` allocates (and zero-fills) a new 8 MiB
    buffer per file and moves the unread tail after every chunk, main-thread time that
    a tree of many mid-sized files pays again and again. One owner thread: the buffer
    is reused."""

    def __init__(self, min_size: int, avg_size: int, max_size: int):
        self._cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size)
        self._max = max_size
        self._buf: bytearray | None = None  # made on first use: a no-change backup cuts nothing

    def chunks(self, fd: int) -> Iterator[bytes]:
        if self._buf is None:
            self._buf = bytearray(2 * self._max)
        buf, longest = self._buf, self._max
        view = memoryview(buf)
        start = end = 0  # unread bytes are buf[start:end]
        eof = False
        while True:
            if start:
                buf[:end - start] = view[start:end]
                start, end = 0, end - start
            while not eof and end < len(buf):
                n = os.readv(fd, [view[end:]])
                end += n
                eof = n == 0
            if start == end:
                return
            for chunk in self._cdc.cut_buf(view[start:end]):
                # A cut is final only when the chunker saw a whole maximum chunk's worth
                # of bytes after its start (or the end of the file), as cut_stream does.
                if not eof and end - start < longest:
                    break
                yield bytes(chunk.data)
                start += chunk.length
            else:
                if eof:
                    return


def cut_file(path: bytes, chunker: Chunker, on_chunk: Callable[[bytes], None],
             on_restart: Callable[[], None]) -> WholeFile:
    """Stream a file through the content-defined chunker, passing each chunk to
    `on_chunk` as it is cut (so no more than a chunk is held here). If the file changed
    while being read it is read again, up to RETRIES times; `on_restart` is called first
    so the caller can drop what the earlier attempt gave it. OSError propagates."""
    for attempt in range(RETRIES):
        if attempt:
            log.info("%s changed while being read, reading it again", os.fsdecode(path))
            on_restart()
        fd = open_for_backup(path)
        whole = digest.hasher()
        try:
            before = os.fstat(fd)
            for data in chunker.chunks(fd):
                whole.update(data)
                on_chunk(data)
            after = os.fstat(fd)
            xattrs = read_xattrs(fd)
        finally:
            os.close(fd)
        stable = same_content_stat(before, after)
        if stable or attempt == RETRIES - 1:
            return WholeFile(after, whole.digest(), [], not stable, xattrs)
    raise AssertionError("unreachable")
