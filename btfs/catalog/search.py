"""Questions across the whole history: which paths match a name, what changed between two
snapshots, what changed below a directory. The SQL of `btfs find`, `btfs diff` and the
folder `btfs log`; btfs.engine.browse turns its rows into answers.

Read-only: never writes, so it runs on a reader's connection beside a running backup.
Every query answers from indexes the catalog already keeps up to date (schema.py):
node's rows for names, version_by_node for a path's versions, version_by_snapshot for
what a range of snapshots recorded. Rows come back as named tuples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import NamedTuple

from .db import Database
from .schema import ROOT

log = logging.getLogger(__name__)


class FoundRow(NamedTuple):
    """One version of a path whose name matched (find)."""

    node_id: int
    parent: int
    name: bytes
    snapshot_id: int
    type: str
    size: int
    digest: bytes | None  # of the content, files only


class State(NamedTuple):
    """What diff compares of a path at one snapshot."""

    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    content_id: int | None
    target: bytes | None
    xattrs: bytes | None


class ChangedRow(NamedTuple):
    """A path recorded in a range of snapshots, with its state before and after (diff)."""

    node_id: int
    parent: int
    name: bytes
    before: State | None  # None: no version yet at the earlier snapshot
    after: State


class ByFileChild(NamedTuple):
    """A child path in a by-file listing, with its newest version that is not a deletion
    (None fields when it has none up to the snapshot asked)."""

    node_id: int
    name: bytes
    snapshot_id: int | None
    type: str | None
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    nlink: int
    size: int


class ByFileNode(NamedTuple):
    """What a by-file directory's listing needs of its own path."""

    name: bytes
    has_children: bool  # ever: then it lists its children, else its versions
    head_type: str | None  # of its newest version (DELETED: gone from the newest backup)
    head_snapshot: int | None


class SubtreeChange(NamedTuple):
    """A version below a directory and what it did to its path (folder log)."""

    snapshot_id: int
    node_id: int
    change: str  # 'added', 'modified' or 'deleted'


_STATE = ("type, size, mode, uid, gid, mtime_ns, content_id, target, xattrs")
_STATE_WIDTH = len(State._fields)
# What a version does to its path, from its type and the type of the version before it.
# A directory's new version (its mtime moves whenever a child comes or goes) is not a
# change of its own: the children's versions say what happened.
_CHANGE = ("CASE WHEN type = 'deleted' THEN 'deleted' "
           "WHEN before IS NULL OR before = 'deleted' THEN 'added' "
           "WHEN type = 'dir' AND before = 'dir' THEN NULL ELSE 'modified' END")
# The subtree's nodes first, then each one's versions by version_by_node (CROSS JOIN:
# left to itself the planner scans every version and probes the subtree for each); the
# type before each version by one more seek, which is several times cheaper than lag()
# over the subtree's versions (a window sorts them all first).
_SUBTREE = ("WITH RECURSIVE sub(id) AS (SELECT id FROM node WHERE parent = ? "
            "UNION ALL SELECT n.id FROM node n INDEXED BY node_by_parent_id "
            "JOIN sub ON n.parent = sub.id), "
            "steps AS (SELECT v.snapshot_id, v.node_id, v.type, (SELECT p.type FROM version p "
            "WHERE p.node_id = v.node_id AND p.snapshot_id < v.snapshot_id "
            "ORDER BY p.snapshot_id DESC LIMIT 1) AS before "
            "FROM sub CROSS JOIN version v ON v.node_id = sub.id WHERE v.snapshot_id IS NOT NULL)")


