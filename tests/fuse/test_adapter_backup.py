"""The pyfuse3 adapter on a real backup, called directly (no kernel): cache timeouts for
what never changes vs what does, and one fetch per chunk however many readers want it."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
from pathlib import Path

import pyfuse3
import pytest
import trio
import trio.testing
from helpers import rand_bytes

from btfs.catalog import Catalog
from btfs.engine import readahead
from btfs.engine.reader import ChunkSource
from btfs.fuse.ops import LIVE_TIMEOUT, STABLE_TIMEOUT, Operations
from btfs.fuse.tree import BY_TIME_INO, Tree
from btfs.vault import pack_key


@pytest.fixture
def ops_for(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(rand_bytes(6_000_000, 3))  # several chunks
    (src / "small.txt").write_text("small")
    os.setxattr(src / "small.txt", "user.color", b"blue")
    repo = repo_factory(src)
    with repo.writer():
        assert repo.backup().state == "complete"
    tree = Tree(Catalog(repo.catalog.path, readonly=True))
    ops = Operations(tree, ChunkSource(repo.vault, repo.codec, cache_bytes=8 << 20))
    return ops, os.fsencode(src), repo


async def resolve(ops, path: bytes):
    name = ops.tree.latest_name.encode()
    attr = await ops.lookup(BY_TIME_INO, name, None)
    for part in path.strip(b"/").split(b"/"):
        attr = await ops.lookup(attr.st_ino, part, None)
    return attr


async def read_all(ops, ino: int, size: int, step: int = 131072) -> bytes:
    info = await ops.open(ino, os.O_RDONLY, None)
    assert info.keep_cache
    try:
        parts, off = [], 0
        while off < size:
            parts.append(await ops.read(info.fh, off, step))
            off += step
        return b"".join(parts)
    finally:
        await ops.release(info.fh)


def test_attributes_and_timeouts(ops_for):
    ops, src, _ = ops_for

    async def main():
        snap_root = await ops.getattr(BY_TIME_INO, None)
        assert snap_root.attr_timeout == LIVE_TIMEOUT
        attr = await resolve(ops, src + b"/small.txt")
        st = os.lstat(src + b"/small.txt")
        assert attr.attr_timeout == attr.entry_timeout == STABLE_TIMEOUT
        assert (attr.st_mode, attr.st_size, attr.st_uid, attr.st_mtime_ns) == (
            st.st_mode, st.st_size, st.st_uid, st.st_mtime_ns)
        assert await ops.getxattr(attr.st_ino, b"user.color", None) == b"blue"
        assert await ops.listxattr(attr.st_ino, None) == [b"user.color"]
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.getxattr(attr.st_ino, b"user.none", None)
        assert e.value.errno == pyfuse3.ENOATTR
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.lookup(BY_TIME_INO, b"nope", None)
        assert e.value.errno == errno.ENOENT

    trio.run(main)


def test_parallel_readers_share_one_fetch_per_chunk(ops_for):
    ops, src, _ = ops_for
    with open(src + b"/big.bin", "rb") as f:
        want = hashlib.sha256(f.read()).digest()

    async def main():
        attr = await resolve(ops, src + b"/big.bin")
        results = []

        async def reader():
            results.append(hashlib.sha256(
                await read_all(ops, attr.st_ino, attr.st_size, 65536)).digest())

        async with trio.open_nursery() as nursery:
            ops.nursery = nursery  # read-ahead tasks
            for _ in range(8):
                nursery.start_soon(reader)
        assert results == [want] * 8
        assert not ops._inflight

    trio.run(main)


@pytest.fixture
def small_files(repo_factory, tmp_path):
    """40 small files backed up into one pack; the Operations, each file's inode and
    bytes in the order they were stored, and the repo."""
    src = tmp_path / "many"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02}.bin").write_bytes(rand_bytes(3000 + i, 100 + i))
    ops, files, repo = backed_up_ops(repo_factory, src)
    assert len({ref.pack for _, _, ref in files}) == 1
    return ops, files, repo


def backed_up_ops(repo_factory, src: Path) -> tuple[Operations, list, object]:
    """One backup of `src`, its Operations (no kernel), and (inode, bytes, ref) of each of
    its single-chunk files in the order they were stored; the repo."""
    repo = repo_factory(src)
    with repo.writer():
        assert repo.backup().state == "complete"
    tree = Tree(Catalog(repo.catalog.path, readonly=True))
    ops = Operations(tree, ChunkSource(repo.vault, repo.codec, cache_bytes=8 << 20))

    async def files():
        out = []
        for path in sorted(src.iterdir()):
            attr = await resolve(ops, os.fsencode(path))
            ref, = tree.file_refs(attr.st_ino).refs
            out.append((attr.st_ino, path.read_bytes(), ref))
        return sorted(out, key=lambda f: (f[2].offset, f[2].hash))

    return ops, trio.run(files), repo


def count_vault_reads(monkeypatch, vault) -> list[tuple[int, int]]:
    reads = []
    real = vault.get

    def get(key, offset=0, length=None):
        reads.append((offset, length))
        return real(key, offset, length)

    monkeypatch.setattr(vault, "get", get)
    return reads


def test_small_files_read_in_stored_order_come_from_a_few_pack_reads(small_files,
                                                                     monkeypatch):
    """Finishing a file fetches and verifies the chunks stored after it in its pack, in a
    few vault reads: the next files are then answered from the cache."""
    ops, files, repo = small_files
    reads = count_vault_reads(monkeypatch, ops.source.vault)

    async def main():
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            for ino, data, _ in files:
                assert await read_all(ops, ino, len(data)) == data
                await trio.testing.wait_all_tasks_blocked()
        assert not ops._inflight

    trio.run(main)
    assert 1 < len(reads) <= 1 + readahead.PACK_AHEAD_RUNS, reads


def test_files_opened_in_order_get_their_refs_from_one_query(small_files, monkeypatch):
    """An open loads the chunk refs of the versions after it, so opening the files in
    the order the backup wrote them asks the catalog once; opened in the other order,
    each open asks; both read every byte exactly."""
    ops, files, repo = small_files
    chunks = ops.tree.catalog.chunks
    calls = []
    real = chunks.file_chunk_refs_from
    monkeypatch.setattr(chunks, "file_chunk_refs_from",
                        lambda *args: calls.append(args) or real(*args))

    async def read_each(order):
        for ino, data, _ in order:
            assert await read_all(ops, ino, len(data)) == data

    trio.run(read_each, files)
    assert len(calls) == 1
    trio.run(read_each, files[::-1])
    assert len(calls) == 1 + len(files)


@pytest.mark.expect_warnings(r"^read of .* failed")
def test_a_damaged_chunk_fetched_ahead_is_never_served(small_files, monkeypatch, caplog):
    """Read-ahead verifies every chunk it caches: a damaged one is left out, and the read
    of its file fails with EIO while the files around it read fine."""
    ops, files, repo = small_files
    _, _, damaged = files[5]
    with open(repo.vault._path(pack_key(damaged.pack)), "r+b") as f:
        f.seek(damaged.offset + damaged.stored_len - 1)
        last = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([last[0] ^ 0xFF]))

    async def main():
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            for i, (ino, data, ref) in enumerate(files):
                if i == 5:
                    with pytest.raises(pyfuse3.FUSEError) as e:
                        await read_all(ops, ino, len(data))
                    assert e.value.errno == errno.EIO
                    assert ops.source.peek(ref.hash) is None
                else:
                    assert await read_all(ops, ino, len(data)) == data
                await trio.testing.wait_all_tasks_blocked()

    trio.run(main)
    assert any("f05.bin" in r.getMessage() for r in caplog.records)


@pytest.fixture
def text_files(repo_factory, tmp_path):
    """40 small compressible files, which a backup stores in groups (several chunks in one
    stored form); the Operations and (inode, bytes, ref) per file in stored order."""
    src = tmp_path / "text"
    src.mkdir()
    for i in range(40):
        lines = [f"line {j} of file {i}: {rand_bytes(8, i * 100 + j).hex()}\n" for j in range(60)]
        (src / f"t{i:02}.txt").write_text("".join(lines))
    ops, files, _ = backed_up_ops(repo_factory, src)
    return ops, files


def test_a_read_that_misses_a_group_caches_its_other_members(text_files, monkeypatch):
    """`cp -a` reads a directory's files before its subdirectories', not in the order a
    backup stored them, so its reads jump into groups the read-ahead did not fetch. The
    first read of a group decodes and verifies its other members too: reading every file
    backwards, without read-ahead, fetches once per group, not once per file."""
    ops, files = text_files
    places = {(ref.pack, ref.offset, ref.stored_len) for _, _, ref in files}
    assert len(places) < len(files) // 4  # they were grouped
    for _, _, ref in files:  # the catalog finds each chunk's group members
        members = ops.tree.group_of(ref)
        assert ref in members
        assert {r.hash for r in members} == {r.hash for _, _, r in files
                                             if r.offset == ref.offset}
    fetched = []
    real = ops.source.chunk
    monkeypatch.setattr(ops.source, "chunk",
                        lambda ref, *siblings: fetched.append(ref) or real(ref, *siblings))

    async def main():
        for ino, data, _ in files[::-1]:
            assert await read_all(ops, ino, len(data)) == data
        assert not ops._inflight

    trio.run(main)
    assert len(fetched) == len(places)


def test_a_group_member_that_fails_its_check_is_left_out_of_the_cache(text_files):
    """Siblings decoded with a read are verified like any chunk: one whose bytes do not
    match its hash (here: a ref with another hash) is not cached, and neither fails the
    read that brought it nor keeps the others out."""
    ops, files = text_files
    _, data, ref = files[0]
    group = [r for _, _, r in files if r.offset == ref.offset and r != ref]
    good, other = group[0], group[1]
    wrong = dataclasses.replace(other, hash=bytes(32))
    assert bytes(ops.source.chunk(ref, [wrong, good])) == data
    assert ops.source.peek(good.hash) is not None
    assert ops.source.peek(wrong.hash) is None and ops.source.peek(other.hash) is None
