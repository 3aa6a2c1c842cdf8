"""Learn the packs other hosts wrote into a shared vault, so a backup stores once what the
vault holds already (a file present on two hosts is stored once).

Packs are self-describing (btfs.engine.pack): for each pack in the vault the catalog does
not know, two ranged reads (the trailer, then the index) give its chunks, which the catalog
records as chunks of a foreign pack (ChunkIndex.add_foreign_pack). A pack listed in the vault
is whole and durable (objects are put atomically), so the catalog may refer to it at once.
The pack table is the memory of what was read: each run reads only packs new since the
last. The vault's list is streamed and new packs are committed in batches, so memory stays
at one batch of indexes. A pack this host's own prune retired (pack_garbage) is not learned
back. Runs holding the writer lock (before a backup); never writes to the vault.

`sync_condemned` runs first, before every backup (also without dedup_across_hosts): it
makes the catalog's condemned packs those the vault's records name (btfs.engine.
prune_shared), and drops the rows of packs that were condemned and are now gone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..catalog import Catalog
from ..catalog.model import NewChunk
from ..errors import BtfsError, IntegrityError
from ..vault import Vault, pack_key
from .condemned import Record, condemned_packs, read_records
from .pack import INDEX_ENTRY_SIZE, TRAILER_SIZE, parse_index_entries, parse_trailer

log = logging.getLogger(__name__)

BATCH = 64  # packs recorded per transaction: bounds the memory held and the work a kill loses


@dataclass
class SyncStats:
    listed: int = 0        # packs in the vault
    learned: int = 0       # foreign packs read and recorded by this run
    chunks: int = 0        # chunks new to this catalog among them
    bytes_read: int = 0    # trailer and index bytes read
    skipped: int = 0       # packs whose index could not be read (left for the next run)
    seconds: float = 0.0


def read_pack_index(vault: Vault, key: str, size: int) -> tuple[list[NewChunk], int]:
    """The chunks of a pack from its trailer and index (two ranged reads, not the whole
    pack), and the bytes read; IntegrityError if they do not add up."""
    if size < 8 + TRAILER_SIZE:
        raise IntegrityError(f"{key} is too short to be a pack")
    index_offset, count, crc = parse_trailer(vault.get(key, size - TRAILER_SIZE, TRAILER_SIZE))
    length = count * INDEX_ENTRY_SIZE
    if index_offset + length != size - TRAILER_SIZE:
        raise IntegrityError(f"{key}: its trailer does not match its size")
    index = vault.get(key, index_offset, length) if length else b""
    chunks = parse_index_entries(index, crc)
    for c in chunks:
        if c.offset < 8 or c.offset + c.stored_len > index_offset:
            raise IntegrityError(f"{key}: its index points outside the pack")
    return chunks, TRAILER_SIZE + length


def sync_condemned(catalog: Catalog, vault: Vault) -> tuple[int, int]:
    """Mark the packs the vault's condemned records name, before a backup (so it stores
    their chunks afresh); (packs newly marked, packs no longer condemned). A pack whose
    record went is deleted (its rows go: nothing may count them as stored) or was found
    in use and given back (usable again). Records are read before anything else looks at
    the vault's packs: a sweep deletes a pack before its record (prune_shared)."""
    records = read_records(vault)
    marks = condemned_packs(records)
    before = catalog.condemned.marks()
    gone = [name for name in before if name not in marks
            and vault.size(pack_key(name)) is None]
    copies = _copies_known(catalog, vault, records, set(marks) - set(before), set(marks))
    with catalog.writer.transaction():
        added, removed = catalog.condemned.set_marks(marks)
        if gone:
            catalog.condemned.drop_vanished([n for n in gone if catalog.chunks.has_pack(n)],
                                            time.time_ns())
        for name, chunks in copies:
            catalog.chunks.move_condemned_to(name, chunks)
    if added or removed:
        log.info("condemned packs: %d newly, %d no longer (%d deleted)", added, removed,
                 len(gone))
    return added, removed


def _copies_known(catalog: Catalog, vault: Vault, records: list[Record], new: set[str],
                  condemned: set[str]) -> list[tuple[str, list[NewChunk]]]:
    """The indexes of the packs a repack copied newly condemned packs' chunks into, for
    those this catalog knows already (learned before the record was written: their
    chunks kept their rows in the condemned packs). A pack not known yet is learned
    next, and takes the rows then (ChunkIndex.add_foreign_pack)."""
    names = {q for r in records if new.intersection(r.packs) for q in r.moved_to}
    copies = []
    for name in sorted(names - condemned):
        size = vault.size(pack_key(name))
        if size is None or not catalog.chunks.has_pack(name):
            continue
        try:
            copies.append((name, read_pack_index(vault, pack_key(name), size)[0]))
        except BtfsError as e:
            log.info("pack %s not read: %s", name[:12], e)
    return copies


def sync_foreign_packs(catalog: Catalog, vault: Vault) -> SyncStats:
    """Record every pack in the vault that the catalog does not know (see the module)."""
    stats = SyncStats()
    start = time.monotonic()
    batch: list[tuple[str, int, list[NewChunk]]] = []

    def record() -> None:
        now = time.time_ns()
        with catalog.writer.transaction():
            for name, size, chunks in batch:
                if not catalog.chunks.has_pack(name):
                    stats.chunks += catalog.chunks.add_foreign_pack(name, size, chunks, now)
                    stats.learned += 1
        batch.clear()

    retired = catalog.condemned.garbage_names()
    for key, size in vault.list("packs/"):
        stats.listed += 1
        name = key[len("packs/"):]
        if catalog.chunks.has_pack(name) or name in retired:
            continue
        try:
            chunks, read = read_pack_index(vault, key, size)
        except BtfsError as e:
            # Not ours to judge: the writing host's check reports its packs. Its content
            # is simply stored again here if this host meets it.
            log.info("pack %s not learned: %s", name[:12], e)
            stats.skipped += 1
            continue
        stats.bytes_read += read
        batch.append((name, size, chunks))
        if len(batch) >= BATCH:
            record()
    if batch:
        record()
    stats.seconds = time.monotonic() - start
    if stats.learned:
        log.info("learned %d packs of other hosts (%d chunks new here) in %.1f s",
                 stats.learned, stats.chunks, stats.seconds)
    return stats
