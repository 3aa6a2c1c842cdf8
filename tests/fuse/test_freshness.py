"""What the mount and `btfs snapshots` show right after a backup, or after one was killed,
and version names that any filesystem can take: real `btfs` commands, real mounts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fusekit import btfs_cli, wait_until
from helpers import rand_bytes

from btfs import config as config_mod
from btfs.catalog import Catalog

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def backup() -> None:
    btfs_cli("-q", "backup")


def snapshots_json() -> list[dict]:
    return json.loads(btfs_cli("snapshots", "--json").stdout)


def snapshot_dirs(mnt: Path) -> list[str]:
    return sorted(n for n in os.listdir(mnt / "by-time") if n != "latest")


def inside(mnt: Path, name: str, src: Path) -> Path:
    return mnt / "by-time" / name / str(src).lstrip("/")


def mount_log(tmp_path: Path) -> str:
    return "".join(p.read_text() for p in (tmp_path / "xdg-cache" / "btfs").glob("mount*.log"))


def test_a_killed_backup_is_interrupted_at_once_and_the_mount_shows_it(repo_dirs, mounter,
                                                                        paths):
    """kill -9 of a real `btfs backup`: `btfs snapshots` says interrupted at once (no
    writer ran since), and a running mount shows the backup with what it committed."""
    src, _ = repo_dirs
    (src / "old.txt").write_text("from the first backup")
    backup()
    mnt = mounter()
    # Small packs: the backup commits after each, so it has committed files long before
    # it is done with these.
    config_mod.save(paths, config_mod.with_changes(config_mod.load(paths), pack_size=1 << 20))
    for i in range(160):
        (src / f"f{i:03}.bin").write_bytes(rand_bytes(512 << 10, i))
    child = subprocess.Popen([sys.executable, "-m", "btfs", "-q", "backup"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with Catalog(paths.catalog, readonly=True) as cat:
            def committed() -> int:
                return cat.db.get_val(
                    "SELECT count(*) FROM version v JOIN snapshot s ON s.id = v.snapshot_id "
                    "WHERE s.state = 'running' AND v.type = 'file'")
            assert wait_until(lambda: committed() > 0 or child.poll() is not None,
                              timeout=60, step=0.002)
            assert child.poll() is None, "the backup finished before it could be killed"
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            kept = committed()
            assert [s.state for s in cat.history.snapshots()] == ["complete", "running"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    snaps = snapshots_json()
    assert [s["state"] for s in snaps] == ["complete", "interrupted"]
    assert " interrupted " in btfs_cli("snapshots").stdout
    # A killed backup changes nothing in the catalog: the mount sees the lock free.
    killed = snaps[-1]["name"]
    assert wait_until(lambda: snapshot_dirs(mnt) == [snaps[0]["name"], killed], timeout=3)
    assert os.readlink(mnt / "by-time" / "latest") == killed
    shown = [n for n in os.listdir(inside(mnt, killed, src)) if n.endswith(".bin")]
    assert len(shown) >= kept > 0
    for name in shown:
        i = int(name[1:4])
        assert (inside(mnt, killed, src) / name).read_bytes() == rand_bytes(512 << 10, i)
    assert (inside(mnt, killed, src) / "old.txt").read_text() == "from the first backup"
    # The next writer records it as interrupted, as it always did; nothing else changes.
    backup()
    with Catalog(paths.catalog, readonly=True) as cat:
        assert [s.state for s in cat.history.snapshots()] == ["complete", "interrupted", "complete"]
    assert [s["state"] for s in snapshots_json()] == ["complete", "interrupted", "complete"]


def test_a_running_backup_is_running_for_btfs_snapshots(repo_dirs, paths):
    """Asking whether the writer lock is held does not take it: a backup starting while
    `btfs snapshots` runs over and over is never refused."""
    src, _ = repo_dirs
    (src / "a").write_text("a")
    backup()
    from btfs.lock import WriterLock

    with Catalog(paths.catalog) as cat:
        lock = WriterLock(paths.lock)
        lock.acquire()
        try:
            with cat.writer.transaction():
                cat.writer.begin_snapshot("h", time.time_ns())
            assert [s["state"] for s in snapshots_json()] == ["complete", "running"]
        finally:
            lock.release()
    assert [s["state"] for s in snapshots_json()] == ["complete", "interrupted"]

    readers = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys\n"
         "while True:\n"
         "    subprocess.run([sys.executable, '-m', 'btfs', 'snapshots'],"
         " stdout=subprocess.DEVNULL, check=True)\n"],
        stderr=subprocess.DEVNULL)
    try:
        for i in range(6):
            (src / "a").write_text(f"a{i}")
            backup()  # exit code 0 asserted: never "already running"
    finally:
        readers.kill()
        readers.wait()


LONG_ASCII = "n" * 251 + ".txt"  # 255 bytes
LONG_UTF8 = "été-日本" * 21 + ".md"  # 255 bytes, 2- and 3-byte characters


@pytest.mark.parametrize("name", [LONG_ASCII, LONG_UTF8], ids=["ascii", "utf8"])
def test_cp_a_of_the_by_file_directory_of_a_255_byte_name(repo_dirs, mounter, tmp_path,
                                                          name):
    src, _ = repo_dirs
    assert len(os.fsencode(name)) == 255
    contents = [b"first version\n", rand_bytes(300_000, 7), b"third\n"]
    for data in contents:
        (src / name).write_bytes(data)
        backup()
    mnt = mounter()
    versions_dir = mnt / "by-file" / str(src).lstrip("/") / name
    names = sorted(os.listdir(versions_dir))
    assert len(names) == 3 and all(len(os.fsencode(n)) <= 255 for n in names)
    assert all(n.endswith(name[name.rfind("."):]) for n in names)
    out = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(versions_dir), str(out)], check=True,
                   capture_output=True)
    stamps = [s["name"] for s in snapshots_json()]
    copied = {n: (out / n).read_bytes() for n in os.listdir(out)}
    assert len(copied) == 3
    for stamp, data in zip(stamps, contents, strict=True):
        [match] = [n for n in copied if stamp + "." in n]
        assert copied[match] == data
        assert (versions_dir / match).read_bytes() == data  # found again by lookup
    shutil.rmtree(out)


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def test_backups_while_mounted_log_no_tracebacks(repo_dirs, mounter, tmp_path):
    src, _ = repo_dirs
    (src / "f").write_text("0")
    backup()
    mnt = mounter()
    for i in range(1, 5):
        (src / "f").write_text(str(i))
        backup()
        if i % 2 == 0:  # some backups seen first by a reader, some by the mount's poll
            assert wait_until(lambda i=i: read(inside(mnt, "latest", src) / "f") == str(i))
        else:
            time.sleep(1.2)
    assert wait_until(lambda: len(snapshot_dirs(mnt)) == 5)
    text = mount_log(tmp_path)
    assert "backups changed" in text
    assert "Traceback" not in text and "Failed to submit" not in text, text


def test_latest_shows_a_backup_as_soon_as_btfs_backup_returns(repo_dirs, mounter, tmp_path):
    """No window: by-time/ and latest ask the catalog whether it changed at every look."""
    src, _ = repo_dirs
    (src / "changing.txt").write_text("round 0")
    backup()
    mnt = mounter()
    latest = mnt / "by-time" / "latest"
    seen = {os.readlink(latest)}
    for i in range(1, 7):
        (src / "changing.txt").write_text(f"round {i}")
        assert os.lstat(latest).st_size == len(os.readlink(latest))  # cached just before
        backup()
        name = os.readlink(latest)
        assert name not in seen, f"round {i}: latest still points to {name}"
        assert os.lstat(latest).st_size == len(name)
        seen.add(name)
        assert name in os.listdir(mnt / "by-time")
        assert "changing.txt" in os.listdir(inside(mnt, "latest", src))
        assert (inside(mnt, "latest", src) / "changing.txt").read_text() == f"round {i}"
        assert (inside(mnt, name, src) / "changing.txt").read_text() == f"round {i}"
    assert "Traceback" not in mount_log(tmp_path)
