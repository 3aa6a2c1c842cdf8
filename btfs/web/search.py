"""The status page's history search: a name or glob across every path btfs ever saw, each
hit with its versions and their ids (what /api/download takes).

The matching is `btfs find`'s (btfs.engine.browse.find, over the catalog's indexes): a
name glob, or a path glob when the query holds a '/'. A query with no glob character is a
part of a name (`notes` finds `meeting-notes.txt`), as a search box is used. Answers stop
at `limit` paths, so a query that matches everything costs a page, not the history.

Pure catalog reads, on the caller's thread (a worker thread: see history.py).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

from ..catalog import DELETED, Catalog
from ..engine.browse import FoundPath, find
from ..names import snapshot_names

log = logging.getLogger(__name__)

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class FoundVersion:
    version: int  # its id: what /api/download takes
    snapshot_id: int
    time_ns: int  # when its snapshot started
    type: str
    size: int
    digest: str | None  # hex, files only

    @property
    def deleted(self) -> bool:
        return self.type == DELETED


@dataclass(frozen=True, slots=True)
class Hit:
    path: bytes
    versions: tuple[FoundVersion, ...]  # oldest first


def to_pattern(query: str) -> str:
    """find's pattern for a search box's query: globs and paths as given, a bare word as
    a part of a name."""
    query = query.strip()
    if GLOB_CHARS & set(query) or "/" in query:
        return query
    return f"*{query}*"


def search(catalog: Catalog, query: str, limit: int) -> list[Hit]:
    """Up to `limit` paths matching `query`, oldest path first, each with its versions."""
    if not query.strip():
        return []
    snaps = catalog.history.snapshots()
    started = {s.id: s.started_ns for s in snaps}
    found = itertools.islice(find(catalog, snapshot_names(snaps), to_pattern(query)), limit)
    hits = [Hit(f.path, _with_ids(catalog, f, started)) for f in found]
    log.debug("search %r: %d hits", query, len(hits))
    return hits


def _with_ids(catalog: Catalog, found: FoundPath, started: dict[int, int]
              ) -> tuple[FoundVersion, ...]:
    node = catalog.history.node_for_path(found.path)
    ids = {v.snapshot_id: v.id for v in catalog.history.versions_of(node)} if node else {}
    return tuple(FoundVersion(ids[v.snapshot_id], v.snapshot_id, started[v.snapshot_id],
                              v.type, v.size if not v.deleted else 0, v.blake3)
                 for v in found.versions if v.snapshot_id in ids)


def versions(catalog: Catalog, path: bytes) -> tuple[FoundVersion, ...] | None:
    """Every committed version of one path, None if the history never held it."""
    node = catalog.history.node_for_path(path)
    if node is None:
        return None
    started = {s.id: s.started_ns for s in catalog.history.snapshots()}
    out = []
    for v in catalog.history.versions_of(node):
        digest = (catalog.chunks.content(v.meta.content_id).digest.hex()
                  if v.meta.content_id is not None and v.type != DELETED else None)
        out.append(FoundVersion(v.id, v.snapshot_id, started.get(v.snapshot_id, 0), v.type,
                                v.meta.size if v.type != DELETED else 0, digest))
    return tuple(out)
