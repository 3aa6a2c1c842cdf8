"""Where a mount may go, and mounts that died: real `btfs mount`, real kill -9.

A mount must not hide files or a tracked directory, nor go inside another btfs mount or
the vault; a missing mountpoint is created when its parent exists; a mount whose server
was killed is cleared by `btfs mount` and `btfs umount`; a btfs mount inside a tracked
directory, live or dead, is never backed up (btfs/own.py, btfs/mounts.py,
btfs/fuse/mount.py).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from fusekit import btfs_cli, btfs_fuse_mounts, force_unmount, is_mounted, wait_until

from btfs.catalog import DELETED, Catalog

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


@pytest.fixture
def cleanup():
    """cleanup(path): unmount `path` at teardown (dead or alive), whatever the test did."""
    points: list[str] = []
    yield lambda p: points.append(str(p))
    for mp in points:
        force_unmount(mp)


def mount(mnt: Path) -> int:
    """`btfs mount`; the server's pid."""
    out = btfs_cli("mount", str(mnt)).stdout
    return int(re.search(r"\(pid (\d+);", out).group(1))


def kill_server(pid: int, mnt: Path) -> None:
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: _enotconn(mnt), timeout=5)
    assert is_mounted(mnt)  # still in the mount table: dead, not gone


def _enotconn(mnt: Path) -> bool:
    try:
        os.statvfs(mnt)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_the_mount_refuses_to_hide_files_or_a_tracked_directory_or_to_loop(
        repo_dirs, cleanup, tmp_path):
    src, mnt = repo_dirs
    (src / "f").write_text("x")
    btfs_cli("-q", "backup")
    full = tmp_path / "full"
    full.mkdir()
    (full / "file").write_text("would be hidden")
    for target, reason in ((full, "is not empty"),
                           (src, "is tracked"),
                           (tmp_path, f"holds the tracked directory {src}"),
                           (tmp_path / "no" / "such", "does not exist, nor does its parent"),
                           (tmp_path / "vault" / "tmp",
                            f"is inside the vault ({tmp_path / 'vault'})")):
        cleanup(target)
        assert reason in one_line_error(btfs_cli("mount", str(target), check=None)), target
        assert not is_mounted(target)
    assert not (tmp_path / "no").exists()
    cleanup(mnt)
    mount(mnt)
    for inner in (mnt / "by-time", mnt / "by-time" / "latest" / "nope"):
        proc = btfs_cli("mount", str(inner), check=None)
        assert f"is inside the btfs mount {mnt}" in one_line_error(proc)
    assert btfs_fuse_mounts().count(str(mnt)) == 1


def test_a_missing_mountpoint_is_created_when_its_parent_exists(repo_dirs, cleanup,
                                                                 tmp_path):
    src, _ = repo_dirs
    (src / "f").write_text("x")
    btfs_cli("-q", "backup")
    mnt = tmp_path / "backups"
    assert not mnt.exists()
    cleanup(mnt)
    mount(mnt)
    assert (mnt / "by-time" / "latest" / str(src).lstrip("/") / "f").read_text() == "x"


def test_a_killed_mount_is_cleared_by_mount_and_by_umount(repo_dirs, cleanup):
    src, mnt = repo_dirs
    (src / "f").write_text("x")
    btfs_cli("-q", "backup")
    cleanup(mnt)
    kill_server(mount(mnt), mnt)
    pid = mount(mnt)  # clears the dead one and mounts; never "already mounted"
    assert btfs_fuse_mounts().count(str(mnt)) == 1
    assert (mnt / "by-time" / "latest" / str(src).lstrip("/") / "f").read_text() == "x"
    kill_server(pid, mnt)
    proc = btfs_cli("umount", str(mnt))
    assert proc.stdout == f"unmounted {mnt} (its server had died)\n" and not proc.stderr
    assert not is_mounted(mnt)
    assert one_line_error(btfs_cli("umount", str(mnt), check=None)).endswith(
        "is not mounted\n")


def test_a_btfs_mount_inside_a_tracked_directory_is_never_backed_up(repo_dirs, cleanup,
                                                                     paths):
    """Mounted at an empty directory an earlier backup recorded: from then on it is left
    out (recorded deleted once); alive or dead (kill -9), the backup is complete, warns of
    nothing, and `status` agrees."""
    src, _ = repo_dirs
    (src / "notes.txt").write_text("n")
    mnt = src / "backups"
    mnt.mkdir()
    btfs_cli("-q", "backup")
    cleanup(mnt)
    pid = mount(mnt)
    assert os.listdir(mnt / "by-time")
    stats = [json.loads(btfs_cli("backup", "--json").stdout)]
    kill_server(pid, mnt)
    stats.append(json.loads(btfs_cli("backup", "--json").stdout))
    status = btfs_cli("status")
    assert status.stdout == "nothing changed since the last backup\n" and not status.stderr
    for s in stats:
        assert s["state"] == "complete" and s["errors"] == 0 and not s["warnings"], s
        assert (s["files_new"], s["files_changed"], s["bytes_added"]) == (0, 0, 0), s
    assert stats[0]["files_deleted"] == 1 and stats[1]["files_deleted"] == 0
    with Catalog(paths.catalog, readonly=True) as catalog:
        node = catalog.history.node_for_path(os.fsencode(mnt))
        assert catalog.history.node_children(node) == []  # nothing under it, ever
        assert catalog.history.head(node).type == DELETED
