"""The floor under btfs's mount: a pyfuse3 + trio server that does nothing but pass each
request through to a directory on disk, read-only, with the mount options and the
answers btfs gives the kernel (attribute and entry timeouts, keep_cache, no flush
handler, xattr requests answered ENOSYS once, the same read-ahead). No catalog, no
chunks, no hashing, no decompression: one syscall per request.

What `find`, `tar` and `cp -a` cost through it is what any btfs mount built on this stack
costs at least, so the benchmark measures it beside the tools (bench.py, `floor_*` rows).

    python -m bench.floor SOURCE MOUNTPOINT      serves until unmounted
"""

from __future__ import annotations

import errno
import os
import sys

import pyfuse3
import trio

TIMEOUT = 3600.0  # btfs's STABLE_TIMEOUT: a snapshot's entries never change
READ_AHEAD_KB = 1024  # btfs's READ_AHEAD_KB


class Passthrough(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, source: str):
        super().__init__()
        self._root_ino = os.lstat(source).st_ino
        self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self._fds: dict[int, int] = {}
        self._next_fh = 1

    def _ino(self, st: os.stat_result) -> int:
        return pyfuse3.ROOT_INODE if st.st_ino == self._root_ino else st.st_ino

    def _entry(self, path: str) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        ino = self._ino(st)
        self._paths[ino] = path
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        e.entry_timeout = e.attr_timeout = TIMEOUT
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
                     "st_mtime_ns", "st_ctime_ns", "st_blocks"):
            setattr(e, name, getattr(st, name))
        e.st_rdev = 0
        e.st_blksize = 128 * 1024
        return e

    async def lookup(self, parent_inode, name, ctx):
        return self._entry(os.path.join(self._paths[parent_inode], os.fsdecode(name)))

    async def getattr(self, inode, ctx):
        return self._entry(self._paths[inode])

    async def readlink(self, inode, ctx):
        return os.fsencode(os.readlink(self._paths[inode]))

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, inode, start_id, token):
        path = self._paths[inode]
        names = sorted(os.listdir(path))
        for i, name in enumerate(names[start_id:], start_id + 1):
            entry = self._entry(os.path.join(path, name))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry, i):
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


async def _raise_read_ahead(mountpoint: str) -> None:
    dev = (await trio.to_thread.run_sync(os.stat, mountpoint)).st_dev
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError:
        pass  # not root: the kernel's default read-ahead


async def _serve(mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_raise_read_ahead, mountpoint)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    source, mountpoint = argv
    options = set(pyfuse3.default_options) | {"fsname=btfs-floor", "ro"}
    pyfuse3.init(Passthrough(os.path.abspath(source)), mountpoint, options)
    try:
        trio.run(_serve, mountpoint)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
