"""The floor under btfs's initial backup: the work any backup on btfs's stack must do, and
nothing else, in Python with btfs's own parts.

It walks the tree as btfs's scanner does (listdir, then lstat of every entry relative to
the directory's fd); reads small files whole in batches in worker threads and large ones
through btfs's Chunker on the main thread; hashes every chunk (btfs.digest) and compresses it
with btfs's codec (small files in groups, as a backup stores them), in the same number of
worker threads with the same job window; and writes the stored bytes into 16 MiB files
that an upload thread fsyncs, as the local vault does. Left out, because it is what btfs
adds on top: the catalog (nodes, versions, chunks, commits), change detection, xattrs,
the re-read of files that change while read, the whole-file digest that `btfs log`
shows, the pack's index and its digest name.

What it costs is what an initial backup costs at least on this stack, so the benchmark
measures it beside the tools (`floor_backup_*` rows).

With `--catalog` it also keeps what any backup that can be browsed and restored must keep,
in a catalog with btfs's schema, through btfs's own batched Catalog calls, on the main
thread as btfs does: a node and a version (its lstat) for every entry, each file's
content (digest, size, chunk list), each new chunk with its pack and offset (equal chunks
stored once), one commit per pack. Still left out: change detection (nothing to compare
in an initial backup), xattrs, re-reads, the order that keeps a file out of the catalog
until its pack is durable, the whole-file digest of a large file (a digest of its chunk
ids stands in). The difference between the two is what the catalog alone costs
(`floor_catalog_*` rows).

    python -m bench.backup_floor [--catalog] SOURCE OUTDIR     prints the seconds it took
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from btfs import digest
from btfs.catalog import DIR, FILE, SYMLINK, Catalog, NewChunk
from btfs.config import Config
from btfs.engine import codec
from btfs.engine.backup import (
    BATCH_BYTES,
    BATCH_FILES,
    SMALL_WINDOW_BYTES,
    WINDOW_BYTES,
    WINDOW_JOBS,
)
from btfs.engine.files import Chunker, open_for_backup, read_up_to
from btfs.engine.memory import tune_process_for_backup
from btfs.engine.meta import meta_from_stat
from btfs.engine.scanner import _KINDS  # the scanner's entry kinds by lstat type

# What a job hands back: stored forms, each with the (hash, raw size) of the chunks it
# holds, and the chunk hash of each file it read (None: empty).
Stored = list[tuple[bytes, list[tuple[bytes, int]]]]


def _read_whole(path: bytes) -> bytes:
    fd = open_for_backup(path)
    try:
        return read_up_to(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _small_files(paths: list[bytes], level: int) -> tuple[Stored, list[bytes | None]]:
    """A worker job: read, hash and compress small files in groups (equal files once)."""
    contents = [_read_whole(p) for p in paths]
    hashes = [codec.Codec.chunk_hash(data) if data else None for data in contents]
    members = list({h: data for h, data in zip(hashes, contents, strict=True) if h}.items())
    stored: Stored = []
    for run in codec.group_runs(members):
        group = codec.Codec(level).encode_group(run) if len(run) > 1 else None
        if group:
            stored.append((group, [(h, len(d)) for h, d in run]))
        else:
            stored.extend((codec.Codec(level).encode(d), [(h, len(d))]) for h, d in run)
    return stored, hashes


def _chunk(data: bytes, level: int) -> tuple[Stored, list[bytes | None]]:
    h = codec.Codec.chunk_hash(data)
    return [(codec.Codec(level).encode(data), [(h, len(data))])], [h]


class _Packs:
    """Stored bytes appended to files of about pack_size; each is fsynced and closed on
    one upload thread while the next fills."""

    def __init__(self, outdir: str, pack_size: int, on_seal=None):
        self.outdir, self.pack_size, self.on_seal = outdir, pack_size, on_seal
        self.uploader = ThreadPoolExecutor(1)
        self.count = 0
        self.total = 0
        self._open()

    def _open(self) -> None:
        path = os.path.join(self.outdir, f"pack-{self.count:06d}")
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.size = 0
        self.count += 1

    def write(self, data: bytes) -> int:
        """Append `data`; returns its offset in the open pack (sealed after it if full:
        call `seal_if_full` once its chunks are noted)."""
        offset = self.size
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)
        self.total += len(data)
        return offset

    def seal_if_full(self) -> None:
        if self.size >= self.pack_size:
            self._seal()
            self._open()

    def _seal(self) -> None:
        fd = self.fd
        self.uploader.submit(lambda: (os.fsync(fd), os.close(fd)))
        if self.on_seal:
            self.on_seal(f"pack-{self.count - 1:06d}", self.size)

    def close(self) -> None:
        self._seal()
        self.uploader.shutdown(wait=True)


class _Recorder:
    """The catalog rows a browsable backup keeps, written as btfs writes them (see the
    module's docstring); files are recorded at the first pack seal after their chunks
    all have ids."""

    def __init__(self, path: str, source: bytes):
        self.catalog = Catalog(path)
        with self.catalog.writer.transaction():
            self.snapshot = self.catalog.writer.begin_snapshot("floor", time.time_ns())
        self.catalog.writer.begin()
        self.root = self.catalog.writer.node_for_path(source)
        self.ids: dict[bytes, int | None] = {}  # chunk hash -> id (None: in the open pack)
        self.open_chunks: list[NewChunk] = []
        self.files: list[tuple[int, object, list[bytes]]] = []  # read, not yet recorded

    def entry(self, parent: int, name: bytes, path: bytes, st: os.stat_result,
              kind: str | None) -> int:
        """A node for the entry; a version now unless it is a file with content."""
        node = self.catalog.writer.add_node(parent, name)
        if kind == DIR:
            self.catalog.writer.add_version(node, self.snapshot, meta_from_stat(st, DIR))
        elif kind == SYMLINK:
            self.catalog.writer.add_version(node, self.snapshot, meta_from_stat(
                st, SYMLINK, target=os.readlink(path)))
        elif kind == FILE and st.st_size == 0:
            content = self.catalog.chunks.add_content(digest.EMPTY, 0, ())
            self.catalog.writer.add_version(node, self.snapshot, meta_from_stat(
                st, FILE, content_id=content))
        return node

    def is_new(self, chunk_hash: bytes) -> bool:
        return chunk_hash not in self.ids

    def stored(self, members: list[tuple[bytes, int]], offset: int, stored_len: int) -> None:
        for h, size in members:
            if h not in self.ids:
                self.ids[h] = None
                self.open_chunks.append(NewChunk(h, size, offset, stored_len))

    def file(self, node: int, st: os.stat_result, hashes: list[bytes]) -> None:
        self.files.append((node, meta_from_stat(st, FILE), hashes))

    def sealed(self, name: str, size: int) -> None:
        self.ids.update(self.catalog.chunks.add_pack(name, size, self.open_chunks, time.time_ns()))
        self.open_chunks = []
        ready, waiting = [], []
        for f in self.files:
            (waiting if any(self.ids[h] is None for h in f[2]) else ready).append(f)
        self.files = waiting
        self.catalog.writer.add_file_versions(self.snapshot, [
            (node, meta, hashes[0] if len(hashes) == 1 else digest.digest(b"".join(hashes)),
             meta.size, [self.ids[h] for h in hashes]) for node, meta, hashes in ready])
        self.catalog.writer.commit()
        self.catalog.writer.begin()

    def close(self) -> None:
        self.catalog.writer.commit()
        self.catalog.close()


def backup_floor(source: str, outdir: str, *, catalog: bool = False) -> tuple[int, int]:
    """(entries, stored bytes) of one pass over `source`; with `catalog`, its rows are
    kept in OUTDIR/catalog.db."""
    config = Config(host_id="floor", vault=outdir)  # btfs's defaults for the rest
    tune_process_for_backup()  # as btfs's backup does: allocator, gc, GIL switch interval
    level = config.compression_level
    threads = config.threads or max(4, 2 * (os.cpu_count() or 2))
    pool = ThreadPoolExecutor(threads)
    chunker = Chunker(config.chunk_min, config.chunk_avg, config.chunk_max)
    top = os.fsencode(source)
    rec = _Recorder(os.path.join(outdir, "catalog.db"), top) if catalog else None
    packs = _Packs(outdir, config.pack_size, rec.sealed if rec else None)
    # Jobs in flight, with the bytes they read and the files they finish: for a batch,
    # (node, lstat) of each file in it; for a large file's chunk, (node, lstat, the
    # file's chunk hashes so far, whether it is the last).
    window: deque[tuple[Future, int, object]] = deque()
    window_bytes = 0
    batch: list[bytes] = []
    batch_files: list[tuple[int, os.stat_result]] = []
    batch_bytes = 0
    entries = 0

    def take_oldest() -> None:
        nonlocal window_bytes
        job, nbytes, files = window.popleft()
        stored, hashes = job.result()
        for data, members in stored:
            if rec is None:
                packs.write(data)
            elif any(rec.is_new(h) for h, _ in members):
                rec.stored(members, packs.write(data), len(data))
            packs.seal_if_full()
        window_bytes -= nbytes
        if rec is None:
            return
        if isinstance(files, list):  # a batch of small files
            for (node, st), h in zip(files, hashes, strict=True):
                rec.file(node, st, [h] if h else [])  # emptied since its lstat: no chunk
        else:  # a large file's chunk
            node, st, file_hashes, last = files
            file_hashes.append(hashes[0])
            if last:
                rec.file(node, st, file_hashes)

    def submit(fn, arg, nbytes: int, limit: int, files) -> None:
        # The same bounds on reads in flight as btfs's backup (memory, not speed).
        nonlocal window_bytes
        while window and (len(window) >= WINDOW_JOBS or window_bytes + nbytes > limit):
            take_oldest()
        window.append((pool.submit(fn, arg, level), nbytes, files))
        window_bytes += nbytes

    def flush_batch() -> None:
        nonlocal batch, batch_files, batch_bytes
        if batch:
            submit(_small_files, batch, batch_bytes, SMALL_WINDOW_BYTES, batch_files)
            batch, batch_files, batch_bytes = [], [], 0

    stack = [(top, rec.root if rec else 0)]
    while stack:
        top, parent = stack.pop()
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for name in sorted(os.listdir(top)):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                entries += 1
                path = top + b"/" + name
                kind = _KINDS.get(stat.S_IFMT(st.st_mode))
                node = rec.entry(parent, name, path, st, kind) if rec else 0
                if kind == DIR:
                    stack.append((path, node))
                elif kind != FILE or st.st_size == 0:
                    continue
                elif st.st_size < config.chunk_min:
                    batch.append(path)
                    batch_files.append((node, st))
                    batch_bytes += st.st_size
                    if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                        flush_batch()
                else:
                    flush_batch()
                    file_fd = open_for_backup(path)
                    hashes: list[bytes] = []
                    try:
                        pending = None
                        for data in chunker.chunks(file_fd):
                            if pending is not None:
                                submit(_chunk, pending, len(pending), WINDOW_BYTES,
                                       (node, st, hashes, False))
                            pending = data
                        if pending is not None:
                            submit(_chunk, pending, len(pending), WINDOW_BYTES,
                                   (node, st, hashes, True))
                    finally:
                        os.close(file_fd)
        finally:
            os.close(fd)
    flush_batch()
    while window:
        take_oldest()
    packs.close()
    pool.shutdown()
    if rec:
        rec.close()
    return entries, packs.total


def main(argv: list[str]) -> int:
    catalog = argv[:1] == ["--catalog"]
    argv = argv[1:] if catalog else argv
    if (len(argv) != 2 or not os.path.isdir(argv[0]) or not os.path.isdir(argv[1])
            or os.listdir(argv[1])):
        print("usage: python -m bench.backup_floor [--catalog] SOURCE_DIR EMPTY_OUTPUT_DIR",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    entries, stored = backup_floor(argv[0], argv[1], catalog=catalog)
    print(f"{time.perf_counter() - started:.3f} s, {entries} entries, "
          f"{stored / 1e6:.0f} MB stored")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
