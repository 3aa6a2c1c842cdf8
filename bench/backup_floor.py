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

    python -m bench.backup_floor SOURCE OUTDIR     prints the seconds it took
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from btfs.config import Config
from btfs.engine import codec
from btfs.engine.backup import (
    BATCH_BYTES,
    BATCH_FILES,
    SMALL_WINDOW_BYTES,
    SWITCH_INTERVAL_S,
    WINDOW_BYTES,
    WINDOW_JOBS,
)
from btfs.engine.files import Chunker, open_for_backup, read_up_to
from btfs.engine.memory import tune_allocator


def _read_whole(path: bytes) -> bytes:
    fd = open_for_backup(path)
    try:
        return read_up_to(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _small_files(paths: list[bytes], level: int) -> list[bytes]:
    """A worker job: read, hash and compress small files in groups; their stored forms."""
    contents = [_read_whole(p) for p in paths]
    members = [(codec.chunk_hash(data), data) for data in contents if data]
    stored: list[bytes] = []
    for run in codec.group_runs(members):
        group = codec.encode_group(run, level) if len(run) > 1 else None
        stored.extend([group] if group else (codec.encode(d, level) for _, d in run))
    return stored


def _chunk(data: bytes, level: int) -> list[bytes]:
    codec.chunk_hash(data)
    return [codec.encode(data, level)]


class _Packs:
    """Stored bytes appended to files of about pack_size; each is fsynced and closed on
    one upload thread while the next fills."""

    def __init__(self, outdir: str, pack_size: int):
        self.outdir, self.pack_size = outdir, pack_size
        self.uploader = ThreadPoolExecutor(1)
        self.count = 0
        self.total = 0
        self._open()

    def _open(self) -> None:
        path = os.path.join(self.outdir, f"pack-{self.count:06d}")
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.size = 0
        self.count += 1

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)
        self.total += len(data)
        if self.size >= self.pack_size:
            self._seal()
            self._open()

    def _seal(self) -> None:
        fd = self.fd
        self.uploader.submit(lambda: (os.fsync(fd), os.close(fd)))

    def close(self) -> None:
        self._seal()
        self.uploader.shutdown(wait=True)


def backup_floor(source: str, outdir: str) -> tuple[int, int]:
    """(entries, stored bytes) of one pass over `source`."""
    config = Config(host_id="floor", vault=outdir)  # btfs's defaults for the rest
    tune_allocator()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    level = config.compression_level
    threads = config.threads or max(4, 2 * (os.cpu_count() or 2))
    pool = ThreadPoolExecutor(threads)
    chunker = Chunker(config.chunk_min, config.chunk_avg, config.chunk_max)
    packs = _Packs(outdir, config.pack_size)
    window: deque[tuple[Future, int]] = deque()  # jobs in flight and the bytes they read
    window_bytes = 0
    batch: list[bytes] = []
    batch_bytes = 0
    entries = 0

    def take_oldest() -> None:
        nonlocal window_bytes
        job, nbytes = window.popleft()
        for stored in job.result():
            packs.write(stored)
        window_bytes -= nbytes

    def submit(fn, arg, nbytes: int, limit: int) -> None:
        # The same bounds on reads in flight as btfs's backup (memory, not speed).
        nonlocal window_bytes
        while window and (len(window) >= WINDOW_JOBS or window_bytes + nbytes > limit):
            take_oldest()
        window.append((pool.submit(fn, arg, level), nbytes))
        window_bytes += nbytes

    def flush_batch() -> None:
        nonlocal batch, batch_bytes
        if batch:
            submit(_small_files, batch, batch_bytes, SMALL_WINDOW_BYTES)
            batch, batch_bytes = [], 0

    stack = [os.fsencode(source)]
    while stack:
        top = stack.pop()
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for name in sorted(os.listdir(top)):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                entries += 1
                path = top + b"/" + name
                if stat.S_ISDIR(st.st_mode):
                    stack.append(path)
                elif not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                    continue
                elif st.st_size < config.chunk_min:
                    batch.append(path)
                    batch_bytes += st.st_size
                    if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                        flush_batch()
                else:
                    flush_batch()
                    file_fd = open_for_backup(path)
                    try:
                        for data in chunker.chunks(file_fd):
                            submit(_chunk, data, len(data), WINDOW_BYTES)
                    finally:
                        os.close(file_fd)
        finally:
            os.close(fd)
    flush_batch()
    while window:
        take_oldest()
    packs.close()
    pool.shutdown()
    return entries, packs.total


def main(argv: list[str]) -> int:
    if (len(argv) != 2 or not os.path.isdir(argv[0]) or not os.path.isdir(argv[1])
            or os.listdir(argv[1])):
        print("usage: python -m bench.backup_floor SOURCE_DIR EMPTY_OUTPUT_DIR", file=sys.stderr)
        return 2
    started = time.perf_counter()
    entries, stored = backup_floor(argv[0], argv[1])
    print(f"{time.perf_counter() - started:.3f} s, {entries} entries, "
          f"{stored / 1e6:.0f} MB stored")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
