"""Chunk encoding: hash, compress, and the reverse with verification.

A stored chunk is one codec byte followed by the payload. Decoding always checks the
digest of the result against the chunk's id, so a damaged chunk raises IntegrityError and
never reaches a caller as bytes. Thread-safe: compression contexts are pooled (at most one
per CPU), decompression contexts are per thread; BLAKE3 and zstd release the GIL, so the
engine runs these functions in worker threads.

Small chunks (whole small files) are compressed together in groups: one stored form shared
by several chunks, which compresses far better than each alone (source files share
vocabulary, which zstd only finds within one frame). Every
member of a group is stored at the group's place in its pack; decoding decompresses the
group, finds the member by its id and verifies it like any chunk.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator

import zstandard

from .. import digest
from ..errors import IntegrityError

RAW = 0  # payload is the chunk itself (incompressible data, or compression off)
ZSTD = 1  # payload is one zstd frame with the content size in its header
GROUP = 2  # payload is one zstd frame of a member table and several chunks, see _encode_group

GROUP_BYTES = 512 * 1024  # members' raw bytes in one group, about: what a read decompresses
_GROUP_LIMIT = 8 << 20  # a group frame claiming more is damaged (never decompressed)
_COUNT = struct.Struct("<H")
_MEMBER = struct.Struct("<8sI")  # first 8 bytes of the member's id, its raw size

_local = threading.local()


class _CompressorPool:
    """zstd compression contexts shared by all threads, at most one per CPU per level.

    A context keeps its working memory (megabytes, after a large chunk), so one per
    thread would cost that per backup worker, and a backup runs twice as many workers
    as cores (for the disk's sake, not the CPUs'). More compressions at once than cores
    gain nothing: a worker that finds every context busy waits, holding its chunk."""

    def __init__(self, limit: int):
        self._limit = limit
        self._idle: dict[int, list[zstandard.ZstdCompressor]] = {}
        self._slots: dict[int, threading.Semaphore] = {}
        self._lock = threading.Lock()

    def compress(self, data: bytes | memoryview, level: int) -> bytes:
        with self._lock:
            slots = self._slots.get(level)
            if slots is None:
                slots = self._slots[level] = threading.Semaphore(self._limit)
                self._idle[level] = []
        with slots:
            with self._lock:
                idle = self._idle[level]
                cctx = idle.pop() if idle else None
            if cctx is None:
                cctx = zstandard.ZstdCompressor(level=level, write_content_size=True)
            try:
                return cctx.compress(data)
            finally:
                with self._lock:
                    idle.append(cctx)  # last in, first out: the warm ones are reused


_compressors = _CompressorPool(os.cpu_count() or 2)


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


class Codec:
    """How chunks are stored: their ids, and their stored forms both ways. One is made by
    `btfs.repo.Repo` from the configuration and handed to everything that writes or reads
    chunks, so a setting (the compression level today; a key for keyed ids and encryption
    later) is decided in one place and never passed around as loose values. Holds no
    caches: those are process-wide (below), shared by every Codec, and keyed by the
    bytes they hold, so they never mix settings. Thread-safe."""

    def __init__(self, level: int):
        self.level = level  # zstd level; 0 stores every chunk uncompressed

    def __repr__(self) -> str:
        return f"Codec(level={self.level})"

    @staticmethod
    def chunk_hash(data: bytes | memoryview) -> bytes:
        """A chunk's id: the digest of its raw bytes."""
        return digest.digest(data)

    def encode(self, data: bytes | memoryview) -> bytes:
        """The stored form of a chunk: compressed when that saves space, raw otherwise."""
        return _encode(data, self.level)

    def encode_group(self, members: list[tuple[bytes, bytes]]) -> bytes | None:
        """One stored form for several small chunks (see `_encode_group`), or None."""
        return _encode_group(members, self.level)

    @staticmethod
    def decode(stored: bytes, expected_hash: bytes, size: int) -> bytes | memoryview:
        """The raw chunk, verified; IntegrityError on any mismatch (see `_decode`)."""
        return _decode(stored, expected_hash, size)


