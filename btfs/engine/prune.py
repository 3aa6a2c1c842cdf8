"""`btfs prune`: give back the vault space of chunks no backup uses any more.

Planned from the catalog alone (btfs.catalog.retention): a chunk is live while some
content uses it (content_chunk), a pack's dead bytes are its size less its live chunks'
stored forms (a codec group's in proportion to its members that live). Packs with nothing
live are deleted; packs whose unused bytes are more than `max_unused` of their size are
repacked: their live chunks, each verified as it is read, are copied as they are stored
into new packs, except the live members of a codec group with dead ones, which are
compressed together again without them.

The order makes every step safe to kill (kill -9 included) and a rerun finish the job:

1. new packs are written and durable in the vault (nothing refers to them yet: a killed
   run leaves packs `check` reports as unreferenced; a rerun writes the same bytes under
   the same name, a no-op);
2. one transaction points the moved chunks' rows at the new packs, deletes the rows of
   dead chunks, and moves the old packs from `pack` to `pack_garbage` (steps 1 and 2 go
   in batches of packs, BATCH_CHUNKS live chunks each, so memory holds one batch's rows;
   a killed run leaves the batches it committed done);
3. only then are the packs in `pack_garbage` deleted from the vault, each record removed
   after its pack is gone; a rerun deletes what a killed run left first.

The caller holds the writer lock for all of it, so no backup runs meanwhile: a backup
waits (--wait) or fails with "already running", as with two backups. A pack is deleted
only if it was recorded dead in a committed transaction and no pack row has its name (a
backup that since stored the same bytes made it live again). A chunk in a pack that
holds a chunk known damaged is left where it is: repair or a backup heals it, and the
damaged copy a healed chunk leaves behind is dead bytes like any other.

Memory: two packs' bytes at a time (the one being repacked and the next, read whole, as
`check --read-data` does), one record per pack in the plan; chunk rows are streamed.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import digest
from ..catalog import Catalog
from ..catalog.retention import PackedChunk, PackUse, RetentionStore
from ..errors import BtfsError, UsageError
from ..vault import Vault, pack_key
from .codec import Codec
from .pack import PackBuilder

if TYPE_CHECKING:
    from .prune_shared import SharedPrune, SharedReport

log = logging.getLogger(__name__)

# Test hooks: the name of a step ("uploaded", "committed", "deleting") at which the process
# kills itself with SIGKILL, so tests can stop prune exactly there; "STEP:SECONDS" to pause
# there instead (a backup started meanwhile).
KILL_AT_ENV = "BTFS_TEST_PRUNE_KILL_AT"
PAUSE_AT_ENV = "BTFS_TEST_PRUNE_PAUSE_AT"
# VACUUM rewrites the whole catalog: worth it only when this share of it is free pages.
VACUUM_FREE_FRACTION = 0.10
# Stored forms in flight per repack worker: enough that the workers still have groups to
# compress while the main thread seals a pack or starts the next one; each holds at most a
# group's raw bytes (GROUP_BYTES) and its new stored form.
IN_FLIGHT = 4
# Live chunks repacked between two commits. What a repack moved waits in memory for its
# commit, ~275 bytes a chunk (its new place and its id): a million-file prune that moves
# 2.6 million chunks would hold 700 MB in one commit, a batch's 70 MB this way. Each
# batch ends its last new pack early: one pack under pack_size per batch.
BATCH_CHUNKS = 250_000


@dataclass
class PruneReport:
    packs: int = 0  # packs before
    vault_bytes: int = 0  # their bytes before
    dead_packs: int = 0  # packs with nothing live: deleted
    dead_pack_bytes: int = 0
    repacked: int = 0  # packs whose live chunks were copied, then deleted
    repacked_bytes: int = 0
    copied_bytes: int = 0  # stored bytes copied into new packs
    new_packs: int = 0
    new_pack_bytes: int = 0
    dead_chunks: int = 0  # chunk rows no content uses
    left_unused_bytes: int = 0  # dead bytes in packs under --max-unused, kept
    skipped_damaged: int = 0  # packs left as they are: they hold damaged live chunks
    deleted_packs: int = 0  # packs deleted from the vault (earlier runs' included)
    deleted_bytes: int = 0
    vacuumed: bool = False
    dry_run: bool = False
    planning_seconds: float = 0.0
    shared: SharedReport | None = None  # in a vault shared by several hosts (prune_shared)

    @property
    def freed_bytes(self) -> int:
        """Vault bytes given back (to be given back, for a dry run)."""
        if self.dry_run:
            return self.dead_pack_bytes + self.repacked_bytes - self.copied_bytes
        return self.deleted_bytes - self.new_pack_bytes


def _step(name: str) -> None:
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    where, _, seconds = os.environ.get(PAUSE_AT_ENV, "").partition(":")
    if where == name:
        time.sleep(float(seconds))


def parse_fraction(text: str, what: str = "max_unused") -> float:
    """'5%', '5' or '2.5 %' as a fraction from 0 to 1."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*%?\s*", text)
    if match is None or float(match.group(1)) > 100:
        raise UsageError(f"{what} must be a percentage from 0% to 100%, not {text!r}")
    return float(match.group(1)) / 100


