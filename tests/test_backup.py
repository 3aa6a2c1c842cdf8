"""Backups of real trees into a real catalog and vault, read back through the engine's reader.

Every test backs up files in tmp_path with `repo.backup()` under the writer lock, then
reads the snapshot back (metadata from the catalog, content through ChunkSource and
FileLayout, so every chunk is verified) and compares it with the source.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import helpers
import pytest
from helpers import (
    NS_MTIME,
    MiB,
    StoredReader,
    assert_same_tree,
    backup,
    count,
    make_awkward_tree,
    rand_bytes,
    recorded,
    source_tree,
    stored_tree,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btfs.catalog import DELETED, DIR, FILE
from btfs.config import Paths
from btfs.engine import backup as backup_mod
from btfs.errors import BtfsError, LockedError
from btfs.repo import Repo, init_repo, track_dirs, untrack_dirs

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    return d


def test_awkward_tree_round_trip(repo_factory, src):
    t = make_awkward_tree(src)
    repo = repo_factory(src)
    stats = backup(repo)
    assert stats.state == "complete" and stats.errors == 0
    assert repo.catalog.history.snapshot(stats.snapshot_id).state == "complete"

    stored = stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id)
    source = source_tree(src)
    assert_same_tree(stored, source)
    # Spot checks of what the comparison relies on, so that a lenient reader cannot hide
    # a lost entry.
    assert stored[t.notes["non_utf8"]].type == FILE
    assert stored[t.notes["newline"]].size == len(b"newline in name\n")
    assert len(t.notes["long_name"]) == 255 and t.notes["long_name"] in stored
    assert stored[t.notes["dangling"]].target == b"/nonexistent/nowhere"
    assert stored[b"link-non-utf8"].target == b"caf\xe9-latin1.txt"
    assert stored[t.notes["empty_file"]].size == 0 and stored[b"empty"].mtime_ns == 1
    assert stored[t.notes["empty_dir"]].type == DIR
    assert stored[b"a/text.txt"].mtime_ns == NS_MTIME
    assert stored[t.notes["sparse"]].size == 6 * MiB
    assert stored[t.notes["mode000"]].mode & 0o7777 == 0
    assert stored[b"modes/sticky"].mode & 0o7777 == 0o1777
    assert b"a-fifo" not in stored
    if t.owners:
        assert (stored[t.notes["owned"]].uid, stored[t.notes["owned"]].gid) == (1234, 5678)
        assert stored[b"owned/link"].uid == 4321
        assert stored[b"modes/setuid"].mode & 0o7777 == 0o4755
    if t.xattrs:
        assert dict(stored[t.notes["xattr_file"]].xattrs)[b"user.binary"] == bytes(range(256))
        assert stored[b"xattr-dir"].xattrs == ((b"user.tag", b""),)


def test_hard_links_share_inode_and_content(repo_factory, src):
    t = make_awkward_tree(src, xattrs=False)
    repo = repo_factory(src)
    stats = backup(repo)
    cat = repo.catalog
    history = cat.history
    a = history.version_at(history.node_for_path(os.fsencode(src) + b"/" + t.notes["hard_a"]),
                           stats.snapshot_id)
    b = history.version_at(history.node_for_path(os.fsencode(src) + b"/" + t.notes["hard_b"]),
                           stats.snapshot_id)
    assert a.meta.ino == b.meta.ino == os.lstat(src / "hard-a").st_ino
    assert a.meta.nlink == b.meta.nlink == 2
    assert a.meta.content_id == b.meta.content_id


def test_sparse_file_reads_back_with_its_holes(repo_factory, src):
    with open(src / "disk.img", "wb") as f:
        f.truncate(9 * MiB)
        f.seek(4 * MiB + 123)
        f.write(b"x" * 777)
    repo = repo_factory(src)
    stats = backup(repo)
    history = repo.catalog.history
    version = history.version_at(history.node_for_path(os.fsencode(src / "disk.img")),
                                 stats.snapshot_id)
    data = StoredReader(repo.catalog, repo.vault).content(version.meta.content_id)
    assert data == (src / "disk.img").read_bytes()
    # Zeros compress and deduplicate: far less than the apparent size is stored.
    assert stats.bytes_added < MiB


def test_large_file_is_chunked_and_an_insertion_adds_few_chunks(repo_factory, src):
    data = rand_bytes(20 * MiB, seed=7)
    (src / "big.bin").write_bytes(data)
    repo = repo_factory(src)
    first = backup(repo)
    chunks_before = count(repo.catalog, "chunk")
    assert chunks_before >= 5  # 20 MiB at a 1 MiB average (4 MiB max) is many chunks
    assert first.bytes_added >= 20 * MiB  # random data does not compress

    middle = len(data) // 2
    changed = data[:middle] + b"!" + data[middle:]
    (src / "big.bin").write_bytes(changed)
    second = backup(repo)
    new_chunks = count(repo.catalog, "chunk") - chunks_before
    assert 1 <= new_chunks <= 3, new_chunks
    assert second.bytes_added <= new_chunks * repo.config.chunk_max + 4096
    assert second.bytes_added < 20 * MiB / 4, second.bytes_added
    assert second.bytes_read == len(changed)

    node = repo.catalog.history.node_for_path(os.fsencode(src / "big.bin"))
    reader = StoredReader(repo.catalog, repo.vault)
    v1, v2 = repo.catalog.history.versions_of(node)
    assert reader.content(v1.meta.content_id) == data
    assert reader.content(v2.meta.content_id) == changed


def test_unchanged_tree_adds_nothing(repo_factory, src):
    make_awkward_tree(src, xattrs=False)
    repo = repo_factory(src)
    first = backup(repo)
    versions = count(repo.catalog, "version")
    second = backup(repo)
    assert recorded(repo.catalog, second.snapshot_id, src) == {}
    assert (second.files_new, second.files_changed, second.files_deleted) == (0, 0, 0)
    assert second.bytes_read == 0 and second.bytes_added == 0
    assert second.entries == first.entries > 20
    # Only the directories above the tracked one may have changed (/tmp is busy).
    above = count(repo.catalog, "version") - versions
    assert above <= len(src.parts)
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, second.snapshot_id),
                     source_tree(src))


def _file_places(repo, root: Path) -> list[tuple[str, tuple[str, int]]]:
    """Every file under `root` depth-first in name order (the order `tar` and `cp -a`
    read a snapshot in), with where its newest version's first chunk is stored."""
    out = []

    def walk(directory: Path) -> None:
        for entry in sorted(directory.iterdir()):
            if entry.is_dir():
                walk(entry)
                continue
            history = repo.catalog.history
            meta = history.head(history.node_for_path(os.fsencode(entry))).meta
            ref = repo.catalog.chunks.content_refs(meta.content_id)[0]
            out.append((str(entry.relative_to(root)), (ref.pack, ref.offset)))

    walk(root)
    return out


