"""The catalog: everything btfs knows, in one SQLite database. The only module with SQL.

Writers (backup, add, later prune) hold the writer lock (btfs.lock) before opening it
read-write; readers (mount, log, status) open it read-only and never wait, thanks to WAL.
Methods return dataclasses from `model`; callers never see rows or cursors.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BtfsError
from .db import Database, NoSuchRow
from .model import (
    DELETED,
    ChunkRef,
    Content,
    Entry,
    LiveChild,
    Meta,
    NewChunk,
    Snapshot,
    Version,
)
from .schema import MIGRATIONS

log = logging.getLogger(__name__)

ROOT = 1  # node id of '/'
_VCOLS = ("type, size, mode, uid, gid, atime_ns, mtime_ns, ctime_ns, btime_ns, ino, nlink, "
          "target, xattrs, content_id")
_VSEL = "v.id, v.node_id, v.snapshot_id, " + ", ".join("v." + c for c in _VCOLS.split(", "))
# The version of node n as of a snapshot (bound to the one ?): the tree-at-S rule, one
# seek on version_by_node per node.
_VERSION_AT = ("(SELECT id FROM version WHERE node_id = n.id AND snapshot_id <= ? "
               "ORDER BY snapshot_id DESC LIMIT 1)")
# Version rows are written as (*meta[:-1], content_id): the columns are Meta's fields.
assert tuple(_VCOLS.split(", ")) == Meta._fields
# Statements whose rows are queued or sent many at a time (db.py: `{rows}` is the VALUES
# list); the file versions' content ids are looked up by digest in the statement.
_ADD_NODE = "INSERT INTO node (id, parent, name) VALUES {rows}"
_ADD_VERSION = f"INSERT INTO version (id, node_id, snapshot_id, {_VCOLS}) VALUES {{rows}}"
_SET_HEAD = "UPDATE node SET head = v.column2 FROM (VALUES {rows}) AS v WHERE node.id = v.column1"
_ADD_CONTENTS = ("INSERT INTO content (digest, size, chunks) VALUES {rows} "
                 "ON CONFLICT(digest) DO NOTHING")
_ADD_FILE_VERSIONS = (
    f"INSERT INTO version (id, node_id, snapshot_id, {_VCOLS}) "
    f"SELECT column1, column2, ?, {', '.join(f'column{i}' for i in range(3, 16))}, "
    "(SELECT id FROM content WHERE digest = column16) FROM (VALUES {rows})")
_SNAP_COLS = ("id, host_id, started_ns, finished_ns, state, files_new, files_changed, "
              "files_deleted, entries, bytes_read, bytes_added, errors, name, forgotten_ns")
# A content's chunks, one row per distinct chunk (schema v7), the content found by digest.
_ADD_CONTENT_CHUNKS = ("INSERT OR IGNORE INTO content_chunk (chunk_id, content_id) "
                       "SELECT column1, (SELECT id FROM content WHERE digest = column2) "
                       "FROM (VALUES {rows})")


def _version(row) -> Version:
    return Version(row[0], row[1], row[2], Meta(*row[3:17]))


def pack_ids(ids: Iterable[int]) -> bytes:
    ids = list(ids)
    return struct.pack(f"<{len(ids)}q", *ids)


def unpack_ids(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(blob) // 8}q", blob)


class Catalog:
    def __init__(self, path: Path | str, *, readonly: bool = False):
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise BtfsError(f"no catalog at {self.path}: run 'btfs init' first")
        self.readonly = readonly
        if readonly:
            # A catalog from an older btfs is migrated once, even by a reader (mount, log):
            # migrations only add indexes and tables, in their own short transaction.
            with Database(path, readonly=True) as probe:
                current = probe.get_val("PRAGMA user_version")
            if current < len(MIGRATIONS):
                Catalog(path).close()
        self.db = Database(path, readonly=readonly)
        self._next_id: dict[str, int] = {}  # table -> next id, within a transaction
        self.db.queue_in_order(_ADD_NODE, _ADD_VERSION, _SET_HEAD)
        if not readonly:
            self._migrate()
        elif self.db.get_val("PRAGMA user_version") > len(MIGRATIONS):
            raise BtfsError(f"catalog {self.path} is from a newer btfs; upgrade btfs")

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
        for number in range(current, len(MIGRATIONS)):
            step = MIGRATIONS[number]
            sql, fill = step if isinstance(step, tuple) else (step, None)
            with self.db.transaction():
                self.db.conn.execute(sql)
                if fill is not None:
                    fill(self.db)
                if number == 0:
                    self.db.execute("INSERT INTO node (id, parent, name) VALUES (?, NULL, ?)",
                                    (ROOT, b""))
                self.db.execute(f"PRAGMA user_version={number + 1}")
            log.debug("catalog migrated to format %d", number + 1)

    @contextmanager
    def transaction(self):
        self._next_id.clear()
        try:
            with self.db.transaction():
                yield
        finally:
            self._next_id.clear()

    # A long writer (the backup) keeps one transaction open and commits at the points
    # where everything it refers to is durable; these spell that out.

    def begin(self) -> None:
        self._next_id.clear()
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")  # sends the queued rows first
        self._next_id.clear()

    def rollback(self) -> None:
        self._next_id.clear()
        self.db.drop_queued()
        self.db.execute("ROLLBACK")

    # ---- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.get_row_or_none("SELECT value FROM meta WHERE key=?", (key,))
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ---- nodes (the path tree) ----------------------------------------------------------

    def child_node(self, parent: int, name: bytes) -> int | None:
        row = self.db.get_row_or_none("SELECT id FROM node WHERE parent=? AND name=?",
                                      (parent, name))
        return row[0] if row else None

    def add_node(self, parent: int, name: bytes) -> int:
        """A new path's node. Inside a transaction (the backup's: one per new entry) the
        row is queued and goes in with others as one statement before the next statement
        of any kind (db.py says why), its id given out here."""
        if not self.db.in_transaction:
            with self.transaction():
                return self.add_node(parent, name)
        node = self._take_ids("node", 1)
        self.db.later(_ADD_NODE, (node, parent, name))
        return node

    def node_for_path(self, path: bytes, *, create: bool = False) -> int | None:
        """The node of an absolute path, created with its ancestors when `create`."""
        node = ROOT
        for name in path.split(b"/"):
            if not name:
                continue
            child = self.child_node(node, name)
            if child is None:
                if not create:
                    return None
                child = self.add_node(node, name)
            node = child
        return node

    def node_path(self, node_id: int) -> bytes:
        names = []
        while node_id != ROOT:
            parent, name = self.db.get_row("SELECT parent, name FROM node WHERE id=?", (node_id,))
            names.append(name)
            node_id = parent
        return b"/" + b"/".join(reversed(names))

    def node_name(self, node_id: int) -> bytes:
        return self.db.get_val("SELECT name FROM node WHERE id=?", (node_id,))

    def node_children(self, parent: int) -> list[tuple[int, bytes]]:
        """Every child path ever seen under `parent`, by name."""
        return [(r[0], r[1]) for r in self.db.query(
            "SELECT id, name FROM node WHERE parent=? ORDER BY name", (parent,))]

    def node_has_children(self, node_id: int) -> bool:
        return self.db.get_row_or_none("SELECT 1 FROM node WHERE parent=? LIMIT 1",
                                       (node_id,)) is not None

    # ---- versions ---------------------------------------------------------------------

    def head(self, node_id: int) -> Version | None:
        row = self.db.get_row_or_none(
            f"SELECT {_VSEL} FROM node n JOIN version v ON v.id = n.head WHERE n.id=?",
            (node_id,))
        return _version(row) if row else None

    def live_children(self, parent: int) -> dict[bytes, LiveChild]:
        """Children whose newest version is not 'deleted': what the last backup saw."""
        rows = self.db.query(
            "SELECT n.name, n.id, v.type, v.size, v.mtime_ns, v.ctime_ns, v.ino "
            "FROM node n JOIN version v ON v.id = n.head "
            "WHERE n.parent=? AND v.type != 'deleted'", (parent,))
        new = tuple.__new__  # a third cheaper than LiveChild(*...), once per entry per backup
        return {r[0]: new(LiveChild, r[1:]) for r in rows}

    def add_version(self, node_id: int, snapshot_id: int | None, meta: Meta, *,
                    content_id: int | None = None) -> int:
        """Record `meta` as the state of `node_id` in `snapshot_id` (None: staged), with
        `content_id` in place of meta's when given (cheaper than a copy of meta). Inside
        a transaction the rows are queued (see add_node)."""
        if not self.db.in_transaction:
            with self.transaction():
                return self.add_version(node_id, snapshot_id, meta, content_id=content_id)
        version_id = self._take_ids("version", 1)
        self.db.later(_ADD_VERSION, (version_id, node_id, snapshot_id, *meta[:-1],
                                     meta.content_id if content_id is None else content_id))
        if snapshot_id is not None:
            self.db.later(_SET_HEAD, (node_id, version_id))
        return version_id

    def add_file_versions(self, snapshot_id: int,
                          files: list[tuple[int, Meta, bytes, int, list[int]]]) -> None:
        """Record read files in `snapshot_id`, each given as (node_id, meta, content
        digest, content size, chunk ids): its content is added if new, its version
        inserted and made its node's head. Three statements for every ROWS_PER_STATEMENT
        files, where add_content and add_version would take four per file (db.py says
        why that counts)."""
        if not files:
            return
        self.db.run_rows(_ADD_CONTENTS,
                         [(d, size, pack_ids(ids)) for _, _, d, size, ids in files])
        # Rows of contents that were already there are ignored (they have theirs).
        self.db.run_rows(_ADD_CONTENT_CHUNKS, [(chunk_id, d) for _, _, d, _, ids in files
                                               for chunk_id in set(ids)])
        first = self._take_ids("version", len(files))
        # Every column of meta but content_id, which the statement finds by digest.
        self.db.run_rows(_ADD_FILE_VERSIONS, [(first + i, node, *m[:-1], d)
                                              for i, (node, m, d, _, _) in enumerate(files)],
                         (snapshot_id,))
        self.db.run_rows(_SET_HEAD, [(node, first + i) for i, (node, *_) in enumerate(files)])

    def _take_ids(self, table: str, count: int) -> int:
        """The first of `count` new ids for rows of `table` (node or version) that this
        transaction inserts with explicit ids: it holds BEGIN IMMEDIATE, so no other
        writer takes ids before it commits."""
        if table not in self._next_id:
            self._next_id[table] = (self.db.get_val(f"SELECT max(id) FROM {table}") or 0) + 1
        first = self._next_id[table]
        self._next_id[table] = first + count
        return first

    def version_or_none(self, version_id: int) -> Version | None:
        row = self.db.get_row_or_none(f"SELECT {_VSEL} FROM version v WHERE v.id=?",
                                      (version_id,))
        return _version(row) if row else None

    def hardlink_leader(self, snapshot_id: int, ino: int) -> int:
        """The lowest version id among files recorded in `snapshot_id` with inode `ino` and
        more than one link: one identity for a hard-link group."""
        return self.db.get_val(
            "SELECT min(id) FROM version INDEXED BY version_hardlinks "
            "WHERE snapshot_id=? AND ino=? AND type='file' AND nlink > 1", (snapshot_id, ino))

    def version_at(self, node_id: int, snapshot_id: int) -> Version | None:
        """The state of a path at a snapshot (None if it did not exist yet)."""
        row = self.db.get_row_or_none(
            f"SELECT {_VSEL} FROM version v WHERE v.node_id=? AND v.snapshot_id<=? "
            "ORDER BY v.snapshot_id DESC LIMIT 1", (node_id, snapshot_id))
        if row is None:
            return None
        version = _version(row)
        return None if version.type == DELETED else version

    def children_at(self, parent: int, snapshot_id: int) -> list[Entry]:
        """The directory listing of `parent` as of `snapshot_id`, by name."""
        rows = self.db.query(
            f"SELECT n.id, n.name, {_VSEL} FROM node n JOIN version v ON v.id = {_VERSION_AT} "
            "WHERE n.parent = ? AND v.type != 'deleted' ORDER BY n.name", (snapshot_id, parent))
        return [Entry(r[0], r[1], _version(r[2:])) for r in rows]

    def node_children_page(self, parent: int, after_id: int, limit: int
                           ) -> list[tuple[int, bytes]]:
        """Every child path ever seen, in node id order from `after_id` on (by-file)."""
        return [(r[0], r[1]) for r in self.db.query(
            "SELECT id, name FROM node INDEXED BY node_by_parent_id "
            "WHERE parent=? AND id>? ORDER BY id LIMIT ?", (parent, after_id, limit))]

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "did anything change?"."""
        return self.db.get_val("PRAGMA data_version")

    def newest_live_version(self, node_id: int, upto_snapshot: int) -> Version | None:
        """A path's newest version that is not a deletion, in snapshots <= `upto_snapshot`
        (the mount's by-file directories): one step back along version_by_node."""
        row = self.db.get_row_or_none(
            f"SELECT {_VSEL} FROM version v WHERE v.node_id=? AND v.snapshot_id<=? "
            "AND v.type != 'deleted' ORDER BY v.snapshot_id DESC LIMIT 1",
            (node_id, upto_snapshot))
        return _version(row) if row else None

    def versions_page(self, node_id: int, upto_snapshot: int, after_snapshot: int,
                      limit: int) -> list[Version]:
        """File and symlink versions of a path with after < snapshot id <= upto, oldest
        first: a page of the mount's by-file listing, resumed by snapshot id."""
        return [_version(r) for r in self.db.query(
            f"SELECT {_VSEL} FROM version v WHERE v.node_id=? AND v.snapshot_id>? "
            "AND v.snapshot_id<=? AND v.type IN ('file', 'symlink') "
            "ORDER BY v.snapshot_id LIMIT ?", (node_id, after_snapshot, upto_snapshot, limit))]

    def child_at(self, parent: int, name: bytes, snapshot_id: int) -> Entry | None:
        node_id = self.child_node(parent, name)
        if node_id is None:
            return None
        version = self.version_at(node_id, snapshot_id)
        return Entry(node_id, name, version) if version else None

    def versions_of(self, node_id: int) -> list[Version]:
        """Every committed version of a path, oldest first (deletions included)."""
        rows = self.db.query(
            f"SELECT {_VSEL} FROM version v WHERE v.node_id=? AND v.snapshot_id IS NOT NULL "
            "ORDER BY v.snapshot_id", (node_id,))
        return [_version(r) for r in rows]

    # ---- staging ('btfs add') -----------------------------------------------------------

    def staged(self, node_id: int) -> Version | None:
        row = self.db.get_row_or_none(
            f"SELECT {_VSEL} FROM version v WHERE v.node_id=? AND v.snapshot_id IS NULL",
            (node_id,))
        return _version(row) if row else None

    def all_staged(self) -> list[Version]:
        return [_version(r) for r in self.db.query(
            f"SELECT {_VSEL} FROM version v WHERE v.snapshot_id IS NULL ORDER BY v.node_id")]

    def stage(self, node_id: int, meta: Meta) -> None:
        """Replace any earlier staged state of the path by `meta`."""
        self.db.execute("DELETE FROM version WHERE node_id=? AND snapshot_id IS NULL", (node_id,))
        self.add_version(node_id, None, meta)

    def commit_staged(self, version_id: int, snapshot_id: int) -> None:
        node_id = self.db.get_val("SELECT node_id FROM version WHERE id=?", (version_id,))
        self.db.execute("UPDATE version SET snapshot_id=? WHERE id=?", (snapshot_id, version_id))
        self.db.execute("UPDATE node SET head=? WHERE id=?", (version_id, node_id))

    # ---- snapshots --------------------------------------------------------------------

    def begin_snapshot(self, host_id: str, started_ns: int) -> int:
        """A new running snapshot, named by the local time it started (btfs.names), with
        -N, N one more than any taken, for the same second: names are stored (schema v7)
        and never reused while their row lives."""
        from ..names import time_name  # btfs.names imports the catalog's model

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

    def mark_interrupted(self) -> list[int]:
        """Snapshots left 'running' by a dead writer; call only while holding the lock."""
        ids = [r[0] for r in self.db.query("SELECT id FROM snapshot WHERE state='running'")]
        for snapshot_id in ids:
            self.db.execute("UPDATE snapshot SET state='interrupted' WHERE id=?", (snapshot_id,))
        return ids

    def update_snapshot(self, snapshot_id: int, **fields) -> None:
        allowed = set(_SNAP_COLS.split(", ")) - {"id", "host_id", "started_ns"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"bad snapshot fields {sorted(fields)}")
        assignments = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE snapshot SET {assignments} WHERE id=?",
                        (*fields.values(), snapshot_id))

    def snapshots(self, *, forgotten: bool = False) -> list[Snapshot]:
        """The backups, oldest first; with `forgotten`, the ghosts of forgotten ones too."""
        where = "" if forgotten else "WHERE forgotten_ns IS NULL "
        return [Snapshot(*r) for r in self.db.query(
            f"SELECT {_SNAP_COLS} FROM snapshot {where}ORDER BY started_ns, id")]

    def snapshot_names(self) -> dict[int, str]:
        """Snapshot id -> stored name, ghosts included (the names of versions' snapshots)."""
        return dict(self.db.query("SELECT id, name FROM snapshot"))

    def snapshot(self, snapshot_id: int) -> Snapshot:
        try:
            return Snapshot(*self.db.get_row(
                f"SELECT {_SNAP_COLS} FROM snapshot WHERE id=?", (snapshot_id,)))
        except NoSuchRow:
            raise BtfsError(f"no snapshot {snapshot_id}") from None

    def shown_snapshot(self, snapshot_id: int) -> int:
        """`snapshot_id`, or for the ghost of a forgotten one (schema v7) the first kept
        snapshot after it: a ghost's own tree lost what no kept snapshot showed."""
        row = self.db.get_row_or_none(
            "SELECT id FROM snapshot WHERE id >= ? AND forgotten_ns IS NULL ORDER BY id LIMIT 1",
            (snapshot_id,))
        return row[0] if row else snapshot_id

    def latest_snapshot_id(self) -> int | None:
        return self.db.get_val("SELECT max(id) FROM snapshot WHERE forgotten_ns IS NULL")

    def snapshot_at(self, time_ns: int) -> Snapshot | None:
        """The newest snapshot that started at or before `time_ns`."""
        row = self.db.get_row_or_none(
            f"SELECT {_SNAP_COLS} FROM snapshot WHERE started_ns <= ? AND forgotten_ns IS NULL "
            "ORDER BY started_ns DESC, id DESC LIMIT 1", (time_ns,))
        return Snapshot(*row) if row else None

    def count_entries(self, snapshot_id: int) -> int:
        """Paths live at a snapshot: a count over the whole history, for the summary only."""
        return self.db.get_val(
            f"SELECT count(*) FROM node n JOIN version v ON v.id = {_VERSION_AT} "
            "WHERE v.type != 'deleted'", (snapshot_id,))

    # ---- chunks, packs and contents -----------------------------------------------------

    def chunk_id(self, chunk_hash: bytes) -> int | None:
        """The chunk's id, damaged or not (what a content refers to)."""
        row = self.db.get_row_or_none("SELECT id FROM chunk WHERE hash=?", (chunk_hash,))
        return row[0] if row else None

    def sound_chunk_id(self, chunk_hash: bytes) -> int | None:
        """The chunk's id if it is stored and not known damaged: what a backup may reuse."""
        row = self.db.get_row_or_none(
            "SELECT c.id FROM chunk c LEFT JOIN damaged_chunk d ON d.chunk_id = c.id "
            "WHERE c.hash=? AND d.chunk_id IS NULL", (chunk_hash,))
        return row[0] if row else None

    def stored_chunks(self, hashes: list[bytes]) -> set[bytes]:
        """Which of `hashes` (a few dozen: one query's parameters) are in the catalog and
        not known damaged: a damaged chunk met again is stored afresh (schema v6)."""
        if not hashes:
            return set()
        marks = ",".join("?" * len(hashes))
        # One probe of damaged_chunk's primary key per chunk found (the table is empty
        # but after a check found damage).
        return {r[0] for r in self.db.query(
            "SELECT c.hash FROM chunk c LEFT JOIN damaged_chunk d ON d.chunk_id = c.id "
            f"WHERE c.hash IN ({marks}) AND d.chunk_id IS NULL", hashes)}

    def add_pack(self, name: str, size: int, chunks: list[NewChunk], created_ns: int
                 ) -> dict[bytes, int]:
        """Record a pack that is durable in the vault; returns chunk hash -> chunk id.

        A chunk that is known damaged keeps its row and id: the row is pointed at its new
        copy in this pack and its damaged mark goes, which heals every content (and so
        every snapshot) that uses it at once."""
        self.db.execute("INSERT INTO pack (name, size, chunks, created_ns) VALUES (?, ?, ?, ?)",
                        (name, size, len(chunks), created_ns))
        pack_id = self.db.last_rowid()
        damaged = self.damaged_chunks()
        healed: dict[bytes, int] = {}
        if damaged:
            by_hash = {h: cid for cid, h in damaged.items()}
            for c in chunks:
                cid = by_hash.get(c.hash)
                if cid is None:
                    continue
                self.db.execute("UPDATE chunk SET pack_id=?, offset=?, stored_len=? WHERE id=?",
                                (pack_id, c.offset, c.stored_len, cid))
                self.db.execute("DELETE FROM damaged_chunk WHERE chunk_id=?", (cid,))
                healed[c.hash] = cid
                log.info("chunk %s healed: stored again in pack %s", c.hash.hex()[:16],
                         name[:12])
            chunks = [c for c in chunks if c.hash not in healed]
        # Ids given here, so the rows go in as a few multi-row statements (see db.py).
        first = (self.db.get_val("SELECT max(id) FROM chunk") or 0) + 1
        if chunks:
            self.db.run_rows("INSERT INTO chunk (id, hash, size, pack_id, offset, stored_len) "
                             "VALUES {rows}",
                             [(first + i, c.hash, c.size, pack_id, c.offset, c.stored_len)
                              for i, c in enumerate(chunks)])
        return {**{c.hash: first + i for i, c in enumerate(chunks)}, **healed}

    # ---- damaged chunks (schema v6) -----------------------------------------------------

    def damaged_chunks(self) -> dict[int, bytes]:
        """chunk id -> hash of every chunk known damaged (few: only what checks found)."""
        return {r[0]: r[1] for r in self.db.query(
            "SELECT c.id, c.hash FROM damaged_chunk d JOIN chunk c ON c.id = d.chunk_id")}

    def damaged_problems(self) -> list[tuple[int, str]]:
        """(chunk id, the problem a check recorded) of every chunk known damaged."""
        return [(r[0], r[1]) for r in self.db.query(
            "SELECT chunk_id, problem FROM damaged_chunk ORDER BY chunk_id")]

    def record_damage(self, damaged: list[tuple[int, str, str]], sound: list[tuple[int, str]],
                      found_ns: int) -> int:
        """What a check found: `damaged` (chunk id, pack name, problem) are marked,
        `sound` (chunk id, pack name) that verified are unmarked; each only while the
        chunk still lies in that pack (a backup may have healed it since the check read
        it). Returns how many chunks were newly marked."""
        before = self.db.get_val("SELECT count(*) FROM damaged_chunk")
        for chunk_id, pack, problem in damaged:
            self.db.execute(
                "INSERT OR IGNORE INTO damaged_chunk (chunk_id, found_ns, problem) "
                "SELECT c.id, ?, ? FROM chunk c JOIN pack p ON p.id = c.pack_id "
                "WHERE c.id = ? AND p.name = ?", (found_ns, problem, chunk_id, pack))
        after = self.db.get_val("SELECT count(*) FROM damaged_chunk")
        for chunk_id, pack in sound:
            self.db.execute(
                "DELETE FROM damaged_chunk WHERE chunk_id = ? AND chunk_id IN ("
                "SELECT c.id FROM chunk c JOIN pack p ON p.id = c.pack_id WHERE p.name = ?)",
                (chunk_id, pack))
        return after - before

    def content_id(self, content_digest: bytes) -> int | None:
        row = self.db.get_row_or_none("SELECT id FROM content WHERE digest=?",
                                      (content_digest,))
        return row[0] if row else None

    def add_content(self, content_digest: bytes, size: int, chunk_ids: Iterable[int]) -> int:
        """The id of this content, added if new: one statement in the common (new) case,
        since the backup calls this for every file it reads."""
        chunk_ids = list(chunk_ids)
        row = self.db.get_row_or_none(
            "INSERT INTO content (digest, size, chunks) VALUES (?, ?, ?) "
            "ON CONFLICT(digest) DO NOTHING RETURNING id",
            (content_digest, size, pack_ids(chunk_ids)))
        if row is None:
            return self.content_id(content_digest)
        if chunk_ids:
            self.db.run_rows("INSERT INTO content_chunk (chunk_id, content_id) VALUES {rows}",
                             [(chunk_id, row[0]) for chunk_id in set(chunk_ids)])
        return row[0]

    def content(self, content_id: int) -> Content:
        cid, content_digest, size, blob = self.db.get_row(
            "SELECT id, digest, size, chunks FROM content WHERE id=?", (content_id,))
        return Content(cid, content_digest, size, unpack_ids(blob))

    def content_refs(self, content_id: int) -> list[ChunkRef]:
        """Where each chunk of a file's content lives, in file order."""
        return self.chunk_refs(self.content(content_id).chunk_ids)

    def contents_refs(self, content_ids: Iterable[int]) -> dict[int, list[ChunkRef]]:
        """`content_refs` of many contents (a directory's files, for restore) in a few
        queries: one per 500 contents and one per 500 distinct chunks."""
        distinct = list(set(content_ids))
        chunks: dict[int, tuple[int, ...]] = {}
        for i in range(0, len(distinct), 500):  # under SQLite's limit on parameters
            batch = distinct[i:i + 500]
            for cid, blob in self.db.query(
                    f"SELECT id, chunks FROM content WHERE id IN ({','.join('?' * len(batch))})",
                    batch):
                chunks[cid] = unpack_ids(blob)
        missing = [cid for cid in distinct if cid not in chunks]
        if missing:
            raise NoSuchRow(f"content {missing[0]}")
        return self._refs_of(chunks)

    def _refs_of(self, chunk_lists: dict[int, tuple[int, ...]]) -> dict[int, list[ChunkRef]]:
        """chunk_refs of several lists of chunk ids in one go, under the same keys."""
        refs = iter(self.chunk_refs(i for ids in chunk_lists.values() for i in ids))
        return {key: [next(refs) for _ in ids] for key, ids in chunk_lists.items()}

    def chunk_refs(self, chunk_ids: Iterable[int]) -> list[ChunkRef]:
        """Where each chunk lives, in the order given (a chunk may repeat in a file): one
        query per 500 distinct chunks, not one per chunk."""
        ids = list(chunk_ids)
        found: dict[int, ChunkRef] = {}
        distinct = list(set(ids))
        for i in range(0, len(distinct), 500):  # under SQLite's limit on parameters
            batch = distinct[i:i + 500]
            for r in self.db.query(
                    "SELECT c.id, c.hash, c.size, p.name, c.offset, c.stored_len FROM chunk c "
                    f"JOIN pack p ON p.id = c.pack_id WHERE c.id IN ({','.join('?' * len(batch))})",
                    batch):
                found[r[0]] = ChunkRef(*r[1:])
        try:
            return [found[i] for i in ids]
        except KeyError as e:
            raise NoSuchRow(f"chunk {e.args[0]}") from None

    # ---- check --------------------------------------------------------------------------

    def packs(self) -> Iterator[tuple[str, int]]:
        return ((r[0], r[1]) for r in self.db.query("SELECT name, size FROM pack ORDER BY name"))

    def pack_chunk_ids(self, pack_name: str) -> set[int]:
        return {c[0] for c in self.pack_chunks(pack_name)}

    def pack_chunks(self, pack_name: str) -> list[tuple[int, bytes, int, int, int]]:
        """(chunk id, hash, size, offset, stored_len) of every chunk in a pack, by offset."""
        return [tuple(r) for r in self.db.query(
            "SELECT c.id, c.hash, c.size, c.offset, c.stored_len FROM chunk c "
            "JOIN pack p ON p.id = c.pack_id WHERE p.name=? ORDER BY c.offset", (pack_name,))]

    def integrity_problems(self) -> list[str]:
        """Catalog-internal inconsistencies, as sentences; empty when all is well."""
        problems = []
        for (message,) in self.db.query("PRAGMA integrity_check"):
            if message != "ok":
                problems.append(f"sqlite: {message}")
        for row in self.db.query("PRAGMA foreign_key_check"):
            problems.append(f"dangling reference in {row[0]} row {row[1]} to {row[2]}")
        checks = [
            ("versions of type 'file' without content",
             "SELECT count(*) FROM version WHERE type='file' AND content_id IS NULL"),
            ("nodes whose head is not their newest version",
             "SELECT count(*) FROM node n WHERE n.head IS NOT ("
             "SELECT id FROM version WHERE node_id=n.id AND snapshot_id IS NOT NULL "
             "ORDER BY snapshot_id DESC LIMIT 1)"),
        ]
        for label, sql in checks:
            if n := self.db.get_val(sql):
                problems.append(f"{label}: {n:,}")
        for cid, size, blob in self.db.query("SELECT id, size, chunks FROM content"):
            ids = unpack_ids(blob)
            total = 0
            for chunk_id in ids:
                row = self.db.get_row_or_none("SELECT size FROM chunk WHERE id=?", (chunk_id,))
                if row is None:
                    problems.append(f"content {cid} refers to missing chunk {chunk_id}")
                    break
                total += row[0]
            else:
                if total != size:
                    problems.append(f"content {cid} has size {size} but its chunks hold {total}")
        return problems

    def paths_using_chunks(self, chunk_ids: set[int], limit: int = 1000) -> list[tuple[bytes, int]]:
        """(path, snapshot id) of versions whose content includes any of `chunk_ids`."""
        affected = []
        for cid, blob in self.db.query("SELECT id, chunks FROM content"):
            if chunk_ids.intersection(unpack_ids(blob)):
                for node_id, snapshot_id in self.db.query(
                        "SELECT node_id, snapshot_id FROM version WHERE content_id=?", (cid,)):
                    affected.append((self.node_path(node_id), snapshot_id))
                    if len(affected) >= limit:
                        return affected
        return affected

    def children_rows_page(self, parent: int, snapshot_id: int, after_id: int, limit: int
                           ) -> list[tuple]:
        """Like children_at, in node id order from `after_id` on, as plain rows: the mount's
        readdir pages, where building three records per entry cost as much as the query
        itself. Rows are (node id, name, version id,
        version's snapshot id, type, size, mode, uid, gid, atime_ns, mtime_ns, ctime_ns,
        ino, nlink, xattrs)."""
        return self.db.query(
            "SELECT n.id, n.name, v.id, v.snapshot_id, v.type, v.size, v.mode, v.uid, v.gid, "
            "v.atime_ns, v.mtime_ns, v.ctime_ns, v.ino, v.nlink, v.xattrs "
            "FROM node n INDEXED BY node_by_parent_id "
            f"JOIN version v ON v.id = {_VERSION_AT} "
            "WHERE n.parent = ? AND n.id > ? AND v.type != 'deleted' ORDER BY n.id LIMIT ?",
            (snapshot_id, parent, after_id, limit)).fetchall()

    def has_xattrs(self) -> bool:
        """Whether any recorded version carries extended attributes (one index probe)."""
        return self.db.get_row_or_none(
            "SELECT 1 FROM version INDEXED BY version_with_xattrs "
            "WHERE xattrs IS NOT NULL LIMIT 1") is not None

    def file_chunk_refs(self, version_id: int) -> list[ChunkRef] | None:
        """Where each chunk of a file version's content lives, in file order; None if the
        version is not a file. The mount's open, in two queries instead of 2 + chunks."""
        row = self.db.get_row_or_none(
            "SELECT v.type, c.chunks FROM version v LEFT JOIN content c ON c.id = v.content_id "
            "WHERE v.id = ?", (version_id,))
        if row is None or row[0] != "file":
            return None
        if row[1] is None:
            raise NoSuchRow(f"content of version {version_id}")
        return self.chunk_refs(unpack_ids(row[1]))

    def file_chunk_refs_from(self, version_id: int, count: int, max_chunks: int
                             ) -> dict[int, list[ChunkRef]]:
        """file_chunk_refs of the file versions among the `count` version ids from
        `version_id` on, in two queries: files opened in directory order (cp -a, tar) are
        mostly versions a backup wrote one after another. `version_id` itself is always
        in (if it is a file version with content); the others only while all their
        chunks add up to at most `max_chunks`."""
        contents: dict[int, tuple[int, ...]] = {}
        total = 0
        for vid, chunks in self.db.query(
                "SELECT v.id, c.chunks FROM version v JOIN content c ON c.id = v.content_id "
                "WHERE v.id >= ? AND v.id < ? AND v.type = 'file' ORDER BY v.id",
                (version_id, version_id + count)):
            ids = unpack_ids(chunks)
            if vid != version_id and total + len(ids) > max_chunks:
                continue
            contents[vid] = ids
            total += len(ids)
        return self._refs_of(contents)

    def chunks_after(self, chunk_hash: bytes, max_bytes: int) -> list[ChunkRef]:
        """The chunks stored after `chunk_hash` in its pack, in pack order, until their raw
        sizes add up to `max_bytes`: the mount's read-ahead along a pack (files read in
        directory order were mostly stored one after another)."""
        refs, total = [], 0
        for r in self.db.query(
                "SELECT c.hash, c.size, p.name, c.offset, c.stored_len FROM chunk c "
                "JOIN pack p ON p.id = c.pack_id "
                "WHERE c.pack_id = (SELECT pack_id FROM chunk WHERE hash = ?) "
                "AND c.id > (SELECT id FROM chunk WHERE hash = ?) ORDER BY c.id",
                (chunk_hash, chunk_hash)):
            refs.append(ChunkRef(*r))
            total += r[1]
            if total >= max_bytes:
                break
        return refs
