"""One backup run: scan the tracked directories, store what changed, record a snapshot.

Flow (main thread): walk each tracked directory depth-first; compare every entry's lstat
with the newest version of its path (`node.head`); unchanged entries cost no read and add
no row. Changed files go through a bounded window of worker jobs (files.py) whose results
are taken in order and fed to the ChunkStore. A file's version is inserted only when every
pack holding its new chunks is durable; the catalog transaction is committed at those
points, so a kill -9 leaves committed work that refers only to durable packs.

Subtree backups (`only`, for `btfs watch`): the scan walks only towards the given paths
(scanner.Subtree) and records what changed there; every other path keeps its older
version by the catalog's tree-at-S rule, so the snapshot still shows the whole tree.
Deletions elsewhere wait for the next full backup. Such a snapshot's `entries` is the
previous snapshot's, plus new paths, minus deleted ones.

`stop` (a threading.Event) asks a running backup to end between files: it raises
BackupStopped, the open transaction is rolled back and the snapshot marked interrupted,
as on any other error; committed files stay valid.

Never: follow symlinks, key on st_dev, hold a whole large file or the whole file list.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import digest
from ..catalog import DELETED, DIR, FILE, SYMLINK, Catalog, Meta, Version
from ..config import Config, TrackedDir
from ..errors import BtfsError, VaultError
from ..userpath import is_under
from .codec import Codec
from .files import Batch, Chunker, Piece, WholeFile, cut_file, make_piece, read_batch
from .meta import meta_from_stat, read_xattrs
from .scanner import Changed, Deleted, Listed, Scanner, Subtree
from .store import STORED, ChunkStore

log = logging.getLogger(__name__)

DELETED_META = Meta(DELETED, 0, 0, 0, 0, 0, 0, 0, None, 0, 0)
WINDOW_JOBS = 24  # jobs in flight; with WINDOW_BYTES bounds the memory of reads in progress
# A large file's chunks in flight, each also held compressed until it is taken: the window
# is about half of a backup's peak heap. Smaller saves memory until the workers starve: a
# few chunks per worker keep them busy.
WINDOW_BYTES = 8 << 20
# Small files travel in batches that are read, hashed and compressed whole, and each file
# brings its own objects along: a tighter window for them saves memory at no cost in
# time.
SMALL_WINDOW_BYTES = 6 << 20
BATCH_FILES = 64  # small files per worker job
BATCH_BYTES = 2 << 20
# Files read and waiting for the open pack to be durable are held in memory (a few hundred
# bytes each). Small source files fill a 16 MiB pack over ten thousand at a time, a good
# part of a backup's peak memory; past this many the pack is sealed early (smaller packs
# only for trees of many small files).
MAX_FILES_PER_PACK = 4096
COMMIT_EVERY_S = 30.0  # also commit directory/metadata-only changes at least this often
PROGRESS_EVERY_S = 0.2  # the progress callback is called at most this often


@dataclass
class Stats:
    """What a backup did, for its summary and the snapshot row."""

    snapshot_id: int = 0
    entries: int = 0  # entries in the backup set (unchanged included)
    files_new: int = 0
    files_changed: int = 0
    files_deleted: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    errors: int = 0
    warnings: list[str] = field(default_factory=list)
    started_ns: int = 0
    finished_ns: int = 0
    state: str = "running"  # or "unchanged": nothing to record, the snapshot was dropped

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["seconds"] = round((self.finished_ns - self.started_ns) / 1e9, 3)
        return d


class BackupStopped(BtfsError):
    """A backup ended early because its `stop` event was set."""

    def __init__(self) -> None:
        super().__init__("backup stopped; what was committed is kept", exit_code=130)


@dataclass(slots=True)
class _FileJob:
    """A file being read: its result is complete when every window item for it is taken."""

    # Thousands of these wait for their pack to be durable: keep them small (no
    # stat_result or Version objects, which cost far more than the ints we need).
    node_id: int
    path: bytes
    is_new: bool
    atime_ns: int  # before we read it: O_NOATIME may not apply
    pieces: list[tuple[bytes, int]] = field(default_factory=list)
    need_seq: int = STORED  # newest pack its chunks are in
    open_items: int = 0
    reading_done: bool = False
    abandoned: bool = False  # a re-read replaced this attempt
    meta: Meta | None = None  # as read, without content_id
    digest: bytes | None = None
    failed: bool = False

    def set_read(self, st: os.stat_result, content_digest: bytes,
                 xattrs: bytes | None) -> None:
        self.meta = meta_from_stat(st, FILE, xattrs=xattrs, atime_ns=self.atime_ns)
        self.digest = content_digest


class Backup:
    def __init__(self, catalog: Catalog, store: ChunkStore, config: Config, codec: Codec, *,
                 progress: Callable[[Stats, bytes], None] | None = None,
                 never: frozenset[bytes] = frozenset(),
                 only: Iterable[Subtree] | None = None,
                 stop: threading.Event | None = None,
                 skip_unchanged: bool = False):
        self.catalog = catalog
        self.only = None if only is None else tuple(only)
        self.stop = stop
        self.skip_unchanged = skip_unchanged  # no snapshot when nothing changed
        self._versions = 0  # versions recorded in this run
        self._ancestors_changed: list[Changed] = []  # above a tracked dir, not yet recorded
        self.store = store
        self.config = config
        self.progress = progress
        self.never = never  # paths never backed up (btfs/own.py)
        self.stats = Stats()
        # Small files are I/O-bound on a cold cache: twice as many workers as cores keeps
        # the disk busy while hashing and compression (which release the GIL) use the CPUs.
        threads = config.threads or max(4, 2 * (os.cpu_count() or 2))
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="btfs-hash")
        self.chunker = Chunker(config.chunk_min, config.chunk_avg, config.chunk_max)
        self.codec = codec
        self._window: deque[tuple[list[_FileJob], Future, int]] = deque()
        self._batch: list[_FileJob] = []  # small files not yet handed to a worker
        self._batch_stats: list[os.stat_result] = []  # their lstat from the scan
        self._batch_bytes = 0
        self._window_bytes = 0
        self._ready: list[_FileJob] = []  # read, waiting for their packs to be durable
        self._staged = {v.node_id: v for v in catalog.history.all_staged()}
        self._new_nodes: set[int] = set()
        self._ancestors_seen: set[int] = set()
        self._last_commit = time.monotonic()
        self._flushed_seq = STORED  # durable_seq when ready files were last inserted
        self._files_in_open_pack = 0  # ready files waiting for the pack being filled
        self._counted_seq = STORED  # the open pack they were counted for
        self._last_progress = 0.0

    # ---- the run ------------------------------------------------------------------------

    def run(self, host_id: str, tracked: tuple[TrackedDir, ...]) -> Stats:
        """One backup. The process's tuning for backups (btfs.engine.memory) is its
        owner's business, set once before the first run, never per run."""
        s = self.stats
        s.started_ns = time.time_ns()
        with self.catalog.writer.transaction():
            s.snapshot_id = self.catalog.writer.begin_snapshot(host_id, s.started_ns)
        self.catalog.writer.begin()
        try:
            self._forget_untracked(tracked)
            for t in tracked:
                self._backup_root(t)
            self._commit_staged_leftovers()
            self._drain(all_items=True)
            self.store.finish()
            self._flush_ready(final=True)
            if self._versions:
                for a in self._ancestors_changed:
                    self._record(a.node_id, a.path, a.st, a.kind, a.is_new, counted=False)
            s.bytes_added = self.store.bytes_added
            s.finished_ns = time.time_ns()
            s.state = "partial" if s.errors else "complete"
            if self.only is not None:
                s.entries = self._entries_after_subtrees()
            if self.skip_unchanged and not self._versions and not s.errors:
                self.catalog.writer.drop_empty_snapshot(s.snapshot_id)
                self.catalog.writer.commit()
                s.state, s.snapshot_id = "unchanged", 0
                return s
            self.catalog.writer.update_snapshot(
                s.snapshot_id, finished_ns=s.finished_ns, state=s.state,
                files_new=s.files_new, files_changed=s.files_changed,
                files_deleted=s.files_deleted, entries=s.entries, bytes_read=s.bytes_read,
                bytes_added=s.bytes_added, errors=s.errors)
            self.catalog.writer.set_meta("roots", json.dumps(sorted(t.path for t in tracked)))
            self.catalog.writer.commit()
        except BaseException as e:
            if isinstance(e, VaultError):
                self._keep_landed()
            self.catalog.writer.rollback()
            self._abandon()
            raise
        finally:
            self.pool.shutdown(wait=True)
        return s

    def _keep_landed(self) -> None:
        """After the vault failed: commit the packs recorded as durable and the files
        whose chunks they hold, as _flush_ready would have, so the next backup uploads
        only what is missing. Several uploads run at once, and the one that fails can
        surface while those that landed before it are recorded but not yet committed
        (in `finish`, all of them). A vault error leaves the transaction where a flush
        may run: it comes from waiting on an upload or from a vault call, never from
        between the statements of one catalog write."""
        try:
            durable = self.store.durable_seq
            landed = [job for job in self._ready if job.need_seq <= durable]
            self._insert_file_versions(landed)
            self._commit()  # (and begins the transaction the caller rolls back)
        except Exception:  # what was committed before stays; the rest is rolled back
            log.debug("could not keep what landed before the vault failed", exc_info=True)
            return
        log.info("kept %d files whose packs landed before the vault failed", len(landed))

    def _entries_after_subtrees(self) -> int:
        s = self.stats
        before = [p for p in self.catalog.history.snapshots()
                  if p.id != s.snapshot_id and p.state in ("complete", "partial")]
        if not before:
            return self.catalog.history.count_entries(s.snapshot_id)
        return max(0, before[-1].entries + s.files_new - s.files_deleted)

    def _stopping(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise BackupStopped()

    def _abandon(self) -> None:
        """After an error or Ctrl-C: keep what is durable, mark the snapshot interrupted."""
        try:
            with self.catalog.writer.transaction():
                self.catalog.writer.update_snapshot(self.stats.snapshot_id, state="interrupted")
        except Exception:  # the next writer marks it interrupted anyway
            log.debug("could not mark snapshot interrupted", exc_info=True)

    def _commit(self) -> None:
        self.catalog.writer.commit()
        self.store.forget_recorded()
        self.catalog.writer.begin()
        self._last_commit = time.monotonic()

    # ---- scanning -----------------------------------------------------------------------

    def _resolve(self, parent: int, name: bytes, is_dir: bool) -> int:
        # Under a directory created in this run there is nothing to look up first; an
        # initial backup creates every node this way. Only new directories are remembered
        # (only they have children): a million new files would hold ~60 MB of ids.
        if parent in self._new_nodes:
            node = self.catalog.writer.add_node(parent, name)
        else:
            node = self.catalog.writer.child_node(parent, name)
            if node is None:
                node = self.catalog.writer.add_node(parent, name)
            else:
                return node
        if is_dir and len(self._new_nodes) < 1_000_000:  # bounded: past that, only slower
            self._new_nodes.add(node)
        return node

    def _backup_root(self, tracked: TrackedDir) -> None:
        self._new_nodes.clear()  # roots share ancestors: a new one may have children now
        # Unchanged entries are only counted, except staged ones, which are committed.
        scanner = Scanner(self.catalog.writer, self.config, self._resolve, self._warn,
                          report_unchanged=self._staged, fresh=self._new_nodes,
                          never=self.never)
        for n, event in enumerate(scanner.scan(tracked, self.only)):
            if isinstance(event, Listed):
                self.stats.entries += event.unchanged
                self._tick(event.path)
                self._stopping()
                continue
            if n % 256 == 0:
                self._tick(event.path)
                self._stopping()
            if isinstance(event, Deleted):
                self._mark_deleted(event.entry.node_id, event.entry.type)
                continue
            if not event.counted:
                # A directory above the tracked one; roots can share ancestors, each of
                # which gets at most one version per snapshot, from its first sighting.
                if isinstance(event, Changed) and event.node_id not in self._ancestors_seen:
                    if self.skip_unchanged:
                        # /home changes all the time; alone it is no reason for a snapshot.
                        self._ancestors_changed.append(event)
                    else:
                        self._record(event.node_id, event.path, event.st, event.kind,
                                     event.is_new, counted=False)
                self._ancestors_seen.add(event.node_id)
                continue
            self.stats.entries += 1
            staged = self._staged.pop(event.node_id, None)
            if staged is not None:
                self._commit_one_staged(staged, is_new=isinstance(event, Changed)
                                        and event.is_new)
            elif isinstance(event, Changed):
                self._record(event.node_id, event.path, event.st, event.kind,
                             event.is_new)

    def _record(self, node: int, path: bytes, st: os.stat_result, kind: str, is_new: bool,
                *, counted: bool = True) -> None:
        """A new or changed entry: store its content if any, then record its version."""
        if kind == FILE and st.st_size > 0:
            self._read_file(node, path, st, is_new)
            return
        try:
            xattrs = read_xattrs(path)
            target = os.readlink(path) if kind == SYMLINK else None
        except FileNotFoundError:
            return
        except OSError as e:
            self._warn(f"cannot read {os.fsdecode(path)}: {e.strerror}")
            return
        content_id = None
        if kind == FILE:
            content_id = self.catalog.chunks.add_content(digest.EMPTY, 0, ())
        self._add_version(node, meta_from_stat(st, kind, target=target, xattrs=xattrs,
                                               content_id=content_id), is_new, counted=counted)

    def _add_version(self, node: int, meta: Meta, is_new: bool, *, counted: bool = True,
                     content_id: int | None = None) -> None:
        self.catalog.writer.add_version(node, self.stats.snapshot_id, meta, content_id=content_id)
        self._versions += 1
        if counted:
            self._count(is_new)

    def _count(self, is_new: bool) -> None:
        if is_new:
            self.stats.files_new += 1
        else:
            self.stats.files_changed += 1

    def _mark_deleted(self, node_id: int, kind: str) -> None:
        """Record a vanished path as deleted, and everything that was live under it."""
        stack = [(node_id, kind)]
        while stack:
            node_id, kind = stack.pop()
            self.catalog.writer.add_version(node_id, self.stats.snapshot_id, DELETED_META)
            self._versions += 1
            self.stats.files_deleted += 1
            if kind == DIR:
                stack.extend((c.node_id, c.type)
                             for c in self.catalog.writer.live_children(node_id).values())

    def _forget_untracked(self, tracked: tuple[TrackedDir, ...]) -> None:
        """Directories tracked by the last backup but not by this one end here, except
        where a directory that is still tracked covers them (a parent or a child)."""
        roots = {os.fsencode(t.path) for t in tracked}
        before = {os.fsencode(p)
                  for p in json.loads(self.catalog.history.get_meta("roots") or "[]")}
        for path in sorted(before - roots):
            if any(is_under(path, root) for root in roots):
                continue  # still backed up as part of a tracked parent
            node = self.catalog.writer.find_node(path)
            head = self.catalog.writer.head(node) if node else None
            if head is None or head.type == DELETED:
                continue
            stack = [(node, head.type, path)]
            while stack:
                node_id, kind, entry_path = stack.pop()
                if any(is_under(root, entry_path) for root in roots):
                    # Holds a tracked directory: end its other contents, keep it.
                    if kind == DIR and entry_path not in roots:
                        for name, child in self.catalog.writer.live_children(node_id).items():
                            stack.append((child.node_id, child.type, entry_path + b"/" + name))
                    continue
                self._mark_deleted(node_id, kind)

    # ---- staged files ('btfs add') -------------------------------------------------------

    def _commit_one_staged(self, staged: Version, *, is_new: bool) -> None:
        self.catalog.writer.commit_staged(staged.id, self.stats.snapshot_id)
        self._versions += 1
        self._count(is_new)

    def _commit_staged_leftovers(self) -> None:
        """Staged paths the scan did not reach (excluded since, or unreadable now)."""
        for staged in self._staged.values():
            head = self.catalog.writer.head(staged.node_id)
            self._commit_one_staged(staged, is_new=head is None or head.type == DELETED)
        self._staged.clear()

    # ---- reading files through the worker window ----------------------------------------

    def _read_file(self, node: int, path: bytes, st: os.stat_result, is_new: bool) -> None:
        job = _FileJob(node, path, is_new, st.st_atime_ns)
        if st.st_size >= self.config.chunk_min:
            self._read_large(job)
            return
        # Small files travel to the workers in batches: one job per file would spend more
        # on futures and thread hand-offs than on reading and hashing a 16 KiB file.
        self._batch.append(job)
        self._batch_stats.append(st)
        self._batch_bytes += st.st_size
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self._submit_batch()

    def _submit_batch(self) -> None:
        if not self._batch:
            return
        batch, stats, nbytes = self._batch, self._batch_stats, self._batch_bytes
        self._batch, self._batch_stats, self._batch_bytes = [], [], 0
        for job in batch:
            job.reading_done = True
        self._submit(batch, nbytes, SMALL_WINDOW_BYTES, read_batch, [j.path for j in batch], stats,
                     self.codec, self.store.lookup_many)

    def _read_large(self, job: _FileJob) -> None:
        """Cut a large file on this thread (the chunker runs without the GIL) and hash and
        compress its chunks in workers; a re-read replaces the job (see cut_file)."""
        self._submit_batch()  # keep read order: earlier small files first
        current = job

        def submit(data: bytes) -> None:
            self._submit([current], len(data), WINDOW_BYTES, make_piece, data, self.codec,
                         self.store.lookup)
            # A large file can take minutes: report its bytes as they are taken, not
            # only at the next scan event (a time check per chunk, none per small file).
            self._tick(current.path)
            self._stopping()

        def restart() -> None:
            nonlocal current
            current.abandoned = True  # chunks already submitted are not counted for it
            current = _FileJob(current.node_id, current.path, current.is_new,
                               current.atime_ns)

        try:
            read = cut_file(job.path, self.chunker, submit, restart)
        except OSError as e:
            current.abandoned = True
            self._file_error(current, e)
            return
        self._take(current, read)
        current.reading_done = True
        if current.open_items == 0:
            self._file_read(current)

    def _submit(self, jobs: list[_FileJob], nbytes: int, window_bytes: int, fn, *args) -> None:
        while self._window and (len(self._window) >= WINDOW_JOBS
                                or self._window_bytes + nbytes > window_bytes):
            self._drain()
        self._window.append((jobs, self.pool.submit(fn, *args), nbytes))
        self._window_bytes += nbytes
        for job in jobs:
            job.open_items += 1

    def _drain(self, *, all_items: bool = False) -> None:
        """Take the oldest finished job (or all of them) into the store, in order."""
        if all_items:
            self._submit_batch()
        while self._window:
            jobs, future, nbytes = self._window.popleft()
            self._window_bytes -= nbytes
            result = future.result()
            # A batch yields one WholeFile or OSError per file (and the groups its new
            # chunks are stored in, taken first); a chunk job one Piece.
            if isinstance(result, Batch):
                for group in result.groups:
                    self.store.add_group(group.stored, group.members)
                results = result.files
            else:
                results = [result]
            for job, outcome in zip(jobs, results, strict=True):
                job.open_items -= 1
                if isinstance(outcome, OSError):
                    self._file_error(job, outcome)
                elif not job.failed:
                    self._take(job, outcome)
                if job.open_items == 0 and job.reading_done and not job.failed:
                    self._file_read(job)
            if not all_items:
                break
        self._flush_ready()

    def _take(self, job: _FileJob, outcome: WholeFile | Piece) -> None:
        if isinstance(outcome, Piece):
            self._accept(job, outcome)
            return
        for piece in outcome.pieces:
            self._accept(job, piece)
        job.set_read(outcome.st, outcome.digest, outcome.xattrs)
        if outcome.unstable:
            self._warn(f"{os.fsdecode(job.path)} changed while being read; "
                       "stored as last read", error=False)

    def _accept(self, job: _FileJob, piece: Piece) -> None:
        seq = self.store.add(piece.hash, piece.size, piece.stored, piece.checked_at)
        if job.abandoned:
            return
        job.pieces.append((piece.hash, piece.size))
        job.need_seq = max(job.need_seq, seq)
        self.stats.bytes_read += piece.size

    def _file_read(self, job: _FileJob) -> None:
        if job.abandoned:
            return
        self._ready.append(job)
        open_seq = self.store.open_seq
        if job.need_seq != open_seq:
            return  # already on its way to the vault (or stored before)
        if self._counted_seq != open_seq:
            self._counted_seq, self._files_in_open_pack = open_seq, 0
        self._files_in_open_pack += 1
        if self._files_in_open_pack >= MAX_FILES_PER_PACK:
            self.store.seal()

    def _file_error(self, job: _FileJob, error: OSError) -> None:
        job.failed = True
        if isinstance(error, FileNotFoundError):
            return  # deleted since the scan: the next backup records the deletion
        self._warn(f"cannot read {os.fsdecode(job.path)}: {error.strerror or error}")

    def _flush_ready(self, *, final: bool = False) -> None:
        """Insert versions of files whose packs are durable; commit when a pack landed.

        Runs after every drained job, so it must be cheap when nothing landed: files
        wait in `_ready` in read order and are only looked at again once another pack is
        durable (or at the end, or when the periodic commit is due)."""
        self.store.collect_durable(wait=final)
        durable = self.store.durable_seq
        due = time.monotonic() - self._last_commit > COMMIT_EVERY_S
        if not (durable != self._flushed_seq or due or final):
            return
        self._flushed_seq = durable
        waiting, landed = [], []
        for job in self._ready:
            (waiting if job.need_seq > durable else landed).append(job)
        self._ready = waiting
        self._insert_file_versions(landed)
        self._commit()

    def _insert_file_versions(self, jobs: list[_FileJob]) -> None:
        recent = self.store.recorded_ids
        files = []
        for job in jobs:
            chunk_ids = [recent.get(h) or self.catalog.chunks.chunk_id(h) for h, _ in job.pieces]
            files.append((job.node_id, job.meta, job.digest,
                          sum(size for _, size in job.pieces), chunk_ids))
            self._count(job.is_new)
        self._versions += len(files)
        self.catalog.writer.add_file_versions(self.stats.snapshot_id, files)

    # ---- reporting ----------------------------------------------------------------------

    def _warn(self, message: str, *, error: bool = True) -> None:
        """A warning for the user; with `error`, an entry was skipped: the snapshot is partial."""
        log.warning("%s", message)
        if error:
            self.stats.errors += 1
        if len(self.stats.warnings) < 100:
            self.stats.warnings.append(message)

    def _tick(self, path: bytes) -> None:
        now = time.monotonic()
        if now - self._last_commit > COMMIT_EVERY_S:
            self._flush_ready()
        if self.progress is None:
            return
        if now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self.stats.bytes_added = self.store.bytes_added
            self.progress(self.stats, path)


def run_backup(catalog: Catalog, store: ChunkStore, config: Config, codec: Codec, *,
               progress=None, never: frozenset[bytes] = frozenset(),
               only: Iterable[Subtree] | None = None, stop: threading.Event | None = None,
               skip_unchanged: bool = False) -> Stats:
    """One backup of every tracked directory, or only of the `only` subtrees (see the
    module docstring); with `skip_unchanged`, no snapshot is kept when nothing changed."""
    if not config.tracked:
        raise BtfsError("nothing to back up: add a directory with 'btfs track DIR'")
    backup = Backup(catalog, store, config, codec, progress=progress, never=never, only=only,
                    stop=stop, skip_unchanged=skip_unchanged)
    return backup.run(config.host_id, config.tracked)