def test_files_are_packed_in_the_order_a_reader_walks_the_tree(repo_factory, src):
    """A subdirectory's files are stored where its name comes among its parent's
    entries, not after all of them: reading the snapshot back walks each pack forwards."""
    layout = ["a", "b/a", "b/c/a", "b/c/z", "b/d", "c", "d/a", "e"]
    for i, rel in enumerate(layout):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(rand_bytes(100_000, seed=i))  # incompressible: not grouped
    repo = repo_factory(src)
    backup(repo)
    places = _file_places(repo, src)
    assert [rel for rel, _ in places] == layout
    assert len({pack for _, (pack, _) in places}) == 1
    offsets = [offset for _, (_, offset) in places]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), places


def test_trees_deeper_than_the_open_directory_limit(repo_factory, src, monkeypatch):
    """Past MAX_OPEN_LEVELS a directory is walked after its parent's listing (one open
    descriptor per level would otherwise run out); every entry is still backed up."""
    from btfs.engine import scanner
    monkeypatch.setattr(scanner, "MAX_OPEN_LEVELS", 3)
    d = src
    for depth in range(8):
        (d / "file").write_bytes(b"at depth %d" % depth)
        (d / "sibling").mkdir()
        (d / "sibling" / "leaf").write_bytes(b"leaf %d" % depth)
        d = d / "deeper"
        d.mkdir()
    repo = repo_factory(src)

    def open_dirs_under_src() -> int:
        fds = (os.path.join("/proc/self/fd", fd) for fd in os.listdir("/proc/self/fd"))
        return sum(os.path.realpath(fd).startswith(str(src)) for fd in fds)

    # The scan as `status` runs it (no nodes created), looking at each event.
    walk = scanner.Scanner(repo.catalog.history, repo.config, lambda *_: None, pytest.fail)
    peak = max(open_dirs_under_src() for _ in walk.scan(repo.config.tracked[0]))
    assert 3 <= peak <= 4  # the open levels, and the one walked after its parent
    stats = backup(repo)
    assert stats.errors == 0 and stats.files_new == 8 * 4 + 1
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id),
                     source_tree(src))
    assert backup(repo).files_new == 0


