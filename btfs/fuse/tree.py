"""The pure model of the mount: what /by-time and /by-file look like, from the catalog.

No pyfuse3 here (ops.py adapts this to FUSE), so every rule is testable without a kernel.
Nothing of the history is loaded at mount time: each lookup, getattr and readdir page is an
indexed catalog query. Only the list of snapshots is held (one small row per backup, needed
for the by-time names), and reloaded when the catalog changes.

    /by-time/<YYYY-MM-DD_HHMMSS[-N]>/<absolute path>   the tree at that backup
    /by-time/latest -> <newest name>
    /by-file/<absolute path>/                          a directory: its children ever seen;
                                                      a file or symlink: one entry per
                                                      version, <stem>.<backup><suffix>
                                                      (the stem shortened to fit 255
                                                      bytes: btfs.names.version_name)

Inode numbers come from catalog row ids, never hashes (which collide):
  - a file or symlink version: its version id. The same unchanged file in 100 snapshots,
    and its entry in by-file, is one inode, so the kernel caches its pages once. Files
    that were hard links of each other at a backup (same st_ino, nlink > 1, recorded in
    the same snapshot) share the inode of the group's first version;
  - a directory inside a snapshot: (snapshot id, node id), since its listing depends on
    the snapshot;
  - a by-file directory: its node id.
A path that was a directory at some time and a file at another shows in by-file as a
directory (its children); its file versions are in by-time.

A path that is gone from the newest backup (its newest version is a deletion) keeps its
by-file directory, so by-file still mirrors every path ever seen, and that directory ends
with an empty read-only file `(deleted in <backup>)`: any file manager shows it beside the
versions (or children), and the name says when. Renaming the directory instead (`NAME
(deleted)`) would break the mirroring and give one directory inode two names over time.

Snapshots still being written ('running') are hidden; interrupted ones are shown (what
they committed is valid), including one whose backup was killed and that the catalog still
calls 'running': the writer lock is free (btfs.engine.running). Not thread-safe: called
from the trio thread only.
"""

from __future__ import annotations

import bisect
import os
import stat
import time
from typing import NamedTuple

from ..catalog import (
    DELETED,
    DIR,
    FILE,
    ROOT,
    SYMLINK,
    Catalog,
    ChildRow,
    ChunkRef,
    Meta,
    Snapshot,
)
from ..catalog.search import ByFileChild, ByFileNode, HistorySearch
from ..engine.meta import decode_xattrs
from ..engine.running import RUNNING, snapshots_now
from ..lock import WriterLock
from ..names import version_name, version_stamp

ROOT_INO = 1  # pyfuse3.ROOT_INODE
BY_TIME_INO = 2
LATEST_INO = 3
LATEST_COOKIE = 1 << 62  # by-time's readdir cookie of `latest`: after every snapshot id

_KIND_SHIFT = 60
_VERSION = 1  # id: version id
_TREE_DIR = 2  # id: snapshot id << 32 | node id
_FILE_DIR = 3  # id: node id
_DELETED_MARK = 4  # id: node id of a deleted path (its `(deleted in ...)` entry)
_NODE_BITS = 32
_SNAP_LIMIT = 1 << (_KIND_SHIFT - _NODE_BITS)

# file_refs loads the refs of up to this many following versions with each miss, as long
# as their chunks number at most REFS_AHEAD_CHUNKS, and keeps at most REFS_AHEAD_KEPT.
REFS_AHEAD = 64
REFS_AHEAD_CHUNKS = 256
REFS_AHEAD_KEPT = 4096

# The cookie of a deleted path's mark: after every node id and snapshot id a by-file
# listing's other entries carry.
MARK_COOKIE = 1 << 62

BY_TIME = b"by-time"
BY_FILE = b"by-file"
LATEST = b"latest"


class NotFound(LookupError):
    """No such inode or name (ENOENT)."""


def version_ino(version_id: int) -> int:
    return (_VERSION << _KIND_SHIFT) | version_id


def tree_dir_ino(snapshot_id: int, node_id: int) -> int:
    if snapshot_id >= _SNAP_LIMIT or node_id >= 1 << _NODE_BITS:
        raise OverflowError("snapshot or node id too large for a directory inode")
    return (_TREE_DIR << _KIND_SHIFT) | (snapshot_id << _NODE_BITS) | node_id


