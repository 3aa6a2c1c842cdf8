"""The pyfuse3 adapter on a real backup, called directly (no kernel): cache timeouts for
what never changes vs what does, and one fetch per chunk however many readers want it."""

from __future__ import annotations

import errno
import hashlib
import os

import pyfuse3
import pytest
import trio
from helpers import rand_bytes

from btfs.catalog import Catalog
from btfs.engine.reader import ChunkSource
from btfs.fuse.ops import LIVE_TIMEOUT, STABLE_TIMEOUT, Operations
from btfs.fuse.tree import BY_TIME_INO, Tree


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
    ops = Operations(tree, ChunkSource(repo.vault, cache_bytes=8 << 20))
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
