"""The watch rows: the `btfs watch` daemon on the source tree (btfs only).

Per repetition, after the local and S3 steps (bench.py), on a copy of the source tree with a
repository of its own, whose config.toml sets a short settle (WATCH_CONFIG):
  1. init, track, one `btfs backup`; then the daemon is started (`btfs watch`, in the
     foreground, its control socket in a runtime directory of its own) and waited for until
     its start-up scan is done;
  2. its RSS (VmRSS) watching every directory, then its idle CPU: utime + stime from
     /proc/<pid>/stat over IDLE_S with nothing changing;
  3. `btfs mount`; WATCH_SAVES times, a file is rewritten with new bytes and the mount's
     by-time/latest/... is read every POLL_S until it shows them: save to visible;
  4. a 1% change of the tree (appends to 1% of the files, as the change step does):
     from the first write to the end of the backup that stored it (the daemon's own
     last_backup time), minus the settle time;
  5. the daemon's peak RSS (VmHWM); then SIGTERM, waited for; the same kind of change
     again (another seed) and a full `btfs backup`, timed like the local rows' backups:
     the reference for step 4.
The daemon and the mount never outlive the step: both are stopped in a finally.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

from .common import LOGS, MB, WORK, StepFailed, log, run
from .data import sorted_files
from .mounts import unmount
from .tools import Btfs, Dataset

WATCH_HOME = WORK / "watch"
SETTLE_S = 2.0
# settle_max only has to be at least settle; min_interval as short as settle, so that one
# save's backup is never held back by the previous one's.
WATCH_CONFIG = f"\n[watch]\nsettle = {SETTLE_S:g}\nsettle_max = 10\nmin_interval = 2\n"
WATCH_SAVES = 5
POLL_S = 0.05
CHANGE_SEEDS = (2701, 2702)  # the daemon's change, the reference backup's change
START_TIMEOUT_S = 600.0
STEP_TIMEOUT_S = 300.0

WATCH_KEYS = ("watch_visible", "watch_idle_cpu", "watch_rss", "watch_hwm", "watch_change")


class BtfsWatch(Btfs):
    """btfs with its repository, control socket and logs under bench/work/watch/."""

    def __init__(self, timeout: float):
        super().__init__(timeout)
        self.home = WATCH_HOME / self.name

    def env(self, ds: Dataset) -> dict:
        d = self.dir(ds)
        return {**super().env(ds), "XDG_RUNTIME_DIR": str(d / "run"),
                "XDG_STATE_HOME": str(d / "state")}

    def socket_path(self, ds: Dataset) -> Path:
        return self.dir(ds) / "run" / "btfs" / "watch.sock"

    def init(self, ds: Dataset) -> None:
        super().init(ds)
        (self.dir(ds) / "run").mkdir(mode=0o700, exist_ok=True)
        with open(self.dir(ds) / "config.toml", "a") as f:
            f.write(WATCH_CONFIG)


class Daemon:
    """A `btfs watch` process: started, asked for its status over its socket, stopped."""

    def __init__(self, tool: BtfsWatch, ds: Dataset):
        self.tool, self.ds = tool, ds
        self.proc: subprocess.Popen | None = None
        self.err = LOGS / f"btfs-watch-{time.time_ns()}.log"

    def start(self) -> dict:
        """Start the daemon; its status once its start-up scan has ended."""
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(self.err, "wb") as fe:
            self.proc = subprocess.Popen(self.tool.cmd("watch"), env=self.tool.env(self.ds),
                                         stdin=subprocess.DEVNULL, stdout=fe, stderr=fe)
        # (that scan makes no snapshot: nothing changed since the backup before)
        return self.wait_for(lambda s: s["last_backup"] is not None and s["state"] == "watching"
                      and not s["pending_paths"] and not s["full_scan_pending"],
                      START_TIMEOUT_S, "start-up scan")

    def status(self) -> dict | None:
        """The daemon's status (its `daemon status --json`), asked directly on its socket so
        that polling costs no btfs process; None while it does not answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(self.tool.socket_path(self.ds)))
                sock.sendall(b'{"command": "status"}\n')
                data = b""
                while not data.endswith(b"\n"):
                    part = sock.recv(65536)
                    if not part:
                        break
                    data += part
            return json.loads(data)
        except (OSError, ValueError):
            return None

    def wait_for(self, ok, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise StepFailed(f"btfs watch exited {self.proc.returncode} (see {self.err})")
            s = self.status()
            if s is not None and ok(s):
                return s
            if time.monotonic() > deadline:
                raise StepFailed(f"btfs watch: no {what} within {timeout:.0f} s")
            time.sleep(0.2)

    def proc_status(self, field: str) -> float:
        """A VmRSS/VmHWM line of /proc/<pid>/status, in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / MB
        raise StepFailed(f"no {field} in /proc/{self.proc.pid}/status")

    def cpu_seconds(self) -> float:
        # Fields after the command name (which may hold spaces): utime, stime are 14, 15.
        rest = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, then wait for the daemon to exit (kill only if it never does)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log("  btfs watch did not stop within 60 s of SIGTERM; killed")
            self.proc.kill()
            self.proc.wait()
        if self.proc.returncode != 0:
            log(f"  btfs watch exited {self.proc.returncode} after SIGTERM (see {self.err})")


def _pick_change(src: Path, seed: int) -> list[Path]:
    """1% of the files (seeded): the change step's share of appended files."""
    files = sorted_files(src)
    return random.Random(seed).sample(files, max(1, len(files) // 100))


def _write_appends(picked: list[Path], seed: int) -> None:
    for i, f in enumerate(picked):
        with open(f, "ab") as fh:
            fh.write(f"\n/* btfs bench watch change {seed} {i} */\n".encode())


def _save_to_visible(mnt: Path, ds: Dataset, files: list[Path]) -> list[float]:
    """For each file: rewrite it with new bytes, then read by-time/latest/... in the mount
    until it shows them. Seconds from the end of the save."""
    times = []
    for i, f in enumerate(files):
        body = f"btfs bench watch save {i} {time.time_ns()}\n".encode() * 64
        seen = mnt / "by-time" / "latest" / str(f).lstrip("/")
        with open(f, "wb") as fh:
            fh.write(body)
        saved = time.monotonic()
        while True:
            try:
                if seen.read_bytes() == body:
                    break
            except OSError:
                pass
            if time.monotonic() - saved > STEP_TIMEOUT_S:
                raise StepFailed(f"{f.name} not visible in the mount after "
                                 f"{STEP_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)
        times.append(time.monotonic() - saved)
        log(f"    save {i + 1}/{len(files)} visible after {times[-1]:.2f} s")
        time.sleep(1.0)  # the next save starts after this backup has ended
    return times


def run_watch_pass(bench) -> None:
    """The watch steps of one repetition (bench is the MainBench: recorder, mode)."""
    from .bench import settle

    r, mode = bench.rec, bench.mode
    idle_s = 60.0 if mode.name == "full" else 20.0
    log(f"  -- btfs watch (settle {SETTLE_S:g} s, idle {idle_s:g} s)")
    data = WATCH_HOME / "data"
    _remove_home()
    data.mkdir(parents=True)
    run(["cp", "-a", str(bench.src_pristine), str(data / "src")], name="watch-copy-src")
    ds = Dataset("src", data / "src")
    tool = BtfsWatch(mode.timeout)
    try:
        def prepare():
            tool.init(ds)
            return tool.backup(ds, "initial")
        if r.measure(None, "btfs", "watch-src", prepare) is None:
            for key in WATCH_KEYS:
                r.fail(key, "btfs", r.last_failure.get("btfs", "init failed"))
            return
        daemon = Daemon(tool, ds)
        try:
            _daemon_steps(bench, tool, daemon, ds, idle_s)
        finally:
            daemon.stop()
        picked = _pick_change(ds.path, CHANGE_SEEDS[1])
        _write_appends(picked, CHANGE_SEEDS[1])

        def full_backup():
            settle(ds.path, writes=True)
            return tool.backup(ds, "watch-reference")[0]
        r.measure("watch_change", "full backup", "watch-src", full_backup)
    finally:
        _remove_home()


def _remove_home() -> None:
    # Never into a mount left behind by a failed unmount (rm stays on bench/'s filesystem).
    if WATCH_HOME.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(WATCH_HOME)], check=False)


def _daemon_steps(bench, tool: BtfsWatch, daemon: Daemon, ds: Dataset, idle_s: float) -> None:
    from .bench import settle

    r = bench.rec
    status = r.measure(None, "btfs", "watch-src", daemon.start, what="watch")
    if status is None:
        for key in WATCH_KEYS:
            r.fail(key, "btfs", r.last_failure.get("btfs", "btfs watch failed"))
        return
    log(f"    watching {status.get('watched_directories')} directories")
    r.measure("watch_rss", "btfs", "watch-src", lambda: daemon.proc_status("VmRSS"))

    def idle_cpu():
        before, t0 = daemon.cpu_seconds(), time.monotonic()
        time.sleep(idle_s)
        return 100 * (daemon.cpu_seconds() - before) / (time.monotonic() - t0)
    r.measure("watch_idle_cpu", "btfs", "watch-src", idle_cpu)

    mnt = WATCH_HOME / "mnt"
    m = r.measure(None, "btfs", "watch-src", lambda: tool.mount(ds, mnt), what="mount")
    if m is None:
        r.fail("watch_visible", "btfs", r.last_failure.get("btfs", "mount failed"))
    else:
        try:
            files = random.Random(CHANGE_SEEDS[0]).sample(sorted_files(ds.path), WATCH_SAVES)
            r.measure("watch_visible", "btfs", "watch-src",
                      lambda: statistics.median(_save_to_visible(mnt, ds, files)))
        finally:
            unmount(m)

    def change():
        picked = _pick_change(ds.path, CHANGE_SEEDS[0])
        totals = daemon.wait_for(lambda s: s["state"] == "watching" and not s["pending_paths"],
                                 STEP_TIMEOUT_S, "quiet moment")["totals"]
        before, backups = totals["files_stored"], totals["backups"]
        settle(ds.path, writes=True)
        first = time.time()
        _write_appends(picked, CHANGE_SEEDS[0])
        writes = time.time() - first
        r.put("watch_change_writes", "btfs", writes)
        s = daemon.wait_for(lambda s: s["totals"]["files_stored"] - before >= len(picked)
                            and s["state"] == "watching" and not s["pending_paths"],
                            STEP_TIMEOUT_S, f"backup of {len(picked)} changed files")
        last = s["last_backup"]
        log(f"    {len(picked)} changed files, written in {writes:.2f} s: "
            f"{s['totals']['files_stored'] - before} stored in "
            f"{s['totals']['backups'] - backups} backup(s), the last took "
            f"{last['seconds']:.2f} s")
        return last["time"] + last["seconds"] - first - SETTLE_S
    r.measure("watch_change", "btfs", "watch-src", change)
    r.measure("watch_hwm", "btfs", "watch-src", lambda: daemon.proc_status("VmHWM"))
