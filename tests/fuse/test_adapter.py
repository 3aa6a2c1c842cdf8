"""The pyfuse3 handlers (btfs.fuse.ops) called directly under trio, on hand-built
histories: no kernel, real catalog, real vault, real chunks.

What a real mount cannot show precisely: reads at every offset around chunk boundaries,
what happens to concurrent readers when a chunk cannot be fetched, and that no request,
however odd its inode or flags, takes the request loop down (a non-FUSEError exception
in a handler would end pyfuse3.main and leave the mount dead).
"""

from __future__ import annotations

import errno
import logging
import os
import stat

import pyfuse3
import pytest
import trio
from builder import NS, local_ns
from helpers import rand_bytes

from btfs.engine.codec import Codec
from btfs.engine.reader import ChunkSource
from btfs.fuse import ops as ops_module
from btfs.fuse.ops import Operations
from btfs.fuse.tree import BY_FILE_INO, BY_TIME_INO, LATEST_INO, ROOT_INO, Tree
from btfs.vault import pack_key

MON = local_ns("2026-11-23 09:30:00")
SNAP = b"2026-11-23_093000"
CHUNK = 1000


@pytest.fixture
def ops(hand):
    """An Operations over a small history: /d/data.bin in 1000-byte chunks, /d/other.txt,
    a symlink, a directory with xattrs."""
    hand.chunk_size = CHUNK
    hand.begin(MON)
    hand.dirs(b"/d")
    hand.file(b"/d/data.bin", rand_bytes(10 * CHUNK + 123, 4))
    hand.file(b"/d/other.txt", b"other file, other pack")
    hand.symlink(b"/d/link", b"data.bin")
    from btfs.engine.meta import encode_xattrs
    hand.dir(b"/d/x", xattrs=encode_xattrs([(b"user.k", b"v")]))
    return Operations(Tree(hand.catalog), ChunkSource(hand.vault, Codec(3), cache_bytes=4 * CHUNK))


async def resolve(ops: Operations, path: bytes) -> pyfuse3.EntryAttributes:
    attr = await ops.lookup(BY_TIME_INO, SNAP, None)
    for part in path.strip(b"/").split(b"/"):
        attr = await ops.lookup(attr.st_ino, part, None)
    return attr


async def fuse_errno(call) -> int:
    with pytest.raises(pyfuse3.FUSEError) as e:
        await call
    return e.value.errno


@pytest.mark.trio
async def test_reads_at_every_offset_around_chunk_boundaries(ops, hand):
    data = rand_bytes(10 * CHUNK + 123, 4)
    attr = await resolve(ops, b"/d/data.bin")
    assert attr.st_size == len(data)
    info = await ops.open(attr.st_ino, os.O_RDONLY, None)
    assert info.keep_cache
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        for base in range(0, len(data) + 1, CHUNK):
            for off in {max(base - 2, 0), base, base + 1}:
                for size in (1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7, 1 << 20):
                    got = await ops.read(info.fh, off, size)
                    assert got == data[off:off + size], (off, size)
        # Sequential reads in kernel-sized pieces, with read-ahead running.
        whole = b"".join([await ops.read(info.fh, off, 4096)
                          for off in range(0, len(data), 4096)])
        assert whole == data
    await ops.release(info.fh)
    assert not ops._inflight


@pytest.mark.trio
@pytest.mark.expect_warnings()
async def test_a_missing_pack_is_eio_for_every_reader_and_the_rest_still_reads(ops, hand,
                                                                              caplog):
    data_pack = hand.packs[0]  # data.bin's chunks
    os.unlink(hand.vault._path(pack_key(data_pack)))
    hand.vault.close()  # drop cached file descriptors so the loss is seen
    attr = await resolve(ops, b"/d/data.bin")
    results: list[object] = []

    async def reader(off: int) -> None:
        info = await ops.open(attr.st_ino, os.O_RDONLY, None)
        try:
            results.append(await ops.read(info.fh, off, 3 * CHUNK))
        except pyfuse3.FUSEError as e:
            results.append(e.errno)
        finally:
            await ops.release(info.fh)

    with caplog.at_level(logging.WARNING, logger="btfs"):
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            for i in range(12):
                nursery.start_soon(reader, (i % 4) * 100)
    assert results == [errno.EIO] * 12
    assert not ops._inflight
    named = [r.getMessage() for r in caplog.records if b"data.bin" in
             r.getMessage().encode("utf-8", "surrogateescape")]
    assert named, [r.getMessage() for r in caplog.records]
    other = await resolve(ops, b"/d/other.txt")
    info = await ops.open(other.st_ino, os.O_RDONLY, None)
    assert await ops.read(info.fh, 0, 100) == b"other file, other pack"
    await ops.release(info.fh)


