"""`btfs repair`: store afresh every damaged chunk whose bytes a file on disk still holds.

A backup reads only files that changed, so a chunk that `btfs check` found damaged (and
recorded, schema v6) in an unchanged file is not met again by the next backup. Repair
looks the damaged chunks up in the files whose versions use them, newest version first,
cuts each such file that still exists with the backup's own chunker and stores every chunk
whose hash is damaged. Recording the pack (ChunkIndex.add_pack, once the pack is durable in
the vault) points each chunk's row at its new copy, which heals every snapshot that used
it. Runs under the writer lock, on the writer's catalog connection; never changes a
version or a content row, and never reads more than one chunk of a file at a time.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field

from ..catalog import Catalog
from ..config import Config
from .codec import Codec
from .files import Chunker, cut_file
from .store import ChunkStore

log = logging.getLogger(__name__)

# Versions looked at per run: each names a file that may hold damaged chunks. Far more
# than a flipped byte or a lost pack affects; past it, the rest stay listed as damaged.
MAX_VERSIONS = 100_000


@dataclass
class RepairReport:
    damaged: int = 0  # damaged chunks when repair started
    healed: int = 0  # of those, stored again
    files_read: int = 0
    # (path, snapshot id) of versions that still use a damaged chunk.
    still_damaged: list[tuple[bytes, int]] = field(default_factory=list)
    # snapshot id -> name, for the snapshots listed above (filled by Repo).
    names: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.still_damaged


def repair(catalog: Catalog, store: ChunkStore, config: Config, codec: Codec) -> RepairReport:
    """The caller holds the writer lock; `store` writes to the vault of `catalog`."""
    report = RepairReport()
    damaged = catalog.chunks.damaged_chunks()
    report.damaged = len(damaged)
    if not damaged:
        return report
    wanted = set(damaged.values())
    # Newest version first: the file most likely to still hold these bytes.
    versions = sorted(catalog.chunks.paths_using_chunks(set(damaged), limit=MAX_VERSIONS),
                      key=lambda v: v[1], reverse=True)
    chunker = Chunker(config.chunk_min, config.chunk_avg, config.chunk_max)
    tried: set[bytes] = set()
    with catalog.writer.transaction():
        for path, _ in versions:
            if not wanted:
                break
            if path in tried:
                continue
            tried.add(path)
            found = _restore_from(path, chunker, store, wanted, codec)
            if found is None:
                continue
            report.files_read += 1
            wanted -= found
        store.finish()  # the new packs durable, their chunks' rows pointed at them
    left = catalog.chunks.damaged_chunks()
    report.healed = report.damaged - len(left)
    if left:
        report.still_damaged = catalog.chunks.paths_using_chunks(set(left), limit=MAX_VERSIONS)
    return report


def _restore_from(path: bytes, chunker: Chunker, store: ChunkStore, wanted: set[bytes],
                  codec: Codec) -> set[bytes] | None:
    """The damaged chunks found in the file at `path`, each handed to `store`; None if
    there is no regular file there to read."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
    except OSError:
        return None
    found: set[bytes] = set()

    def take(data: bytes) -> None:
        h = codec.chunk_hash(data)
        if h in wanted and h not in found:
            found.add(h)
            store.add(h, len(data), codec.encode(data), store.generation)

    try:
        # A file that changes while it is read is read again; chunks already taken stay
        # taken (each is the bytes of its hash, whatever the file did since).
        cut_file(path, chunker, take, lambda: None)
    except OSError as e:
        log.info("cannot read %s for repair: %s", os.fsdecode(path), e.strerror or e)
        return None
    if found:
        log.info("%s holds %d damaged chunks: stored again", os.fsdecode(path), len(found))
    return found
