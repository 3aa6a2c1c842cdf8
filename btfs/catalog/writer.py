"""BackupWriter: every write to paths, versions, snapshots and meta, in explicit transactions.

One transaction style: the caller says where a transaction starts and ends, with `begin()`,
`commit()` and `rollback()`, or `transaction()`, which is exactly those around a block (for
short writes: `btfs add`, marking snapshots, init). No method opens a transaction, and a
write outside one fails an assertion. A backup keeps one transaction open and commits where
everything it refers to is durable in the vault (engine/backup.py); kill -9 in between
loses only uncommitted rows, whose packs `check` tolerates as unreferenced.

The rows a backup makes one entry at a time (nodes, versions, heads) are queued and sent as
multi-row statements (db.run_rows says why that counts): at `flush()`, when a queue fills,
at `commit()`, and before the reads and writes below that must see them: `child_node`,
`find_node`, `node_for_path`, `head`, `live_children` (the backup's lookups during its own
transaction), `add_file_versions` (its versions refer to queued nodes), `stage` and
`commit_staged`. They
are never sent as a side effect of some other statement: a read through `History` during an
open transaction does not see queued rows. `rollback()` drops them with the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from .db import ROWS_PER_STATEMENT, Database
from .model import LiveChild, Meta, Version, pack_ids
from .reads import SNAPSHOT_COLS, VCOLS, History
from .schema import ROOT

log = logging.getLogger(__name__)

# Statements whose rows are queued or sent many at a time (`{rows}` is the VALUES list),
# in the order they are sent: a statement may refer to rows of the ones before it.
_ADD_NODE = "INSERT INTO node (id, parent, name) VALUES {rows}"
_ADD_VERSION = f"INSERT INTO version (id, node_id, snapshot_id, {VCOLS}) VALUES {{rows}}"
_SET_HEAD = "UPDATE node SET head = v.column2 FROM (VALUES {rows}) AS v WHERE node.id = v.column1"
_QUEUED_IN_ORDER = (_ADD_NODE, _ADD_VERSION, _SET_HEAD)
# The file versions' content ids are looked up by digest in the statement.
_ADD_CONTENTS = ("INSERT INTO content (digest, size, chunks) VALUES {rows} "
                 "ON CONFLICT(digest) DO NOTHING")
_ADD_FILE_VERSIONS = (
    f"INSERT INTO version (id, node_id, snapshot_id, {VCOLS}) "
    f"SELECT column1, column2, ?, {', '.join(f'column{i}' for i in range(3, 16))}, "
    "(SELECT id FROM content WHERE digest = column16) FROM (VALUES {rows})")
# A content's chunks, one row per distinct chunk (schema: content_chunk), the content found
# by digest; a content that was already there has its rows, and they are ignored.
_ADD_CONTENT_CHUNKS = ("INSERT OR IGNORE INTO content_chunk (chunk_id, content_id) "
                       "SELECT column1, (SELECT id FROM content WHERE digest = column2) "
                       "FROM (VALUES {rows})")
_SNAPSHOT_FIELDS = frozenset(SNAPSHOT_COLS.split(", ")) - {"id", "host_id", "started_ns",
                                                          "name", "forgotten_ns"}


class BackupWriter:
    def __init__(self, db: Database, history: History):
        self.db = db
        self._history = history
        self._queue: dict[str, list[tuple]] = {s: [] for s in _QUEUED_IN_ORDER}
        self._queued = 0  # rows in _queue
        self._next_id: dict[str, int] = {}  # table -> next id, within a transaction

    # ---- transactions ---------------------------------------------------------------------

    def begin(self) -> None:
        self._next_id.clear()
        self.db.begin()

    def commit(self) -> None:
        """Send the queued rows, then COMMIT."""
        self.flush()
        self.db.commit()
        self._next_id.clear()

    def rollback(self) -> None:
        """Drop the queued rows with the rest of the transaction."""
        self._drop_queue()
        self._next_id.clear()
        self.db.rollback()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """begin() ... commit(); rollback() on any exception."""
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    @property
    def queued(self) -> int:
        """Rows queued and not yet sent."""
        return self._queued

    def flush(self) -> None:
        """Send every queued row, in statement order."""
        if not self._queued:
            return
        self._queued = 0
        for statement, rows in self._queue.items():
            if rows:
                self._queue[statement] = []
                self.db.run_rows(statement, rows)

    def _drop_queue(self) -> None:
        self._queued = 0
        for rows in self._queue.values():
            rows.clear()

    def _later(self, statement: str, row: tuple) -> None:
        """Queue `row` for `statement`; a constraint it breaks fails at the flush."""
        rows = self._queue[statement]
        rows.append(row)
        self._queued += 1
        if len(rows) >= ROWS_PER_STATEMENT:
            self.flush()

    def _take_ids(self, table: str, count: int) -> int:
        """The first of `count` new ids for rows of `table` (node or version) that this
        transaction inserts with explicit ids: it holds BEGIN IMMEDIATE, so no other
        writer takes ids before it commits."""
        if table not in self._next_id:
            self._next_id[table] = (self.db.get_val(f"SELECT max(id) FROM {table}") or 0) + 1
        first = self._next_id[table]
        self._next_id[table] = first + count
        return first

    # ---- reads that see this transaction's queued rows -------------------------------------

    def child_node(self, parent: int, name: bytes) -> int | None:
        self.flush()
        return self._history.child_node(parent, name)

    def head(self, node_id: int) -> Version | None:
        self.flush()
        return self._history.head(node_id)

    def live_children(self, parent: int) -> dict[bytes, LiveChild]:
        self.flush()
        return self._history.live_children(parent)

    def live_children_named(self, parent: int, names) -> dict[bytes, LiveChild]:
        self.flush()
        return self._history.live_children_named(parent, names)

    def find_node(self, path: bytes) -> int | None:
        """The node of an absolute path, None if btfs never saw it."""
        self.flush()
        return self._history.node_for_path(path)

    def node_for_path(self, path: bytes) -> int:
        """The node of an absolute path, created with its ancestors if new."""
        node = ROOT
        for name in path.split(b"/"):
            if not name:
                continue
            child = self.child_node(node, name)
            node = self.add_node(node, name) if child is None else child
        return node

    # ---- paths and versions -----------------------------------------------------------------

    def add_node(self, parent: int, name: bytes) -> int:
        """A new path's node, its id given out here and its row queued."""
        assert self.db.in_transaction, "add_node needs a transaction"
        node = self._take_ids("node", 1)
        self._later(_ADD_NODE, (node, parent, name))
        return node

    def add_version(self, node_id: int, snapshot_id: int | None, meta: Meta, *,
                    content_id: int | None = None) -> int:
        """Record `meta` as the state of `node_id` in `snapshot_id` (None: staged), with
        `content_id` in place of meta's when given (cheaper than a copy of meta). The rows
        (the version, and the node's new head) are queued."""
        assert self.db.in_transaction, "add_version needs a transaction"
        version_id = self._take_ids("version", 1)
        self._later(_ADD_VERSION, (version_id, node_id, snapshot_id, *meta[:-1],
                                   meta.content_id if content_id is None else content_id))
        if snapshot_id is not None:
            self._later(_SET_HEAD, (node_id, version_id))
        return version_id

    def add_file_versions(self, snapshot_id: int,
                          files: list[tuple[int, Meta, bytes, int, list[int]]]) -> None:
        """Record read files in `snapshot_id`, each given as (node_id, meta, content
        digest, content size, chunk ids): its content is added if new, its version
        inserted and made its node's head. One statement per ROWS_PER_STATEMENT rows of
        each kind (contents, their chunks, versions, heads), where add_content and
        add_version would take several per file."""
        if not files:
            return
        assert self.db.in_transaction, "add_file_versions needs a transaction"
        self.flush()  # the versions refer to nodes that may be queued
        self.db.run_rows(_ADD_CONTENTS,
                         [(d, size, pack_ids(ids)) for _, _, d, size, ids in files])
        self.db.run_rows(_ADD_CONTENT_CHUNKS, [(chunk_id, d) for _, _, d, _, ids in files
                                               for chunk_id in set(ids)])
        first = self._take_ids("version", len(files))
        # Every column of meta but content_id, which the statement finds by digest.
        self.db.run_rows(_ADD_FILE_VERSIONS, [(first + i, node, *m[:-1], d)
                                              for i, (node, m, d, _, _) in enumerate(files)],
                         (snapshot_id,))
        self.db.run_rows(_SET_HEAD, [(node, first + i) for i, (node, *_) in enumerate(files)])

    # ---- staging ('btfs add') ------------------------------------------------------------------

    def stage(self, node_id: int, meta: Meta) -> None:
        """Replace any earlier staged state of the path by `meta`."""
        self.flush()  # an earlier staged row of this path may be queued
        self.db.execute("DELETE FROM version WHERE node_id=? AND snapshot_id IS NULL", (node_id,))
        self.add_version(node_id, None, meta)

    def commit_staged(self, version_id: int, snapshot_id: int) -> None:
        """Move a staged version into `snapshot_id` and make it its node's head."""
        assert self.db.in_transaction, "commit_staged needs a transaction"
        self.flush()  # the staged row may be queued
        node_id = self.db.get_val("SELECT node_id FROM version WHERE id=?", (version_id,))
        self.db.execute("UPDATE version SET snapshot_id=? WHERE id=?", (snapshot_id, version_id))
        self.db.execute("UPDATE node SET head=? WHERE id=?", (version_id, node_id))

    # ---- snapshots and meta -----------------------------------------------------------------

    def begin_snapshot(self, host_id: str, started_ns: int) -> int:
        """A new running snapshot, named by the local time it started (btfs.names), with
        -N, N one more than any taken, for the same second: names are stored and never
        reused while their row lives (a ghost's included). A snapshot dropped empty
        (`drop_empty_snapshot`) frees its name: no one saw it."""
        from ..names import time_name  # btfs.names imports the catalog's model

        assert self.db.in_transaction, "begin_snapshot needs a transaction"
        base_name = time_name(started_ns)
        taken = [r[0] for r in self.db.query(
            "SELECT name FROM snapshot WHERE name = ? OR name GLOB ?",
            (base_name, base_name + "-[0-9]*"))]
        name = base_name
        if taken:
            suffixes = [int(t[len(base_name) + 1:]) for t in taken if t != base_name
                        and t[len(base_name) + 1:].isdigit()]
            name = f"{base_name}-{max(suffixes, default=0) + 1}"
        self.db.execute(
            "INSERT INTO snapshot (host_id, started_ns, state, name) VALUES (?, ?, ?, ?)",
            (host_id, started_ns, "running", name))
        return self.db.last_rowid()

    def update_snapshot(self, snapshot_id: int, **fields) -> None:
        if not fields or set(fields) - _SNAPSHOT_FIELDS:
            raise ValueError(f"bad snapshot fields {sorted(fields)}")
        assert self.db.in_transaction, "update_snapshot needs a transaction"
        assignments = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE snapshot SET {assignments} WHERE id=?",
                        (*fields.values(), snapshot_id))

    def drop_empty_snapshot(self, snapshot_id: int) -> None:
        """Delete a snapshot that recorded nothing (`btfs watch` keeps no empty ones);
        one holding any version is left as it is. Sends the queue first: its versions
        are what the guard looks for."""
        assert self.db.in_transaction, "drop_empty_snapshot needs a transaction"
        self.flush()
        self.db.execute("DELETE FROM snapshot WHERE id=? AND NOT EXISTS "
                        "(SELECT 1 FROM version WHERE snapshot_id=?)", (snapshot_id, snapshot_id))

    def mark_interrupted(self) -> list[int]:
        """Snapshots left 'running' by a dead writer; call only while holding the lock."""
        assert self.db.in_transaction, "mark_interrupted needs a transaction"
        ids = [r[0] for r in self.db.query("SELECT id FROM snapshot WHERE state='running'")]
        for snapshot_id in ids:
            self.db.execute("UPDATE snapshot SET state='interrupted' WHERE id=?", (snapshot_id,))
        return ids

    def set_meta(self, key: str, value: str) -> None:
        assert self.db.in_transaction, "set_meta needs a transaction"
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