def test_touch_records_exactly_that_path(repo_factory, src):
    (src / "d").mkdir()
    (src / "d" / "one").write_text("one")
    (src / "d" / "two").write_text("two")
    repo = repo_factory(src)
    backup(repo)

    os.utime(src / "d" / "one", ns=(NS_MTIME, NS_MTIME))
    stats = backup(repo)
    assert recorded(repo.catalog, stats.snapshot_id, src) == {
        os.fsencode(src / "d" / "one"): FILE}
    assert stats.files_changed == 1 and stats.files_new == 0
    assert stats.bytes_read == 3

    (src / "d" / "three").write_text("three")  # a new name changes its directory
    stats = backup(repo)
    assert recorded(repo.catalog, stats.snapshot_id, src) == {
        os.fsencode(src / "d" / "three"): FILE, os.fsencode(src / "d"): DIR}
    assert (stats.files_new, stats.files_changed) == (1, 1)


def test_deleting_a_directory_marks_every_descendant_deleted(repo_factory, src):
    for rel in ("keep/k", "gone/x", "gone/sub/y", "gone/sub/deeper/z"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    os.symlink("x", src / "gone" / "link")
    repo = repo_factory(src)
    first = backup(repo)

    shutil.rmtree(src / "gone")
    second = backup(repo)
    s = os.fsencode(src)
    gone = [b"/gone", b"/gone/x", b"/gone/link", b"/gone/sub", b"/gone/sub/y",
            b"/gone/sub/deeper", b"/gone/sub/deeper/z"]
    assert recorded(repo.catalog, second.snapshot_id, src) == {
        **{s + g: DELETED for g in gone}, s: DIR}
    assert second.files_deleted == len(gone)
    assert [e.name for e in repo.catalog.history.children_at(
        repo.catalog.history.node_for_path(s), second.snapshot_id)] == [b"keep"]
    # The old snapshot still has all of it.
    old = stored_tree(repo.catalog, repo.vault, src, first.snapshot_id)
    assert {b"gone/sub/deeper/z", b"keep/k"} <= old.keys()

    # Re-created later: a new version after the deletion, and the old history stays.
    (src / "gone").mkdir()
    (src / "gone" / "x").write_text("back")
    third = backup(repo)
    node = repo.catalog.history.node_for_path(s + b"/gone/x")
    assert [v.type for v in repo.catalog.history.versions_of(node)] == [FILE, DELETED, FILE]
    assert third.files_new == 2
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, third.snapshot_id),
                     source_tree(src))


def test_default_excludes_skip_junk(repo_factory, src):
    junk = ["__pycache__/mod.cpython-311.pyc", "pkg/__pycache__/x.pyc", "stray.pyc",
            "notes.tmp", ".notes.swp", ".cache/thumb.png", "pkg/.cache/deep/file"]
    kept = ["mod.py", "pkg/x.py", "cache/not-hidden", "tmp.txt", "pkg/.cachex"]
    for rel in junk + kept:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    repo = repo_factory(src)
    stats = backup(repo)
    stored = stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id)
    files = {k.decode() for k, v in stored.items() if v.type == FILE}
    assert files == set(kept)
    assert b"__pycache__" not in stored and b".cache" not in stored
    # Excluded entries do not even get a node.
    assert repo.catalog.history.node_for_path(os.fsencode(src / "stray.pyc")) is None


def test_cachedir_tag_keeps_the_directory_but_not_its_contents(repo_factory, src):
    signature = b"Signature: 8a477f597d28d172789f06886806bc55"
    (src / "build").mkdir()
    (src / "build" / "CACHEDIR.TAG").write_bytes(signature + b"\n# made by a tool\n")
    (src / "build" / "object.o").write_bytes(b"\0" * 100)
    (src / "fake").mkdir()
    (src / "fake" / "CACHEDIR.TAG").write_bytes(b"Signature: not the right one")
    (src / "fake" / "data").write_text("kept")
    repo = repo_factory(src)
    stats = backup(repo)
    stored = stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id)
    assert stored[b"build"].type == DIR
    assert not [k for k in stored if k.startswith(b"build/")]
    assert {b"fake/CACHEDIR.TAG", b"fake/data"} <= stored.keys()


def test_include_only_patterns_store_only_matching_files(repo_factory, src):
    for rel in ("README.md", "docs/guide.md", "docs/img.png", "src/main.py", "src/x/y.md"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    repo = repo_factory(src, includes=("*.md",), excludes=("/docs/private/",))
    stats = backup(repo)
    stored = stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id)
    assert {k for k, v in stored.items() if v.type == FILE} == {
        b"README.md", b"docs/guide.md", b"src/x/y.md"}
    assert {k for k, v in stored.items() if v.type == DIR} >= {b"docs", b"src", b"src/x"}


def test_tracked_excludes_and_negation(repo_factory, src):
    for rel in ("app.log", "keep.log", "sub/app.log", "build/out", "sub/build/out", "top"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    repo = repo_factory(src, excludes=("*.log", "!keep.log", "/build/", "/top"))
    stats = backup(repo)
    stored = stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id)
    assert {k for k, v in stored.items() if v.type == FILE} == {
        b"keep.log", b"sub/build/out"}


