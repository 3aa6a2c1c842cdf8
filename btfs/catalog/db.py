"""A small wrapper over an apsw connection: one-line call sites for the catalog.

Owns the PRAGMAs (each with its reason). Never used outside `btfs.catalog`. A connection is
used from one thread at a time; the engine's worker threads open their own read-only ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw

log = logging.getLogger(__name__)


class NoSuchRow(LookupError):
    """`get_row` found nothing: a caller's assumption about the catalog was wrong."""


class Database:
    def __init__(self, path: Path | str, *, readonly: bool = False):
        self.path = str(path)
        flags = apsw.SQLITE_OPEN_READONLY if readonly else (
            apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
        self.conn = apsw.Connection(self.path, flags=flags)
        # Readers must never wait on a running backup, and a backup must not wait long on
        # a reader's short transaction: WAL gives both; the timeout covers checkpoints.
        self.conn.set_busy_timeout(10_000)
        if not readonly:
            self.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is still crash-consistent (kill -9 loses nothing committed);
        # only a power cut may drop the newest transactions, whose packs then stay
        # unreferenced in the vault, which `check` tolerates and `prune` reclaims.
        self.execute("PRAGMA synchronous=NORMAL")
        # Referential integrity is part of "never serve wrong bytes": a version must never
        # point at a chunk the vault does not hold.
        self.execute("PRAGMA foreign_keys=ON")
        # Page cache, 4 MiB per connection: the writer's holds the B-tree pages an
        # initial backup appends to, a reader's (the mount, the backup's worker threads)
        # the upper levels of the indexes it searches. At 8 MiB the writer's cache was
        # ~10 MB of an initial backup's peak heap; 4 MiB lowered linux-6.1's peak RSS by
        # 3-8 MB in the same time (alternating runs).
        self.execute("PRAGMA cache_size=-4096")
        self.execute("PRAGMA temp_store=MEMORY")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def execute(self, sql: str, args: tuple | dict = ()) -> apsw.Cursor:
        return self.conn.execute(sql, args)

    def executemany(self, sql: str, rows) -> None:
        self.conn.executemany(sql, rows)

    def query(self, sql: str, args: tuple | dict = ()) -> Iterator[tuple]:
        return self.conn.execute(sql, args)

    def get_row(self, sql: str, args: tuple | dict = ()) -> tuple:
        for row in self.conn.execute(sql, args):
            return row
        raise NoSuchRow(sql)

    def get_val(self, sql: str, args: tuple | dict = ()):
        return self.get_row(sql, args)[0]

    def get_row_or_none(self, sql: str, args: tuple | dict = ()) -> tuple | None:
        for row in self.conn.execute(sql, args):
            return row
        return None

    def last_rowid(self) -> int:
        return self.conn.last_insert_rowid()

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT; rolled back on any exception, including kill -9."""
        self.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")