def _encode(data: bytes | memoryview, level: int) -> bytes:
    """The stored form of a chunk: compressed when that saves space, raw otherwise."""
    if level > 0 and len(data) > 64 and not _looks_incompressible(data):
        compressed = _compressors.compress(data, level)
        # Keep compression only when it pays for itself, so random data costs one byte.
        if _pays(len(compressed), len(data)):
            return bytes((ZSTD,)) + compressed
    return bytes((RAW,)) + bytes(data)


def is_group(stored: bytes) -> bool:
    """Whether a stored form holds several chunks (see _encode_group)."""
    return bool(stored) and stored[0] == GROUP


def _pays(compressed: int, raw: int) -> bool:
    return compressed < raw - raw // 64  # saves more than ~1.5%


SAMPLED_FROM = 256 * 1024  # chunks at least this big are sampled before compressing
_SAMPLE = 16 * 1024


def _looks_incompressible(data: bytes | memoryview) -> bool:
    """Four 16 KiB samples spread over a big chunk, at zstd's fastest level: when they do
    not shrink, the whole chunk would not either (random, encrypted or already compressed
    data), and zstd at the configured level spends far more CPU than the samples do
    finding that out on the whole chunk. Like borg's `auto` compression, a chunk whose
    samples miss its compressible parts is stored raw."""
    if len(data) < SAMPLED_FROM:
        return False
    step = len(data) // 4
    view = memoryview(data)
    sample = b"".join(view[i * step:i * step + _SAMPLE] for i in range(4))
    return not _pays(len(_compressors.compress(sample, 1)), len(sample))


def group_runs(members: list[tuple[bytes, bytes]]) -> Iterator[list[tuple[bytes, bytes]]]:
    """Small chunks, (id, raw bytes) in order, cut into runs of about GROUP_BYTES: what
    `Codec.encode_group` stores together."""
    run: list[tuple[bytes, bytes]] = []
    size = 0
    for member in members:
        run.append(member)
        size += len(member[1])
        if size >= GROUP_BYTES:
            yield run
            run, size = [], 0
    if run:
        yield run


def _encode_group(members: list[tuple[bytes, bytes]], level: int) -> bytes | None:
    """One stored form for several small chunks, (id, raw bytes) each, compressed together:
    a zstd frame of [member count (u16), (id[:8], size u32) per member, the members'
    bytes in order]. None when compressing them together does not pay (or compression is
    off): the caller then stores them one by one."""
    if level <= 0 or len(members) > 0xFFFF:
        return None
    # One join of table and members: every copy of ~512 KiB here holds the GIL, and a
    # backup makes a group for every few dozen small files.
    parts = [_COUNT.pack(len(members))]
    parts += [_MEMBER.pack(h[:8], len(data)) for h, data in members]
    parts += [data for _, data in members]
    raw = b"".join(parts)
    compressed = _compressors.compress(raw, level)
    if not _pays(len(compressed), len(raw)):
        return None
    return bytes((GROUP,)) + compressed


# Decompressed groups with their member tables, most recent last: reading the files of a
# directory one after another (tar, cp -a, restore, check) asks for every member of a
# group in turn, and each would otherwise decompress the whole group and walk its table
# again (a third of the mount's read-ahead time went to that walk). Keyed by the exact
# stored form (compared in full on a hit, unless it is the very same object), so a cached
# result is always the decompression of these very bytes.
_GROUP_CACHE = 8
_groups: OrderedDict[tuple[int, bytes], tuple[bytes, bytes, dict[tuple[bytes, int], int]]] \
    = OrderedDict()
_groups_lock = threading.Lock()
# Groups being decompressed, by cache key: threads reading files one after another (a
# restore's workers) often want members of one group at the same moment, and each would
# decompress it. A thread waits for the one already at it instead.
_decoding: dict[tuple[int, bytes], threading.Event] = {}


