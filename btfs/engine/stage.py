"""`btfs add`: capture files now; the next backup commits exactly that state.

The content goes to the vault immediately (so it is safe even if the file changes or is
deleted before the backup), and a staged version (snapshot_id NULL) is recorded once its
packs are durable, in one transaction. Staging a path again replaces its staged state.
"""

from __future__ import annotations

import logging
import os

from ..catalog import FILE, SYMLINK, Catalog
from ..config import Config
from ..errors import UsageError
from ..userpath import is_under, to_catalog_path
from .codec import Codec
from .files import Chunker, cut_file, make_piece
from .meta import file_type, meta_from_stat, read_xattrs
from .store import ChunkStore

log = logging.getLogger(__name__)


def tracked_root(config: Config, path: str) -> str | None:
    for t in config.tracked:
        if is_under(path, t.path):
            return t.path
    return None


def stage_paths(catalog: Catalog, store: ChunkStore, config: Config, codec: Codec,
                paths: list[str]) -> list[str]:
    """Stage regular files and symlinks; returns the absolute paths staged."""
    targets = []
    for p in paths:
        path = os.fsdecode(to_catalog_path(p, [t.path for t in config.tracked]))
        if tracked_root(config, path) is None:
            raise UsageError(f"{p} is not inside a tracked directory")
        try:
            st = os.lstat(path)
        except OSError as e:
            raise UsageError(f"cannot stage {p}: {e.strerror}") from None
        if file_type(st.st_mode) not in (FILE, SYMLINK):
            raise UsageError(f"cannot stage {p}: only files and symlinks can be staged")
        targets.append(path)
    chunker = Chunker(config.chunk_min, config.chunk_avg, config.chunk_max)
    with catalog.writer.transaction():
        staged = []
        for path in targets:
            raw = os.fsencode(path)
            st = os.lstat(raw)
            kind = file_type(st.st_mode)
            if kind == FILE:
                hashes: list[bytes] = []

                def take(data: bytes, hashes=hashes) -> None:
                    # Into the open pack at once: only the hashes stay in memory.
                    piece = make_piece(data, codec, store.lookup)
                    store.add(piece.hash, piece.size, piece.stored, piece.checked_at)
                    hashes.append(piece.hash)

                read = cut_file(raw, chunker, take, hashes.clear)
                staged.append((path, raw, read.st, kind, (read.digest, hashes)))
            else:
                staged.append((path, raw, st, kind, os.readlink(raw)))
        store.finish()  # every chunk is now durable and recorded
        for path, raw, st, kind, extra in staged:
            node = catalog.writer.node_for_path(raw)
            if kind == FILE:
                content_digest, hashes = extra
                chunk_ids = [catalog.chunks.chunk_id(h) for h in hashes]
                content_id = catalog.chunks.add_content(content_digest, st.st_size, chunk_ids)
                target = None
            else:
                content_id, target = None, extra
            catalog.writer.stage(node, meta_from_stat(st, kind, target=target,
                                               xattrs=read_xattrs(raw), content_id=content_id))
            log.info("staged %s", path)
    return [t[0] for t in staged]

