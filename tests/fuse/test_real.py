"""Real mounts of real backups (`btfs backup`, `btfs mount`), read with real tools.

The issue's "done when": two backups of a tree full of awkward entries, mounted; `find
-printf` of every field and every file's bytes match the source as it was at each backup;
`cp -a` out of by-time restores it exactly; by-file lists exactly the changed versions.
st_blocks is not compared: the catalog does not record it (the mount derives it from
the size), so sparse files and xattr blocks differ.
"""

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
from blake3 import blake3
from fusekit import btfs_cli, is_mounted, wait_until
from helpers import make_awkward_tree, rand_bytes, xattrs_supported

from btfs.catalog import Catalog
from btfs.lock import WriterLock

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

# Every field find can print that a backup records: type, mode, owner, size, the three
# times to the nanosecond, link target, link count.
FIELDS = "%y %m %U %G %s %A@ %T@ %C@ %n %l"


NAMES = ("type", "mode", "uid", "gid", "size", "atime", "mtime", "ctime", "nlink", "target")


def find_fields(root: Path, *, drop=()) -> dict[bytes, tuple]:
    """rel path -> the FIELDS find prints, without the named ones; atime is dropped for
    directories and symlinks (see `two_backups`)."""
    out = subprocess.run(["find", str(root), "!", "-type", "p", "-printf",
                          "%P\\0" + FIELDS + "\\0"], check=True, capture_output=True).stdout
    parts = out.split(b"\0")[:-1]
    keep = [i for i, n in enumerate(NAMES) if n not in drop]
    result = {}
    for rel, line in zip(parts[::2], parts[1::2], strict=True):
        fields = line.split(b" ", len(NAMES) - 1)
        if fields[0] != b"f":
            fields[NAMES.index("atime")] = None
        result[rel] = tuple(fields[i] for i in keep)
    return result


def contents(root: Path) -> dict[bytes, tuple]:
    """rel path -> (sha256 of the bytes for files, sorted xattrs) for every entry."""
    rootb = os.fsencode(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(rootb):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, rootb)
            st = os.lstat(path)
            if stat.S_ISFIFO(st.st_mode):
                continue
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            xattrs = tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False))
                                  for n in os.listxattr(path, follow_symlinks=False)))
            out[rel] = (digest, xattrs)
    return out


def assert_same(mounted: dict, source: dict, what: str) -> None:
    problems = [f"only in source: {k!r}" for k in sorted(source.keys() - mounted.keys())]
    problems += [f"only in mount: {k!r}" for k in sorted(mounted.keys() - source.keys())]
    problems += [f"{k!r}: mount {mounted[k]!r} source {source[k]!r}"
                 for k in sorted(source.keys() & mounted.keys()) if mounted[k] != source[k]]
    assert not problems, f"{what}:\n" + "\n".join(problems[:40])


def backup() -> None:
    btfs_cli("-q", "backup")


def snapshot_dirs(mnt: Path) -> list[str]:
    return sorted(n for n in os.listdir(mnt / "by-time") if n != "latest")


def inside(mnt: Path, name: str, src: Path) -> Path:
    return mnt / "by-time" / name / str(src).lstrip("/")


@pytest.fixture
def two_backups(repo_dirs):
    """The awkward tree backed up, changed in every way a file can change, backed up
    again; what find and the content walk saw right after each backup."""
    src, mnt = repo_dirs
    make_awkward_tree(src)
    (src / "edit.txt").write_bytes(b"first words\n")
    (src / "doomed").mkdir()
    (src / "doomed" / "inner.txt").write_bytes(b"deleted with its directory\n")
    (src / "gone.txt").write_bytes(b"deleted in the second backup\n")
    # find before the backup, which stats a file before reading it: the atime it records
    # is the one find saw. Listing a directory or reading a link moves its atime (the
    # observer effect: find's walk, the backup's, ours), so those are compared without.
    first_fields = find_fields(src)
    backup()
    first = (first_fields, contents(src))
    time.sleep(1.1)  # the two backups get different names
    (src / "edit.txt").write_bytes(b"second words, longer\n")
    os.chmod(src / "modes" / "exec", 0o700)
    os.chown(src / "a" / "random.bin", 4242, 4343)
    os.utime(src / "a" / "text.txt", ns=(123_456_789_012_345_678, 987_654_321_098_765_432))
    (src / "gone.txt").unlink()
    shutil.rmtree(src / "doomed")
    (src / "added.bin").write_bytes(rand_bytes(2_500_000, 7))
    os.unlink(src / "link-rel")
    os.symlink(b"edit.txt", src / "link-rel")
    os.setxattr(src / "edit.txt", "user.note", b"added later")
    second_fields = find_fields(src, drop=("atime",))
    backup()
    # An atime that moved on its own (our reads above) is not a change: unchanged entries
    # keep the atime of the version recorded by the first backup. Compare the others.
    second = (second_fields, contents(src))
    return src, mnt, first, second