def prune(catalog: Catalog, vault: Vault, codec: Codec, *, pack_size: int,
          max_unused: float = 0.05, dry_run: bool = False,
          progress: Callable[[str], None] | None = None,
          committed: Callable[[], object] | None = None,
          shared: SharedPrune | None = None) -> PruneReport:
    """Delete dead packs and repack wasteful ones (new packs of about `pack_size`, groups
    compressed anew with `codec`); the caller holds the writer lock. `committed` is
    called once the catalog no longer refers to the packs, before any is deleted (the
    catalog's copy in the vault is published there). With `shared` (a vault of several
    hosts), packs other hosts use are left whole and nothing is deleted at once: the
    packs retired are condemned, and deleted by a sweep under btfs.engine.prune_shared's
    rules."""
    if not 0 <= max_unused <= 1:
        raise BtfsError(f"max_unused must be between 0% and 100%, not {max_unused:.0%}")
    store = catalog.retention
    report = PruneReport(dry_run=dry_run)
    started = time.monotonic()
    dead: list[PackUse] = []
    repack: list[PackUse] = []
    for use in store.pack_use():
        report.packs += 1
        report.vault_bytes += use.size
        unused = use.unused
        if not use.live_chunks:
            dead.append(use)
            report.dead_pack_bytes += use.size
        elif use.damaged and unused:
            report.skipped_damaged += 1
            report.left_unused_bytes += unused
        elif unused > max_unused * use.size:
            repack.append(use)
            report.repacked_bytes += use.size
            report.copied_bytes += use.live_bytes
        else:
            report.left_unused_bytes += unused
    if shared is not None:
        dead, repack = shared.leave_held(dead, repack, report)
        report.shared = shared.report
    report.dead_packs, report.repacked = len(dead), len(repack)
    report.dead_chunks = store.dead_chunk_count()
    report.planning_seconds = time.monotonic() - started
    if dry_run:
        return report
    if shared is None:
        _delete_garbage(catalog, store, vault, report)  # what a killed run left
    if dead or repack:
        batches = _batches(repack)
        avoid = shared.avoid if shared is not None else None
        for n, batch in enumerate(batches):
            moved = _repack(store, vault, codec, batch, pack_size, report,
                            _in_batch(progress, n, len(batches)), avoid=avoid)
            _step("uploaded")
            if shared is not None:  # the condemned record names every batch's new packs
                shared.moved_to = [*shared.moved_to, *(name for name, *_ in moved)]
            _commit(catalog, store, moved, (dead if n == 0 else []) + batch)
            _step("committed")
        if committed is not None:
            committed()
    if shared is None:
        _delete_garbage(catalog, store, vault, report)
    else:
        shared.settle(report, _step)
    if store.free_fraction() > VACUUM_FREE_FRACTION:
        store.vacuum()
        report.vacuumed = True
    return report


def _batches(repack: list[PackUse]) -> list[list[PackUse]]:
    """The packs to repack in batches of about BATCH_CHUNKS live chunks (at least one
    pack each; one empty batch when there is nothing to repack, for the dead packs)."""
    batches: list[list[PackUse]] = [[]]
    chunks = 0
    for use in repack:
        if batches[-1] and chunks + use.live_chunks > BATCH_CHUNKS:
            batches.append([])
            chunks = 0
        batches[-1].append(use)
        chunks += use.live_chunks
    return batches


def _in_batch(progress: Callable[[str], None] | None, n: int, total: int
              ) -> Callable[[str], None] | None:
    """`progress` naming the batch, when there are several."""
    if progress is None or total == 1:
        return progress
    return lambda text: progress(f"batch {n + 1}/{total}, {text}")


def _commit(catalog: Catalog, store: RetentionStore, moved: list[tuple],
            packs: list[PackUse]) -> None:
    """One transaction: the moved chunks' rows point at their new packs (durable in the
    vault), and `packs` go from `pack` to `pack_garbage`."""
    now = time.time_ns()
    # A new pack with an old one's name (the same bytes) is that pack, kept.
    new_names = {name for name, *_ in moved}
    retire = [u.id for u in packs if u.name not in new_names]
    with store.temp_on_disk(), catalog.writer.transaction():
        for name, size, chunks, ids in moved:
            store.move_chunks(name, size, chunks, now, ids)
        store.retire_packs(retire, now)