def test_max_file_size_skips_larger_files(repo_factory, src):
    (src / "small").write_bytes(b"s" * 1000)
    (src / "exact").write_bytes(b"e" * 4096)
    (src / "large").write_bytes(b"l" * 4097)
    repo = repo_factory(src, max_file_size=4096)
    stats = backup(repo)
    stored = stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id)
    assert {b"small", b"exact"} <= stored.keys() and b"large" not in stored
    assert stats.state == "complete" and stats.errors == 0


@pytest.fixture
def mounted_tmpfs(src):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = src / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "btfs-test", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("one_fs", [True, False])
def test_one_file_system(repo_factory, src, mounted_tmpfs, one_fs):
    (src / "here").write_text("same fs")
    (mounted_tmpfs / "there").write_text("other fs")
    repo = repo_factory(src, one_file_system=one_fs)
    stats = backup(repo)
    stored = stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id)
    assert b"here" in stored
    assert stored[b"mnt"].type == DIR  # the mount point itself is kept, like tar and borg
    assert (b"mnt/there" in stored) is not one_fs


def test_untracking_marks_the_directory_deleted(repo_factory, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    (a / "sub" / "f").write_text("f")
    b.mkdir()
    (b / "g").write_text("g")
    repo = repo_factory(a, b)
    first = backup(repo)
    untrack_dirs(repo.paths, [str(a)])
    repo = repo_factory()  # reopen with the new config
    second = backup(repo)
    assert recorded(repo.catalog, second.snapshot_id, a) == {
        os.fsencode(a): DELETED, os.fsencode(a / "sub"): DELETED,
        os.fsencode(a / "sub" / "f"): DELETED}
    assert recorded(repo.catalog, second.snapshot_id, b) == {}
    assert stored_tree(repo.catalog, repo.vault, a, first.snapshot_id)[b"sub/f"].size == 1
    assert repo.catalog.history.version_at(repo.catalog.history.node_for_path(os.fsencode(a)),
                                   second.snapshot_id) is None


def test_many_small_files_are_spread_over_packs_of_bounded_file_count(repo_factory, src,
                                                                      monkeypatch):
    """Files wait in memory until their pack is durable, so a pack is sealed early once
    MAX_FILES_PER_PACK files wait for it; a few large files still share one pack."""
    monkeypatch.setattr(backup_mod, "MAX_FILES_PER_PACK", 10)
    for i in range(45):
        (src / f"small-{i:02d}").write_bytes(rand_bytes(2000 + i, seed=i))
    repo = repo_factory(src)
    stats = backup(repo)
    assert stats.files_new == 46  # and the tracked directory itself
    packs = list(repo.vault.list("packs/"))
    assert 5 <= len(packs) <= 6  # 45 files, at most 10 waiting per pack (and no tiny ones)
    assert repo.catalog.chunks.integrity_problems() == []
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id),
                     source_tree(src))

    big = src / "big"
    big.mkdir()
    for i in range(3):
        (big / f"large-{i}").write_bytes(rand_bytes(MiB, seed=100 + i))
    backup(repo)
    assert len(list(repo.vault.list("packs/"))) == len(packs) + 1


def test_deduplication_across_files_and_backups(repo_factory, src):
    blob = rand_bytes(3 * MiB, seed=3)
    (src / "one").write_bytes(blob)
    (src / "two").write_bytes(blob)
    (src / "small-1").write_bytes(b"tiny")
    (src / "small-2").write_bytes(b"tiny")
    repo = repo_factory(src)
    first = backup(repo)
    chunks, contents = count(repo.catalog, "chunk"), count(repo.catalog, "content")
    assert contents == 2
    assert first.bytes_added < 3 * MiB + 64 * 1024  # one copy of the blob, not two
    stored_bytes = sum(size for _, size in repo.vault.list("packs/"))
    assert stored_bytes == first.bytes_added

    (src / "three").write_bytes(blob)
    (src / "sub").mkdir()
    (src / "sub" / "four").write_bytes(b"tiny")
    second = backup(repo)
    assert second.files_new == 3
    assert second.bytes_added == 0
    assert (count(repo.catalog, "chunk"), count(repo.catalog, "content")) == (chunks, contents)
    assert sum(size for _, size in repo.vault.list("packs/")) == stored_bytes
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, second.snapshot_id),
                     source_tree(src))


