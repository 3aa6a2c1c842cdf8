"""The thin pyfuse3 adapter over the tree model.

Turns `tree.Attr` into EntryAttributes and domain errors into FUSEError, and schedules
the work: nothing about what the history looks like (tree.py), what to fetch ahead
(btfs.engine.readahead) or which xattrs are remembered (xattrcache.py) is decided here,
and the catalog is reached only through the model. Runs on the trio thread: the model's
queries (fast, indexed) run inline; fetching, decompressing and verifying chunks run in
worker threads under a CapacityLimiter, so one slow read never stalls the others; a
trio.Event per chunk in flight lets a reader wait for a fetch already under way. A chunk
that fails its hash check (or a missing pack) fails that read with EIO and one log line
naming the file; nothing else is affected.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyfuse3
import trio

from ..catalog import ChunkRef
from ..engine.readahead import FILE_AHEAD_BYTES, ReadAhead
from ..engine.reader import ChunkSource, FileLayout
from ..errors import BtfsError
from .tree import BY_TIME_INO, LATEST_INO, NotFound, Tree, is_dir_ino, is_stable
from .xattrcache import XattrCache

log = logging.getLogger(__name__)

STABLE_TIMEOUT = 3600.0  # snapshot contents never change
LIVE_TIMEOUT = 1.0  # by-time/, latest and by-file directories change when backups land
# Entries fetched per query while filling one readdir reply. The kernel's buffer takes
# a few dozen entries with attributes; what does not fit waits in OpenDir.pending for the
# next reply, so a page much larger than a reply is work done before it is needed.
READDIR_PAGE = 48
# A file up to this size whose chunks are all verified in the cache when it is opened
# (the read-ahead along its pack fetched them) is handed whole to the kernel's page cache
# before the open is answered, so its reads never reach this process: a READ request was
# a third of what each small file of a `tar` or `cp -a` cost the mount. Small files only:
# a larger one is mostly read in part or sequentially (the read-ahead in a file).
HAND_OVER_BYTES = 128 * 1024


def _guarded(handler=None, *, not_found: int = errno.ENOENT):
    """Translate a handler's errors for the kernel, in one place: NotFound from the tree
    becomes `not_found` (ENOENT unless said otherwise), and an unexpected exception becomes
    EIO plus its traceback in the log: anything but FUSEError escaping a handler ends
    pyfuse3.main, which would leave the mount dead ("transport endpoint is not connected")
    for every other reader."""
    if handler is None:
        return functools.partial(_guarded, not_found=not_found)

    @functools.wraps(handler)
    async def guarded(self, *args):
        try:
            return await handler(self, *args)
        except pyfuse3.FUSEError:
            raise
        except NotFound:
            raise pyfuse3.FUSEError(not_found) from None
        except Exception:
            log.exception("%s%r failed", handler.__name__, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return guarded


@dataclass
class OpenDir:
    """One opendir's listing state: the rest of the last page, and where it ends. Reply
    buffering only (what the kernel's buffer did not take, and the cookie after which
    nothing follows), tied to readdir_reply's protocol; what a page holds is the model's."""

    ino: int
    pending: list = field(default_factory=list)  # (name, attr, cookie) not sent yet
    pending_after: int = -1  # the cookie that `pending` follows
    pending_last: bool = False  # whether `pending` is the end of the listing
    end: int = -1  # the cookie after which the listing is known to hold nothing more


@dataclass
class OpenFile:
    ino: int
    layout: FileLayout
    next_offset: int = 0  # where a sequential reader will read next


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, tree: Tree, source: ChunkSource, *, threads: int = 8,
                 xattrs: bool = True):
        super().__init__()
        self.tree = tree
        # False when no backup had extended attributes at mount time: xattr requests are
        # then answered ENOSYS, which the kernel remembers for the whole mount (ENOTSUP to
        # every later caller, no round trip). `cp -a` asks for the xattrs and ACL of every
        # file it copies: 3 of the 9 requests per small file.
        self.xattrs = xattrs
        self._xattrs_warned = False
        self.source = source
        self.limiter = trio.CapacityLimiter(threads)
        self.nursery: trio.Nursery | None = None  # set by mount.py for read-ahead tasks
        self._files: dict[int, OpenFile] = {}
        # Inodes the kernel may be waiting on this process for: open handles, and reads
        # waiting for a chunk. Handing an inode's content to the kernel locks its pages,
        # and a page under a READ stays locked until this thread answers it: only an
        # inode in none of these is handed over (see _hand_over).
        self._busy: Counter[int] = Counter()
        self._dirs: dict[int, OpenDir] = {}
        self._next_fh = 1
        # A remote vault reads runs of chunks (vault.read_run_bytes) and gets four of them
        # ahead of a sequential reader, so that many requests are in flight at once.
        run = source.vault.read_run_bytes
        self.ahead: ReadAhead[trio.Event] = ReadAhead(
            tree.chunks_after, source.peek, file_run_bytes=run,
            file_bytes=max(FILE_AHEAD_BYTES, 4 * run), group_of=tree.group_of)
        self._inflight = self.ahead.inflight  # chunk hash -> the Event its fetch sets
        self._xattr_cache = XattrCache(tree.describe, live_seconds=LIVE_TIMEOUT)
        # Stores bytes in the kernel's page cache: pyfuse3.notify_store, set by mount.py
        # once the mount is up (it needs the FUSE session); None: every read comes here.
        self.store_in_kernel: Callable[[int, int, bytes], None] | None = None

    # ---- attributes --------------------------------------------------------------------

    @staticmethod
    def _entry(attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = attr.ino
        e.generation = 0
        timeout = STABLE_TIMEOUT if attr.stable else LIVE_TIMEOUT
        e.entry_timeout = timeout
        # latest's size is its target's length, which a backup changes; asking costs
        # nothing on a path walk, which follows a symlink without its attributes. by-time
        # keeps its second: a walk through it checks its permissions, so a zero timeout
        # would cost a request per path; its attributes are invalidated once a change is
        # seen (Operations.backups_changed).
        e.attr_timeout = 0.0 if attr.ino == LATEST_INO else timeout
        e.st_mode = attr.mode
        e.st_nlink = attr.nlink
        e.st_uid = attr.uid
        e.st_gid = attr.gid
        e.st_rdev = 0
        e.st_size = attr.size
        e.st_blksize = 128 * 1024
        e.st_blocks = attr.blocks
        e.st_atime_ns = attr.atime_ns
        e.st_mtime_ns = attr.mtime_ns
        e.st_ctime_ns = attr.ctime_ns
        return e

    @_guarded
    async def lookup(self, parent_inode, name, ctx):
        if parent_inode == BY_TIME_INO:
            self.refresh()
        return self._remember(self.tree.lookup(parent_inode, name))

    @_guarded
    async def getattr(self, inode, ctx):
        if inode in (BY_TIME_INO, LATEST_INO):
            self.refresh()
        return self._remember(self.tree.getattr(inode))

    @_guarded(not_found=errno.EINVAL)  # readlink of something that is not a symlink
    async def readlink(self, inode, ctx):
        if inode == LATEST_INO:
            self.refresh()
        return self.tree.readlink(inode)

    async def forget(self, inode_list):
        """Inodes are derived from catalog rows, not allocated: nothing to release."""

    # ---- what by-time shows: fresh at every look -------------------------------------

    def refresh(self) -> None:
        """Before answering about by-time/ or latest: reload the snapshot list if the
        catalog changed (one PRAGMA when it did not), so `ls by-time/latest` right after
        `btfs backup` returns shows that backup; the poll in mount.py alone would leave a
        window. The kernel asks again for everything that can change here: a name not
        found is not cached, and latest's target is read at every lookup through it."""
        try:
            changed = self.tree.refresh()
        except Exception as e:  # noqa: BLE001 - the poll reports it; serve what we have
            log.debug("cannot read the catalog's list of backups: %s", e)
            return
        if changed:
            self.backups_changed()

    def backups_changed(self) -> None:
        """The snapshot list changed: drop the attributes the kernel keeps of by-time/
        (its mtime is the newest backup's) and latest (its size is the target's length).
        Their inodes never change, so their directory entries stay valid. Called from
        request handlers too: invalidate_inode does not wait for requests (it only may
        with a writeback cache, which this mount disables), unlike invalidate_entry."""
        log.info("backups changed; newest is now %s", self.tree.latest_name)
        for ino in (BY_TIME_INO, LATEST_INO):
            try:
                pyfuse3.invalidate_inode(ino, attr_only=True)
            except OSError as e:
                if e.errno != errno.ENOENT:  # ENOENT: the kernel had nothing cached
                    log.warning("cannot invalidate inode %d: %s", ino, e)
        if not self.xattrs and not self._xattrs_warned and self.tree.has_xattrs():
            # The kernel was told this filesystem has no xattrs; only a new mount can
            # take that back.
            log.warning("backup %s has extended attributes; remount to see them",
                        self.tree.latest_name)
            self._xattrs_warned = True

    # ---- directories -------------------------------------------------------------------

    @_guarded
    async def opendir(self, inode, ctx):
        # The inode number says whether it is a directory; no query per directory opened
        # (find opens every one). A directory that does not exist fails in readdir.
        if not is_dir_ino(inode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = OpenDir(inode)
        return fh

    @_guarded
    async def readdir(self, fh, start_id, token):
        # Every listing ends with a request that finds nothing (the kernel asks until a
        # reply is empty): when a short page already showed the end, answer it without a
        # query, and resume a full reply from the rest of its page instead of querying
        # again. Both only for the same cookie; a seek (telldir/seekdir) queries afresh.
        d = self._dirs[fh]
        if start_id == d.end:
            return
        if d.ino == BY_TIME_INO and start_id == 0:
            self.refresh()
        if start_id == d.pending_after and d.pending:
            page, d.pending = d.pending, []
            last_page = d.pending_last
        else:
            page = self.tree.readdir(d.ino, start_id, READDIR_PAGE)
            last_page = self._is_last_page(d, page)
        after = start_id
        while page:
            for i, (name, attr, cookie) in enumerate(page):
                if not pyfuse3.readdir_reply(token, name, self._remember(attr), cookie):
                    # The kernel's buffer is full; it resumes from `after`.
                    d.pending, d.pending_after, d.pending_last = page[i:], after, last_page
                    return
                after = cookie
            if last_page:
                break
            page = self.tree.readdir(d.ino, after, READDIR_PAGE)
            last_page = self._is_last_page(d, page)
        d.end = after

    @staticmethod
    def _is_last_page(d: OpenDir, page: list) -> bool:
        """Whether nothing follows `page`. A snapshot's directory pages exactly, so a short
        page is its end; by-file pages skip what is not shown yet, so only an empty page
        is the end there."""
        return not page or (len(page) < READDIR_PAGE and is_stable(d.ino))

    async def releasedir(self, fh):
        self._dirs.pop(fh, None)

    # ---- files -------------------------------------------------------------------------

    @_guarded
    async def open(self, inode, flags, ctx):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        content = self.tree.file_refs(inode)
        layout = FileLayout(content.refs)
        fh = self._next_fh
        self._next_fh += 1
        if (self.store_in_kernel is not None and content.size_as_shown
                and 0 < layout.size <= HAND_OVER_BYTES and inode not in self._busy):
            self._hand_over(inode, layout)
        self._files[fh] = OpenFile(inode, layout)
        self._busy[inode] += 1
        # A version never changes: let the kernel keep its pages across opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    def _hand_over(self, inode: int, layout: FileLayout) -> None:
        """Put a small file's content in the kernel's page cache if every chunk of it is
        verified in the cache already (HAND_OVER_BYTES); its read-ahead along the pack
        then starts here, as after a read to its end. Otherwise, or if the kernel
        refuses, the file is read as usual.

        Called only for an inode no other handle has open and no read waits on: the
        kernel stores the bytes page by page, each page locked, and a page that a READ
        of this inode has locked stays so until this very thread answers that READ (a
        hang). A READ comes only through an open handle, and the kernel queues a
        handle's RELEASE after its READs, so an inode with neither has no READ pending."""
        parts = []
        for ref in layout.refs:
            data = self.source.peek(ref.hash)
            if data is None:
                return
            parts.append(data)
        try:
            self.store_in_kernel(inode, 0, parts[0] if len(parts) == 1 else b"".join(parts))
        except OSError as e:
            if e.errno == errno.ENOSYS:  # a kernel without FUSE_NOTIFY_STORE
                log.info("the kernel cannot take file contents ahead; reads only")
                self.store_in_kernel = None
            else:
                log.debug("cannot hand inode %d to the kernel: %s", inode, e)
            return
        if self.nursery is not None:
            self._read_ahead(layout, len(layout.refs) - 1, sequential=True)

    @_guarded
    async def read(self, fh, off, size):
        f = self._files[fh]
        layout = f.layout
        parts = []
        last = None
        try:
            for index, start, end in layout.pieces(off, size):
                ref = layout.refs[index]
                data = self.source.peek(ref.hash)
                if data is None:
                    self._busy[f.ino] += 1  # a READ that waits: see _hand_over
                    try:
                        data = await self._chunk(ref)
                    finally:
                        self._unbusy(f.ino)
                # A view, not a slice: pyfuse3 copies the reply from any buffer.
                parts.append(data if end - start == len(data) else memoryview(data)[start:end])
                last = index
        except BtfsError as e:
            self._report(f.ino, e)
            raise pyfuse3.FUSEError(errno.EIO) from None
        if last is not None and self.nursery is not None:
            self._read_ahead(layout, last, sequential=off == f.next_offset)
        f.next_offset = off + size
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_ahead(self, layout: FileLayout, last: int, *, sequential: bool) -> None:
        """Start the fetches the read-ahead plan asks for: a task per chunk of the file
        (it marks itself in flight when it runs, see _chunk), a task per run along the
        pack (marked in flight now, so the reads it will answer wait for it)."""
        plan = self.ahead.after_read(layout, last, sequential=sequential)
        for ref in plan.chunks:
            self.nursery.start_soon(self._prefetch, ref)
        for run in plan.runs:
            events = {r.hash: trio.Event() for r in run}
            for chunk_hash, event in events.items():
                self._inflight.start(chunk_hash, event)
            self.nursery.start_soon(self._prefetch_run, run, events)

    async def _prefetch_run(self, batch: list[ChunkRef], events: dict[bytes, trio.Event]
                            ) -> None:
        try:
            await trio.to_thread.run_sync(self.source.prefetch_run, batch, limiter=self.limiter)
        except Exception as e:  # noqa: BLE001 - a read that needs one of them fetches it
            # itself and reports; a read-ahead task must never end the mount's nursery
            log.debug("read-ahead in pack %s failed: %s", batch[0].pack[:16], e)
        finally:
            for chunk_hash, event in events.items():
                self._inflight.done(chunk_hash, event)
                event.set()

    async def _chunk(self, ref: ChunkRef) -> bytes:
        data = self.source.peek(ref.hash)
        if data is not None:
            return data
        event = self._inflight.get(ref.hash)
        if event is not None:  # already being fetched (read-ahead or another reader)
            await event.wait()
            data = self.source.peek(ref.hash)
            if data is not None:
                return data
        # Its group's other members come along (ReadAhead.siblings), one event for all.
        siblings = self.ahead.siblings(ref)
        event = trio.Event()
        for chunk_hash in (ref.hash, *(r.hash for r in siblings)):
            self._inflight.start(chunk_hash, event)
        try:
            return await trio.to_thread.run_sync(self.source.chunk, ref, siblings,
                                                 limiter=self.limiter)
        finally:
            for chunk_hash in (ref.hash, *(r.hash for r in siblings)):
                self._inflight.done(chunk_hash, event)
            event.set()

    async def _prefetch(self, ref: ChunkRef) -> None:
        try:
            await self._chunk(ref)
        except Exception as e:  # noqa: BLE001 - the read that needs the chunk reports it;
            # a read-ahead task must never take the mount's nursery down with it
            log.debug("read-ahead of chunk %s failed: %s", ref.hash.hex()[:16], e)

    def _report(self, ino: int, error: Exception) -> None:
        try:
            log.error("read of %s failed: %s", self.tree.name_file(ino), error)
        except Exception:  # naming the file must never hide the error itself
            log.error("read of inode %d failed: %s", ino, error)

    async def release(self, fh):
        f = self._files.pop(fh, None)
        if f is not None:
            self._unbusy(f.ino)

    def _unbusy(self, inode: int) -> None:
        self._busy[inode] -= 1
        if not self._busy[inode]:
            del self._busy[inode]

    # No flush handler: pyfuse3 answers ENOSYS once and the kernel stops sending one on
    # every close(), a round trip per file that `cp -a` of many small files would pay.

    # ---- extended attributes and the filesystem ----------------------------------------

    def _remember(self, attr) -> pyfuse3.EntryAttributes:
        """The kernel's view of `attr`; a snapshot entry's xattrs are kept for getxattr."""
        if attr.stable and self.xattrs:
            self._xattr_cache.note(attr)
        return self._entry(attr)

    @_guarded
    async def getxattr(self, inode, name, ctx):
        if not self.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        value = self._xattr_cache.get(inode).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @_guarded
    async def listxattr(self, inode, ctx):
        if not self.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return list(self._xattr_cache.get(inode))

    @_guarded
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    async def access(self, inode, mode, ctx):
        if mode & os.W_OK:
            raise pyfuse3.FUSEError(errno.EROFS)
        return True