@pytest.mark.trio
@pytest.mark.expect_warnings(r"^lookup.* failed")
async def test_odd_requests_are_errors_not_crashes(ops):
    link = await resolve(ops, b"/d/link")
    directory = await resolve(ops, b"/d/x")
    data = await resolve(ops, b"/d/data.bin")
    assert stat.S_ISLNK(link.st_mode)
    assert await ops.readlink(link.st_ino, None) == b"data.bin"
    assert await ops.readlink(LATEST_INO, None) == SNAP
    # Inodes nobody handed out, of every kind, and names that do not exist.
    for ino in (0, 4, 5, 1 << 59, (1 << 60) | 99_999_999, (2 << 60) | (77 << 32) | 1,
                (3 << 60) | 99_999_999, (7 << 60) | 1, (1 << 64) - 1):
        assert await fuse_errno(ops.getattr(ino, None)) == errno.ENOENT, hex(ino)
        # (EIO where the catalog has no such row: a bug's answer, logged, not a crash)
        assert await fuse_errno(ops.lookup(ino, b"x", None)) in (errno.ENOENT, errno.ENOTDIR,
                                                                errno.EIO)
    # Opening what is not a file, reading a link from what is not a link.
    for ino in (directory.st_ino, ROOT_INO, BY_TIME_INO, link.st_ino):
        assert await fuse_errno(ops.open(ino, os.O_RDONLY, None)) in (
            errno.EISDIR, errno.ENOENT, errno.EINVAL, errno.ELOOP)
    assert await fuse_errno(ops.readlink(data.st_ino, None)) == errno.EINVAL
    assert await fuse_errno(ops.opendir(data.st_ino, None)) == errno.ENOTDIR
    # Extended attributes on every kind of inode.
    assert await ops.getxattr(directory.st_ino, b"user.k", None) == b"v"
    for ino in (ROOT_INO, BY_TIME_INO, LATEST_INO, BY_FILE_INO, link.st_ino, data.st_ino):
        assert await ops.listxattr(ino, None) == []
        assert await fuse_errno(ops.getxattr(ino, b"user.k", None)) == pyfuse3.ENOATTR
    st = await ops.statfs(None)
    assert st.f_namemax >= 255


@pytest.mark.trio
async def test_writes_are_refused_with_erofs(ops):
    data = await resolve(ops, b"/d/data.bin")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_APPEND, os.O_RDONLY | os.O_TRUNC):
        assert await fuse_errno(ops.open(data.st_ino, flags, None)) == errno.EROFS


@pytest.mark.trio
async def test_a_new_backup_is_seen_after_refresh(ops, hand):
    """The adapter reads through the tree; the watcher's refresh makes new backups
    visible (the invalidation itself needs a kernel: see test_real)."""
    assert (await ops.lookup(BY_TIME_INO, b"latest", None)).st_size == len(SNAP)
    from btfs.catalog import Catalog
    ops.tree = Tree(Catalog(hand.catalog.path, readonly=True))
    hand.begin(MON + 61 * NS)
    hand.file(b"/d/other.txt", b"changed")
    assert ops.tree.refresh()
    assert await ops.readlink(LATEST_INO, None) == b"2026-11-23_093101"
    new = await ops.lookup(BY_TIME_INO, b"2026-11-23_093101", None)
    d = await ops.lookup(new.st_ino, b"d", None)
    assert (await ops.lookup(d.st_ino, b"other.txt", None)).st_size == len(b"changed")


class FakeReplyBuffer:
    """Stands in for pyfuse3's readdir token: takes `room` entries per request."""

    def __init__(self):
        self.replies: list[list[tuple[bytes, int]]] = []

    def request(self, room: int) -> list[tuple[bytes, int]]:
        self.room = room
        self.replies.append([])
        return self.replies[-1]

    def reply(self, token, name, attr, cookie) -> bool:
        if len(self.replies[-1]) == self.room:
            return False
        self.replies[-1].append((name, cookie))
        return True


async def list_dir(ops: Operations, ino: int, room: int, buf: FakeReplyBuffer):
    """Read a directory as the kernel does: from the last cookie it took until an empty
    reply; returns the names."""
    fh = await ops.opendir(ino, None)
    names, after = [], 0
    while True:
        reply = buf.request(room)
        await ops.readdir(fh, after, None)
        if not reply:
            break
        names += [n for n, _ in reply]
        after = reply[-1][1]
    await ops.releasedir(fh)
    return names


@pytest.mark.trio
@pytest.mark.parametrize("room", [1, 2, 3, 5, 100])
async def test_readdir_resumes_a_page_and_knows_its_end(ops, hand, monkeypatch, room):
    """A full reply resumes from the rest of its page (no query), the empty reply that
    ends every listing needs no query after a short page, and every entry comes once, in
    the same order as one long page would give it."""
    for i in range(7):
        hand.file(b"/d/more-%d" % i, b"x")
    buf = FakeReplyBuffer()
    monkeypatch.setattr(pyfuse3, "readdir_reply", buf.reply)
    monkeypatch.setattr(ops_module, "READDIR_PAGE", 4)
    d = await resolve(ops, b"/d")
    want = [n for n, _, _ in ops.tree.readdir(d.st_ino, 0, 1000)]
    assert len(want) == 11
    queries = []
    real = ops.tree.readdir
    monkeypatch.setattr(ops.tree, "readdir", lambda *a: queries.append(a) or real(*a))
    assert await list_dir(ops, d.st_ino, room, buf) == want
    assert len(queries) == 3  # 4 + 4 + 3 entries, whatever the size of each reply
    # by-file pages skip versions not shown yet: there only an empty page is the end.
    queries.clear()
    by_file_d = await ops.lookup((await ops.lookup(ROOT_INO, b"by-file", None)).st_ino,
                                 b"d", None)
    assert await list_dir(ops, by_file_d.st_ino, room, buf) == want
    assert len(queries) == 4