@pytest.mark.expect_warnings(r"cannot (read|list)")
def test_unreadable_entries_make_a_partial_snapshot(repo_factory, src, paths):
    """Root reads any file, so the second backup runs in a child without CAP_DAC_OVERRIDE
    and CAP_DAC_READ_SEARCH (setpriv drops them from the bounding set before exec): then
    mode 000 means what it says, reliably, on any filesystem. Unreadable entries keep
    their last versions; everything else is stored."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop the DAC capabilities")
    (src / "good").write_text("readable")
    (src / "secret").write_text("unreadable")
    (src / "big-secret").write_bytes(rand_bytes(MiB))  # read through the chunked path
    (src / "closed").mkdir()
    (src / "closed" / "inside").write_text("unlisted")
    (src / "new-secret").write_text("never readable")
    os.chmod(src / "new-secret", 0o000)
    os.mkfifo(src / "fifo-is-fine")
    repo = repo_factory(src)
    first = backup(repo)  # as root: everything readable (except that fifos are skipped)
    assert first.state == "complete"
    (src / "good").write_text("readable, changed")
    for name in ("secret", "big-secret", "closed"):
        os.chmod(src / name, 0o000)
    script = textwrap.dedent("""
        import json
        from btfs.config import xdg_paths
        from btfs.repo import Repo
        with Repo.open(xdg_paths()) as repo, repo.writer():
            s = repo.backup()
        print(json.dumps({"id": s.snapshot_id, "state": s.state, "errors": s.errors,
                          "warnings": s.warnings}))
    """)
    (src / "new-secret").write_text("changed")  # so the child must read it
    proc = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c",
         script], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["state"] == "partial"
    assert result["errors"] == 4, result["warnings"]
    assert repo.catalog.history.snapshot(result["id"]).state == "partial"
    stored = stored_tree(repo.catalog, repo.vault, src, result["id"])
    before = stored_tree(repo.catalog, repo.vault, src, first.snapshot_id)
    assert stored[b"good"].size == len("readable, changed")
    for kept in (b"secret", b"big-secret", b"closed/inside", b"new-secret"):
        assert stored[kept] == before[kept], kept
    assert stored[b"closed"].mode & 0o777 == 0  # its new mode is known from lstat
    assert b"fifo-is-fine" not in stored


_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from btfs.config import xdg_paths
    from btfs.repo import Repo
    with Repo.open(xdg_paths()) as repo, repo.writer():
        print("locked", flush=True)
        time.sleep(60)
""")


def test_writer_lock_names_the_holder_and_dies_with_it(repo_factory, src):
    repo = repo_factory(src)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK], stdout=subprocess.PIPE,
                              text=True, env={**os.environ,
                                              "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=rf"\(pid {holder.pid}\)"), repo.writer():
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    deadline = time.monotonic() + 5
    while True:  # the kernel drops the flock as the process is reaped; no waiting needed
        try:
            with repo.writer():
                break
        except LockedError:
            assert time.monotonic() < deadline, "lock not released after kill -9"
            time.sleep(0.05)
    stats = backup(repo)
    assert stats.state == "complete"


def test_first_backup_of_two_dirs_with_shared_new_ancestors(repo_factory, tmp_path):
    """Regression: the second root's ancestors were created by the first root's scan in the
    same run, and were wrongly taken to have no children (UNIQUE constraint failed)."""
    a, b = tmp_path / "home" / "me" / "docs", tmp_path / "home" / "me" / "pics"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "cv.txt").write_text("cv")
    (b / "cat.jpg").write_bytes(b"meow")
    repo = repo_factory(a, b)
    stats = backup(repo)
    assert stats.state == "complete"
    assert stored_tree(repo.catalog, repo.vault, a, stats.snapshot_id)[b"cv.txt"].size == 2
    assert stored_tree(repo.catalog, repo.vault, b, stats.snapshot_id)[b"cat.jpg"].size == 4
    assert repo.catalog.chunks.integrity_problems() == []


@pytest.mark.expect_warnings(r"tracked directory .*: No such file")
def test_a_missing_tracked_directory_keeps_its_last_backup(repo_factory, tmp_path):
    """An unmounted disk must not look like 'everything was deleted'."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("f")
    (b / "g").write_text("g")
    repo = repo_factory(a, b)
    first = backup(repo)
    shutil.rmtree(a)
    second = backup(repo)
    assert second.state == "partial" and second.errors == 1
    assert recorded(repo.catalog, second.snapshot_id, a) == {}
    assert stored_tree(repo.catalog, repo.vault, a, second.snapshot_id) == \
        stored_tree(repo.catalog, repo.vault, a, first.snapshot_id)


def test_unexpected_btfs_warnings_fail_a_test(pytester):
    """The conftest's log check, run on three small tests in a child pytest."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_inner="""
        import logging
        import pytest

        log = logging.getLogger("btfs.engine.backup")

        def test_unexpected():
            log.warning("cannot read %s", "/x")

        @pytest.mark.expect_warnings("cannot read")
        def test_expected():
            log.warning("cannot read %s", "/x")

        @pytest.mark.expect_warnings("something else")
        def test_other_pattern():
            log.warning("cannot read %s", "/x")

        def test_not_btfs_and_info_are_fine():
            logging.getLogger("elsewhere").warning("not ours")
            log.info("just info")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*unexpected log records from btfs*",
                                 "*btfs.engine.backup: WARNING: cannot read /x*"])


