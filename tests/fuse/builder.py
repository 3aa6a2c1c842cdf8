"""Build a catalog history directly, without the backup engine, for model and adapter tests.

`History` writes snapshots, versions and (real, verifiable) content into a Catalog and a
LocalVault the way a backup would, but with every fact chosen by the test: start times in
the same second, deletions, type changes, hard-link groups, a 100,000-entry directory.
Paths are bytes; a version lands in the snapshot opened by the latest `begin`.
"""

from __future__ import annotations

import stat
import time

from blake3 import blake3

from btfs.catalog import DELETED, DIR, FILE, SYMLINK, Catalog, Meta
from btfs.engine import codec
from btfs.engine.pack import PackBuilder
from btfs.vault import LocalVault, pack_key

NS = 1_000_000_000
T0 = 1_795_000_000 * NS + 123_456_789  # 2026-11-18, with nanoseconds


def local_ns(text: str) -> int:
    """'2026-11-20 09:30:00' in local time -> ns since the epoch."""
    return int(time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))) * NS


class History:
    def __init__(self, catalog: Catalog, vault: LocalVault, *, chunk_size: int = 64 * 1024):
        self.catalog = catalog
        self.vault = vault
        self.chunk_size = chunk_size
        self.snapshot_id: int | None = None
        self.packs: list[str] = []

    # ---- snapshots ---------------------------------------------------------------------

    def begin(self, started_ns: int, state: str = "complete") -> int:
        with self.catalog.writer.transaction():
            self.snapshot_id = self.catalog.writer.begin_snapshot("host", started_ns)
            if state != "running":
                self.catalog.writer.update_snapshot(self.snapshot_id, state=state,
                                             finished_ns=started_ns + NS)
        return self.snapshot_id

    def finish(self, snapshot_id: int, state: str = "complete") -> None:
        with self.catalog.writer.transaction():
            self.catalog.writer.update_snapshot(snapshot_id, state=state,
                                                finished_ns=time.time_ns())

    # ---- versions ----------------------------------------------------------------------

    def _node(self, path: bytes) -> int:
        return self.catalog.writer.node_for_path(path)

    def _add(self, path: bytes, meta: Meta) -> int:
        with self.catalog.writer.transaction():
            return self.catalog.writer.add_version(self._node(path), self.snapshot_id, meta)

    @staticmethod
    def meta(kind: str, mode: int, **fields) -> Meta:
        base = Meta(type=kind, size=0, mode=mode, uid=1000, gid=1000, atime_ns=T0 + 1,
                    mtime_ns=T0 + 2, ctime_ns=T0 + 3, btime_ns=None, ino=1, nlink=1)
        return base._replace(**fields)

    def dir(self, path: bytes, mode: int = 0o755, **fields) -> int:
        fields.setdefault("nlink", 2)
        fields.setdefault("size", 4096)
        return self._add(path, self.meta(DIR, stat.S_IFDIR | mode, **fields))

    def dirs(self, *paths: bytes) -> None:
        """Each path and its ancestors as plain directories (as a backup records them)."""
        for path in paths:
            parts = [p for p in path.split(b"/") if p]
            for depth in range(1, len(parts) + 1):
                self.dir(b"/" + b"/".join(parts[:depth]))

    def file(self, path: bytes, data: bytes = b"", mode: int = 0o644, **fields) -> int:
        content_id = self.content(data)
        return self._add(path, self.meta(FILE, stat.S_IFREG | mode, size=len(data),
                                         content_id=content_id, **fields))

    def symlink(self, path: bytes, target: bytes, **fields) -> int:
        return self._add(path, self.meta(SYMLINK, stat.S_IFLNK | 0o777, size=len(target),
                                         target=target, **fields))

    def delete(self, path: bytes) -> int:
        return self._add(path, Meta(DELETED, 0, 0, 0, 0, 0, 0, 0, None, 0, 0))

    # ---- content -----------------------------------------------------------------------

    def content(self, data: bytes) -> int:
        """Store `data` as chunks in one new pack and record its content."""
        pieces = [data[i:i + self.chunk_size] for i in range(0, len(data), self.chunk_size)]
        builder = PackBuilder()
        hashes = []
        for piece in pieces:
            h = codec.Codec.chunk_hash(piece)
            hashes.append(h)
            if self.catalog.chunks.chunk_id(h) is None:
                builder.add(h, len(piece), codec.Codec(3).encode(piece))
        with self.catalog.writer.transaction():
            ids = {}
            if len(builder):
                sealed = builder.seal()
                self.vault.put(pack_key(sealed.name), bytes(sealed.data))
                self.packs.append(sealed.name)
                ids = self.catalog.chunks.add_pack(sealed.name, len(sealed.data), sealed.chunks,
                                            time.time_ns())
            chunk_ids = [ids.get(h) or self.catalog.chunks.chunk_id(h) for h in hashes]
            return self.catalog.chunks.add_content(blake3(data).digest(), len(data),
                                            chunk_ids)
