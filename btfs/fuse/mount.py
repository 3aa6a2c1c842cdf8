"""The mount's lifetime: the trio main that serves the tree until unmounted or signalled.

One process per mount. `serve` mounts, then runs three things in one nursery: pyfuse3's
request loop, a watcher that notices backups landing (or killed) while nobody looks, and a
signal handler that turns SIGINT/SIGTERM into a clean unmount; a mount of another host's
history (`btfs mount --host`) runs a fourth, which follows that host's catalog copy.
`pyfuse3.close` always runs, so the mountpoint is never left dangling by an error in here.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable

import pyfuse3
import trio

from .. import mounts
from ..engine.memory import tune_process_for_mount
from ..engine.reader import ChunkSource
from ..errors import UsageError
from ..lock import WriterLock
from ..own import OwnDir
from ..repo import Repo
from ..userpath import is_under
from .ops import Operations
from .tree import Tree

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # a killed backup's snapshot shows up within this
# Another host's mount asks the vault this often whether that host published a newer
# catalog copy: one listing request, a fraction of a cent a month on S3 at this pace.
FOLLOW_SECONDS = 30
# The kernel's read-ahead for this mount: at its default (128 KiB) a sequential reader
# asks for 128-256 KiB per request; at 1 MiB (the largest request FUSE sends here) one
# request per MiB, fewer round trips for a cold sequential read.
READ_AHEAD_KB = 1024


def fuse_options(allow_other: bool) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions: modes enforced
    options |= {"fsname=btfs", "subtype=btfs", "ro"}
    if allow_other:
        options.add("allow_other")
    return options


async def _watch_catalog(tree: Tree, ops: Operations) -> None:
    """Notice new backups nobody asked about (by-time's handlers refresh by themselves),
    so the kernel's cached attributes of by-time/ and latest are dropped, and a killed
    backup's snapshot shows once its writer lock is free: that changes nothing in the
    catalog, so only a look at the lock (Tree.refresh) sees it."""
    failing = False
    while True:
        await trio.sleep(POLL_SECONDS)
        try:
            changed = tree.refresh()
        except Exception as e:  # noqa: BLE001 - keep serving what we have; retry next poll
            if not failing:
                log.warning("cannot read the catalog's list of backups: %s", e)
            failing = True
            continue
        if failing:
            log.warning("the catalog's list of backups is readable again")
            failing = False
        if changed:
            ops.backups_changed()


async def _follow_host(repo: Repo, tree: Tree, ops: Operations) -> None:
    """`btfs mount --host`: that host's newer backups appear without a remount. A newer
    copy is fetched in a thread (deltas only, btfs.replica.otherhost) and the tree
    switched to it here, on the trio thread; the catalog before is closed one turn later,
    when no request can still be reading from it."""
    failing, retired = False, None
    while True:
        await trio.sleep(FOLLOW_SECONDS)
        try:
            newer = await trio.to_thread.run_sync(repo.newer_copy)
        except Exception as e:  # noqa: BLE001 - keep serving the copy we have; retry
            if not failing:
                log.warning("cannot bring the catalog copy of host %s up to date: %s",
                            repo.config.host_id, e)
            failing = True
            continue
        failing = False
        if retired is not None:
            retired.close()
            retired = None
        if newer is None:
            continue
        retired, repo.catalog = repo.catalog, newer
        log.info("host %s: catalog copy generation %d (%s)", repo.config.host_id,
                 repo.other_host.generation, repo.other_host.how)
        try:
            changed = tree.use_catalog(newer)
        except Exception as e:  # noqa: BLE001 - as in _watch_catalog, which retries it
            log.warning("cannot read the catalog's list of backups: %s", e)
            continue
        if changed:
            ops.backups_changed()


async def _watch_signals() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
            return


async def _serve(ops: Operations, tree: Tree, mountpoint: str, repo: Repo) -> None:
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        nursery.start_soon(raise_read_ahead, mountpoint)
        nursery.start_soon(_watch_catalog, tree, ops)
        if repo.other_host is not None:
            nursery.start_soon(_follow_host, repo, tree, ops)
        nursery.start_soon(_watch_signals)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def raise_read_ahead(mountpoint: str) -> None:
    """Best effort: writing the mount's read_ahead_kb needs root; as a user the kernel's
    default stays, which only means more, smaller read requests. Only once the mount
    answers (a stat in a thread, served by this process): the kernel sets the read-ahead
    when the server answers FUSE's INIT, and would undo an earlier change."""
    try:
        dev = (await trio.to_thread.run_sync(os.stat, mountpoint)).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        await trio.to_thread.run_sync(_write, path, str(READ_AHEAD_KB))
    except OSError as e:
        log.debug("read-ahead of %s stays at the kernel's default: %s", mountpoint, e)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


# Verified chunks kept for readers: the read-ahead (8 MiB in a file, 1 MiB along a pack)
# lands here, so this only needs to hold a few read-aheads.
CHUNK_CACHE_BYTES = 32 << 20


def serve(repo: Repo, mountpoint: str, *, allow_other: bool = False) -> None:
    """Mount and serve until unmounted (fusermount3 -u) or SIGINT/SIGTERM."""
    tune_process_for_mount()
    tree = Tree(repo.catalog, WriterLock(repo.paths.lock))
    ops = Operations(tree, ChunkSource(repo.vault, repo.codec, cache_bytes=CHUNK_CACHE_BYTES),
                     xattrs=tree.has_xattrs())
    pyfuse3.init(ops, mountpoint, fuse_options(allow_other))
    ops.store_in_kernel = pyfuse3.notify_store  # only now: it writes to the FUSE session
    log.info("mounted %s at %s", repo.vault.url, mountpoint)
    try:
        trio.run(_serve, ops, tree, mountpoint, repo)
    finally:
        pyfuse3.close(unmount=True)
        log.info("unmounted %s", mountpoint)


def check_mountpoint(path: str, tracked: Iterable[str] = (),
                     own: Iterable[OwnDir] = ()) -> str:
    """The absolute mountpoint, ready to mount on, or a one-line reason it cannot be used.

    A mount hides what is under it, so it must not go over files (a non-empty directory)
    or over a tracked directory (the backup would then read the mount), nor inside
    another btfs mount (read-only, and a loop), nor inside btfs's `own` directories
    (the vault's writer would find it in its tmp/). A dead btfs mount there (its server
    was killed) is cleared; a missing directory is created when its parent exists."""
    full = os.path.abspath(os.path.expanduser(path))
    mounts.clear_dead(full)
    for other in mounts.btfs_mounts():
        if full != other and is_under(full, other):
            raise UsageError(f"mountpoint {path} is inside the btfs mount {other}")
    if os.path.ismount(full) or full in mounts.btfs_mounts():
        raise UsageError(f"{path} is already mounted")
    real = os.path.realpath(full)
    for d in own:
        if is_under(real, d.path):
            raise UsageError(f"mountpoint {path} is inside {d.what} ({d.path})")
    for t in tracked:
        if is_under(t, real):
            what = "is tracked" if t == real else f"holds the tracked directory {t}"
            raise UsageError(f"mountpoint {path} {what}: a mount would hide it from backups")
    if not os.path.lexists(full):
        if not os.path.isdir(os.path.dirname(full)):
            raise UsageError(f"mountpoint {path} does not exist, nor does its parent")
        os.mkdir(full, 0o700)
        log.info("created mountpoint %s", full)
        return full
    if not os.path.isdir(full):
        raise UsageError(f"mountpoint {path} is not a directory")
    if os.listdir(full):
        raise UsageError(f"mountpoint {path} is not empty: a mount would hide its files")
    return full