@pytest.mark.parametrize("replacement", ["file", "symlink"])
def test_a_directory_replaced_by_a_file_ends_its_children(repo_factory, src, replacement):
    (src / "d" / "sub").mkdir(parents=True)
    (src / "d" / "c").write_text("child")
    (src / "d" / "sub" / "gc").write_text("grandchild")
    repo = repo_factory(src)
    first = backup(repo)
    shutil.rmtree(src / "d")
    if replacement == "file":
        (src / "d").write_text("now a file")
    else:
        os.symlink("elsewhere", src / "d")
    second = backup(repo)
    cat = repo.catalog
    s = os.fsencode(src)
    for child in (b"/d/c", b"/d/sub", b"/d/sub/gc"):
        node = cat.history.node_for_path(s + child)
        assert cat.history.version_at(node, first.snapshot_id) is not None
        assert cat.history.version_at(node, second.snapshot_id) is None, child
    assert cat.history.live_children(cat.history.node_for_path(s + b"/d")) == {}
    assert_same_tree(stored_tree(cat, repo.vault, src, second.snapshot_id), source_tree(src))


def test_a_file_replaced_by_a_directory(repo_factory, src):
    (src / "x").write_text("file first")
    repo = repo_factory(src)
    backup(repo)
    (src / "x").unlink()
    (src / "x").mkdir()
    (src / "x" / "inner").write_text("inside")
    stats = backup(repo)
    node = repo.catalog.history.node_for_path(os.fsencode(src / "x"))
    assert [v.type for v in repo.catalog.history.versions_of(node)] == [FILE, DIR]
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id),
                     source_tree(src))


def test_a_newly_excluded_path_is_recorded_deleted(repo_factory, src, paths):
    (src / "keep").write_text("k")
    (src / "later.log").write_text("l")
    repo = repo_factory(src)
    first = backup(repo)
    repo = repo_factory(src, excludes=("*.log",))
    second = backup(repo)
    assert recorded(repo.catalog, second.snapshot_id, src) == {
        os.fsencode(src / "later.log"): DELETED}
    assert b"later.log" in stored_tree(repo.catalog, repo.vault, src, first.snapshot_id)


def test_tracking_a_non_utf8_directory(repo_factory, tmp_path, paths):
    d = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(d)
    with open(d + b"/f", "wb") as f:
        f.write(b"x")
    try:
        repo = repo_factory(os.fsdecode(d))
    except BtfsError:
        assert not list(paths.config_file.parent.glob("*.tmp"))
        return
    stats = backup(repo)
    assert stored_tree(repo.catalog, repo.vault, d, stats.snapshot_id)[b"f"].size == 1


def test_content_change_hidden_behind_a_restored_mtime_is_seen(repo_factory, src):
    """Same size, same inode, mtime put back (as `cp -p` or an editor may): ctime tells."""
    f = src / "doc"
    f.write_bytes(b"version one")
    os.utime(f, ns=(NS_MTIME, NS_MTIME))
    repo = repo_factory(src)
    backup(repo)
    with open(f, "r+b") as fh:
        fh.write(b"VERSION")
    os.utime(f, ns=(NS_MTIME, NS_MTIME))
    stats = backup(repo)
    assert recorded(repo.catalog, stats.snapshot_id, src) == {os.fsencode(f): FILE}
    stored = stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id)
    assert_same_tree(stored, source_tree(src))
    assert stored[b"doc"].mtime_ns == NS_MTIME


def test_metadata_only_changes_make_versions_without_new_data(repo_factory, src):
    (src / "f").write_bytes(rand_bytes(300_000, 5))
    (src / "g").write_text("g")
    repo = repo_factory(src)
    first = backup(repo)
    os.chmod(src / "f", 0o600)
    if os.geteuid() == 0:
        os.chown(src / "g", 1234, 1234)
    xattrs = helpers.xattrs_supported(src)
    if xattrs:
        os.setxattr(src / "g", "user.note", b"added")
    second = backup(repo)
    assert second.bytes_added == 0
    cat = repo.catalog
    changed = recorded(cat, second.snapshot_id, src)
    assert os.fsencode(src / "f") in changed
    f1, f2 = cat.history.versions_of(cat.history.node_for_path(os.fsencode(src / "f")))
    assert f1.meta.content_id == f2.meta.content_id
    assert f2.meta.mode & 0o777 == 0o600
    assert_same_tree(stored_tree(cat, repo.vault, src, second.snapshot_id), source_tree(src))
    assert stored_tree(cat, repo.vault, src, first.snapshot_id)[b"f"].mode & 0o777 == 0o644


