"""History: the reads the mount, the CLI and the engine make of paths, versions and snapshots.

Read-only: nothing here writes, opens a transaction or sends a writer's queued rows. During
a backup, the reads that must see rows the writer has queued go through the writer
(BackupWriter.head, .live_children, .child_node, .node_for_path), which sends its queue
first. Rows come back as records from `model`, never as positional tuples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..errors import BtfsError
from .db import Database, NoSuchRow
from .model import DELETED, ChildRow, Entry, LiveChild, Meta, Snapshot, Version
from .schema import ROOT

log = logging.getLogger(__name__)

VCOLS = ("type, size, mode, uid, gid, atime_ns, mtime_ns, ctime_ns, btime_ns, ino, nlink, "
         "target, xattrs, content_id")
_VSEL = "v.id, v.node_id, v.snapshot_id, " + ", ".join("v." + c for c in VCOLS.split(", "))
# The version of node n as of a snapshot (bound to the one ?): the tree-at-S rule, one
# seek on version_by_node per node.
VERSION_AT = ("(SELECT id FROM version WHERE node_id = n.id AND snapshot_id <= ? "
              "ORDER BY snapshot_id DESC LIMIT 1)")
# Version rows are written as (*meta[:-1], content_id): the columns are Meta's fields.
assert tuple(VCOLS.split(", ")) == Meta._fields
SNAPSHOT_COLS = ("id, host_id, started_ns, finished_ns, state, files_new, files_changed, "
                 "files_deleted, entries, bytes_read, bytes_added, errors, name, forgotten_ns")
_CHILD_ROW = (
    "SELECT n.id, n.name, v.id, v.snapshot_id, v.type, v.size, v.mode, v.uid, v.gid, "
    "v.atime_ns, v.mtime_ns, v.ctime_ns, v.ino, v.nlink, v.xattrs "
    "FROM node n INDEXED BY node_by_parent_id "
    f"JOIN version v ON v.id = {VERSION_AT} "
    "WHERE n.parent = ? AND n.id > ? AND v.type != 'deleted' ORDER BY n.id LIMIT ?")


def _version(row) -> Version:
    return Version(row[0], row[1], row[2], Meta(*row[3:17]))


class History:
    """Paths (nodes), their versions and the snapshots, as records."""

    def __init__(self, db: Database):
        self.db = db

    # ---- meta ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.get_row_or_none("SELECT value FROM meta WHERE key=?", (key,))
        return row[0] if row else None

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "did anything change?"."""
        return self.db.get_val("PRAGMA data_version")

    # ---- nodes (the path tree) ----------------------------------------------------------

    def child_node(self, parent: int, name: bytes) -> int | None:
        row = self.db.get_row_or_none("SELECT id FROM node WHERE parent=? AND name=?",
                                      (parent, name))
        return row[0] if row else None

    def node_for_path(self, path: bytes) -> int | None:
        """The node of an absolute path, None if btfs never saw it."""
        node = ROOT
        for name in path.split(b"/"):
            if not name:
                continue
            child = self.child_node(node, name)
            if child is None:
                return None
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
        """(node id, name) of every child path ever seen under `parent`, by name."""
        return [(r[0], r[1]) for r in self.db.query(
            "SELECT id, name FROM node WHERE parent=? ORDER BY name", (parent,))]

    def node_children_page(self, parent: int, after_id: int, limit: int
                           ) -> list[tuple[int, bytes]]:
        """(node id, name) of every child path ever seen, in node id order from `after_id`
        on (the mount's by-file pages)."""
        return [(r[0], r[1]) for r in self.db.query(
            "SELECT id, name FROM node INDEXED BY node_by_parent_id "
            "WHERE parent=? AND id>? ORDER BY id LIMIT ?", (parent, after_id, limit))]

    def node_has_children(self, node_id: int) -> bool:
        return self.db.get_row_or_none("SELECT 1 FROM node WHERE parent=? LIMIT 1",
                                       (node_id,)) is not None

    # ---- versions -----------------------------------------------------------------------

    def head(self, node_id: int) -> Version | None:
        """A path's newest committed version (deletions included)."""
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
        new = tuple.__new__  # cheaper than LiveChild(*...), once per entry per backup
        return {r[0]: new(LiveChild, r[1:]) for r in rows}

    def live_children_named(self, parent: int, names: Iterable[bytes]
                            ) -> dict[bytes, LiveChild]:
        """`live_children` of only these names: a walk on its way to a few subtrees (btfs
        watch) seeks each by name instead of reading the whole directory's listing."""
        new = tuple.__new__
        found = {}
        for name in names:
            row = self.db.get_row_or_none(
                "SELECT n.id, v.type, v.size, v.mtime_ns, v.ctime_ns, v.ino "
                "FROM node n JOIN version v ON v.id = n.head "
                "WHERE n.parent=? AND n.name=? AND v.type != 'deleted'", (parent, name))
            if row is not None:
                found[name] = new(LiveChild, row)
        return found

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
        """The state of a path at a snapshot (None if it did not exist yet, or was deleted)."""
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
            f"SELECT n.id, n.name, {_VSEL} FROM node n JOIN version v ON v.id = {VERSION_AT} "
            "WHERE n.parent = ? AND v.type != 'deleted' ORDER BY n.name", (snapshot_id, parent))
        return [Entry(r[0], r[1], _version(r[2:])) for r in rows]

    def children_page(self, parent: int, snapshot_id: int, after_id: int, limit: int
                      ) -> list[ChildRow]:
        """Like children_at, in node id order from `after_id` on, as flat rows: the mount's
        readdir pages (ChildRow says why flat)."""
        new = tuple.__new__  # a named row for the price of a tuple
        return [new(ChildRow, r) for r in self.db.query(
            _CHILD_ROW, (snapshot_id, parent, after_id, limit))]

    def child_at(self, parent: int, name: bytes, snapshot_id: int) -> Entry | None:
        node_id = self.child_node(parent, name)
        if node_id is None:
            return None
        version = self.version_at(node_id, snapshot_id)
        return Entry(node_id, name, version) if version else None

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

    def versions_of(self, node_id: int) -> list[Version]:
        """Every committed version of a path, oldest first (deletions included)."""
        rows = self.db.query(
            f"SELECT {_VSEL} FROM version v WHERE v.node_id=? AND v.snapshot_id IS NOT NULL "
            "ORDER BY v.snapshot_id", (node_id,))
        return [_version(r) for r in rows]

    def has_xattrs(self) -> bool:
        """Whether any recorded version carries extended attributes (one index probe)."""
        return self.db.get_row_or_none(
            "SELECT 1 FROM version INDEXED BY version_with_xattrs "
            "WHERE xattrs IS NOT NULL LIMIT 1") is not None

    # ---- staged versions ('btfs add') -----------------------------------------------------

    def staged(self, node_id: int) -> Version | None:
        row = self.db.get_row_or_none(
            f"SELECT {_VSEL} FROM version v WHERE v.node_id=? AND v.snapshot_id IS NULL",
            (node_id,))
        return _version(row) if row else None

    def all_staged(self) -> list[Version]:
        return [_version(r) for r in self.db.query(
            f"SELECT {_VSEL} FROM version v WHERE v.snapshot_id IS NULL ORDER BY v.node_id")]

    # ---- snapshots ----------------------------------------------------------------------

    def snapshots(self, *, forgotten: bool = False) -> list[Snapshot]:
        """The backups, oldest first; with `forgotten`, the ghosts of forgotten ones too."""
        where = "" if forgotten else "WHERE forgotten_ns IS NULL "
        return [Snapshot(*r) for r in self.db.query(
            f"SELECT {SNAPSHOT_COLS} FROM snapshot {where}ORDER BY started_ns, id")]

    def snapshot_names(self) -> dict[int, str]:
        """Snapshot id -> stored name, ghosts included (the names of versions' snapshots)."""
        return dict(self.db.query("SELECT id, name FROM snapshot"))

    def snapshot(self, snapshot_id: int) -> Snapshot:
        try:
            return Snapshot(*self.db.get_row(
                f"SELECT {SNAPSHOT_COLS} FROM snapshot WHERE id=?", (snapshot_id,)))
        except NoSuchRow:
            raise BtfsError(f"no snapshot {snapshot_id}") from None

    def shown_snapshot(self, snapshot_id: int) -> int:
        """`snapshot_id`, or for the ghost of a forgotten one the first kept snapshot after
        it: a ghost's own tree lost what no kept snapshot showed."""
        row = self.db.get_row_or_none(
            "SELECT id FROM snapshot WHERE id >= ? AND forgotten_ns IS NULL ORDER BY id LIMIT 1",
            (snapshot_id,))
        return row[0] if row else snapshot_id

    def latest_snapshot_id(self) -> int | None:
        return self.db.get_val("SELECT max(id) FROM snapshot WHERE forgotten_ns IS NULL")

    def snapshot_at(self, time_ns: int) -> Snapshot | None:
        """The newest snapshot (not forgotten) that started at or before `time_ns`."""
        row = self.db.get_row_or_none(
            f"SELECT {SNAPSHOT_COLS} FROM snapshot WHERE started_ns <= ? AND forgotten_ns IS NULL "
            "ORDER BY started_ns DESC, id DESC LIMIT 1", (time_ns,))
        return Snapshot(*row) if row else None

    def count_entries(self, snapshot_id: int) -> int:
        """Paths live at a snapshot: a count over the whole history, for the summary only."""
        return self.db.get_val(
            f"SELECT count(*) FROM node n JOIN version v ON v.id = {VERSION_AT} "
            "WHERE v.type != 'deleted'", (snapshot_id,))
