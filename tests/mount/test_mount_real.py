"""Real mounts, read with real tools: every field and byte as it was at each backup."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import assert_same_tree, make_awkward_tree, rand_bytes, source_tree

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def btfs_cli(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], capture_output=True,
                          text=True, timeout=120)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def snapshot_names(mnt: Path) -> list[str]:
    return sorted(n for n in os.listdir(mnt / "by-time") if n != "latest")


def at(mnt: Path, name: str, src: Path) -> Path:
    return mnt / "by-time" / name / str(src).lstrip("/")


@pytest.fixture
def awkward_history(tmp_path, backed_up):
    """An awkward tree backed up twice with changes in between; the source as it was."""
    src = tmp_path / "src"
    made = make_awkward_tree(src)
    (src / "changed.txt").write_bytes(b"old")
    backed_up(src)
    first = source_tree(src)
    time.sleep(1.1)  # distinct by-time names
    (src / "changed.txt").write_bytes(b"new content, longer than before")
    (src / "added.bin").write_bytes(rand_bytes(300_000, 11))
    victim = next(p for p in sorted(os.listdir(src)) if p.startswith("empty"))
    target = src / victim
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    backed_up(src)
    return src, made, first, source_tree(src)


def test_every_field_and_byte_at_each_backup(awkward_history, mounter):
    src, _, first, second = awkward_history
    mnt = mounter()
    one, two = snapshot_names(mnt)
    assert os.readlink(mnt / "by-time" / "latest") == two
    # Directory mtimes of src itself changed with the edits; everything else compares.
    assert_same_tree(source_tree(at(mnt, one, src)), first)
    assert_same_tree(source_tree(at(mnt, two, src)), second)


def test_find_printf_of_every_field_matches_the_source(awkward_history, mounter):
    src, _, _, _ = awkward_history
    mnt = mounter()
    fmt = "%P\\0%y %m %U %G %s %T@ %l\\0"  # path, type, mode, owner, size, mtime ns, target

    def find(root: Path) -> list[bytes]:
        out = subprocess.run(["find", str(root), "-printf", fmt], check=True,
                             capture_output=True).stdout.split(b"\0")[:-1]
        # One record per entry (path, fields); order is readdir order, which differs.
        # Fifos, sockets and devices are not stored by btfs.
        return sorted((p, f) for p, f in zip(out[::2], out[1::2], strict=True)
                      if f[:1] not in (b"p", b"s", b"b", b"c"))

    latest = at(mnt, snapshot_names(mnt)[-1], src)
    assert find(latest) == find(src)


def test_cp_a_out_of_a_snapshot_restores_it_exactly(awkward_history, mounter, tmp_path):
    src, _, first, _ = awkward_history
    mnt = mounter()
    out = tmp_path / "restored"
    cp = subprocess.run(["cp", "-a", str(at(mnt, snapshot_names(mnt)[0], src)), str(out)],
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    assert_same_tree(source_tree(out), first)


def test_by_file_lists_exactly_the_changed_versions(awkward_history, mounter):
    src, _, _, _ = awkward_history
    mnt = mounter()
    one, two = snapshot_names(mnt)
    base = mnt / "by-file" / str(src).lstrip("/")
    assert sorted(os.listdir(base / "changed.txt")) == [f"changed.{one}.txt",
                                                        f"changed.{two}.txt"]
    assert os.listdir(base / "added.bin") == [f"added.{two}.bin"]
    assert (base / "changed.txt" / f"changed.{two}.txt").read_bytes() == (
        src / "changed.txt").read_bytes()
    unchanged = next(n for n in sorted(os.listdir(src)) if (src / n).is_file()
                     and n not in ("changed.txt", "added.bin"))
    assert len(os.listdir(base / unchanged)) == 1


def test_deleted_files_keep_their_versions(tmp_path, backed_up, mounter):
    src = tmp_path / "src"
    src.mkdir()
    (src / "gone.txt").write_text("remember me")
    backed_up(src)
    (src / "gone.txt").unlink()
    backed_up(src)
    mnt = mounter()
    one, two = snapshot_names(mnt)
    assert not (at(mnt, two, src) / "gone.txt").exists()
    assert (at(mnt, one, src) / "gone.txt").read_text() == "remember me"
    versions = mnt / "by-file" / str(src).lstrip("/") / "gone.txt"
    assert (versions / f"gone.{one}.txt").read_text() == "remember me"


def test_read_only_everywhere(tmp_path, backed_up, mounter):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    backed_up(src)
    mnt = mounter()
    f = at(mnt, "latest", src) / "f"
    attempts = [lambda: os.open(f, os.O_WRONLY), lambda: os.open(f, os.O_RDWR | os.O_APPEND),
                lambda: os.chmod(f, 0o777), lambda: os.unlink(f),
                lambda: os.rename(f, f.with_name("g")), lambda: os.mkdir(f.with_name("d")),
                lambda: os.open(f.with_name("new"), os.O_WRONLY | os.O_CREAT),
                lambda: os.setxattr(f, "user.x", b"1")]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS
    assert f.read_text() == "x"


def test_parallel_readers_get_exact_bytes(tmp_path, backed_up, mounter):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(rand_bytes(3_000_000 + i, i))
    backed_up(src)
    mnt = mounter()
    want = {f"f{i}": hashlib.sha256((src / f"f{i}").read_bytes()).hexdigest() for i in range(6)}
    got, errors = {}, []

    def read(name):
        try:
            got[name] = hashlib.sha256((at(mnt, "latest", src) / name).read_bytes()).hexdigest()
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=read, args=(n,)) for n in want for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == want


def test_a_huge_directory_is_listed_fully_and_once(tmp_path, backed_up, mounter):
    """100,000 entries, added directly to the catalog (as a later snapshot of a real
    backup, which recorded src and its ancestors) to keep the test fast."""
    from btfs.catalog import DIR, FILE, Meta
    src = tmp_path / "src"
    src.mkdir()
    repo = backed_up(src)
    cat = repo.catalog
    with cat.transaction():
        sid = cat.begin_snapshot("h", time.time_ns())
        empty = cat.add_content(hashlib.sha256(b"").digest(), 0, ())
        big = cat.node_for_path(os.fsencode(src) + b"/big", create=True)
        cat.add_version(big, sid, Meta(DIR, 4096, stat.S_IFDIR | 0o755, 0, 0, 1, 1, 1, None,
                                       1, 2))
        for i in range(100_000):
            node = cat.add_node(big, b"entry-%06d" % i)
            cat.add_version(node, sid, Meta(FILE, 0, stat.S_IFREG | 0o644, 0, 0, 1, 1, 1,
                                            None, 10 + i, 1, content_id=empty))
        cat.update_snapshot(sid, state="complete", finished_ns=time.time_ns())
    mnt = mounter()
    names = os.listdir(at(mnt, "latest", src) / "big")
    assert len(names) == 100_000 == len(set(names))
    out = subprocess.run(["find", str(at(mnt, "latest", src) / "big"), "-printf", "%s %m %f\\n"],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert len(out) == 100_001 and sum(line.endswith("entry-099999") for line in out) == 1
    assert all(line.startswith("0 644 entry-") for line in out[1:])


def test_a_backup_landing_while_mounted_shows_up(tmp_path, backed_up, mounter):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("one")
    backed_up(src)
    mnt = mounter()
    before = snapshot_names(mnt)
    assert (at(mnt, "latest", src) / "f").read_text() == "one"
    time.sleep(1.1)
    (src / "f").write_text("two")
    backed_up(src)
    deadline = time.monotonic() + 5  # the issue asks for 2 s; allow a loaded CI machine
    while time.monotonic() < deadline and len(snapshot_names(mnt)) == len(before):
        time.sleep(0.1)
    after = snapshot_names(mnt)
    assert len(after) == len(before) + 1
    assert os.readlink(mnt / "by-time" / "latest") == after[-1]
    assert (at(mnt, "latest", src) / "f").read_text() == "two"


def test_a_damaged_pack_gives_eio_not_bytes(tmp_path, backed_up, mounter):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(rand_bytes(4_000_000, 1))
    backed_up(src)
    (src / "ok.txt").write_text("still fine")
    backed_up(src)
    packs = sorted((tmp_path / "vault" / "packs").rglob("*"), key=lambda p: p.stat().st_size)
    biggest = [p for p in packs if p.is_file()][-1]
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    mnt = mounter()
    with pytest.raises(OSError) as e:
        (at(mnt, "latest", src) / "big.bin").read_bytes()
    assert e.value.errno == errno.EIO
    assert (at(mnt, "latest", src) / "ok.txt").read_text() == "still fine"
    log = next((tmp_path / "xdg-cache" / "btfs").glob("mount-*.log")).read_text()
    assert "big.bin" in log and "failed" in log


def test_mountpoint_errors_are_one_line(tmp_path, backed_up, mounter):
    src = tmp_path / "src"
    src.mkdir()
    backed_up(src)
    missing = btfs_cli("mount", str(tmp_path / "nope"), check=2)
    assert missing.stderr == f"btfs: error: mountpoint {tmp_path / 'nope'} does not exist\n"
    (tmp_path / "file").write_text("")
    not_dir = btfs_cli("mount", str(tmp_path / "file"), check=2)
    assert not_dir.stderr == f"btfs: error: mountpoint {tmp_path / 'file'} is not a directory\n"
    mnt = mounter()
    again = btfs_cli("mount", str(mnt), check=2)
    assert again.stderr == f"btfs: error: {mnt} is already mounted\n"
    btfs_cli("umount", str(mnt))
    assert not os.path.ismount(mnt)
    gone = btfs_cli("umount", str(mnt), check=2)
    assert gone.stderr == f"btfs: error: {mnt} is not mounted\n"


def test_sigterm_unmounts_cleanly(tmp_path, backed_up):
    src = tmp_path / "src"
    src.mkdir()
    backed_up(src)
    mnt = tmp_path / "fg"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "btfs", "mount", "--foreground", str(mnt)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.ismount(mnt)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not os.path.ismount(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