def test_entries_counts_the_backup_set(repo_factory, src):
    make_awkward_tree(src, xattrs=False)
    repo = repo_factory(src)
    stats = backup(repo)
    source = source_tree(src)
    assert stats.entries == len(source)
    assert stats.files_new == len(source)
    ancestors = len(src.parts) - 2  # above src, below '/' (which has no version)
    assert repo.catalog.history.count_entries(stats.snapshot_id) == len(source) + ancestors
    assert repo.catalog.history.snapshot(stats.snapshot_id).entries == len(source)


def test_tracking_the_parent_of_an_untracked_directory(repo_factory, tmp_path, paths):
    """Untrack a/b and track a instead: b stays live, recorded once in the new snapshot."""
    a = tmp_path / "a"
    (a / "b").mkdir(parents=True)
    (a / "b" / "f").write_text("f")
    (a / "top").write_text("t")
    repo = repo_factory(a / "b")
    backup(repo)
    untrack_dirs(paths, [str(a / "b")])
    repo = repo_factory(a)
    stats = backup(repo)
    assert stats.state == "complete"
    assert_same_tree(stored_tree(repo.catalog, repo.vault, a, stats.snapshot_id),
                     source_tree(a))
    assert repo.catalog.chunks.integrity_problems() == []


def test_tracking_a_child_of_an_untracked_directory(repo_factory, tmp_path, paths):
    """Untrack a and track a/b instead: a's other contents end, b stays live."""
    a = tmp_path / "a"
    (a / "b").mkdir(parents=True)
    (a / "b" / "f").write_text("f")
    (a / "top").write_text("t")
    repo = repo_factory(a)
    first = backup(repo)
    untrack_dirs(paths, [str(a)])
    repo = repo_factory(a / "b")
    stats = backup(repo)
    assert stats.state == "complete"
    assert_same_tree(stored_tree(repo.catalog, repo.vault, a / "b", stats.snapshot_id),
                     source_tree(a / "b"))
    top = repo.catalog.history.node_for_path(os.fsencode(a / "top"))
    assert repo.catalog.history.version_at(top, first.snapshot_id) is not None
    assert repo.catalog.history.version_at(top, stats.snapshot_id) is None
    assert repo.catalog.chunks.integrity_problems() == []


def test_a_shared_ancestor_changing_during_the_backup(repo_factory, tmp_path):
    home = tmp_path / "home-dir"
    a, b = home / "docs", home / "pics"
    a.mkdir(parents=True)
    b.mkdir()
    (a / "f").write_text("f")
    (b / "g").write_text("g")
    repo = repo_factory(a, b)
    calls = []

    def progress(stats, path):
        # Called on the first entry of each root (the sleep defeats its 0.2 s rate
        # limit); between the roots, something writes into the shared parent.
        calls.append(path)
        if len(calls) == 2:
            (home / ".bash_history").write_text("ls\n")
        time.sleep(0.21)

    with repo.writer():
        stats = repo.backup(progress=progress)
    assert len(calls) >= 2
    assert stats.state == "complete"
    assert stored_tree(repo.catalog, repo.vault, b, stats.snapshot_id)[b"g"].size == 1


# ---- random histories ------------------------------------------------------------------

_NAMES = ["a", "b", "c\udce9"]  # one name that is not UTF-8 on disk
_CONTENTS = [b"", b"x", b"y" * 100, rand_bytes(300_000, 9)]  # the last one is chunked
_op = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(_NAMES), st.sampled_from(_NAMES),
              st.integers(0, len(_CONTENTS) - 1)),
    st.tuples(st.just("mkdir"), st.sampled_from(_NAMES), st.sampled_from(_NAMES)),
    st.tuples(st.just("symlink"), st.sampled_from(_NAMES), st.sampled_from(_NAMES)),
    st.tuples(st.just("remove"), st.sampled_from(_NAMES), st.sampled_from(_NAMES)),
    st.tuples(st.just("chmod"), st.sampled_from(_NAMES), st.sampled_from(_NAMES)),
    st.tuples(st.just("rename"), st.sampled_from(_NAMES), st.sampled_from(_NAMES)),
    st.tuples(st.just("link"), st.sampled_from(_NAMES), st.sampled_from(_NAMES)),
)


