"""A small wrapper over an apsw connection: one-line call sites for the catalog.

Owns the PRAGMAs (each with its reason) and the one transaction style: `begin()`,
`commit()`, `rollback()` (and `transaction()`, which is exactly those three around a block).
No statement here opens a transaction, sends queued rows or does anything but itself; the
batch writer (writer.py) queues rows and says when they are sent. Never used outside
`btfs.catalog`. A connection is used from one thread at a time; the engine's worker threads
open their own read-only ones.

`run_rows` sends many rows as multi-row statements: apsw lets go of the GIL at every step of
a statement, `executemany` included (one step per row); beside worker threads that hold the
GIL, getting it back is what a backup's main thread waits on most, so fewer statements
means fewer waits.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import apsw

log = logging.getLogger(__name__)


# Rows per multi-row statement: well under SQLite's 32,766 parameters for the widest row
# (a version, 18 values), and the statement text stays small enough to prepare quickly.
ROWS_PER_STATEMENT = 256


@functools.lru_cache(maxsize=64)
def placeholders(width: int, rows: int) -> str:
    """'(?, ?), (?, ?)' for width=2, rows=2: the VALUES list of a multi-row statement."""
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * rows)


class NoSuchRow(LookupError):
    """`get_row` found nothing: a caller's assumption about the catalog was wrong."""


class Database:
    def __init__(self, path: Path | str, *, readonly: bool = False, immutable: bool = False):
        """`immutable`: a file nothing changes in place (another host's catalog copy,
        replaced whole when a newer one is fetched): read-only, with no locks, no -wal or
        -shm beside it, and nothing a replaced file's readers share."""
        self.path = str(path)
        flags = apsw.SQLITE_OPEN_READONLY if readonly or immutable else (
            apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
        name = self.path
        if immutable:
            name = f"file:{urllib.parse.quote(self.path)}?immutable=1"
            flags |= apsw.SQLITE_OPEN_URI
        self.conn = apsw.Connection(name, flags=flags)
        # Readers must never wait on a running backup, and a backup must not wait long on
        # a reader's short transaction: WAL gives both; the timeout covers checkpoints.
        self.conn.set_busy_timeout(10_000)
        # The query planner stability guarantee: plan a statement once, not again for each
        # new set of bound values. apsw's SQLite is built with STAT4, under which a cached
        # statement that joins tables is planned afresh at every execution, which was most
        # of the time of the mount's directory page query (bench/README.md has figures).
        # btfs never runs ANALYZE, so no plan depended on the values anyway.
        self.conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)
        if not (readonly or immutable):
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
        # the upper levels of the indexes it searches. A bigger cache was a large share of
        # an initial backup's peak heap and bought no time.
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

    def query(self, sql: str, args: tuple | dict = ()) -> Iterator[tuple]:
        return self.execute(sql, args)

    def get_row(self, sql: str, args: tuple | dict = ()) -> tuple:
        for row in self.execute(sql, args):
            return row
        raise NoSuchRow(sql)

    def get_val(self, sql: str, args: tuple | dict = ()):
        return self.get_row(sql, args)[0]

    def get_row_or_none(self, sql: str, args: tuple | dict = ()) -> tuple | None:
        for row in self.execute(sql, args):
            return row
        return None

    def last_rowid(self) -> int:
        return self.conn.last_insert_rowid()

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def run_rows(self, statement: str, rows: list[tuple], args: tuple = ()) -> None:
        """`statement` with its `{rows}` replaced by a VALUES list, ROWS_PER_STATEMENT rows
        at a time; `args` are bound before the rows' values."""
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            part = rows[start:start + ROWS_PER_STATEMENT]
            self.conn.execute(statement.format(rows=placeholders(len(part[0]), len(part))),
                              [*args, *chain.from_iterable(part)])

    # ---- transactions: the one style ------------------------------------------------------

    def begin(self) -> None:
        """BEGIN IMMEDIATE: take the write lock now, so that nothing read in the
        transaction can change under it and ids taken from max(id) stay free."""
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    @contextmanager
    def temp_on_disk(self) -> Iterator[None]:
        """Temporary tables, sorts and statement journals in temporary files for a block,
        not in memory (temp_store=MEMORY above): for the statements whose temporary data
        grows with the catalog, as forget's and prune's deletes of a million rows and
        VACUUM's copy are (with a million files and 100 backups, they took the peak RSS
        to 200, 270 and 810 MB; 20-40 MB this way, in the same time). Outside any
        transaction: changing temp_store drops the temporary tables there are."""
        assert not self.in_transaction, "temp_store cannot change in a transaction"
        self.execute("PRAGMA temp_store=FILE")
        try:
            yield
        finally:
            self.execute("PRAGMA temp_store=MEMORY")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """begin() ... commit(); rollback() on any exception (kill -9 rolls back anyway)."""
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()
