"""Catalog: what callers open. It owns the database's lifetime and holds the three parts.

- `catalog.history` (reads.History): paths, versions, snapshots as the mount and CLI read them
- `catalog.chunks` (chunks.ChunkIndex): chunks, packs, contents, damaged chunks
- `catalog.writer` (writer.BackupWriter): every other write, in explicit transactions
- `catalog.retention` (retention.RetentionStore): what `btfs forget` and `btfs prune` drop
  and move, inside the writer's transactions
- `catalog.condemned` (condemned.CondemnedPacks): packs a prune in a shared vault condemned

Writers (backup, add, repair, forget, prune) hold the writer lock (btfs.lock) before opening
it read-write; readers (mount, log, status) open it read-only and never wait, thanks to WAL.
Opening migrates an older catalog (migrations.py) and makes a new one from schema.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import BtfsError
from .chunks import ChunkIndex
from .condemned import CondemnedPacks
from .db import Database
from .migrations import MIGRATIONS, apply_migrations
from .reads import History
from .retention import RetentionStore
from .schema import FIRST_ROWS, SCHEMA
from .writer import BackupWriter

log = logging.getLogger(__name__)


class Catalog:
    def __init__(self, path: Path | str, *, readonly: bool = False, immutable: bool = False):
        """`immutable`: read-only, and never changed in place by anyone (another host's
        copy, btfs.replica.otherhost, which migrates it when fetched): see Database."""
        self.path = Path(path)
        readonly = readonly or immutable
        if readonly and not self.path.exists():
            raise BtfsError(f"no catalog at {self.path}: run 'btfs init' first")
        self.readonly = readonly
        if readonly and not immutable:
            # A catalog from an older btfs is migrated once, even by a reader (mount, log):
            # migrations only add indexes and tables, in their own short transaction.
            with Database(path, readonly=True) as probe:
                current = probe.get_val("PRAGMA user_version")
            if current < len(MIGRATIONS):
                Catalog(path).close()
        self.db = Database(path, readonly=readonly, immutable=immutable)
        if not readonly:
            self._migrate()
        elif self.db.get_val("PRAGMA user_version") > len(MIGRATIONS):
            raise BtfsError(f"catalog {self.path} is from a newer btfs; upgrade btfs")
        self.history = History(self.db)
        self.chunks = ChunkIndex(self.db, self.history)
        self.writer = BackupWriter(self.db, self.history)
        self.retention = RetentionStore(self.db)
        self.condemned = CondemnedPacks(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _migrate(self) -> None:
        current = self.db.get_val("PRAGMA user_version")
        if current > len(MIGRATIONS):
            raise BtfsError(f"catalog {self.path} is from a newer btfs (format {current})")
        if current == 0 and self.db.get_val("SELECT count(*) FROM sqlite_master") == 0:
            # A new catalog: the current schema in one step, stamped with the newest format.
            with self.db.transaction():
                self.db.execute(SCHEMA)
                self.db.execute(FIRST_ROWS)
                self.db.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
            log.debug("catalog created at format %d", len(MIGRATIONS))
            return
        apply_migrations(self.db, current, FIRST_ROWS)
