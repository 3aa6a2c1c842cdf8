"""Reading file content back: chunk fetch + verify, with a bounded cache, and byte ranges.

Used by restore, check --read-data and the mount. Every chunk is verified against its hash
(Codec.decode) before anyone sees its bytes. Thread-safe: the mount calls it from worker
threads; the cache lock is never held during vault I/O or decompression.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator

from ..catalog.model import ChunkRef
from ..errors import BtfsError, IntegrityError
from ..vault import Vault, pack_key
from .codec import Codec, is_group

log = logging.getLogger(__name__)


# Stored forms of groups (Codec.encode_group) kept by where they are in the vault. Every
# member of a group points at the whole group: reading the members of one directory one
# after another (restore, a cp through the mount) would read the group again for each,
# and the codec would compare each copy with the one it decompressed: a source tree's
# groups would be read and compared about as many times as they have members.
_GROUPS_KEPT = 8


class ChunkSource:
    """Decoded, verified chunks by reference, with an LRU cache bounded in bytes."""

    def __init__(self, vault: Vault, codec: Codec, cache_bytes: int = 64 << 20):
        self.vault = vault
        self.codec = codec
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cached = 0
        self._groups: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, chunk_hash: bytes) -> bytes | memoryview | None:
        """A cached chunk without any I/O, or None."""
        with self._lock:
            data = self._cache.get(chunk_hash)
            if data is not None:
                self._cache.move_to_end(chunk_hash)
            return data

    def chunk(self, ref: ChunkRef, siblings: list[ChunkRef] = ()) -> bytes | memoryview:
        """`ref`'s chunk, verified; IntegrityError or VaultError when it cannot be had.
        `siblings`: other members of its group (stored at the same place), verified and
        cached too when `ref`'s stored form is a group, at the cost of their digests: the
        group is decompressed for `ref` anyway, and a reader that jumps into a group (cp
        reads a directory's files before its subdirectories', in another order than a
        backup stored them) then reads the rest of it from memory. A sibling that fails
        its check is only left out: its own read fetches it again and reports."""
        data = self.peek(ref.hash)
        if data is not None:
            return data
        stored = self._stored(ref)
        try:
            data = self.codec.decode(stored, ref.hash, ref.size)
        except IntegrityError:
            # A damaged copy in a local cache (a disk error, a crash mid-write on a
            # filesystem without ordered writes) must not fail a read the vault can serve:
            # drop it and read from the source once more; damage there still raises.
            if not self.vault.drop_cached(pack_key(ref.pack), ref.offset, ref.stored_len):
                raise
            log.info("chunk %s: cached copy damaged, reading it again from the vault",
                     ref.hash.hex()[:16])
            with self._lock:
                self._groups.pop((ref.pack, ref.offset, ref.stored_len), None)
            stored = self._stored(ref)
            data = self.codec.decode(stored, ref.hash, ref.size)
        self._keep(ref.hash, data)
        if siblings and is_group(stored):
            self._keep_siblings(stored, ref, siblings)
        return data

    def _keep_siblings(self, stored: bytes, ref: ChunkRef, siblings: list[ChunkRef]) -> None:
        place = (ref.pack, ref.offset, ref.stored_len)
        for sibling in siblings:
            if (sibling.pack, sibling.offset, sibling.stored_len) != place:
                continue  # not stored in this group: never decoded from its bytes
            try:
                self._keep(sibling.hash, self.codec.decode(stored, sibling.hash, sibling.size))
            except IntegrityError as e:
                log.debug("chunk %s beside the one read: %s", sibling.hash.hex()[:16], e)

    def _stored(self, ref: ChunkRef) -> bytes:
        """The stored form `ref` points at; a group's is read once while it is kept (a pack
        never changes, and each member is verified against its own hash anyway)."""
        where = (ref.pack, ref.offset, ref.stored_len)
        with self._lock:
            stored = self._groups.get(where)
            if stored is not None:
                self._groups.move_to_end(where)
                return stored
        stored = self.vault.get(pack_key(ref.pack), ref.offset, ref.stored_len)
        if is_group(stored):
            with self._lock:
                self._groups[where] = stored
                while len(self._groups) > _GROUPS_KEPT:
                    self._groups.popitem(last=False)
        return stored

    def prefetch_run(self, refs: list[ChunkRef]) -> int:
        """Fetch chunks that lie one after another in one pack with a single vault read,
        verify each and cache it; returns how many were cached. A chunk that fails its
        check is only logged (debug): the read that needs it fetches it on its own and
        reports the error. Reads at most the span of `refs`, which the caller bounds."""
        if not refs:
            return 0
        start = min(r.offset for r in refs)
        end = max(r.offset + r.stored_len for r in refs)
        stored = self.vault.get(pack_key(refs[0].pack), start, end - start)
        cached = 0
        span, piece = None, b""
        for ref in refs:
            if span != (ref.offset, ref.stored_len):
                # Members of one group share a stored form: one slice for all of them,
                # which the codec then recognises without comparing its bytes.
                span = (ref.offset, ref.stored_len)
                piece = stored[ref.offset - start:ref.offset - start + ref.stored_len]
            try:
                data = self.codec.decode(piece, ref.hash, ref.size)
            except BtfsError as e:
                log.debug("read-ahead of chunk %s: %s", ref.hash.hex()[:16], e)
                # Do not keep a damaged span cached for the next reader.
                self.vault.drop_cached(pack_key(refs[0].pack), start, end - start)
                continue
            self._keep(ref.hash, data)
            cached += 1
        return cached

    def _keep(self, chunk_hash: bytes, data: bytes) -> None:
        if len(data) > self.cache_bytes // 4:
            return
        with self._lock:
            if chunk_hash not in self._cache:
                self._cache[chunk_hash] = data
                self._cached += len(data)
                while self._cached > self.cache_bytes:
                    _, old = self._cache.popitem(last=False)
                    self._cached -= len(old)


class FileLayout:
    """Where each chunk of a file starts, for finding the chunk under an offset by bisect."""

    def __init__(self, refs: list[ChunkRef]):
        self.refs = refs
        self.starts: list[int] = []
        pos = 0
        for ref in refs:
            self.starts.append(pos)
            pos += ref.size
        self.size = pos

    def chunk_index(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1

    def pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """(chunk index, start within chunk, end within chunk) covering the range."""
        end = min(offset + length, self.size)
        if offset >= end:
            return
        i = self.chunk_index(offset)
        while offset < end:
            start = self.starts[i]
            stop = min(end, start + self.refs[i].size)
            yield i, offset - start, stop - start
            offset = stop
            i += 1


def read_range(source: ChunkSource, layout: FileLayout, offset: int, length: int) -> bytes:
    parts = [source.chunk(layout.refs[i])[a:b] for i, a, b in layout.pieces(offset, length)]
    return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
