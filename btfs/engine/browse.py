"""Browsing history: find paths by name across every backup, diff two snapshots, and what
changed below a directory (the folder `btfs log`).

Answers come from the catalog's indexes (btfs.catalog.search), never from a walk of a
snapshot's tree: the cost follows what matched or changed, not the size of the tree.
Pure catalog reads; nothing here writes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..catalog import DELETED, DIR, Catalog
from ..catalog.search import FoundRow, HistorySearch, State
from ..errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FoundVersion:
    snapshot: str  # its name (the by-time directory)
    snapshot_id: int
    type: str  # file, dir, symlink or deleted
    size: int
    blake3: str | None  # hex digest of a file's content

    @property
    def deleted(self) -> bool:
        return self.type == DELETED


@dataclass(frozen=True, slots=True)
class FoundPath:
    path: bytes
    versions: tuple[FoundVersion, ...]  # oldest first
    deleted: bool  # its newest version is a deletion: not in the newest backup


def glob_regex(pattern: str) -> re.Pattern[bytes]:
    """A path glob as a regex over a path's bytes: `*` and `?` stay within one component,
    `**` crosses any number of them, `[...]` and `[!...]` are classes. A pattern that
    starts with '/' matches from the root, any other one a tail of whole components
    (`docs/*.md` matches /home/me/docs/plan.md)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    anchor = "" if pattern.startswith("/") else "(?:^|/)"
    return re.compile(os.fsencode(anchor + "".join(out) + r"\Z"), re.DOTALL)


def _name_glob(pattern: str) -> str:
    """The SQLite GLOB for the last component of a find pattern."""
    name = pattern.rstrip("/").rsplit("/", 1)[-1].replace("**", "*")
    return re.sub(r"\[!", "[^", name) or "*"


def find(catalog: Catalog, names: dict[int, str], pattern: str, *,
         under: bytes | None = None, shown: set[int] | None = None,
         deleted_only: bool = False) -> Iterator[FoundPath]:
    """Every path in the history that matches `pattern` (a name glob, or a path glob when
    it holds a '/'), with its versions, by node id (oldest path first).

    `names`: snapshot id -> name of the snapshots that may be shown. `under`: only paths
    below this absolute path. `shown`: only versions in these snapshots, and only paths
    with one. `deleted_only`: only paths whose newest version is a deletion."""
    if not pattern:
        raise UsageError("find needs a pattern, e.g. '*.md'")
    search = HistorySearch(catalog.db)
    whole = glob_regex(pattern) if "/" in pattern else None
    prefix = under.rstrip(b"/") + b"/" if under is not None else None
    node, versions = None, []
    for row in search.named(_name_glob(pattern)):
        if row.node_id != (node.node_id if node else None):
            if versions:
                found = _found(search, node, versions, whole, prefix, shown, deleted_only)
                if found is not None:
                    yield found
            node, versions = row, []
        if row.snapshot_id in names:
            versions.append(FoundVersion(names[row.snapshot_id], row.snapshot_id, row.type,
                                         row.size, row.digest.hex() if row.digest else None))
    if versions:
        found = _found(search, node, versions, whole, prefix, shown, deleted_only)
        if found is not None:
            yield found


def _found(search: HistorySearch, node: FoundRow, versions: list[FoundVersion],
           whole: re.Pattern[bytes] | None, prefix: bytes | None, shown: set[int] | None,
           deleted_only: bool) -> FoundPath | None:
    """The FoundPath of one matching node, or None when a filter leaves it out. The
    cheap filters first: a path is built only for nodes they keep."""
    deleted = versions[-1].deleted
    if deleted_only and not deleted:
        return None
    if shown is not None:
        versions = [v for v in versions if v.snapshot_id in shown]
        if not versions:
            return None
    path = search.parent_path(node.parent) + b"/" + node.name
    if prefix is not None and not path.startswith(prefix):
        return None
    if whole is not None and not whole.search(path):
        return None
    return FoundPath(path, tuple(versions), deleted)