def file_dir_ino(node_id: int) -> int:
    return (_FILE_DIR << _KIND_SHIFT) | node_id


def deleted_mark_name(snapshot_name: str) -> bytes:
    """The entry that marks a deleted path's by-file directory."""
    return f"(deleted in {snapshot_name})".encode()


BY_FILE_INO = file_dir_ino(ROOT)


def split_ino(ino: int) -> tuple[int, int]:
    return ino >> _KIND_SHIFT, ino & ((1 << _KIND_SHIFT) - 1)


def _tree_dir_parts(ident: int) -> tuple[int, int]:
    """(snapshot id, node id) of a directory-in-a-snapshot inode's id part."""
    return ident >> _NODE_BITS, ident & ((1 << _NODE_BITS) - 1)


def is_dir_ino(ino: int) -> bool:
    """Whether an inode number names a directory, from the number alone (no query)."""
    return ino in (ROOT_INO, BY_TIME_INO) or ino >> _KIND_SHIFT in (_TREE_DIR, _FILE_DIR)


class Attr(NamedTuple):
    """What `stat` shows for one entry. A named tuple: readdir builds one per entry, and
    a tuple is built several times faster than a frozen dataclass."""

    ino: int
    mode: int  # with the type bits
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    stable: bool  # never changes (snapshot contents): the kernel may cache it for long
    xattrs: bytes | None = None  # encoded (btfs.engine.meta), for snapshot contents only

    @property
    def blocks(self) -> int:
        """512-byte blocks, as a 4 KiB-block filesystem would allocate (not recorded)."""
        return (self.size + 4095) // 4096 * 8

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class FileContent(NamedTuple):
    """Where a file version's content lives, for an open."""

    refs: list[ChunkRef]
    # The content is exactly as long as the size its attributes show, so the mount may
    # hand it whole to the kernel's page cache (a file that kept changing while a backup
    # read it can disagree; the kernel would take the longer of the two).
    size_as_shown: bool


class Description(NamedTuple):
    """An entry's attributes and its extended attributes, decoded (name -> value)."""

    attr: Attr
    xattrs: dict[bytes, bytes]


def _attr_from_meta(ino: int, meta: Meta, *, stable: bool = True) -> Attr:
    return Attr(ino, meta.mode, meta.nlink, meta.uid, meta.gid, meta.size, meta.atime_ns,
                meta.mtime_ns, meta.ctime_ns, stable, meta.xattrs if stable else None)


def _file_dir(ino: int, kind: str, mode: int, uid: int, gid: int, atime_ns: int,
              mtime_ns: int, ctime_ns: int, nlink: int, size: int) -> Attr:
    """A by-file directory's attributes from its path's newest version (not a deletion):
    a directory's own; a file's or symlink's owner and mtime on a read-only directory."""
    if kind == DIR:
        return Attr(ino, mode, nlink, uid, gid, size, atime_ns, mtime_ns, ctime_ns, False)
    return Attr(ino, stat.S_IFDIR | 0o555, 2, uid, gid, 0, mtime_ns, mtime_ns, mtime_ns, False)


def is_stable(ino: int) -> bool:
    """Snapshot contents (a version, a directory inside a snapshot) never change."""
    return split_ino(ino)[0] in (_VERSION, _TREE_DIR)