class HistorySearch:
    """Read-only queries over a catalog's Database (Catalog.db)."""

    def __init__(self, db: Database):
        self.db = db
        self._paths: dict[int, bytes] = {ROOT: b""}  # node id -> path, for directories

    def named(self, name_glob: str) -> Iterator[FoundRow]:
        """Every committed version of every path whose last component matches
        `name_glob` (SQLite GLOB: * ? [...] [^...]), by node, oldest version first.

        A scan of node's rows: names are short and GLOB runs in SQLite's C, so even a
        million paths take a fraction of a second, and any pattern (`*report*`, not only
        a prefix) is served without a second index the backup would have to keep. The
        CAST: SQLite's GLOB matches no BLOB, and names are BLOBs (raw bytes); it does not
        check the bytes, so names that are not UTF-8 still match byte for byte."""
        for row in self.db.query(
                "SELECT n.id, n.parent, n.name, v.snapshot_id, v.type, v.size, c.digest "
                "FROM node n JOIN version v ON v.node_id = n.id "
                "LEFT JOIN content c ON c.id = v.content_id "
                "WHERE CAST(n.name AS TEXT) GLOB ? AND v.snapshot_id IS NOT NULL "
                "ORDER BY n.id, v.snapshot_id", (name_glob,)):
            yield FoundRow(*row)

    def changed_between(self, after: int, upto: int) -> Iterator[ChangedRow]:
        """Every path with a version in a snapshot of (after, upto], with its state as
        of `after` and as of `upto` (the tree-at-S rule): what version_by_snapshot holds
        for the range, plus two seeks on version_by_node per path."""
        pick = ("(SELECT id FROM version WHERE node_id = c.node_id AND snapshot_id <= ? "
                "ORDER BY snapshot_id DESC LIMIT 1)")
        cols = ", ".join(f"a.{c}" for c in _STATE.split(", ")) + ", " + ", ".join(
            f"b.{c}" for c in _STATE.split(", "))
        for row in self.db.query(
                "WITH changed AS (SELECT DISTINCT node_id FROM version INDEXED BY "
                "version_by_snapshot WHERE snapshot_id > ? AND snapshot_id <= ?), "
                f"ends AS (SELECT c.node_id, {pick} AS va, {pick} AS vb FROM changed c) "
                f"SELECT e.node_id, n.parent, n.name, a.id, {cols} FROM ends e "
                "JOIN node n ON n.id = e.node_id "
                "LEFT JOIN version a ON a.id = e.va JOIN version b ON b.id = e.vb "
                "ORDER BY e.node_id", (after, upto, after, upto)):
            before = State(*row[4:4 + _STATE_WIDTH]) if row[3] is not None else None
            yield ChangedRow(*row[:3], before, State(*row[4 + _STATE_WIDTH:]))

    def subtree_counts(self, node_id: int) -> list[tuple[int, int, int, int]]:
        """(snapshot id, added, modified, deleted) of every snapshot in which a path
        below `node_id` changed, oldest first."""
        return [tuple(r) for r in self.db.query(
            f"{_SUBTREE}, kinds AS (SELECT snapshot_id, {_CHANGE} AS change FROM steps) "
            "SELECT snapshot_id, sum(change = 'added'), sum(change = 'modified'), "
            "sum(change = 'deleted') FROM kinds WHERE change IS NOT NULL "
            "GROUP BY snapshot_id ORDER BY snapshot_id", (node_id,))]

    def subtree_changes(self, node_id: int) -> Iterator[SubtreeChange]:
        """Each change below `node_id`, by snapshot then node id."""
        for row in self.db.query(
                f"{_SUBTREE} SELECT snapshot_id, node_id, {_CHANGE} AS change FROM steps "
                "WHERE change IS NOT NULL ORDER BY snapshot_id, node_id", (node_id,)):
            yield SubtreeChange(*row)

    # ---- the mount's by-file listings (btfs.fuse.tree) ------------------------------

    def by_file_children(self, parent: int, upto: int, after: int, limit: int
                         ) -> list[ByFileChild]:
        """Children of `parent` in node id order from `after` on, each with its newest
        version that is not a deletion in snapshots <= `upto`: a by-file directory's page
        in one query, where one per child made `find` over by-file wait on the catalog."""
        new = tuple.__new__  # once per entry listed: a third cheaper than ByFileChild(*r)
        return [new(ByFileChild, r) for r in self.db.query(
            "SELECT n.id, n.name, v.snapshot_id, v.type, v.mode, v.uid, v.gid, v.atime_ns, "
            "v.mtime_ns, v.ctime_ns, v.nlink, v.size FROM node n INDEXED BY node_by_parent_id "
            "LEFT JOIN version v ON v.id = (SELECT id FROM version WHERE node_id = n.id "
            "AND snapshot_id <= ? AND type != 'deleted' ORDER BY snapshot_id DESC LIMIT 1) "
            "WHERE n.parent = ? AND n.id > ? ORDER BY n.id LIMIT ?",
            (upto, parent, after, limit))]

    def by_file_node(self, node_id: int) -> ByFileNode:
        """Name, kind and newest version of a by-file directory's path, in one query."""
        name, has_children, head_type, head_snapshot = self.db.get_row(
            "SELECT n.name, EXISTS (SELECT 1 FROM node c INDEXED BY node_by_parent_id "
            "WHERE c.parent = n.id), v.type, v.snapshot_id FROM node n "
            "LEFT JOIN version v ON v.id = n.head WHERE n.id = ?", (node_id,))
        return ByFileNode(name, bool(has_children), head_type, head_snapshot)

    def path(self, node_id: int) -> bytes:
        if node_id == ROOT:
            return b"/"
        parent, name = self.db.get_row("SELECT parent, name FROM node WHERE id=?", (node_id,))
        return self.parent_path(parent) + b"/" + name

    def parent_path(self, node_id: int) -> bytes:
        """The path of a directory, b'' for the root (so children join with '/')."""
        known = self._paths.get(node_id)
        if known is None:
            parent, name = self.db.get_row("SELECT parent, name FROM node WHERE id=?",
                                           (node_id,))
            known = self._paths[node_id] = self.parent_path(parent) + b"/" + name
        return known
