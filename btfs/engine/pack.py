"""Pack objects: many stored chunks in one immutable vault object, with their own index.

Format (all integers little-endian):

    b"BTFSPK01"                               magic, 8 bytes
    stored chunk, stored chunk, ...           codec byte + payload each (see codec.py)
    index: one 48-byte entry per chunk        id (32) | raw size (u32) |
                                              offset (u64) | stored length (u32)
    trailer, 24 bytes                         index offset (u64) | chunk count (u32) |
                                              crc32 of the index (u32) | b"BTFSIX01"

Several index entries may point at the same stored form: the members of a codec group
(see codec.py), which are compressed together.

The name of a pack is the digest (BLAKE3, see btfs.digest) of all its bytes, so a pack is
content-addressed and written once. The index at the end makes the vault self-describing:
the catalog's chunk table could be rebuilt from the packs alone (`parse_index`).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from .. import digest
from ..catalog.model import NewChunk
from ..errors import IntegrityError

MAGIC = b"BTFSPK01"
INDEX_MAGIC = b"BTFSIX01"
_ENTRY = struct.Struct("<32sIQI")
_TRAILER = struct.Struct("<QII8s")
TRAILER_SIZE = _TRAILER.size
INDEX_ENTRY_SIZE = _ENTRY.size


@dataclass(frozen=True)
class SealedPack:
    name: str
    size: int
    chunks: list[NewChunk]
    data: bytes | bytearray | None = None  # the bytes, when the builder kept them in memory


class _MemorySink:
    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data


class PackBuilder:
    """Writes stored chunks to `sink` (anything with `write`, e.g. a vault ObjectWriter)
    as they come, so the pack is never held in memory; without a sink the bytes are kept
    and handed over by `seal`. Not thread-safe (one owner).

    With `hasher` (a single-thread executor, so updates run in order) the pack's digest
    is computed there rather than on the caller's thread: a backup's main thread is the
    critical path of a large-file backup, and hashing every pack byte is a real part of it."""

    HASH_BACKLOG_BYTES = 4 << 20  # bytes queued on the hasher (held in memory) at most

    def __init__(self, sink=None, hasher: Executor | None = None) -> None:
        self._memory = _MemorySink() if sink is None else None
        self._sink = sink if sink is not None else self._memory
        self._hash = digest.hasher()
        self._hasher = hasher
        self._hashing: deque[tuple[Future, int]] = deque()  # (update, its length)
        self._hash_queued = 0
        self._size = 0
        self._chunks: list[NewChunk] = []
        self._hashes: set[bytes] = set()
        self._write(MAGIC)

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def nbytes(self) -> int:
        return self._size

    def __contains__(self, chunk_hash: bytes) -> bool:
        return chunk_hash in self._hashes

    def _write(self, data: bytes) -> None:
        self._sink.write(data)
        if self._hasher is None:
            self._hash.update(data)
        else:
            self._hashing.append((self._hasher.submit(self._hash.update, data), len(data)))
            self._hash_queued += len(data)
            self._wait_hashing(self.HASH_BACKLOG_BYTES)
        self._size += len(data)

    def _wait_hashing(self, backlog: int) -> None:
        """Wait for queued updates, oldest first, until at most `backlog` bytes wait."""
        while self._hashing and self._hash_queued > backlog:
            update, length = self._hashing.popleft()
            update.result()
            self._hash_queued -= length

    def _digest(self) -> str:
        """The digest of everything written, once every queued update has run."""
        self._wait_hashing(0)
        return self._hash.hexdigest()

    def add(self, chunk_hash: bytes, size: int, stored: bytes) -> None:
        if chunk_hash in self._hashes:
            return
        self._chunks.append(NewChunk(chunk_hash, size, self._size, len(stored)))
        self._hashes.add(chunk_hash)
        self._write(stored)

    def add_shared(self, stored: bytes, members: list[tuple[bytes, int]]) -> None:
        """One stored form for several chunks (a codec group): written once, and each
        member, (hash, raw size), gets an index entry pointing at it."""
        members = [(h, size) for h, size in members if h not in self._hashes]
        if not members:
            return
        offset = self._size
        for h, size in members:
            self._chunks.append(NewChunk(h, size, offset, len(stored)))
            self._hashes.add(h)
        self._write(stored)

    def seal(self, avoid: Callable[[str], bool] | None = None) -> SealedPack:
        """Write the index and trailer; the pack's name is the digest of all its bytes.
        A name `avoid` refuses (a condemned pack's: the same bytes would be that pack) is
        changed by a few random bytes before the index, which no entry points at. The
        builder is spent after this."""
        index = b"".join(_ENTRY.pack(c.hash, c.size, c.offset, c.stored_len) for c in self._chunks)
        if avoid is not None:
            self._wait_hashing(0)
            probe = self._hash.copy()
            probe.update(index)
            probe.update(_TRAILER.pack(self._size, len(self._chunks), zlib.crc32(index),
                                       INDEX_MAGIC))
            if avoid(probe.hexdigest()):
                self._write(os.urandom(16))
        index_offset = self._size
        self._write(index)
        self._write(_TRAILER.pack(index_offset, len(self._chunks), zlib.crc32(index),
                                  INDEX_MAGIC))
        data = None
        if self._memory is not None:
            data, self._memory.buf = self._memory.buf, bytearray()
        return SealedPack(self._digest(), self._size, self._chunks, data)


def parse_trailer(trailer: bytes) -> tuple[int, int, int]:
    """(index offset, chunk count, crc) from the last TRAILER_SIZE bytes of a pack."""
    index_offset, count, crc, magic = _TRAILER.unpack(trailer)
    if magic != INDEX_MAGIC:
        raise IntegrityError("pack trailer is damaged")
    return index_offset, count, crc


def parse_index(data: bytes) -> list[NewChunk]:
    """The chunk index of a whole pack's bytes, checked against its CRC."""
    if data[:8] != MAGIC or len(data) < 8 + TRAILER_SIZE:
        raise IntegrityError("not a btfs pack")
    index_offset, count, crc = parse_trailer(data[-TRAILER_SIZE:])
    index = data[index_offset:index_offset + count * _ENTRY.size]
    if (index_offset + len(index) != len(data) - TRAILER_SIZE or len(index) != count * _ENTRY.size
            or zlib.crc32(index) != crc):
        raise IntegrityError("pack index is damaged")
    return [NewChunk(h, size, off, stored) for h, size, off, stored in _ENTRY.iter_unpack(index)]


def parse_index_entries(index: bytes, crc: int) -> list[NewChunk]:
    """The chunk index alone (read by range, see engine/packsync.py), checked against the
    trailer's CRC."""
    if len(index) % _ENTRY.size or zlib.crc32(index) != crc:
        raise IntegrityError("pack index is damaged")
    return [NewChunk(h, size, off, stored) for h, size, off, stored in _ENTRY.iter_unpack(index)]