@dataclass(frozen=True, slots=True)
class Change:
    path: bytes
    change: str  # added, removed, modified (content and/or metadata), type
    type: str  # the path's type after the change (before it, for a removal)
    content: bool  # modified: the bytes (or a symlink's target) differ
    metadata: tuple[str, ...]  # modified: which of mode, owner, mtime, xattrs differ
    before_type: str | None = None  # a type change: the type before it


# (field of State, the name diff shows) compared for "metadata changed". A directory's
# mtime moves whenever a child comes or goes, which the children's lines already say.
_META_FIELDS = (("mode", "mode"), ("uid", "owner"), ("gid", "owner"), ("mtime_ns", "mtime"),
                ("xattrs", "xattrs"))


def diff(catalog: Catalog, before: int, after: int, *,
         under: bytes | None = None) -> list[Change]:
    """What changed from snapshot `before` to snapshot `after`, by path: from the version
    rows of the snapshots between them (either may be the older one). A rename is a
    removal and an addition; a path deleted and recreated between them is modified, or
    not listed if it came back as it was."""
    older, newer = sorted((before, after))
    search = HistorySearch(catalog.db)
    prefix = under.rstrip(b"/") + b"/" if under is not None else None
    changes = []
    for row in search.changed_between(older, newer):
        old = row.before if row.before is not None and row.before.type != DELETED else None
        new = row.after if row.after.type != DELETED else None
        if before > after:
            old, new = new, old
        change = _compare(old, new)
        if change is None:
            continue
        path = search.parent_path(row.parent) + b"/" + row.name
        if prefix is not None and not path.startswith(prefix):
            continue
        changes.append(Change(path, *change))
    changes.sort(key=lambda c: c.path)
    return changes


def _compare(old: State | None, new: State | None) -> tuple | None:
    """(change, type, content, metadata[, before_type]) or None if nothing differs."""
    if old is None and new is None:
        return None  # came and went between the two
    if old is None:
        return ("added", new.type, False, ())
    if new is None:
        return ("removed", old.type, False, ())
    if old.type != new.type:
        return ("type", new.type, False, (), old.type)
    content = (old.content_id, old.target) != (new.content_id, new.target)
    metadata = []
    for field, shown in _META_FIELDS:
        if field == "mtime_ns" and new.type == DIR:
            continue
        if getattr(old, field) != getattr(new, field) and shown not in metadata:
            metadata.append(shown)
    if not content and not metadata:
        return None
    return ("modified", new.type, content, tuple(metadata))


@dataclass(frozen=True, slots=True)
class FolderStep:
    """One backup in which something below a directory changed."""

    snapshot: str
    snapshot_id: int
    added: int
    modified: int
    deleted: int
    paths: tuple[tuple[str, bytes], ...] = ()  # (change, path), with --files


def folder_log(catalog: Catalog, node_id: int, names: dict[int, str], *,
               files: bool = False) -> list[FolderStep]:
    """Every shown snapshot in which a path below `node_id` was added, modified or
    deleted, oldest first, with counts (and the paths when `files`)."""
    search = HistorySearch(catalog.db)
    steps = [FolderStep(names[sid], sid, added, modified, deleted)
             for sid, added, modified, deleted in search.subtree_counts(node_id)
             if sid in names]
    if not files:
        return steps
    paths: dict[int, list[tuple[str, bytes]]] = {s.snapshot_id: [] for s in steps}
    for change in search.subtree_changes(node_id):
        if change.snapshot_id in paths:
            paths[change.snapshot_id].append((change.change, search.path(change.node_id)))
    return [FolderStep(s.snapshot, s.snapshot_id, s.added, s.modified, s.deleted,
                       tuple(sorted(paths[s.snapshot_id], key=lambda p: p[1])))
            for s in steps]