def test_every_field_and_byte_as_it_was_at_each_backup(two_backups, mounts_cleanup):
    src, mnt, first, second = two_backups
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    one, two = snapshot_dirs(mnt)
    assert os.readlink(mnt / "by-time" / "latest") == two
    assert_same(find_fields(inside(mnt, one, src)), first[0], f"find -printf at {one}")
    assert_same(find_fields(inside(mnt, two, src), drop=("atime",)), second[0],
                f"find -printf at {two}")
    for name, (_, data) in ((one, first), (two, second)):
        assert_same(contents(inside(mnt, name, src)), data, f"bytes and xattrs at {name}")


def test_cp_a_out_of_a_snapshot_restores_it_exactly(two_backups, mounts_cleanup, tmp_path):
    src, mnt, first, _ = two_backups
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    snap = inside(mnt, snapshot_dirs(mnt)[0], src)
    out = tmp_path / "restored"
    subprocess.run(["cp", "-a", str(snap), str(out)], check=True)
    # ctime cannot be restored by anyone; everything else must be what it was. The
    # restored root directory's atime is moved by the comparison walk itself.
    want = {k: v for k, v in first[0].items() if k}
    want = {k: v[:NAMES.index("ctime")] + v[NAMES.index("ctime") + 1:] for k, v in want.items()}
    restored = find_fields(out, drop=("ctime",))
    restored.pop(b"")
    assert_same(restored, want, "cp -a")
    assert_same(contents(out), first[1], "cp -a bytes and xattrs")
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(snap), str(out)],
                          capture_output=True)
    assert diff.returncode == 0 and diff.stdout == b"", diff.stdout[:2000]
    rsync = subprocess.run(["rsync", "-aHAX", "--dry-run", "--itemize-changes", "-c",
                            str(snap) + "/", str(out) + "/"], capture_output=True, check=True)
    assert rsync.stdout == b"", rsync.stdout[:2000]


def test_by_file_lists_exactly_the_changed_versions(two_backups, mounts_cleanup):
    src, mnt, first, second = two_backups
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    one, two = snapshot_dirs(mnt)
    base = mnt / "by-file" / str(src).lstrip("/")
    srcb = os.fsencode(src)

    def versions(rel: bytes) -> list[bytes]:
        return sorted(os.listdir(os.fsencode(base) + b"/" + rel))

    def vname(rel: bytes, snap: str) -> bytes:
        from btfs.names import version_name
        return version_name(os.path.basename(rel), snap)

    def is_dir(rel: bytes, fields) -> bool:
        return fields[rel][0] == b"d"

    every = (first[0].keys() | second[0].keys()) - {b""}
    for rel in sorted(every):
        in1, in2 = first[0].get(rel), second[0].get(rel)
        if (in1 and is_dir(rel, first[0])) or (in2 and is_dir(rel, second[0])):
            continue  # directories stay directories of their children
        # A version per change: the metadata or bytes differ (atime alone is no change).
        atime = NAMES.index("atime")
        changed = in1 and in2 and (in1[:atime] + in1[atime + 1:] != in2
                                   or first[1][rel] != second[1][rel])
        want = ([vname(rel, one)] if in1 else []) + ([vname(rel, two)] if in2 and (
            changed or not in1) else []) + ([f"(deleted in {two})".encode()]
                                             if in1 and not in2 else [])
        assert versions(rel) == sorted(want), rel
        for v, (fields, data) in ((vname(rel, one), first), (vname(rel, two), second)):
            if v in want:
                path = os.fsencode(base) + b"/" + rel + b"/" + v
                st = os.lstat(path)
                want_mode = fields[rel][1]
                assert oct(stat.S_IMODE(st.st_mode))[2:].encode() == want_mode, path
                if data[rel][0] is not None:
                    with open(path, "rb") as f:
                        assert hashlib.file_digest(f, "sha256").hexdigest() == data[rel][0]
    # The deleted directory's file is still there, as its one version, and marked.
    assert versions(b"doomed/inner.txt") == [f"(deleted in {two})".encode(),
                                             vname(b"doomed/inner.txt", one)]
    assert os.path.isdir(srcb)  # sanity: the source itself was not touched by the mount


