"""Where new chunks go during a backup: the open pack, packs being uploaded, durability.

Owned by the backup's main thread, except `lookup`, which worker threads call to skip
compressing chunks that are already stored. A chunk known damaged (schema v6) does not
count as stored: its content is stored again, and `ChunkIndex.add_pack` points its row at the
new copy once that pack is durable. A chunk enters the catalog only in
`collect_durable`, after the vault has confirmed its pack; until then it is "pending" and
identified by the sequence number of the pack that will hold it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from ..catalog import Catalog
from ..vault import Vault, pack_key
from .pack import PackBuilder, SealedPack

log = logging.getLogger(__name__)

STORED = -1  # "pack sequence" of a chunk that is already in the catalog


class ChunkStore:
    def __init__(self, catalog: Catalog, vault: Vault, pack_size: int,
                 max_uploads: int | None = None):
        self.catalog = catalog
        self.vault = vault
        self.pack_size = pack_size
        # A local vault commits one pack at a time (fsync is the cost, and one is enough to
        # overlap it with the next pack); a remote one keeps several PUTs in flight, each
        # from a spool file, so memory does not grow with the number.
        self.max_uploads = max_uploads or vault.max_uploads
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="btfs-packhash")
        self._writer = vault.writer()
        self._builder = PackBuilder(self._writer, self._hasher)
        self._seq = 0  # sequence number of the open pack
        # Sealed packs whose writers are committing (fsync and link, or a PUT) on the
        # upload threads, one thread per upload slot.
        self._uploads: deque[tuple[int, SealedPack, Future]] = deque()
        self._uploader = ThreadPoolExecutor(self.max_uploads, thread_name_prefix="btfs-upload")
        # hash -> pack sequence, for chunks accepted but not yet in the catalog. Worker
        # threads read it without a lock: a stale answer only costs a wasted compression.
        self._pending: dict[bytes, int] = {}
        self.durable_seq = STORED  # every pack with a sequence <= this is in the catalog
        self.recorded_ids: dict[bytes, int] = {}  # hash -> chunk id, recorded since commit
        self.generation = 0  # commits so far (see add)
        self.bytes_added = 0
        self.packs_written = 0
        self._reader: Catalog | None = None
        # A pack with the bytes, so the name, of one the vault holds would be that pack:
        # the put a no-op, and the pack a condemned one a sweep deletes (btfs.engine.
        # prune_shared) or one the catalog knows already (a chunk stored afresh because
        # its old place is condemned, met in the very pack another host's repack made).
        # Such a pack is sealed with other bytes (PackBuilder.seal).
        condemned = set(catalog.condemned.marks())
        self._condemned = bool(condemned)  # lookups skip condemned packs only if any
        self._avoid = lambda name: name in condemned or catalog.chunks.has_pack(name)
        self._reader_lock = threading.Lock()

    @property
    def open_seq(self) -> int:
        """The sequence number of the pack being filled (what `add` returns for a new
        chunk now)."""
        return self._seq

    def lookup(self, chunk_hash: bytes) -> int | None:
        """None if this chunk is stored or on its way; else the commit generation at which
        it was found new (see `add`). Safe from any thread."""
        return self.lookup_many([chunk_hash])[0]

    def lookup_many(self, hashes: list[bytes]) -> list[int | None]:
        """`lookup` for several chunks with one catalog query (a worker's batch)."""
        generation = self.generation  # read first: a commit after this is detected in add
        pending = self._pending
        on_the_way = [h in pending for h in hashes]
        unknown = [h for h, known in zip(hashes, on_the_way, strict=True) if not known]
        stored: set[bytes] = set()
        if unknown:
            # One read-only connection shared by the workers (SQLite serializes it; a
            # lookup takes microseconds), instead of one page cache per thread.
            with self._reader_lock:
                if self._reader is None:
                    self._reader = Catalog(self.catalog.path, readonly=True)
                stored = self._reader.chunks.stored_chunks(unknown, condemned=self._condemned)
        return [None if known or h in stored else generation
                for h, known in zip(hashes, on_the_way, strict=True)]

    def add(self, chunk_hash: bytes, size: int, stored: bytes | None,
            checked_at: int = -1) -> int:
        """Accept a chunk; returns the sequence of the pack it will be durable in.

        `checked_at` is the generation `lookup` returned for a chunk it found new. Two equal
        chunks can be in flight at once, and the first may have been committed (and so
        left `_pending`) since a worker looked: then, and only then, ask the catalog
        (the main connection sees everything recorded so far)."""
        seq = self._pending.get(chunk_hash)
        if seq is not None:
            return seq
        if stored is None or checked_at != self.generation:
            if self.catalog.chunks.sound_chunk_id(chunk_hash,
                                                 condemned=self._condemned) is not None:
                return STORED
            if stored is None:
                raise AssertionError("chunk reported stored but unknown to the catalog")
        seq = self._seq
        self._builder.add(chunk_hash, size, stored)
        self._pending[chunk_hash] = seq
        if self._builder.nbytes >= self.pack_size:
            self.seal()
        return seq

    def add_group(self, stored: bytes, members: list[tuple[bytes, int, int]]) -> None:
        """Accept chunks that share one stored form (Codec.encode_group); `members` are
        (hash, raw size, checked_at) as for `add`. Members already stored or on their way
        are left out (their copy in the group is then bytes nobody refers to); a later
        `add(hash, size, None)` of any member returns where it is."""
        new = [(h, size) for h, size, checked_at in members
               if h not in self._pending
               and (checked_at == self.generation
                    or self.catalog.chunks.sound_chunk_id(h, condemned=self._condemned) is None)]
        if not new:
            return
        self._builder.add_shared(stored, new)
        for h, _ in new:
            self._pending[h] = self._seq
        if self._builder.nbytes >= self.pack_size:
            self.seal()

    def seal(self) -> None:
        """Close the open pack and start writing it to the vault."""
        if not len(self._builder):
            return
        if len(self._uploads) >= self.max_uploads:
            # Bound what is in flight (memory, for a vault that uploads from memory):
            # record the oldest upload, waiting for it.
            self._record_oldest()
        sealed = self._builder.seal(self._avoid)
        future = self._uploader.submit(self._writer.commit, pack_key(sealed.name))
        self._uploads.append((self._seq, sealed, future))
        self._writer = self.vault.writer()
        self._builder = PackBuilder(self._writer, self._hasher)
        self._seq += 1

    def collect_durable(self, *, wait: bool = False) -> None:
        """Record every finished upload in the catalog, in order (all of them if `wait`);
        `durable_seq` says how far that got."""
        while self._uploads and (wait or self._uploads[0][2].done()):
            self._record_oldest()

    def _record_oldest(self) -> None:
        seq, sealed, future = self._uploads.popleft()
        future.result()  # a failed upload raises here, before anything refers to it
        self.recorded_ids.update(self.catalog.chunks.add_pack(
            sealed.name, sealed.size, sealed.chunks, time.time_ns()))
        self.bytes_added += sealed.size
        self.packs_written += 1
        self.durable_seq = seq
        log.debug("pack %s durable: %d chunks, %d bytes", sealed.name[:12],
                  len(sealed.chunks), sealed.size)

    def forget_recorded(self) -> None:
        """Drop pending entries whose packs are now committed (call after COMMIT)."""
        durable = self.durable_seq
        self.recorded_ids = {}
        self.generation += 1
        if self._pending:
            self._pending = {h: s for h, s in self._pending.items() if s > durable}

    def finish(self) -> None:
        self.seal()
        self.collect_durable(wait=True)

    def close(self) -> None:
        # Uploads still here belong to a run that failed or was interrupted: those not
        # started are dropped and those retrying give up (none of them is in the catalog;
        # a remote vault's retries could otherwise hold Ctrl-C for their whole budget).
        abandoned = bool(self._uploads)
        if abandoned:
            self.vault.abandon_retries()
        try:
            self._uploader.shutdown(wait=True, cancel_futures=True)
        finally:
            if abandoned:
                self.vault.abandon_retries(False)
        self._hasher.shutdown(wait=True)
        self._writer.abort()  # the open pack of an interrupted run (empty after finish)
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
