"""`btfs watch` with real inotify, real files and a real daemon process.

Each test starts `btfs watch` with short settle times and stops it (SIGTERM, then
SIGKILL if it hangs) at teardown, and reads what was stored through the catalog and the
vault. Tests that lower an inotify sysctl restore it in a `finally`, and lower it only
while the daemon sets up its watches: the limits are per user, machine-wide.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_same_tree, source_tree, stored_tree, wait_for

from btfs.repo import Repo
from btfs.watch import control

SETTLE = 1.0
BTFS = [sys.executable, "-m", "btfs"]


@pytest.fixture
def src(tmp_path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def runtime_dirs(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)


def btfs(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([*BTFS, *args], capture_output=True, text=True, timeout=120,
                            **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result




class Watcher:
    def __init__(self, paths, tmp_path: Path):
        self.paths = paths
        self.log = tmp_path / "state" / "btfs" / "watch.log"
        self.proc: subprocess.Popen | None = None

    def start(self, **settings) -> Watcher:
        settings = {"settle": SETTLE, "settle_max": 10, "min_interval": 1, **settings}
        with open(self.paths.config_file, "a") as f:
            f.write("\n[watch]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                             for k, v in settings.items()))
        self.proc = subprocess.Popen([*BTFS, "watch"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        wait_for(lambda: self.proc.poll() is not None or control.running(), 30, "the socket")
        assert self.proc.poll() is None, self.proc.stderr.read()
        self.idle()  # the start-up scan
        return self

    def status(self) -> dict:
        return control.request("status")

    def idle(self, timeout: float = 30) -> dict:
        """Wait until nothing is pending or running."""
        return wait_for(lambda: (s := self.status())["state"] == "watching"
                        and s["pending_paths"] == 0 and s, timeout, "the daemon to go idle")

    def snapshots(self) -> list:
        with Repo.open(self.paths, readonly=True) as repo:
            return [s for s in repo.snapshots() if s.state in ("complete", "partial")]

    def stored(self, src: Path) -> dict:
        """The tree of the newest finished snapshot ({} before the first)."""
        with Repo.open(self.paths, readonly=True) as repo:
            done = [s for s in repo.snapshots() if s.state in ("complete", "partial")]
            if not done:
                return {}
            return stored_tree(repo.catalog, repo.vault, src, done[-1].id)

    def log_lines(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def watcher(repo_factory, src, paths, tmp_path):
    """A Watcher over `src` (tracked); started by the test with .start(**[watch] keys)."""
    repo_factory(src).close()
    w = Watcher(paths, tmp_path)
    yield w
    w.stop()


def assert_stored_as_source(w: Watcher, src: Path) -> None:
    assert_same_tree(w.stored(src), source_tree(src), ignore_mtime={b""})


def test_a_change_is_a_snapshot_within_settle_and_a_few_seconds(watcher, src):
    (src / "old").write_text("old")
    w = watcher.start()
    before = len(w.snapshots())
    assert before == 1  # the start-up scan
    (src / "new").write_text("new")
    saved = time.monotonic()
    wait_for(lambda: len(w.snapshots()) > before, SETTLE + 5, "a snapshot")
    assert time.monotonic() - saved < SETTLE + 3
    assert_stored_as_source(w, src)
    status = w.idle()
    assert status["last_backup"]["files"] == 2  # the file and its directory
    assert status["last_backup"]["full"] is False


def test_a_file_written_slowly_is_stored_only_complete(watcher, src):
    w = watcher.start()
    before = len(w.snapshots())
    with open(src / "slow", "wb") as f:
        for i in range(7):  # 3 s of writing, each write well within settle
            f.write(b"%d" % i * 1000)
            f.flush()
            time.sleep(0.5)
    w.idle()
    with Repo.open(w.paths, readonly=True) as repo:
        node = repo.catalog.history.node_for_path(os.fsencode(src / "slow"))
        sizes = [v.meta.size for v in repo.catalog.history.versions_of(node)]
    assert sizes == [7000]
    assert len(w.snapshots()) == before + 1


def test_a_burst_of_5000_changes_makes_at_most_two_snapshots(watcher, src):
    w = watcher.start(min_interval=3)
    before = len(w.snapshots())
    for i in range(50):
        d = src / f"d{i:02}"
        d.mkdir()
        for j in range(50):
            (d / f"f{j:02}").write_text(f"{i} {j}")
    for i in range(0, 50, 2):
        for j in range(50):
            (src / f"d{i:02}" / f"f{j:02}").write_text("again")  # 2,500 more changes
    time.sleep(SETTLE)
    w.idle(60)
    assert len(w.snapshots()) - before <= 2
    assert btfs("status").stdout == "nothing changed since the last backup\n"
    assert_stored_as_source(w, src)


def test_new_directories_renames_and_atomic_saves(watcher, src):
    (src / "doc.txt").write_text("v1")
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "sub" / "x").write_text("x")
    w = watcher.start()

    (src / "fresh" / "deeper").mkdir(parents=True)  # files at once in a new directory
    for name in ("a", "b", "deeper/c"):
        (src / "fresh" / name).write_text(name)
    time.sleep(0.3)
    (src / "fresh" / "deeper" / "later").write_text("later")  # after its watch exists
    w.idle()
    time.sleep(SETTLE)
    w.idle()
    assert_stored_as_source(w, src)

    (src / "dir").rename(src / "renamed")
    (src / "renamed" / "sub" / "y").write_text("y")  # watched under its new name
    time.sleep(SETTLE)
    w.idle()
    assert_stored_as_source(w, src)

    # An editor's save: write a temporary file, rename it over the original.
    tmp = src / ".doc.txt.swp"
    tmp.write_text("v2, saved atomically")
    tmp.rename(src / "doc.txt")
    time.sleep(SETTLE)
    w.idle()
    assert_stored_as_source(w, src)
    assert w.stored(src)[b"doc.txt"].size == len("v2, saved atomically")


def set_sysctl(name: str, value: int) -> int:
    path = Path("/proc/sys/fs/inotify") / name
    old = int(path.read_text())
    path.write_text(f"{value}\n")
    return old


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="writes /proc/sys/fs/inotify")


@needs_root
def test_queue_overflow_means_a_rescan_and_nothing_missed(watcher, src):
    old = set_sysctl("max_queued_events", 32)
    try:
        w = watcher.start()  # its queue is sized when it starts
    finally:
        set_sysctl("max_queued_events", old)
    w.proc.send_signal(signal.SIGSTOP)  # events pile up while it does not read
    try:
        for i in range(300):
            (src / f"f{i:03}").write_text(str(i))
    finally:
        w.proc.send_signal(signal.SIGCONT)
    time.sleep(SETTLE)
    w.idle()
    assert len(w.log_lines("inotify queue overflowed")) == 1
    assert_stored_as_source(w, src)


def _watches_in_use() -> int:
    count = 0
    for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"):
        try:
            count += fdinfo.read_text().count("inotify wd:")
        except OSError:
            pass
    return count


@needs_root
def test_the_watch_limit_is_logged_with_the_sysctl_to_run_and_scans_cover_the_rest(
        watcher, src):
    for i in range(20):
        (src / f"d{i:02}").mkdir()
    old = None
    try:
        old = set_sysctl("max_user_watches", _watches_in_use() + 5)
        w = watcher.start(scan_interval=3)
    finally:
        if old is not None:
            set_sysctl("max_user_watches", old)
    lines = w.log_lines("inotify watch limit reached")
    assert len(lines) == 1
    assert "sysctl fs.inotify.max_user_watches=" in lines[0]
    assert w.status()["unwatched_directories"] > 0
    # Changes in the unwatched directories are stored by the next full scan.
    for i in range(20):
        (src / f"d{i:02}" / "late").write_text("late")
    wait_for(lambda: all(b"d%02d/late" % i in w.stored(src) for i in range(20)), 15,
             "the full scan", every=0.5)
    assert_stored_as_source(w, src)
    assert len(w.log_lines("inotify watch limit reached")) == 1


def test_an_unreachable_vault_is_retried_and_nothing_lost(watcher, src, vault_dir):
    w = watcher.start()
    away = vault_dir.with_name("vault-unplugged")
    vault_dir.rename(away)
    try:
        (src / "during").write_text("written while the vault was away")
        status = wait_for(lambda: (s := w.status())["state"] == "retrying" and s, 15,
                          "a retry")
        assert status["last_error"]["message"]
        assert status["pending_paths"] >= 1
        assert status["totals"]["failures"] >= 1
    finally:
        away.rename(vault_dir)
    wait_for(lambda: b"during" in w.stored(src), 15, "the retry", every=0.3)
    assert_stored_as_source(w, src)


def test_pause_keeps_changes_and_resume_backs_them_up(watcher, src):
    w = watcher.start()
    before = len(w.snapshots())
    assert btfs("daemon", "pause").stdout.startswith("paused")
    (src / "while-paused").write_text("p")
    time.sleep(SETTLE + 1.5)
    status = w.status()
    assert status["state"] == "paused" and status["pending_paths"] == 1
    assert len(w.snapshots()) == before
    btfs("daemon", "resume")
    wait_for(lambda: len(w.snapshots()) > before, 10, "the backup after resume")
    assert_stored_as_source(w, src)


def test_sigterm_during_a_backup_stops_cleanly(watcher, src, paths):
    from btfs import config as config_mod

    cfg = config_mod.load(paths)  # slow compression, so the start-up scan takes a while
    config_mod.save(paths, config_mod.with_changes(cfg, compression_level=19))
    for i in range(200):
        (src / f"big{i:02}").write_bytes(os.urandom(64 << 10) * 8)
    w = watcher
    with open(paths.config_file, "a") as f:
        f.write("\n[watch]\nsettle = 1\n")
    w.proc = subprocess.Popen([*BTFS, "watch"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: control.running() and w.status()["state"] == "backing up", 30,
             "the start-up backup")
    time.sleep(0.5)
    stopped = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(10) == 0
    assert time.monotonic() - stopped < 5
    assert not control.socket_path().exists()
    result = btfs("check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert w.log_lines("stopping (the running backup is cancelled)")


def test_daemon_status_json_and_text(watcher, src):
    w = watcher.start()
    (src / "f").write_text("f")
    time.sleep(SETTLE)
    w.idle()
    s = json.loads(btfs("daemon", "status", "--json").stdout)
    assert s["state"] == "watching" and s["ok"] is True
    assert s["uptime_s"] > 0 and s["pid"] == w.proc.pid
    assert s["tracked"] == [str(src)] and s["watched_directories"] == 1
    assert s["pending_paths"] == 0
    assert s["last_backup"]["result"] == "complete" and s["last_backup"]["files"] == 2
    assert s["next_full_scan"] > time.time() + 3000
    assert s["totals"] == {"backups": 2, "files_stored": 3, "failures": 0,
                           "bytes_added": s["totals"]["bytes_added"]}
    assert s["last_error"] is None
    text = btfs("daemon", "status").stdout
    assert text.startswith("state: watching")
    assert "since start: 2 backups, 3 files stored" in text
    assert oct(os.stat(control.socket_path()).st_mode & 0o777) == "0o600"
    assert btfs("daemon", "stop").stdout.startswith("stopping")
    assert w.proc.wait(10) == 0
    gone = btfs("daemon", "status", check=False)
    assert gone.returncode == 1 and "no btfs watch is running" in gone.stderr


def test_a_second_daemon_and_a_bad_watch_table_are_refused(watcher, src, paths):
    w = watcher.start()
    second = btfs("watch", check=False)
    assert second.returncode == 1
    assert second.stderr.strip().endswith("a btfs watch is already running (socket "
                                          f"{control.socket_path()})")
    w.stop()
    with open(paths.config_file, "a") as f:
        f.write("setle = 3\n")
    bad = btfs("watch", check=False)
    assert bad.returncode != 0
    assert "unknown key 'setle' in [watch]" in bad.stderr and "Traceback" not in bad.stderr


def test_systemd_notify_ready_and_status(watcher, src, tmp_path, monkeypatch):
    import socket

    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(address))
        watcher.start()
        first = sock.recv(4096).decode().splitlines()
        assert first[0] == "READY=1"
        assert first[1].startswith("STATUS=") and "changes pending" in first[1]


ROOT = Path(__file__).resolve().parents[1]


def test_rc_script_starts_reports_and_stops_the_daemon(repo_factory, src):
    repo_factory(src).close()
    rc = [str(ROOT / "contrib" / "rc.d" / "rc.btfs-watch")]
    env = {**os.environ, "BTFS": str(Path(sys.prefix) / "bin" / "btfs")}
    started = subprocess.run([*rc, "start"], capture_output=True, text=True, env=env,
                             timeout=60)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("btfs watch running (pid ")
        status = subprocess.run([*rc, "status"], capture_output=True, text=True, env=env,
                                timeout=60)
        assert status.returncode == 0 and status.stdout.startswith("state: "), status.stderr
    finally:
        stopped = subprocess.run([*rc, "stop"], capture_output=True, text=True, env=env,
                                 timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not control.running()
    usage = subprocess.run([*rc, "bogus"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_a_daemon_started_without_its_vault_watches_and_retries(watcher, src, vault_dir):
    (src / "before").write_text("b")
    away = vault_dir.with_name("vault-unplugged")
    vault_dir.rename(away)
    try:
        with open(watcher.paths.config_file, "a") as f:
            f.write("\n[watch]\nsettle = 1\nmin_interval = 1\n")
        watcher.proc = subprocess.Popen([*BTFS, "watch"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        wait_for(lambda: control.running() and watcher.status()["state"] == "retrying", 30,
                 "a retrying daemon")
        assert watcher.log_lines("vault unreachable at start")
        (src / "while-away").write_text("w")
    finally:
        away.rename(vault_dir)
    wait_for(lambda: b"while-away" in watcher.stored(src), 20, "the retry", every=0.3)
    assert_stored_as_source(watcher, src)
