"""A running mount follows `btfs forget` and `btfs prune`: forgotten backups leave by-time/
within a second, the others keep their names and contents, and the versions keep_versions
keeps stay readable in by-file/ under their old names."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fusekit import btfs_cli, wait_until

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def snapshot_dirs(mnt: Path) -> list[str]:
    return sorted(n for n in os.listdir(mnt / "by-time") if n != "latest")


def test_forgotten_backups_leave_by_time_and_kept_versions_stay_in_by_file(repo_dirs,
                                                                            mounter):
    src, _ = repo_dirs
    doc = src / "doc.txt"
    for i in range(4):
        doc.write_text(f"draft {i}\n")
        (src / "stays.txt").write_text("unchanged")
        btfs_cli("-q", "backup")
        time.sleep(1.05)  # one backup per second: distinct names without suffixes
    doc.unlink()
    btfs_cli("-q", "backup")
    mnt = mounter()
    names = snapshot_dirs(mnt)
    assert len(names) == 5
    by_file = mnt / "by-file" / str(doc).lstrip("/")
    mark = f"(deleted in {names[4]})"  # doc.txt is gone from the newest backup
    assert len(os.listdir(by_file)) == 4 + 1
    btfs_cli("forget", "--keep-last", "1", "--keep-snapshot", names[1], "--keep-versions", "2")
    btfs_cli("prune")
    assert wait_until(lambda: snapshot_dirs(mnt) == [names[1], names[4]], timeout=1.5), \
        snapshot_dirs(mnt)
    assert os.readlink(mnt / "by-time" / "latest") == names[4]
    kept = mnt / "by-time" / names[1] / str(src).lstrip("/")
    assert (kept / "doc.txt").read_text() == "draft 1\n"
    assert (kept / "stays.txt").read_text() == "unchanged"
    # drafts 1 (in a kept backup) and 2, 3 (the two newest) stay, under their old names.
    versions = sorted(n for n in os.listdir(by_file) if n != mark)
    assert versions == [f"doc.{n}.txt" for n in names[1:4]]
    assert mark in os.listdir(by_file)
    assert [(by_file / v).read_text() for v in versions] == [
        f"draft {i}\n" for i in (1, 2, 3)]
    # A name the kernel looked up (or listed) before stays cached for at most a second
    # (entries under by-time/ live LIVE_TIMEOUT).
    assert wait_until(lambda: not (mnt / "by-time" / names[2]).exists(), timeout=1.5)


def test_a_deletion_recorded_in_a_forgotten_backup_keeps_its_mark(repo_dirs, mounter):
    """A path deleted in a backup that is then forgotten, while a later kept backup still
    shows it gone: the forgotten backup stays as a ghost holding the deletion, and the
    path's by-file directory still ends with its '(deleted in <backup>)' mark."""
    src, _ = repo_dirs
    doc = src / "doc.txt"
    doc.write_text("only draft\n")
    btfs_cli("-q", "backup")
    time.sleep(1.05)
    doc.unlink()
    (src / "other.txt").write_text("one")
    btfs_cli("-q", "backup")
    time.sleep(1.05)
    (src / "other.txt").write_text("two")
    btfs_cli("-q", "backup")
    mnt = mounter()
    names = snapshot_dirs(mnt)
    btfs_cli("forget", "--keep-last", "1", "--keep-snapshot", names[0])
    assert wait_until(lambda: snapshot_dirs(mnt) == [names[0], names[2]], timeout=1.5)
    by_file = mnt / "by-file" / str(doc).lstrip("/")
    mark = f"(deleted in {names[1]})"
    assert sorted(os.listdir(by_file)) == sorted([f"doc.{names[0]}.txt", mark])
    assert (by_file / mark).stat().st_size == 0
    assert (by_file / f"doc.{names[0]}.txt").read_text() == "only draft\n"