def _apply(root: Path, op) -> None:
    """Apply one operation to `root/top[/sub]`, making parents and replacing what is in
    the way, as users do (a file where a directory was, and so on)."""
    kind, top, sub = op[:3]
    path = root / top / sub if top != sub else root / top

    def clear(p: Path) -> None:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()

    if path.parent != root and not (path.parent.is_dir() and not path.parent.is_symlink()):
        clear(path.parent)
        path.parent.mkdir()
    if kind == "write":
        if path.is_dir() and not path.is_symlink():
            clear(path)
        if path.is_symlink():
            path.unlink()
        path.write_bytes(_CONTENTS[op[3]])
    elif kind == "mkdir":
        if not (path.is_dir() and not path.is_symlink()):
            clear(path)
            path.mkdir()
    elif kind == "symlink":
        clear(path)
        os.symlink(f"../{sub}", path)
    elif kind == "remove":
        clear(path)
    elif kind in ("rename", "link"):  # top-level entry `top` to, or linked as, `sub`
        source, target = root / top, root / sub
        if top != sub and (source.exists() or source.is_symlink()):
            if kind == "link" and not (source.is_file() and not source.is_symlink()):
                return
            clear(target)
            (os.rename if kind == "rename" else os.link)(source, target)
    elif kind == "chmod" and (path.exists() and not path.is_symlink()):
        path.chmod(0o700 if path.is_dir() else 0o600 ^ (path.stat().st_mode & 0o077))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.lists(_op, min_size=1, max_size=4), min_size=1, max_size=4))
def test_random_histories_read_back_at_every_snapshot(tmp_path_factory, steps):
    """Any sequence of edits, backed up after each step: every snapshot holds exactly the
    tree as it was then, and a backup with nothing changed records nothing."""
    base = tmp_path_factory.mktemp("history")
    src = base / "src"
    src.mkdir()
    paths = Paths(base / "cfg" / "config.toml", base / "data", base / "cache")
    init_repo(paths, str(base / "vault"))
    track_dirs(paths, [str(src)])
    expected = []
    with Repo.open(paths) as repo:
        for step in steps:
            for op in step:
                _apply(src, op)
            stats = backup(repo)
            assert stats.state == "complete"
            expected.append((stats.snapshot_id, source_tree(src)))
        idle = backup(repo)
        assert recorded(repo.catalog, idle.snapshot_id, src) == {}
        assert repo.catalog.chunks.integrity_problems() == []
        for snapshot_id, source in expected:
            assert_same_tree(stored_tree(repo.catalog, repo.vault, src, snapshot_id), source)
    shutil.rmtree(base)


def test_small_files_are_stored_in_groups_and_damage_names_every_member(repo_factory, src):
    """Small files that look alike share compressed groups: the vault holds less than
    each file compressed alone, every file reads back, and a damaged group makes check
    name each file in it (and no other)."""
    from btfs.engine import codec
    from btfs.engine.check import check

    rng = __import__("random").Random(5)
    words = [b"static", b"int", b"return", b"struct", b"void", b"const", b"unsigned"]
    licence = rand_bytes(1500, seed=6).hex().encode()  # the same header in every file
    for i in range(300):
        body = b" ".join(rng.choice(words) for _ in range(rng.randint(100, 800)))
        (src / f"f{i:03d}.c").write_bytes(licence + b"/* file %d */\n" % i + body)
    (src / "alone.bin").write_bytes(rng.randbytes(300 * 1024))  # a chunk of its own
    repo = repo_factory(src)
    first = backup(repo)
    alone = sum(len(codec.Codec(3).encode((src / f"f{i:03d}.c").read_bytes())) for i in range(300))
    assert first.bytes_added < 300 * 1024 + alone * 0.5
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, first.snapshot_id),
                     source_tree(src))
    assert check(repo.catalog, repo.vault, repo.codec, read_data=True).ok

    # Damage one group's frame: one stored form shared by several chunks. Its zstd
    # magic, so that decoding fails whatever the digests made of the frame's bytes
    # (damage inside a frame's literals changes only some members, which then fail
    # their own digests: a test of luck, not of check).
    shared = repo.catalog.db.query(
        "SELECT p.name, c.offset, c.stored_len, count(*) FROM chunk c JOIN pack p "
        "ON p.id = c.pack_id GROUP BY c.pack_id, c.offset HAVING count(*) > 1 LIMIT 1").fetchall()
    pack, offset, stored_len, members = shared[0]
    path = repo.vault._path(f"packs/{pack}")
    data = bytearray(path.read_bytes())
    assert data[offset] == codec.GROUP
    data[offset + 2] ^= 0x10  # after the codec byte: the frame's magic
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    report = check(repo.catalog, repo.vault, repo.codec, read_data=True)
    assert not report.ok
    assert len({p for p, _ in report.affected}) == members
