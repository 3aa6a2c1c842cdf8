"""Reading files for a backup: the chunker over a file descriptor, and a file that changes
while it is read (read again, a few times at most, then stored as last read with a
warning; the backup stays complete)."""

from __future__ import annotations

import io
import os
import random
import threading
import time

import pytest
from blake3 import blake3
from helpers import rand_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyfastcdc.cy import FastCDC

from btfs.engine.codec import Codec
from btfs.engine.files import RETRIES, Chunker, cut_file, read_batch
from btfs.engine.reader import ChunkSource, FileLayout, read_range
from btfs.engine.restore import HOLE_BLOCK, write_content


def chunker():
    return Chunker(256 << 10, 1 << 20, 4 << 20)


def test_a_file_changed_during_the_first_read_is_read_again(tmp_path):
    f = tmp_path / "grows"
    f.write_bytes(rand_bytes(3_000_000, 1))
    got: list[bytes] = []
    restarts = []

    def on_chunk(data: bytes) -> None:
        if not restarts and not got:  # first chunk of the first attempt: change the file
            with open(f, "ab") as fh:
                fh.write(b"more")
        got.append(data)

    def on_restart() -> None:
        restarts.append(len(got))
        got.clear()

    read = cut_file(os.fsencode(f), chunker(), on_chunk, on_restart)
    final = f.read_bytes()
    assert len(restarts) == 1 and restarts[0] > 0
    assert b"".join(got) == final
    assert read.digest == blake3(final).digest()
    assert read.st.st_size == len(final) and not read.unstable


def test_a_small_file_changed_since_the_scan_is_read_as_it_is_now(tmp_path):
    """Small files are read against the scan's lstat (no fstat before the read): one
    rewritten in place since, or replaced by another file, is read again and recorded as
    it is now, not as a mix."""
    rewritten, replaced = tmp_path / "rewritten", tmp_path / "replaced"
    rewritten.write_bytes(b"before")
    replaced.write_bytes(b"first file")
    scanned = [os.lstat(rewritten), os.lstat(replaced)]
    rewritten.write_bytes(b"after, and longer")
    (tmp_path / "new").write_bytes(b"other file")  # same size: only the inode tells
    os.rename(tmp_path / "new", replaced)

    batch = read_batch([os.fsencode(rewritten), os.fsencode(replaced)], scanned, Codec(3),
                       lambda hashes: [0] * len(hashes))
    for path, read in zip((rewritten, replaced), batch.files, strict=True):
        now = os.lstat(path)
        assert not read.unstable
        assert read.digest == blake3(path.read_bytes()).digest()
        assert (read.st.st_ino, read.st.st_size) == (now.st_ino, now.st_size)
    assert batch.files[1].st.st_ino != scanned[1].st_ino


def test_a_file_that_never_settles_is_stored_as_last_read(tmp_path):
    f = tmp_path / "busy"
    f.write_bytes(rand_bytes(1_000_000, 2))
    got: list[bytes] = []
    restarts = []

    def on_chunk(data: bytes) -> None:
        with open(f, "ab") as fh:  # every attempt sees a change
            fh.write(b"x")
        got.append(data)

    def on_restart() -> None:
        restarts.append(1)
        got.clear()

    read = cut_file(os.fsencode(f), chunker(), on_chunk, on_restart)
    assert len(restarts) == RETRIES - 1
    assert read.unstable
    assert read.digest == blake3(b"".join(got)).digest()


@pytest.mark.expect_warnings(r"changed while being read; stored as last read")
def test_backup_of_a_file_appended_to_during_the_backup(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    log = src / "app.log"
    log.write_bytes(rand_bytes(16 << 20, 3))
    repo = repo_factory(src)
    stop = threading.Event()

    def append() -> None:
        with open(log, "ab", buffering=0) as fh:
            while not stop.is_set():
                fh.write(b"line\n")
                time.sleep(0.001)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        with repo.writer():
            stats = repo.backup()
    finally:
        stop.set()
        writer.join()
    # Still complete: a changing file is a warning, not an entry that could not be read.
    assert stats.state == "complete" and stats.errors == 0
    assert any("app.log changed while being read" in w for w in stats.warnings)
    cat = repo.catalog
    version = cat.history.head(cat.history.node_for_path(os.fsencode(log)))
    content = cat.chunks.content(version.meta.content_id)
    layout = FileLayout(cat.chunks.chunk_refs(content.chunk_ids))
    stored = read_range(ChunkSource(repo.vault, repo.codec), layout, 0, layout.size)
    final = log.read_bytes()
    assert len(stored) >= 16 << 20
    assert stored == final[:len(stored)]  # what was read, exactly: the file only grew
    assert blake3(stored).digest() == content.digest
    assert cat.chunks.integrity_problems() == []


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 40_000), seed=st.integers(0, 2**16), repetitive=st.booleans())
def test_chunker_cuts_where_pyfastcdc_cut_stream_does(tmp_path, size, seed, repetitive):
    """Same cut points as the library's stream chunker (so chunks dedup against what it
    stored), across many buffer refills: tiny chunk bounds, files up to ~40 maximum
    chunks, random and repetitive content."""
    rng = random.Random(seed)
    data = (rng.randbytes(97) * (size // 97 + 1))[:size] if repetitive else rng.randbytes(size)
    f = tmp_path / f"f{seed}-{size}"
    f.write_bytes(data)
    expected = [bytes(c.data) for c in
                FastCDC(256, min_size=64, max_size=1024).cut_stream(io.BytesIO(data))]
    fd = os.open(f, os.O_RDONLY)
    try:
        got = list(Chunker(64, 256, 1024).chunks(fd))
    finally:
        os.close(fd)
    assert got == expected


def test_members_of_a_group_read_its_stored_form_from_the_vault_once(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    texts = {f"f{i:02d}.txt": (f"line {i}\n" * (200 + i)).encode() for i in range(40)}
    for name, data in texts.items():
        (src / name).write_bytes(data)
    repo = repo_factory(src)
    with repo.writer():
        repo.backup()
    cat = repo.catalog
    refs = {}
    for name in texts:
        head = cat.history.head(cat.history.node_for_path(os.fsencode(src / name)))
        content = cat.chunks.content(head.meta.content_id)
        (refs[name],) = cat.chunks.chunk_refs(content.chunk_ids)
    groups = {(r.pack, r.offset, r.stored_len) for r in refs.values()}
    assert len(groups) < len(refs)  # small files share stored forms
    reads = []
    vault_get = repo.vault.get
    repo.vault.get = lambda key, *a: reads.append((key, *a)) or vault_get(key, *a)
    source = ChunkSource(repo.vault, repo.codec)
    for name, data in texts.items():
        assert bytes(source.chunk(refs[name])) == data
    assert len(reads) == len(groups)


def test_restore_leaves_holes_only_where_a_block_is_all_zeros(tmp_path):
    block = HOLE_BLOCK
    middle = bytearray(block)
    middle[block // 2] = 7  # zero at both ends: only the whole compare tells
    data = bytes(block) + bytes(middle) + bytes(block) + b"end"
    path = tmp_path / "out"

    class Source:  # hands write_content the chunk as a ChunkSource would, already verified
        def chunk(self, ref):
            return data

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        assert write_content(fd, Source(), [object()]) == len(data)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    fd = os.open(path, os.O_RDONLY)
    try:
        first_data = os.lseek(fd, 0, os.SEEK_DATA)
    finally:
        os.close(fd)
    assert first_data == block  # the first block is a hole, the second is not
