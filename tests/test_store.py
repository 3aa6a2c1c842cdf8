"""Deduplication under concurrency: equal chunks in flight at once across pack commits.

Regression: workers decide "new chunk" before the main thread records an equal one; once
that pack is committed, the chunk left the pending set and was stored a second time
(UNIQUE constraint on chunk.hash / pack.name). Tiny packs make commits frequent.
"""

from __future__ import annotations

import os
import random

from btfs import config as config_mod
from btfs.engine.check import check
from btfs.repo import Repo, init_repo, track_dirs


def test_equal_chunks_in_flight_are_stored_once(tmp_path):
    paths = config_mod.Paths(tmp_path / "cfg" / "config.toml", tmp_path / "data",
                             tmp_path / "cache")
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(7)
    same_small = rng.randbytes(100_000)
    same_big = rng.randbytes(3_000_000)
    for i in range(1500):
        (src / f"f{i:05d}").write_bytes(same_small if i % 3 == 0 else rng.randbytes(20_000))
    for i in range(4):
        (src / f"big{i}").write_bytes(same_big)
    init_repo(paths, str(tmp_path / "vault"))
    track_dirs(paths, [str(src)])
    cfg = config_mod.load(paths)
    config_mod.save(paths, config_mod.with_changes(cfg, pack_size=1 << 20))

    with Repo.open(paths) as repo, repo.writer():
        stats = repo.backup()
        assert stats.state == "complete"
        report = check(repo.catalog, repo.vault, repo.codec, read_data=True)
        assert report.ok, report.problems
        distinct = 1000 + 1 + len(same_big) // (256 << 10)  # upper bound on unique chunks
        assert report.chunks_verified <= distinct
        # Equal content is stored once: the vault holds about the unique bytes only.
        unique_bytes = 1000 * 20_000 + len(same_small) + len(same_big)
        assert stats.bytes_added < unique_bytes * 1.05
        assert report.unreferenced_packs == 0
    assert len(os.listdir(src)) == 1504


def test_lookup_many_knows_pending_stored_and_new_chunks(tmp_path):
    """One catalog query answers for a worker's whole batch, with the same answers as
    one lookup per chunk: None for chunks on their way or stored, else the generation."""
    from btfs.engine import codec
    from btfs.engine.store import ChunkStore

    paths = config_mod.Paths(tmp_path / "cfg" / "config.toml", tmp_path / "data",
                             tmp_path / "cache")
    init_repo(paths, str(tmp_path / "vault"))
    with Repo.open(paths) as repo, repo.writer():
        store = ChunkStore(repo.catalog, repo.vault, pack_size=1 << 20)
        try:
            stored, pending, new = b"stored" * 100, b"pending" * 100, b"new" * 100
            h_stored, h_pending, h_new = map(codec.Codec.chunk_hash, (stored, pending, new))
            with repo.catalog.writer.transaction():
                store.add(h_stored, len(stored), codec.Codec(3).encode(stored))
                store.finish()
            store.forget_recorded()
            store.add(h_pending, len(pending), codec.Codec(3).encode(pending))
            batch = [h_new, h_stored, h_pending, h_new]
            want = [store.generation, None, None, store.generation]
            assert store.lookup_many(batch) == want
            assert [store.lookup(h) for h in batch] == want
            assert store.lookup_many([]) == []
        finally:
            store.close()