def _decompressed_group(stored: bytes, expected_hash: bytes
                        ) -> tuple[bytes, dict[tuple[bytes, int], int]]:
    """A group's raw bytes and where each member starts in them, by (id prefix, size)."""
    key = (len(stored), stored[:64])
    while True:
        with _groups_lock:
            hit = _groups.get(key)
            # bytes == bytes is a memcmp; the identity test spares even that when a
            # reader decodes several members from one stored form.
            if hit is not None and (hit[0] is stored or hit[0] == stored):
                _groups.move_to_end(key)
                return hit[1], hit[2]
            busy = _decoding.get(key)
            if busy is None:
                _decoding[key] = threading.Event()
                break
        # Most likely these very bytes; if not (or it failed), the loop decodes them here.
        busy.wait()
    try:
        payload = memoryview(stored)[1:]
        declared = zstandard.frame_content_size(payload)
        if not _COUNT.size <= declared <= _GROUP_LIMIT:
            raise IntegrityError(
                f"chunk {expected_hash.hex()[:16]}: its group has a damaged header")
        raw = _decompressor().decompress(payload, max_output_size=declared)
        index = _member_index(raw, expected_hash)
        with _groups_lock:
            _groups[key] = (stored, raw, index)
            while len(_groups) > _GROUP_CACHE:
                _groups.popitem(last=False)
        return raw, index
    finally:
        with _groups_lock:
            _decoding.pop(key).set()


def _member_index(raw: bytes, expected_hash: bytes) -> dict[tuple[bytes, int], int]:
    (count,) = _COUNT.unpack_from(raw, 0)
    start = _COUNT.size + count * _MEMBER.size
    if start > len(raw):
        raise IntegrityError(f"chunk {expected_hash.hex()[:16]}: its group's table is damaged")
    index: dict[tuple[bytes, int], int] = {}
    for member in _MEMBER.iter_unpack(raw[_COUNT.size:start]):
        index.setdefault(member, start)  # the first of equal entries, as a walk finds it
        start += member[1]
    return index


def _group_member(stored: bytes, expected_hash: bytes, size: int) -> bytes:
    """The bytes of member `expected_hash` of a group (verified by the caller)."""
    raw, index = _decompressed_group(stored, expected_hash)
    start = index.get((expected_hash[:8], size))
    if start is None:
        raise IntegrityError(f"chunk {expected_hash.hex()[:16]} is not in its group")
    return raw[start:start + size]


def _decode(stored: bytes, expected_hash: bytes, size: int) -> bytes | memoryview:
    """The raw chunk, verified; IntegrityError on any mismatch. An uncompressed chunk comes
    back as a view of `stored` (no copy of up to 4 MiB: a cold read of random data is
    bound by this verification)."""
    if not stored:
        raise IntegrityError("empty stored chunk")
    codec = stored[0]
    try:
        if codec == RAW:
            data = memoryview(stored)[1:]
        elif codec == ZSTD:
            payload = memoryview(stored)[1:]
            # We always write the content size into the frame; a damaged header can claim
            # any size, and decompress would try to allocate it (MemoryError), so check it
            # against the size the catalog recorded first.
            if zstandard.frame_content_size(payload) != size:
                raise IntegrityError(f"chunk {expected_hash.hex()[:16]} has a damaged header")
            data = _decompressor().decompress(payload, max_output_size=size)
        elif codec == GROUP:
            data = _group_member(stored if isinstance(stored, bytes) else bytes(stored),
                                 expected_hash, size)
        else:
            raise IntegrityError(f"unknown chunk codec {codec}")
    except zstandard.ZstdError as e:
        raise IntegrityError(f"chunk {expected_hash.hex()[:16]} does not decompress: {e}") from None
    if len(data) != size or digest.digest(data) != expected_hash:
        raise IntegrityError(f"chunk {expected_hash.hex()[:16]} does not match its hash")
    return data