def _repack(store: RetentionStore, vault: Vault, codec: Codec, packs: list[PackUse],
            pack_size: int, report: PruneReport, progress,
            avoid: Callable[[str], bool] | None = None) -> list[tuple]:
    """Copy the live chunks of `packs` into new packs, durable before this returns.
    Returns (name, size, chunks, hash -> chunk id) of each new pack. Stored forms that
    must be decoded (and groups compressed anew) are done on worker threads (zstd and
    BLAKE3 let go of the GIL), a few per worker in flight, and added in their order.
    Long because the pack being built, its writer and the queue in flight are one state
    that seal() and add_oldest() share; split apart, each piece would carry all of it."""
    moved = []
    writer = vault.writer()
    builder = PackBuilder(writer)
    ids: dict[bytes, int] = {}
    workers = os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers, thread_name_prefix="btfs-repack")
    # (live chunks, future of [(stored form, [(hash, size)])]), oldest first: bounded, so
    # memory holds a few groups' raw bytes per worker, not a pack's.
    pending: deque[tuple[list[PackedChunk], Future]] = deque()

    def seal() -> None:
        nonlocal writer, builder, ids
        sealed = builder.seal(avoid)  # never a condemned pack's name (prune_shared)
        writer.commit(pack_key(sealed.name))  # durable (fsync, or the PUT returned)
        moved.append((sealed.name, sealed.size, sealed.chunks, ids))
        report.new_packs += 1
        report.new_pack_bytes += sealed.size
        writer = vault.writer()
        builder, ids = PackBuilder(writer), {}

    def add_oldest() -> None:
        live, future = pending.popleft()
        forms = future.result()
        for chunk in live:
            ids[chunk.hash] = chunk.id
        for stored, members in forms:
            if len(members) == 1:
                builder.add(members[0][0], members[0][1], stored)
            else:
                builder.add_shared(stored, members)
        if builder.nbytes >= pack_size:
            seal()

    # The next pack is read and hashed while this one's groups are compressed: the
    # workers would otherwise wait at every pack for its read and its digest.
    reader = ThreadPoolExecutor(1, thread_name_prefix="btfs-repack-read")
    fetched = reader.submit(_fetch, vault, packs[0]) if packs else None
    try:
        for n, use in enumerate(packs):
            if progress:
                progress(f"repacking {n + 1}/{len(packs)}")
            data, sound = fetched.result()
            fetched = reader.submit(_fetch, vault, packs[n + 1]) if n + 1 < len(packs) else None
            groups: dict[int, list[PackedChunk]] = {}
            for chunk in store.pack_chunks(use.id):
                groups.setdefault(chunk.offset, []).append(chunk)
            for offset, members in groups.items():
                live = [c for c in members if c.live]
                if not live:
                    continue
                stored = bytes(data[offset:offset + members[0].stored_len])
                whole = len(live) == len(members)
                if whole and sound:
                    done: Future = Future()
                    done.set_result([(stored, [(c.hash, c.size) for c in live])])
                    pending.append((live, done))
                else:
                    pending.append((live, pool.submit(_stored_forms, codec, use.name, stored,
                                                      live, not whole)))
                while len(pending) > IN_FLIGHT * workers:
                    add_oldest()
            del data
        while pending:
            add_oldest()
        if len(builder):
            seal()
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        pool.shutdown(wait=True, cancel_futures=True)
        writer.abort()
    return moved


def _fetch(vault: Vault, use: PackUse) -> tuple[bytes, bool]:
    """A pack's bytes, and whether they match its name. A pack whose bytes match its name
    holds what was verified when it was written: its whole stored forms are copied
    without decoding them. Otherwise every live chunk is decoded and verified before it
    is copied. Runs on the reader thread (reads and BLAKE3 let go of the GIL)."""
    data = vault.get(pack_key(use.name))
    if len(data) != use.size:
        raise BtfsError(f"pack {use.name} has {len(data)} bytes, the catalog says "
                        f"{use.size}: run 'btfs check'")
    return data, digest.hexdigest(data) == use.name


def _stored_forms(codec: Codec, pack: str, stored: bytes, live: list[PackedChunk],
                  anew: bool) -> list[tuple[bytes, list[tuple[bytes, int]]]]:
    """The live chunks of one stored form, verified: without `anew` the form itself
    (every member lives); else their raw bytes stored afresh as a backup would, together
    when that pays. Runs on a worker thread."""
    raws = []
    for chunk in live:
        # Verified before it is copied: a damaged chunk must not be moved into a pack
        # whose name vouches for its bytes.
        try:
            raws.append((chunk.hash, bytes(codec.decode(stored, chunk.hash, chunk.size))))
        except BtfsError as e:
            raise BtfsError(f"pack {pack}: {e}; run 'btfs check --read-data' and "
                            "'btfs repair' before pruning") from None
    if not anew:
        return [(stored, [(c.hash, c.size) for c in live])]
    group = codec.encode_group(raws) if len(raws) > 1 else None
    if group is not None:
        return [(group, [(h, len(raw)) for h, raw in raws])]
    return [(codec.encode(raw), [(h, len(raw))]) for h, raw in raws]


def _delete_garbage(catalog: Catalog, store: RetentionStore, vault: Vault,
                    report: PruneReport) -> None:
    """Delete the packs recorded dead, each record removed once its pack is gone."""
    with catalog.writer.transaction():
        garbage = store.garbage()
    if garbage:
        log.info("deleting %d packs from the vault", len(garbage))
    batch: list[str] = []
    for n, (name, size) in enumerate(garbage):
        vault.delete(pack_key(name))
        report.deleted_packs += 1
        report.deleted_bytes += size
        batch.append(name)
        if n == 0:
            _step("deleting")
        if len(batch) >= 100:
            with catalog.writer.transaction():
                store.deleted(batch)
            batch = []
    if batch:
        with catalog.writer.transaction():
            store.deleted(batch)
