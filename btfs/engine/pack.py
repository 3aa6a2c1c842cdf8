"""Pack objects: many stored chunks in one immutable vault object, with their own index.

Format (all integers little-endian):

    b"BTFSPK01"                               magic, 8 bytes
    stored chunk, stored chunk, ...           codec byte + payload each (see codec.py)
    index: one 48-byte entry per chunk        sha256 (32) | raw size (u32) |
                                              offset (u64) | stored length (u32)
    trailer, 24 bytes                         index offset (u64) | chunk count (u32) |
                                              crc32 of the index (u32) | b"BTFSIX01"

The name of a pack is the SHA-256 of all its bytes, so a pack is content-addressed and
written once. The index at the end makes the vault self-describing: the catalog's chunk
table could be rebuilt from the packs alone (`parse_index`).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

from ..catalog.model import NewChunk
from ..errors import IntegrityError

MAGIC = b"BTFSPK01"
INDEX_MAGIC = b"BTFSIX01"
_ENTRY = struct.Struct("<32sIQI")
_TRAILER = struct.Struct("<QII8s")
TRAILER_SIZE = _TRAILER.size


@dataclass(frozen=True)
class SealedPack:
    name: str
    data: bytes | bytearray  # the builder's buffer, handed over without a copy
    chunks: list[NewChunk]


class PackBuilder:
    """Accumulates stored chunks in memory until `seal`. Not thread-safe (one owner)."""

    def __init__(self) -> None:
        self._buf = bytearray(MAGIC)
        self._chunks: list[NewChunk] = []
        self._hashes: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def nbytes(self) -> int:
        return len(self._buf)

    def __contains__(self, chunk_hash: bytes) -> bool:
        return chunk_hash in self._hashes

    def add(self, chunk_hash: bytes, size: int, stored: bytes) -> None:
        if chunk_hash in self._hashes:
            return
        self._chunks.append(NewChunk(chunk_hash, size, len(self._buf), len(stored)))
        self._hashes.add(chunk_hash)
        self._buf += stored

    def seal(self) -> SealedPack:
        index = b"".join(_ENTRY.pack(c.hash, c.size, c.offset, c.stored_len) for c in self._chunks)
        index_offset = len(self._buf)
        self._buf += index
        self._buf += _TRAILER.pack(index_offset, len(self._chunks), zlib.crc32(index), INDEX_MAGIC)
        data, self._buf = self._buf, bytearray()  # the builder is spent after seal
        return SealedPack(hashlib.sha256(data).hexdigest(), data, self._chunks)


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
