"""The status page's history search: a name or glob across every path btfs ever saw, each
hit with its versions. Answers from History (one scan of node names, then each hit's
versions by version_by_node); the glob is matched against a path's last component.

Pure catalog reads, on the caller's thread (a worker thread: see history.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..catalog import DELETED, FILE, Catalog

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


def to_pattern(query: str) -> tuple[str, bool]:
    """(pattern, glob?): a query with * ? [ is a GLOB on names as given; any other is a
    part of a name, in any case (LIKE), with LIKE's own wildcards escaped."""
    name = query.strip().rstrip("/").rsplit("/", 1)[-1]
    if GLOB_CHARS & set(name):
        return name, True
    escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%", False


def versions(catalog: Catalog, node_id: int, started: dict[int, int]) -> tuple[FoundVersion, ...]:
    """Every committed version of a path; `started` maps snapshot ids to start times."""
    found = []
    for v in catalog.history.versions_of(node_id):
        digest = (catalog.chunks.content(v.meta.content_id).digest.hex()
                  if v.type == FILE else None)
        found.append(FoundVersion(v.id, v.snapshot_id, started.get(v.snapshot_id, 0),
                                  v.type, v.meta.size if v.type != DELETED else 0, digest))
    return tuple(found)


def search(catalog: Catalog, query: str, started: dict[int, int], limit: int) -> list[Hit]:
    """Up to `limit` paths matching `query`, oldest path first, each with its versions."""
    pattern, glob = to_pattern(query)
    if pattern in ("%%", ""):
        return []
    hits = []
    for node_id in catalog.history.nodes_matching(pattern, glob=glob, limit=limit):
        hits.append(Hit(catalog.history.node_path(node_id),
                        versions(catalog, node_id, started)))
    log.debug("search %r: %d hits", query, len(hits))
    return hits
