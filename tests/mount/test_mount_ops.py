"""The pyfuse3 adapter called directly (no kernel): attributes, reads, errors."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pyfuse3
import pytest
import trio
from helpers import rand_bytes

from btfs.catalog import Catalog
from btfs.engine.reader import ChunkSource
from btfs.fuse.ops import LIVE_TIMEOUT, STABLE_TIMEOUT, Operations
from btfs.fuse.tree import BY_TIME_INO, Tree


@pytest.fixture
def ops_for(backed_up, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(rand_bytes(6_000_000, 3))  # several chunks
    (src / "small.txt").write_text("small")
    os.setxattr(src / "small.txt", "user.color", b"blue")
    repo = backed_up(src)
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


def test_reads_return_exact_bytes_at_any_offset(ops_for):
    ops, src, _ = ops_for
    data = (src + b"/big.bin")
    with open(data, "rb") as f:
        want = f.read()

    async def main():
        attr = await resolve(ops, src + b"/big.bin")
        assert await read_all(ops, attr.st_ino, attr.st_size) == want
        assert await read_all(ops, attr.st_ino, attr.st_size, step=999_983) == want
        info = await ops.open(attr.st_ino, os.O_RDONLY, None)
        for off, size in ((0, 1), (1_048_570, 20), (len(want) - 3, 100), (len(want), 10)):
            assert await ops.read(info.fh, off, size) == want[off:off + size]
        await ops.release(info.fh)

    trio.run(main)


def test_writing_is_refused(ops_for):
    ops, src, _ = ops_for

    async def main():
        attr = await resolve(ops, src + b"/small.txt")
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
            with pytest.raises(pyfuse3.FUSEError) as e:
                await ops.open(attr.st_ino, flags, None)
            assert e.value.errno == errno.EROFS

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


@pytest.mark.expect_warnings(r"read of .*big\.bin .* failed")
def test_a_damaged_chunk_is_eio_and_other_files_still_read(ops_for, tmp_path):
    ops, src, repo = ops_for
    for dirpath, _, files in os.walk(tmp_path / "vault" / "packs"):
        for name in files:
            path = Path(dirpath) / name
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x55  # inside big.bin's random chunks
            os.chmod(path, 0o600)
            path.write_bytes(bytes(data))

    async def main():
        attr = await resolve(ops, src + b"/big.bin")
        with pytest.raises(pyfuse3.FUSEError) as e:
            await read_all(ops, attr.st_ino, attr.st_size)
        assert e.value.errno == errno.EIO
        small = await resolve(ops, src + b"/small.txt")
        assert await read_all(ops, small.st_ino, small.st_size) == b"small"

    trio.run(main)