class Tree:
    def __init__(self, catalog: Catalog, lock: WriterLock | None = None):
        """`lock`: the catalog's writer lock, asked (never taken) whether a snapshot
        marked running is still being written; without it, running ones stay hidden."""
        self.catalog = catalog
        self.search = HistorySearch(catalog.db)  # by-file pages in one query each
        self.lock = lock
        self._hidden_running = False  # a snapshot marked running is hidden
        self.uid, self.gid = os.getuid(), os.getgid()
        self._data_version: int | None = None
        self.snapshots: list[Snapshot] = []
        self.names: dict[int, str] = {}  # shown snapshots and ghosts (by-file names)
        self.by_name: dict[str, int] = {}  # shown snapshots (by-time)
        self.by_stamp: dict[str, int] = {}  # shown snapshots and ghosts (by-file lookup)
        self._ids: list[int] = []  # shown snapshot ids, ascending: by-time readdir cookies
        self._by_id: dict[int, Snapshot] = {}
        self._ghosts: dict[int, Snapshot] = {}  # forgotten, holding versions by-file shows
        self.horizon = 0  # the newest shown snapshot id: by-file queries stop there
        self._refs_ahead: dict[int, list[ChunkRef]] = {}  # version id -> refs (file_refs)
        self.refresh()

    # ---- the snapshot list -----------------------------------------------------------

    def refresh(self) -> bool:
        """Reload the snapshot list if the catalog changed, or if a hidden running
        snapshot's writer died (a killed backup changes nothing in the catalog); True if
        what by-time shows did. Cheap when nothing changed: one PRAGMA, plus a look at
        the writer lock while a snapshot is hidden."""
        version = self.catalog.history.data_version()
        if version == self._data_version and not (
                self._hidden_running and self.lock is not None and not self.lock.is_held()):
            return False
        snaps = (snapshots_now(self.catalog, self.lock) if self.lock is not None
                 else self.catalog.history.snapshots())
        self._data_version = version  # only once read: a failed read is retried
        self._hidden_running = any(s.state == RUNNING for s in snaps)
        snaps = [s for s in snaps if s.state != RUNNING]
        # Ghosts of forgotten snapshots (schema v7): out of by-time, but the versions they
        # still hold stay in by-file under their names.
        ghosts = {s.id: s for s in self.catalog.history.snapshots(forgotten=True)
                  if s.forgotten_ns is not None}
        if ([(s.id, s.state) for s in snaps] == [(s.id, s.state) for s in self.snapshots]
                and ghosts.keys() == self._ghosts.keys()):
            return False
        self.snapshots = snaps
        self._ghosts = ghosts
        self.by_name = {s.name: s.id for s in snaps}
        self.names = {**{g.id: g.name for g in ghosts.values()},
                      **{s.id: s.name for s in snaps}}
        self.by_stamp = {name: sid for sid, name in self.names.items()}
        self._by_id = {s.id: s for s in snaps}
        self._ids = sorted(self._by_id)
        self.horizon = max(self.names, default=0)
        return True

    def use_catalog(self, catalog: Catalog) -> bool:
        """Answer from `catalog` from now on: another host's copy fetched anew (`btfs mount
        --host` follows that host); True if what by-time shows changed. The new
        connection's data_version says nothing against the old one's, so the snapshot
        list is reloaded; refs loaded ahead came from the old file and are dropped."""
        self.catalog = catalog
        self.search = HistorySearch(catalog.db)
        self._refs_ahead.clear()
        self._data_version = None
        return self.refresh()

    @property
    def latest_name(self) -> str | None:
        return self.names[self.snapshots[-1].id] if self.snapshots else None

    def _visible(self, snapshot_id: int | None) -> bool:
        return snapshot_id in self.names

    # ---- attributes ------------------------------------------------------------------

    def _synthetic_dir(self, ino: int, ns: int | None = None) -> Attr:
        ns = ns if ns is not None else (self.snapshots[-1].started_ns if self.snapshots
                                        else time.time_ns())
        return Attr(ino, stat.S_IFDIR | 0o555, 2, self.uid, self.gid, 0, ns, ns, ns, False)

    def getattr(self, ino: int) -> Attr:
        if ino in (ROOT_INO, BY_TIME_INO):
            return self._synthetic_dir(ino)
        if ino == LATEST_INO:
            target = self.latest_name
            if target is None:
                raise NotFound(ino)
            ns = self.snapshots[-1].started_ns
            return Attr(ino, stat.S_IFLNK | 0o777, 1, self.uid, self.gid, len(target), ns,
                        ns, ns, False)
        kind, ident = split_ino(ino)
        if kind == _VERSION:
            version = self.catalog.history.version_or_none(ident)
            if version is None or version.type == DELETED:
                raise NotFound(ino)
            return _attr_from_meta(ino, version.meta)
        if kind == _TREE_DIR:
            snapshot_id, node_id = _tree_dir_parts(ident)
            if snapshot_id not in self._by_id:
                raise NotFound(ino)
            if node_id == ROOT:
                return self._synthetic_dir(ino, self._snapshot(snapshot_id).started_ns)
            version = self.catalog.history.version_at(node_id, snapshot_id)
            if version is None or version.type != DIR:
                raise NotFound(ino)
            return _attr_from_meta(ino, version.meta)
        if kind == _FILE_DIR:
            return self._file_dir_attr(ident)
        if kind == _DELETED_MARK:
            return self._deleted_mark(ident)[1]
        raise NotFound(ino)

    def _deleted_mark(self, node_id: int) -> tuple[bytes, Attr]:
        """(name, attributes) of a deleted path's mark: an empty read-only file dated by
        the backup that found the path gone. NotFound while the path exists."""
        head = self.catalog.history.head(node_id)
        if head is None or head.type != DELETED or not self._visible(head.snapshot_id):
            raise NotFound(node_id)
        return self._mark(node_id, head.snapshot_id)

    def _mark(self, node_id: int, snapshot_id: int) -> tuple[bytes, Attr]:
        # The deletion may be recorded in a ghost: a kept backup after it still shows it.
        ns = (self._ghosts.get(snapshot_id) or self._snapshot(snapshot_id)).started_ns
        return (deleted_mark_name(self.names[snapshot_id]),
                Attr((_DELETED_MARK << _KIND_SHIFT) | node_id, stat.S_IFREG | 0o444, 1,
                     self.uid, self.gid, 0, ns, ns, ns, False))

    def _snapshot(self, snapshot_id: int) -> Snapshot:
        snap = self._by_id.get(snapshot_id)
        if snap is None:
            raise NotFound(snapshot_id)
        return snap

    def _file_dir_attr(self, node_id: int) -> Attr:
        """A by-file directory: the path's own metadata when it is a directory, else a
        read-only directory dated by its newest version. Changes when backups land."""
        ino = file_dir_ino(node_id)
        if node_id == ROOT:
            return self._synthetic_dir(ino)
        version = self.catalog.history.newest_live_version(node_id, self.horizon)
        if version is not None and not self._visible(version.snapshot_id):
            # Below the horizon but hidden: a backup still running, or one left 'running'
            # by a killed process while the lock is taken again. Rare; take the long way.
            shown = [v for v in self.catalog.history.versions_of(node_id)
                     if v.type != DELETED and self._visible(v.snapshot_id)]
            version = shown[-1] if shown else None
        if version is None:
            raise NotFound(ino)
        m = version.meta
        return _file_dir(ino, version.type, m.mode, m.uid, m.gid, m.atime_ns, m.mtime_ns,
                         m.ctime_ns, m.nlink, m.size)

    # ---- lookup ----------------------------------------------------------------------

    def lookup(self, parent: int, name: bytes) -> Attr:
        if parent == ROOT_INO:
            if name == BY_TIME:
                return self.getattr(BY_TIME_INO)
            if name == BY_FILE:
                return self.getattr(BY_FILE_INO)
            raise NotFound(name)
        if parent == BY_TIME_INO:
            if name == LATEST and self.snapshots:
                return self.getattr(LATEST_INO)
            snapshot_id = self.by_name.get(name.decode(errors="replace"))
            if snapshot_id is None:
                raise NotFound(name)
            return self.getattr(tree_dir_ino(snapshot_id, ROOT))
        kind, ident = split_ino(parent)
        if kind == _TREE_DIR:
            snapshot_id, node_id = _tree_dir_parts(ident)
            entry = self.catalog.history.child_at(node_id, name, snapshot_id)
            if entry is None:
                raise NotFound(name)
            return self._entry_attr(snapshot_id, entry.node_id, entry.version)
        if kind == _FILE_DIR:
            return self._lookup_by_file(ident, name)
        raise NotFound(name)

    def _entry_attr(self, snapshot_id: int, node_id: int, version) -> Attr:
        if version.type == DIR:
            return _attr_from_meta(tree_dir_ino(snapshot_id, node_id), version.meta)
        return self._version_attr(version)

    def _row_attr(self, snapshot_id: int, row: ChildRow) -> Attr:
        """_entry_attr of a History.children_page row, without building records."""
        kind = row.type
        if kind == DIR:
            inode = tree_dir_ino(snapshot_id, row.node_id)
        elif kind == FILE and row.nlink > 1:
            inode = version_ino(self.catalog.history.hardlink_leader(row.snapshot_id, row.ino))
        else:
            inode = version_ino(row.version_id)
        return Attr(inode, row.mode, row.nlink, row.uid, row.gid, row.size, row.atime_ns,
                    row.mtime_ns, row.ctime_ns, True, row.xattrs)

    def _version_attr(self, version) -> Attr:
        """A file or symlink version; hard-link groups share one inode."""
        ident = version.id
        if version.type == FILE and version.meta.nlink > 1:
            ident = self.catalog.history.hardlink_leader(version.snapshot_id, version.meta.ino)
        return _attr_from_meta(version_ino(ident), version.meta)

    def _lookup_by_file(self, node_id: int, name: bytes) -> Attr:
        try:
            return self._lookup_by_file_entry(node_id, name)
        except NotFound:
            if not name.startswith(b"(deleted in "):
                raise
            mark, attr = self._deleted_mark(node_id)
            if name != mark:
                raise
            return attr

    def _lookup_by_file_entry(self, node_id: int, name: bytes) -> Attr:
        if self._is_dir_path(node_id):
            child = self.catalog.history.child_node(node_id, name)
            if child is None:
                raise NotFound(name)
            return self._file_dir_attr(child)
        stamp = version_stamp(self.catalog.history.node_name(node_id), name)
        snapshot_id = self.by_stamp.get(stamp) if stamp is not None else None
        if snapshot_id is None:
            raise NotFound(name)
        version = self.catalog.history.version_at(node_id, snapshot_id)
        if version is None or version.snapshot_id != snapshot_id or version.type not in (
                FILE, SYMLINK):
            raise NotFound(name)
        return self._version_attr(version)

    def _is_dir_path(self, node_id: int) -> bool:
        """In by-file, a path with children (ever) lists them; otherwise its versions."""
        return node_id == ROOT or self.catalog.history.node_has_children(node_id)

    # ---- readdir ---------------------------------------------------------------------

    def readdir(self, ino: int, after: int, limit: int = 256
                ) -> list[tuple[bytes, Attr, int]]:
        """Up to `limit` entries following the one whose cookie is `after` (0: from the
        start), each with the cookie to resume after it. Cookies come from the data
        (node ids; a version's snapshot id; positions in the append-only snapshot list),
        so they stay valid while backups land and are forgotten."""
        if ino == ROOT_INO:
            entries = [(BY_TIME, self.getattr(BY_TIME_INO)),
                       (BY_FILE, self.getattr(BY_FILE_INO))]
            return [(n, a, i + 1) for i, (n, a) in enumerate(entries)][after:after + limit]
        if ino == BY_TIME_INO:
            # Snapshot ids in ascending order, `latest` last: forgetting a snapshot
            # leaves the cookies of the others where they were.
            rows = []
            if after >= LATEST_COOKIE:
                return rows
            for sid in self._ids[bisect.bisect_right(self._ids, after):]:
                if len(rows) == limit:
                    return rows
                snap = self._by_id[sid]
                rows.append((snap.name.encode(),
                             self._synthetic_dir(tree_dir_ino(sid, ROOT), snap.started_ns), sid))
            if self.snapshots and len(rows) < limit:
                rows.append((LATEST, self.getattr(LATEST_INO), LATEST_COOKIE))
            return rows
        kind, ident = split_ino(ino)
        if kind == _TREE_DIR:
            snapshot_id, node_id = _tree_dir_parts(ident)
            return [(row.name, self._row_attr(snapshot_id, row), row.node_id)
                    for row in self.catalog.history.children_page(node_id, snapshot_id, after,
                                                               limit)]
        if kind == _FILE_DIR:
            if after >= MARK_COOKIE:
                return []
            node = self.search.by_file_node(ident) if ident != ROOT else None
            out, ended = self._by_file_page(ident, node, after, limit)
            if (ended and node is not None and node.head_type == DELETED
                    and self._visible(node.head_snapshot)):
                out.append((*self._mark(ident, node.head_snapshot), MARK_COOKIE))
            return out
        raise NotFound(ino)

    def _by_file_page(self, node_id: int, node: ByFileNode | None, after: int, limit: int
                      ) -> tuple[list[tuple[bytes, Attr, int]], bool]:
        """(entries, whether the listing ended) of by-file directory `node_id` (`node`:
        None for by-file/ itself): a page can hold fewer than `limit` entries and still
        not be the last, when some were not shown. One query per page: `find` lists every
        by-file directory, and one query per child made it wait on the catalog."""
        out = []
        if node is None or node.has_children:
            rows = self.search.by_file_children(node_id, self.horizon, after, limit)
            for row in rows:
                attr = self._child_dir_attr(row)
                if attr is not None:
                    out.append((row.name, attr, row.node_id))
            return out, len(rows) < limit
        # Cookie: the version's snapshot id, so each page is one indexed range.
        name = node.name
        rows = self.catalog.history.versions_page(node_id, self.horizon, after, limit)
        for version in rows:
            if self._visible(version.snapshot_id):
                out.append((version_name(name, self.names[version.snapshot_id]),
                            self._version_attr(version), version.snapshot_id))
        return out, len(rows) < limit

    def _child_dir_attr(self, row: ByFileChild) -> Attr | None:
        """A listed child's by-file directory attributes; None when it has no version
        shown yet."""
        if row.snapshot_id is None:
            return None
        if not self._visible(row.snapshot_id):  # rare: see _file_dir_attr
            try:
                return self._file_dir_attr(row.node_id)
            except NotFound:
                return None
        return _file_dir(file_dir_ino(row.node_id), *row[3:])

    # ---- content ---------------------------------------------------------------------

    def _version_of(self, ino: int, kind: str):
        """The file or symlink version an inode names, if it is of `kind`."""
        ino_kind, ident = split_ino(ino)
        version = self.catalog.history.version_or_none(ident) if ino_kind == _VERSION else None
        if version is None or version.type != kind:
            raise NotFound(ino)
        return version

    def readlink(self, ino: int) -> bytes:
        if ino == LATEST_INO:
            if self.latest_name is None:
                raise NotFound(ino)
            return self.latest_name.encode()
        return self._version_of(ino, SYMLINK).meta.target

    def file_refs(self, ino: int) -> FileContent:
        """Where the content of a file version lives, in order.

        One open loads the refs of the next REFS_AHEAD versions too: `cp -a` and `tar`
        open files in directory order, which a backup wrote as consecutive versions, and
        two queries per open were a noticeable part of a `cp -a` out of the mount. A
        loaded entry is used once (most files are opened once); versions never change,
        so it cannot be stale. Those loads hold only versions whose content is as long as
        their recorded size; any other comes from the one-version query, marked so."""
        kind, ident = split_ino(ino)
        if kind == _DELETED_MARK:
            self._deleted_mark(ident)
            return FileContent([], True)  # empty
        if kind != _VERSION:
            raise NotFound(ino)
        refs = self._refs_ahead.pop(ident, None)
        if refs is not None:
            return FileContent(refs, True)
        loaded = self.catalog.chunks.file_chunk_refs_from(ident, REFS_AHEAD, REFS_AHEAD_CHUNKS)
        refs = loaded.pop(ident, None)
        if len(self._refs_ahead) + len(loaded) > REFS_AHEAD_KEPT:
            self._refs_ahead.clear()
        self._refs_ahead.update(loaded)
        if refs is not None:
            return FileContent(refs, True)
        # Not a file version, damaged, or its size disagrees: the one-version query says.
        refs = self.catalog.chunks.file_chunk_refs(ident)
        if refs is None:
            raise NotFound(ino)
        return FileContent(refs, False)

    def chunks_after(self, ref: ChunkRef, max_bytes: int) -> list[ChunkRef]:
        """The chunks stored after `ref` in its pack, up to `max_bytes` of content."""
        return self.catalog.chunks.chunks_after(ref.hash, max_bytes)

    def group_of(self, ref: ChunkRef) -> list[ChunkRef]:
        """The chunks stored at the same place as `ref`: the members of its group."""
        return self.catalog.chunks.group_members(ref)

    # ---- describing entries -----------------------------------------------------------

    def describe(self, ino: int) -> Description:
        """What `stat` shows of an entry and its extended attributes (only snapshot
        contents have any; by-file and the synthetic directories have none)."""
        attr = self.getattr(ino)
        return Description(attr, dict(decode_xattrs(attr.xattrs)) if attr.xattrs else {})

    def has_xattrs(self) -> bool:
        """Whether any backup recorded extended attributes."""
        return self.catalog.history.has_xattrs()

    def name_file(self, ino: int) -> str:
        """A file version for a person reading the log: its path and its backup's name."""
        version = self._version_of(ino, FILE)
        path = os.fsdecode(self.catalog.history.node_path(version.node_id))
        return f"{path} (backup {self.names.get(version.snapshot_id, version.snapshot_id)})"
