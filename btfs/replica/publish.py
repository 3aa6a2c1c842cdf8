"""Publish this host's catalog to the vault: the next generation of its copy.

Called after a backup, holding the writer lock (so no writer changes the file while it
is read). The log is checkpointed into the file, every page digested and compared with
the pages of the last generation published (pages.State); only the pages that differ
go up, as one compressed `delta` object. A generation is a `base` (every page) instead
when there is no usable previous generation, or when the chain since the last base grew
past a bound: MAX_DELTAS deltas, or deltas adding up (compressed) to more than
REBASE_FRACTION of the base. Both bound the work of a rebuild (the base plus at most that
much); at an hourly backup a chain spans two days at most.

Old generations go only after a newer base landed: the chains of the newest KEEP_BASES
bases are kept, so a damaged newest generation (or base) leaves an older one to recover
from. An object, once put, is never rewritten; a publisher killed at any moment leaves
either a whole generation or none (the vault's temp file is swept by the next writer),
and a local state that lags the vault is rebuilt from the vault, never trusted.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

from .. import config as config_mod
from .. import digest as digest_mod
from ..catalog.wal import checkpoint
from ..errors import BtfsError, VaultError
from ..vault import Vault
from .fetch import read_manifest, rebuild
from .objects import (
    FORMAT,
    RECORD,
    CopyDamaged,
    Generation,
    generation_key,
    generations,
    header,
    host_record_key,
)
from .pages import Scan, State, load_state, save_state, scan

log = logging.getLogger(__name__)

KEEP_BASES = 3
MAX_DELTAS = 48
REBASE_FRACTION = 0.5
LEVEL = 3  # zstd: catalog pages compress about 3x; higher levels cost more than they save
# Config keys that belong to one machine's setup, not to the host's history.
LOCAL_KEYS = ("host_id", "vault", "read_only")


@dataclass(frozen=True)
class Published:
    key: str
    number: int
    kind: str  # 'base' or 'delta'
    pages: int  # pages in the object
    uploaded: int  # bytes of the object
    catalog_size: int  # bytes of the catalog file
    retired: int  # old generation objects deleted


def publish_repo(repo) -> Published | None:
    """Publish `repo`'s catalog after a backup (the caller holds the writer lock). A
    failure is a warning, not an error: the backup itself is safe in the vault, and the
    next backup publishes again."""
    if repo.config.read_only:
        return None
    done = [s for s in repo.snapshots() if s.finished_ns is not None]
    facts = {"last_backup_ns": max((s.finished_ns for s in done), default=None),
             "snapshots": len(done)}
    # The config file as the user keeps it, not this run's overrides (--one-file-system).
    doc = {k: v for k, v in config_mod.to_dict(config_mod.load(repo.paths)).items()
           if k not in LOCAL_KEYS}
    try:
        published = publish(repo.vault, repo.paths.data_dir, repo.paths.catalog,
                            repo.config.host_id, config_doc=doc, facts=facts)
    except (BtfsError, CopyDamaged, OSError) as e:
        log.warning("the catalog's copy in the vault was not updated (%s); the next backup "
                    "tries again", e)
        return None
    if published:
        log.info("catalog copy: generation %d (%s, %d pages, %d bytes of %d)",
                 published.number, published.kind, published.pages, published.uploaded,
                 published.catalog_size)
    return published


def publish(vault: Vault, data_dir: Path, catalog_path: Path, host_id: str, *,
            config_doc: dict, facts: dict, host_name: str | None = None) -> Published | None:
    """Put the next generation of `host_id`'s catalog copy; None when the file is the one
    published last. The caller holds the writer lock."""
    host_name = host_name or socket.gethostname()
    if not checkpoint(catalog_path):
        raise BtfsError("a reader kept the catalog's log in use")
    gens = generations(vault, host_id)
    head = gens[-1] if gens else None
    now = scan(catalog_path)
    state = _known_state(vault, data_dir, head)
    if state is not None and state.scan.file_digest == now.file_digest:
        return None
    chain = _delta_chain(vault, gens, head, state, now)
    put_host_record(vault, host_id, host_name)
    if chain is None:
        kind, pages = "base", list(range(now.page_count))
    else:
        old = state.scan
        kind, pages = "delta", [n for n in range(now.page_count)
                                if n >= old.page_count or now.page(n) != old.page(n)]
    number = head.number + 1 if head else 1
    manifest = {"format": FORMAT, "host_id": host_id,
                "host_name": host_name, "generation": number,
                "kind": kind, "chain": chain or [], "page_size": now.page_size,
                "page_count": now.page_count, "pages": len(pages),
                "file_digest": now.file_digest, "published_ns": time.time_ns(),
                "facts": facts, "config": config_doc}
    key, size = _put_generation(vault, catalog_path, host_id, number, kind, manifest, pages,
                                now.page_size)
    save_state(data_dir, State(key, number, now))
    retired = retire(vault, [*gens, Generation(key, host_id, number, kind, "", size)])
    return Published(key, number, kind, len(pages), size, now.page_size * now.page_count,
                     retired)


def _known_state(vault: Vault, data_dir: Path, head: Generation | None) -> State | None:
    """The pages of the head generation: from the local state when it names the head,
    else rebuilt from the vault (a publisher killed after its put, or a new data dir);
    None when there is no head or it cannot be rebuilt (then a new base is written)."""
    if head is None:
        return None
    state = load_state(data_dir)
    if state is not None and state.key == head.key:
        return state
    tmp = data_dir / "catalog-copy.rebuild"
    try:
        _, result = rebuild(vault, head, tmp)
    except (CopyDamaged, VaultError) as e:
        log.info("the newest catalog copy cannot be rebuilt (%s): writing a new base", e)
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return State(head.key, head.number, result)


def _delta_chain(vault: Vault, gens: list[Generation], head: Generation | None,
                 state: State | None, now: Scan) -> list[str] | None:
    """The keys a delta on top of `head` is built on (base first), or None when the next
    generation must be a base."""
    if head is None or state is None or state.scan.page_size != now.page_size:
        return None
    chain = [*read_manifest(vault, head)["chain"], head.key]
    sizes = {g.key: g.size for g in gens}
    if any(k not in sizes for k in chain):
        return None
    deltas = chain[1:]
    if len(deltas) >= MAX_DELTAS or sum(sizes[k] for k in deltas) > (
            REBASE_FRACTION * sizes[chain[0]]):
        return None
    return chain


def _put_generation(vault: Vault, catalog_path: Path, host_id: str, number: int, kind: str,
                    manifest: dict, pages: list[int], page_size: int) -> tuple[str, int]:
    """Stream the object to the vault; (its key, its size). The key's digest is only
    known at the end, which `Vault.writer` allows."""
    writer = vault.writer()
    hasher = digest_mod.hasher()
    size = 0

    def emit(data: bytes) -> None:
        nonlocal size
        if data:
            writer.write(data)
            hasher.update(data)
            size += len(data)

    try:
        emit(header(manifest))
        compressor = zstandard.ZstdCompressor(level=LEVEL).compressobj()
        fd = os.open(catalog_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for n in pages:
                page = os.pread(fd, page_size, n * page_size)
                if len(page) != page_size:
                    raise BtfsError(f"{catalog_path} changed while it was published")
                emit(compressor.compress(RECORD.pack(n) + page))
        finally:
            os.close(fd)
        emit(compressor.flush())
        key = generation_key(host_id, number, kind, hasher.hexdigest())
        writer.commit(key)
    except BaseException:
        writer.abort()
        raise
    return key, size


def put_host_record(vault: Vault, host_id: str, host_name: str | None = None) -> None:
    """hosts/<id>/host.json, unless it is there: from `btfs init` on, the vault knows the
    host, so a prune elsewhere waits for its first backup (btfs.engine.prune_shared)."""
    if vault.size(host_record_key(host_id)) is None:
        vault.put(host_record_key(host_id), _host_record(host_id,
                                                         host_name or socket.gethostname()))


def _host_record(host_id: str, host_name: str) -> bytes:
    return json.dumps({"host_id": host_id, "name": host_name,
                       "created_ns": time.time_ns()}).encode()


def retire(vault: Vault, gens: list[Generation]) -> int:
    """Delete the generations older than the KEEP_BASES newest bases."""
    bases = [g.number for g in gens if g.kind == "base"]
    if len(bases) <= KEEP_BASES:
        return 0
    oldest_kept = bases[-KEEP_BASES]
    old = [g for g in gens if g.number < oldest_kept]
    for g in old:
        vault.delete(g.key)
    return len(old)