@pytest.fixture
def mounts_cleanup():
    """mounts_cleanup(path): unmount `path` at teardown, whatever the test did."""
    points: list[Path] = []
    yield points.append
    for mp in points:
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)


def test_mount_is_ready_fast_and_a_new_backup_shows_up_within_2s(repo_dirs, mounts_cleanup):
    src, mnt = repo_dirs
    (src / "f").write_text("one")
    backup()
    mounts_cleanup(mnt)
    started = time.perf_counter()
    btfs_cli("mount", str(mnt))
    took = time.perf_counter() - started
    assert (inside(mnt, "latest", src) / "f").read_text() == "one"
    print(f"btfs mount returned, answering, after {took:.2f}s (interpreter start included)")
    before = snapshot_dirs(mnt)
    time.sleep(1.1)
    (src / "f").write_text("two")
    backup()
    landed = time.perf_counter()
    assert wait_until(lambda: len(snapshot_dirs(mnt)) == 2, timeout=2.0)
    print(f"new backup visible after {time.perf_counter() - landed:.2f}s")
    after = snapshot_dirs(mnt)
    assert after[0] == before[0]
    assert wait_until(lambda: os.readlink(mnt / "by-time" / "latest") == after[1], 2.0)
    assert (inside(mnt, "latest", src) / "f").read_text() == "two"
    assert (inside(mnt, after[0], src) / "f").read_text() == "one"


def test_a_history_without_xattrs_is_mounted_without_them(repo_dirs, mounts_cleanup,
                                                           tmp_path):
    """No backup has xattrs: the mount says it has none (ENOTSUP, as a filesystem without
    them would), so the kernel stops asking and `cp -a` still copies. A backup that adds
    some while mounted is logged; a new mount shows them."""
    src, mnt = repo_dirs
    if not xattrs_supported(src):
        pytest.skip("the test directory's filesystem has no user xattrs")
    (src / "plain.txt").write_text("no attributes")
    backup()
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    f = inside(mnt, "latest", src) / "plain.txt"
    for call in (os.listxattr, lambda p: os.getxattr(p, "user.color")):
        with pytest.raises(OSError) as e:
            call(f)
        assert e.value.errno == errno.ENOTSUP
    cp = subprocess.run(["cp", "-a", str(f), str(tmp_path / "copy.txt")],
                        capture_output=True, text=True)
    assert cp.returncode == 0 and not cp.stderr, cp.stderr
    assert (tmp_path / "copy.txt").read_text() == "no attributes"

    time.sleep(1.1)
    os.setxattr(src / "plain.txt", "user.color", b"red")
    backup()
    log_file = next((tmp_path / "xdg-cache" / "btfs").glob("mount*.log"))
    assert wait_until(lambda: "remount to see them" in log_file.read_text(), timeout=3.0)
    btfs_cli("umount", str(mnt))
    btfs_cli("mount", str(mnt))
    assert os.getxattr(inside(mnt, "latest", src) / "plain.txt", "user.color") == b"red"
    assert os.listxattr(inside(mnt, snapshot_dirs(mnt)[0], src) / "plain.txt") == []


