"""The status page's window on the history: its own read-only Repo, used from worker
threads one call at a time, and answers as plain dicts for JSON.

The daemon's backups write through their own Repo; this one only reads (a reader's
connection sees each commit at its next query). A download streams a file version's
chunks one at a time through the engine's ChunkSource, which verifies each chunk against
its hash before its bytes are sent; a file is never held whole.

Never: write to the catalog or vault, or run catalog calls on the trio thread.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import trio

from ..catalog import FILE, ROOT
from ..config import Paths
from ..engine.reader import ChunkSource
from ..errors import BtfsError, UsageError
from ..repo import Repo
from . import search

log = logging.getLogger(__name__)

T = TypeVar("T")
SEARCH_LIMIT = 200  # paths per answer: a page a person reads, not a dump
DOWNLOAD_CACHE_BYTES = 8 << 20  # chunks are read once, in order: a small cache suffices


class NotFound(BtfsError):
    """A version, backup or path the catalog does not have (HTTP 404)."""


class WebHistory:
    def __init__(self, paths: Paths):
        self.paths = paths
        self._repo: Repo | None = None
        self._limiter = trio.CapacityLimiter(1)  # one catalog call at a time
        self._totals: tuple[int, dict] | None = None  # (data_version, figures)

    async def run(self, fn: Callable[..., T], *args) -> T:
        """`fn(repo, *args)` on a worker thread."""
        return await trio.to_thread.run_sync(functools.partial(self._call, fn, *args),
                                             limiter=self._limiter)

    def _call(self, fn, *args):
        if self._repo is None:
            self._repo = Repo.open(self.paths, readonly=True)
        return fn(self._repo, *args)

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    # ---- answers (each runs on a worker thread, given the Repo) ------------------------

    def figures(self, repo: Repo) -> dict:
        """Vault size and ratios, counted again only after a commit."""
        changed = repo.catalog.history.data_version()
        if self._totals is None or self._totals[0] != changed:
            t = repo.catalog.chunks.totals()
            self._totals = (changed, {
                "packs": t.packs, "vault_bytes": t.pack_bytes,
                "content_bytes": t.content_bytes, "chunk_bytes": t.chunk_bytes,
                "dedup_ratio": round(t.content_bytes / t.chunk_bytes, 3) if t.chunk_bytes else None,
                "compression_ratio": (round(t.chunk_bytes / t.pack_bytes, 3)
                                      if t.pack_bytes else None),
                "backups": len(repo.catalog.history.snapshots()),
            })
        return self._totals[1]

    @staticmethod
    def backups(repo: Repo, limit: int = 100) -> list[dict]:
        """The newest `limit` backups, newest first."""
        rows = []
        for named in reversed(repo.named_snapshots()[-limit:]):
            s = named.snapshot
            rows.append({"id": s.id, "name": named.name, "started": s.started_ns / 1e9,
                         "finished": s.finished_ns / 1e9 if s.finished_ns else None,
                         "state": s.state, "changed_files": s.files_new + s.files_changed,
                         "deleted_files": s.files_deleted, "entries": s.entries,
                         "bytes_added": s.bytes_added, "errors": s.errors})
        return rows

    @staticmethod
    def search(repo: Repo, query: str) -> dict:
        hits = search.search(repo.catalog, query, SEARCH_LIMIT)
        return {"query": query, "limit": SEARCH_LIMIT, "truncated": len(hits) >= SEARCH_LIMIT,
                "hits": [{"path": os.fsdecode(h.path),
                          "deleted": bool(h.versions) and h.versions[-1].deleted,
                          "versions": [_version_dict(v) for v in h.versions]} for h in hits]}

    @staticmethod
    def versions(repo: Repo, path: str) -> dict:
        found = search.versions(repo.catalog, _catalog_path(path))
        if found is None:
            raise NotFound(f"{path} is not in the history")
        return {"path": path, "versions": [_version_dict(v) for v in found]}

    @staticmethod
    def tree(repo: Repo, backup: int, path: str) -> dict:
        """A directory as of a backup: the roots' common top with no path given."""
        history = repo.catalog.history
        snap = history.snapshot(backup) if backup in {
            s.id for s in history.snapshots()} else None
        if snap is None:
            raise NotFound(f"no backup {backup}")
        raw = _catalog_path(path or "/")
        node = history.node_for_path(raw)
        if node is None or (node != ROOT and history.version_at(node, backup) is None):
            raise NotFound(f"{path} is not in backup {backup}")
        entries = []
        for e in history.children_at(node, backup):
            v = e.version
            entries.append({
                "name": os.fsdecode(e.name), "type": v.type, "size": v.meta.size,
                "mtime": v.meta.mtime_ns / 1e9, "version": v.id,
                "digest": (repo.catalog.chunks.content(v.meta.content_id).digest.hex()
                           if v.type == FILE else None)})
        return {"backup": backup, "path": os.fsdecode(raw) or "/", "entries": entries}

    @staticmethod
    def open_download(repo: Repo, version_id: int) -> tuple[str, int, list]:
        """(file name, size, chunk refs) of a file version."""
        version = repo.catalog.history.version_or_none(version_id)
        if version is None or version.snapshot_id is None:
            raise NotFound(f"no version {version_id}")
        if version.type != FILE:
            raise UsageError(f"version {version_id} is a {version.type}, not a file")
        refs = repo.catalog.chunks.file_chunk_refs(version_id)
        name = os.fsdecode(repo.catalog.history.node_name(version.node_id))
        return name, version.meta.size, refs

    async def stream(self, refs: list) -> AsyncIterator[bytes]:
        """A file version's bytes, chunk by chunk, each verified on a worker thread."""
        source = await self.run(
            lambda repo: ChunkSource(repo.vault, repo.codec, cache_bytes=DOWNLOAD_CACHE_BYTES))
        sent = 0
        for ref in refs:
            try:
                data = await trio.to_thread.run_sync(source.chunk, ref)
            except BtfsError as e:
                # The headers are out: ending the connection short of Content-Length is
                # how the client learns the file is incomplete. Never send what failed.
                log.warning("download stopped after %d bytes: %s", sent, e)
                raise
            sent += len(data)
            yield bytes(data)


def _version_dict(v: search.FoundVersion) -> dict:
    return {"version": v.version, "backup": v.snapshot_id, "time": v.time_ns / 1e9,
            "type": v.type, "size": v.size, "digest": v.digest, "deleted": v.deleted}


def _catalog_path(path: str) -> bytes:
    raw = os.fsencode(path)
    if not raw.startswith(b"/"):
        raise UsageError(f"{path!r} is not an absolute path")
    parts = [p for p in raw.split(b"/") if p]
    if any(p in (b".", b"..") for p in parts):
        raise UsageError(f"{path!r} has . or .. in it")
    return b"/" + b"/".join(parts) if parts else b"/"

