"""Subtree backups (`repo.backup(only=...)`, what `btfs watch` runs): only what changed below
the given paths is recorded, the snapshot still shows the whole tree, no snapshot is kept
when nothing changed, a `stop` event ends a backup cleanly, and many backups in one process
leak neither threads, descriptors nor memory.
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

import pytest
from helpers import NS_MTIME, assert_same_tree, backup, recorded, source_tree, stored_tree

from btfs.catalog import DELETED, DIR, FILE
from btfs.engine.backup import BackupStopped
from btfs.engine.check import check
from btfs.engine.scanner import Subtree
from btfs.repo import Repo


@pytest.fixture
def src(tmp_path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return d


def sub(path: Path, deep: bool = True) -> Subtree:
    return Subtree(os.fsencode(path), deep)


def only_backup(repo, *subtrees, **kwargs):
    with repo.writer():
        return repo.backup(only=subtrees, **kwargs)


def tree(tmp: Path) -> None:
    for rel in ("a/one", "a/two", "a/deep/x", "b/three", "c/four"):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(rel)


def test_only_the_subtree_is_recorded_and_the_snapshot_holds_everything(repo_factory, src):
    tree(src)
    repo = repo_factory(src)
    first = backup(repo)
    os.utime(src / "b" / "three", ns=(NS_MTIME, NS_MTIME))  # outside the subtree: waits
    (src / "c" / "four").unlink()  # outside too: left for the next full scan
    (src / "a" / "new").write_text("new")
    os.utime(src / "a" / "deep" / "x", ns=(NS_MTIME, NS_MTIME))
    stats = only_backup(repo, sub(src / "a"))
    assert recorded(repo.catalog, stats.snapshot_id, src) == {
        os.fsencode(src / "a"): DIR, os.fsencode(src / "a" / "new"): FILE,
        os.fsencode(src / "a" / "deep" / "x"): FILE}
    assert stats.entries == first.entries + 1
    stored = stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id)
    assert b"c/four" in stored and stored[b"a/new"].size == 3

    full = backup(repo)  # the full scan picks up the rest
    assert recorded(repo.catalog, full.snapshot_id, src) == {
        os.fsencode(src / "b" / "three"): FILE, os.fsencode(src / "c" / "four"): DELETED,
        os.fsencode(src / "c"): DIR}
    assert full.entries == stats.entries - 1
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, full.snapshot_id),
                     source_tree(src), ignore_mtime={b""})


def test_a_shallow_path_compares_one_entry_and_its_listing(repo_factory, src):
    tree(src)
    repo = repo_factory(src)
    backup(repo)
    os.utime(src / "a" / "deep" / "x", ns=(NS_MTIME, NS_MTIME))  # below: not compared
    (src / "a" / "two").unlink()
    (src / "a" / "fresh" / "in").mkdir(parents=True)  # new directories are walked whole
    (src / "a" / "fresh" / "in" / "f").write_text("f")
    stats = only_backup(repo, sub(src / "a", deep=False))
    assert recorded(repo.catalog, stats.snapshot_id, src) == {
        os.fsencode(src / "a"): DIR, os.fsencode(src / "a" / "two"): DELETED,
        os.fsencode(src / "a" / "fresh"): DIR, os.fsencode(src / "a" / "fresh" / "in"): DIR,
        os.fsencode(src / "a" / "fresh" / "in" / "f"): FILE}

    # One file named exactly; a vanished path named exactly is found deleted.
    os.utime(src / "b" / "three", ns=(NS_MTIME, NS_MTIME))
    (src / "c" / "four").unlink()
    stats = only_backup(repo, sub(src / "b" / "three", deep=False),
                        sub(src / "c" / "four", deep=False), sub(src / "c", deep=False))
    assert recorded(repo.catalog, stats.snapshot_id, src) == {
        os.fsencode(src / "b" / "three"): FILE, os.fsencode(src / "c" / "four"): DELETED,
        os.fsencode(src / "c"): DIR}


def test_renamed_directory_inside_a_subtree(repo_factory, src):
    tree(src)
    repo = repo_factory(src)
    backup(repo)
    (src / "a").rename(src / "moved")
    stats = only_backup(repo, sub(src / "a", deep=False), sub(src / "moved"))
    got = recorded(repo.catalog, stats.snapshot_id, src)
    assert got[os.fsencode(src / "a")] == DELETED
    assert got[os.fsencode(src / "moved" / "deep" / "x")] == FILE
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id),
                     source_tree(src), ignore_mtime={b""})


def test_no_snapshot_when_nothing_changed(repo_factory, src):
    tree(src)
    repo = repo_factory(src)
    backup(repo)
    before = len(repo.catalog.history.snapshots())
    stats = only_backup(repo, sub(src / "a"), skip_unchanged=True)
    assert (stats.state, stats.snapshot_id) == ("unchanged", 0)
    with repo.writer():
        stats = repo.backup(skip_unchanged=True)
    assert stats.state == "unchanged"
    assert len(repo.catalog.history.snapshots()) == before
    # A directory above the tracked one changed (as /home does all the time): alone, no
    # reason for a snapshot; with a change below, recorded with it.
    (src.parent / "beside").write_text("x")
    with repo.writer():
        assert repo.backup(skip_unchanged=True).state == "unchanged"
    (src / "a" / "one").write_text("changed")
    with repo.writer():
        stats = repo.backup(skip_unchanged=True)
    assert stats.state == "complete" and len(repo.catalog.history.snapshots()) == before + 1
    assert recorded(repo.catalog, stats.snapshot_id, src.parent) == {
        os.fsencode(src.parent): DIR, os.fsencode(src / "a" / "one"): FILE}


def test_a_stop_event_ends_the_backup_cleanly(repo_factory, src):
    for i in range(3000):
        (src / f"f{i:04}").write_text(str(i))
    repo = repo_factory(src)
    stop = threading.Event()
    stop.set()
    with pytest.raises(BackupStopped), repo.writer():
        repo.backup(stop=stop)
    assert repo.catalog.history.snapshots()[-1].state == "interrupted"
    assert not check(repo.catalog, repo.vault, repo.codec).problems
    stats = backup(repo)
    assert stats.files_new == 3001


def _open_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass  # the listing's own descriptor
    return sorted(found)


def test_fifty_backups_in_one_process_leak_nothing(repo_factory, src, paths):
    tree(src)
    backup(repo_factory(src))
    threads = threading.active_count()
    rss, fds = [], []
    for i in range(50):
        (src / "a" / "one").write_text("x" * i)
        # As btfs watch runs them: a Repo opened for each backup.
        with Repo.open(paths) as repo, repo.writer():
            repo.backup(only=[sub(src / "a" / "one", deep=False)], skip_unchanged=True)
        with Repo.open(paths) as repo, repo.writer():
            assert repo.backup(skip_unchanged=True).state == "unchanged"
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        fds.append(_open_files())
    assert threading.active_count() == threads
    assert fds[-1] == fds[4]  # the first runs may open what stays open (a cached handle)
    assert rss[-1] - rss[9] < 16 * 1024  # KiB: no growth per run after warming up