def test_a_running_backup_does_not_disturb_the_mount(repo_dirs, mounts_cleanup, paths):
    """A backup in progress (its snapshot 'running', its writer holding the lock) is not
    shown until it finishes."""
    src, mnt = repo_dirs
    (src / "f").write_text("one")
    backup()
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    with Catalog(paths.catalog) as cat, WriterLock(paths.lock) as lock:
        lock.acquire()
        with cat.writer.transaction():
            running = cat.writer.begin_snapshot("h", time.time_ns() + 10 * 10**9)
        time.sleep(1.5)
        assert len(snapshot_dirs(mnt)) == 1
        with cat.writer.transaction():
            cat.writer.update_snapshot(running, state="complete", finished_ns=time.time_ns())
    assert wait_until(lambda: len(snapshot_dirs(mnt)) == 2, timeout=2.0)


@pytest.mark.parametrize("how", ["missing pack", "flipped byte"])
def test_a_damaged_vault_gives_eio_and_one_log_line(repo_dirs, mounts_cleanup, tmp_path, how):
    src, mnt = repo_dirs
    (src / "big.bin").write_bytes(rand_bytes(3_000_000, 5))
    backup()
    (src / "ok.txt").write_text("still fine")
    backup()
    packs = sorted((p for p in (tmp_path / "vault" / "packs").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    if how == "missing pack":
        packs[-1].unlink()
    else:
        data = bytearray(packs[-1].read_bytes())
        data[len(data) // 2] ^= 0xFF
        os.chmod(packs[-1], 0o600)
        packs[-1].write_bytes(bytes(data))
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    with pytest.raises(OSError) as e:
        (inside(mnt, "latest", src) / "big.bin").read_bytes()
    assert e.value.errno == errno.EIO
    assert (inside(mnt, "latest", src) / "ok.txt").read_text() == "still fine"
    log = next((tmp_path / "xdg-cache" / "btfs").glob("mount*.log")).read_text()
    lines = [line for line in log.splitlines() if "big.bin" in line]
    assert lines and "Traceback" not in log, log


def test_parallel_readers_get_exact_bytes(repo_dirs, mounts_cleanup):
    src, mnt = repo_dirs
    for i in range(4):
        (src / f"f{i}").write_bytes(rand_bytes(4_000_000 + i, 20 + i))
    backup()
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    want = {f"f{i}": hashlib.sha256((src / f"f{i}").read_bytes()).digest() for i in range(4)}
    got: list[tuple[str, bytes]] = []
    errors: list[Exception] = []

    def read(name: str, offset: int) -> None:
        try:
            with open(inside(mnt, "latest", src) / name, "rb", buffering=0) as f:
                f.seek(offset)
                tail = f.read()
                f.seek(0)
                head = f.read(offset)
            got.append((name, hashlib.sha256(head + tail).digest()))
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=read, args=(n, off)) for n in want
               for off in (0, 1_234_567, 3_999_999)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got) == sorted((n, want[n]) for n in want for _ in range(3))


def test_a_100k_entry_directory_is_listed_fully_and_once(repo_dirs, mounts_cleanup, paths):
    src, mnt = repo_dirs
    backup()  # records src and its ancestors; the big directory is added by hand
    with Catalog(paths.catalog) as cat:
        from btfs.catalog import DIR, FILE, Meta
        with cat.writer.transaction():
            sid = cat.writer.begin_snapshot("h", time.time_ns())
            empty = cat.chunks.add_content(blake3(b"").digest(), 0, ())
            big = cat.writer.node_for_path(os.fsencode(src) + b"/big")
            cat.writer.add_version(big, sid, Meta(DIR, 4096, stat.S_IFDIR | 0o755, 0, 0, 1, 1, 1,
                                           None, 1, 2))
            for i in range(100_000):
                cat.writer.add_version(cat.writer.add_node(big, b"entry-%06d" % i), sid,
                                Meta(FILE, 0, stat.S_IFREG | 0o644, 0, 0, 1, 1, 1, None,
                                     10 + i, 1, content_id=empty))
            cat.writer.update_snapshot(sid, state="complete", finished_ns=time.time_ns())
    mounts_cleanup(mnt)
    started = time.perf_counter()
    btfs_cli("mount", str(mnt))
    print(f"mount of a 100k-entry history ready after {time.perf_counter() - started:.2f}s")
    big = inside(mnt, "latest", src) / "big"
    started = time.perf_counter()
    names = os.listdir(big)
    print(f"listing 100k entries (readdirplus) took {time.perf_counter() - started:.2f}s")
    assert len(names) == 100_000 == len(set(names))
    out = subprocess.run(["ls", "-lU", str(big)], check=True, capture_output=True).stdout
    assert out.count(b"entry-") == 100_000


def test_a_large_file_reads_exact(repo_dirs, mounts_cleanup):
    src, mnt = repo_dirs
    data = rand_bytes(64 << 20, 99)
    (src / "large.bin").write_bytes(data)
    backup()
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    path = inside(mnt, "latest", src) / "large.bin"
    # Speed is make bench's business; here only the bytes count.
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").digest()
    assert digest == hashlib.sha256(data).digest()


def test_read_only_everywhere(repo_dirs, mounts_cleanup):
    src, mnt = repo_dirs
    (src / "f").write_text("x")
    (src / "d").mkdir()
    backup()
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    top = inside(mnt, "latest", src)
    f = top / "f"
    attempts = [lambda: os.open(f, os.O_WRONLY), lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
                lambda: os.open(f, os.O_RDWR),
                lambda: os.chmod(f, 0o777), lambda: os.chown(f, 1, 1),
                lambda: os.utime(f, (1, 1)), lambda: os.truncate(f, 0),
                lambda: os.unlink(f), lambda: os.rename(f, top / "g"),
                lambda: os.mkdir(top / "new"), lambda: os.rmdir(top / "d"),
                lambda: os.open(top / "new", os.O_CREAT | os.O_WRONLY),
                lambda: os.symlink("f", top / "s"),
                lambda: os.link(f, top / "h"), lambda: os.setxattr(f, "user.x", b"1"),
                lambda: os.removexattr(f, "user.x"), lambda: os.mkdir(mnt / "by-time" / "x"),
                lambda: os.unlink(mnt / "by-time" / "latest")]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS, attempt
    assert f.read_text() == "x"


def _as_user(uid: int, path: Path) -> int:
    """errno of reading `path` as another user (0: it worked)."""
    code = (f"import os, sys\nos.setgid({uid}); os.setuid({uid})\n"
            "try:\n    open(sys.argv[1], 'rb').read()\nexcept OSError as e:\n"
            "    sys.exit(e.errno)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)]).returncode


@pytest.mark.skipif(os.geteuid() != 0, reason="switches users")
def test_private_by_default_and_allow_other_keeps_permissions(repo_dirs, mounts_cleanup,
                                                              tmp_path):
    src, mnt = repo_dirs
    (src / "public.txt").write_text("anyone")
    (src / "secret.txt").write_text("owner only")
    os.chmod(src / "secret.txt", 0o600)
    os.chown(src / "secret.txt", 4000, 4000)
    # Let the other user reach the mountpoint, and the source as backed up.
    for d in (src, tmp_path, *tmp_path.parents):
        os.chmod(d, os.stat(d).st_mode | 0o005)
    backup()
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    public = inside(mnt, "latest", src) / "public.txt"
    assert public.read_text() == "anyone"
    assert _as_user(5000, public) == errno.EACCES  # private: nobody else gets in
    btfs_cli("umount", str(mnt))
    assert wait_until(lambda: not is_mounted(mnt))
    btfs_cli("mount", str(mnt), "--allow-other")
    assert _as_user(5000, public) == 0
    assert _as_user(5000, inside(mnt, "latest", src) / "secret.txt") == errno.EACCES
    assert _as_user(4000, inside(mnt, "latest", src) / "secret.txt") == 0


def test_mountpoint_problems_are_one_line_errors(repo_dirs, mounts_cleanup, tmp_path):
    src, mnt = repo_dirs
    backup()
    for target, reason in ((tmp_path / "nope" / "deeper", "does not exist"),
                           (src, None)):
        if reason:
            proc = btfs_cli("mount", str(target), check=None)
            assert proc.returncode != 0
            assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
            assert reason in proc.stderr
    (tmp_path / "a-file").write_text("")
    proc = btfs_cli("mount", str(tmp_path / "a-file"), check=None)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1
    assert "not a directory" in proc.stderr
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    proc = btfs_cli("mount", str(mnt), check=None)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1
    assert "already mounted" in proc.stderr
    btfs_cli("umount", str(mnt))
    assert wait_until(lambda: not is_mounted(mnt))
    proc = btfs_cli("umount", str(mnt), check=None)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1
    assert "not mounted" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly_in_the_foreground(repo_dirs, mounts_cleanup, sig):
    src, mnt = repo_dirs
    (src / "f").write_text("x")
    backup()
    mounts_cleanup(mnt)
    proc = subprocess.Popen([sys.executable, "-m", "btfs", "mount", "--foreground",
                             str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: is_mounted(mnt), timeout=20)
        assert (inside(mnt, "latest", src) / "f").read_text() == "x"
        busy = os.open(inside(mnt, "latest", src) / "f", os.O_RDONLY)  # must not block it
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
        assert not is_mounted(mnt)
        try:  # the file outlived its filesystem; closing it may report that
            os.close(busy)
        except OSError:
            pass
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_mount_answers_while_a_backup_runs(repo_dirs, mounts_cleanup, paths):
    """A backup writing for seconds (its snapshot 'running') never stalls the mount: the
    catalog is read through WAL, and the running snapshot is hidden until it finishes."""
    src, mnt = repo_dirs

    def only_finished_shown() -> bool:
        # The backup may finish between the poll below and this look: a second snapshot
        # may show then, once the catalog has it as finished, never before.
        shown = len(snapshot_dirs(mnt))
        if shown == 1:
            return True
        with Catalog(paths.catalog, readonly=True) as cat:
            return shown == 2 and all(s.state != "running" for s in cat.history.snapshots())

    (src / "old.txt").write_text("from the first backup")
    backup()
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    for i in range(8):
        (src / f"big{i}.bin").write_bytes(rand_bytes(48 << 20, 100 + i))
    running = subprocess.Popen([sys.executable, "-m", "btfs", "-q", "backup"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        slowest, checks = 0.0, 0
        while running.poll() is None:
            started = time.perf_counter()
            assert only_finished_shown()
            assert (inside(mnt, "latest", src) / "old.txt").read_text() == \
                "from the first backup"
            os.listdir(mnt / "by-file" / str(src).lstrip("/"))
            slowest = max(slowest, time.perf_counter() - started)
            checks += 1
            time.sleep(0.05)
        assert running.returncode == 0, running.stderr.read()
    finally:
        if running.poll() is None:
            running.kill()
    print(f"{checks} checks during the backup, slowest {slowest * 1000:.0f} ms")
    assert checks >= 3 and slowest < 1.0
    assert wait_until(lambda: len(snapshot_dirs(mnt)) == 2, timeout=2.0)
    assert len(os.listdir(inside(mnt, "latest", src))) == 9


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may set a mount's read-ahead")
def test_the_mount_reads_ahead_a_mib_at_a_time(repo_dirs, mounts_cleanup):
    """Its bdi read-ahead is raised once the mount answers (the kernel sets it when FUSE's
    INIT is answered, so an earlier change would be undone)."""
    from btfs.fuse.mount import READ_AHEAD_KB

    src, mnt = repo_dirs
    (src / "f").write_bytes(b"x")
    backup()
    mounts_cleanup(mnt)
    btfs_cli("mount", str(mnt))
    dev = os.stat(mnt).st_dev
    path = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    assert wait_until(lambda: int(path.read_text()) == READ_AHEAD_KB)
    assert (inside(mnt, "latest", src) / "f").read_bytes() == b"x"
