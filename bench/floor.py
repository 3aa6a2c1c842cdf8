"""The floor under btfs's mount: a pyfuse3 + trio server that knows the tree by heart and
otherwise does as little as a server can. It walks a directory once at start and keeps
every entry's attributes and every directory's listing in memory, so lookup, getattr and
readdir cost no syscall; a file's open, read and release are one open(2), pread(2) and
close(2) of the file on disk. It mounts with btfs's options and answers the kernel as
btfs does (attribute and entry timeouts, keep_cache, no flush handler, xattr requests
ENOSYS once, the same read-ahead), taking those settings from btfs itself. No catalog, no
chunks, no hashing, no decompression.

What `find`, `tar` and `cp -a` cost through it is what any mount built on pyfuse3 and
trio costs at least, so the benchmark measures it beside the tools (`floor_*` rows).

    python -m bench.floor SOURCE MOUNTPOINT      serves until unmounted
"""

from __future__ import annotations

import errno
import os
import sys

import pyfuse3
import trio

# btfs's own settings, so the floor cannot drift from what the mount does.
from btfs.fuse.mount import fuse_options, raise_read_ahead
from btfs.fuse.ops import STABLE_TIMEOUT


def _attributes(st: os.stat_result, ino: int) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = ino
    e.entry_timeout = e.attr_timeout = STABLE_TIMEOUT
    for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
                 "st_mtime_ns", "st_ctime_ns", "st_blocks"):
        setattr(e, name, getattr(st, name))
    e.st_rdev = 0
    e.st_blksize = 128 * 1024
    return e


class Passthrough(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, source: str):
        super().__init__()
        self._attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self._paths: dict[int, bytes] = {}  # files and symlinks
        self._children: dict[int, dict[bytes, int]] = {}  # directories: name -> inode
        self._listings: dict[int, list[tuple[bytes, int]]] = {}  # the same, sorted by name
        self._fds: dict[int, int] = {}
        self._next_fh = 1
        self._walk(os.fsencode(source), pyfuse3.ROOT_INODE, os.lstat(source))

    def _walk(self, top: bytes, top_ino: int, top_st: os.stat_result) -> None:
        self._attrs[top_ino] = _attributes(top_st, top_ino)
        stack = [(top, top_ino)]
        while stack:
            path, ino = stack.pop()
            children: dict[bytes, int] = {}
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda d: d.name)
            for d in entries:
                st = d.stat(follow_symlinks=False)
                child = st.st_ino if st.st_ino != pyfuse3.ROOT_INODE else 2 ** 62
                children[d.name] = child
                self._attrs[child] = _attributes(st, child)
                if d.is_dir(follow_symlinks=False):
                    stack.append((d.path, child))
                else:
                    self._paths[child] = d.path
            self._children[ino] = children
            self._listings[ino] = list(children.items())

    async def lookup(self, parent_inode, name, ctx):
        child = self._children.get(parent_inode, {}).get(name)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs[child]

    async def getattr(self, inode, ctx):
        return self._attrs[inode]

    async def readlink(self, inode, ctx):
        return os.readlink(self._paths[inode])

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, inode, start_id, token):
        listing = self._listings[inode]
        for i in range(start_id, len(listing)):
            name, child = listing[i]
            if not pyfuse3.readdir_reply(token, name, self._attrs[child], i + 1):
                return

    async def open(self, inode, flags, ctx):
        fh = self._next_fh
        self._next_fh += 1
        self._fds[fh] = os.open(self._paths[inode], os.O_RDONLY | os.O_CLOEXEC)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def read(self, fh, off, size):
        return os.pread(self._fds[fh], size, off)

    async def release(self, fh):
        os.close(self._fds.pop(fh))

    async def getxattr(self, inode, name, ctx):
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def listxattr(self, inode, ctx):
        raise pyfuse3.FUSEError(errno.ENOSYS)


async def _serve(mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(raise_read_ahead, mountpoint)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not os.path.isdir(argv[0]) or not os.path.isdir(argv[1]):
        print("usage: python -m bench.floor SOURCE_DIR MOUNTPOINT_DIR", file=sys.stderr)
        return 2
    source, mountpoint = argv
    pyfuse3.init(Passthrough(os.path.abspath(source)), mountpoint, fuse_options(False))
    try:
        trio.run(_serve, mountpoint)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
