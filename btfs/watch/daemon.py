"""The `btfs watch` daemon: the trio main that ties inotify, the settle model, backups and
the control socket together.

Tasks in one nursery: the watcher (inotify events -> Settler), the scheduler (takes
settled batches and runs them as backups through `Repo` in a worker thread, one at a time;
a full scan at start and every scan_interval; retries with backoff), the control server,
the signal handler and the systemd status. State lives on the trio thread; the worker
thread sees only its arguments and the `stop` event.

A backup that fails (vault unreachable, another backup holding the lock, ...) gives its
changes back to the Settler and is retried after 1 s, doubling to 5 min, jittered so that
many machines sharing a vault do not retry in step. SIGTERM, SIGINT or `btfs daemon stop`
set the engine's stop event (the backup rolls back at its next check, between files,
and its snapshot is marked interrupted) and end the nursery.

Never: run two backups at once, block the trio thread on the catalog or vault, or drop a
pending change without backing it up or keeping it for the next attempt.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from .. import config as config_mod
from ..config import Paths
from ..errors import BtfsError, VaultError
from ..own import never_backed_up
from ..repo import Repo
from ..text import plural
from . import control
from .inotify import Watches
from .settings import watch_settings_from_dict
from .settle import Batch, Settler

if TYPE_CHECKING:
    from ..web.settings import WebSettings

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 300.0
STATUS_EVERY_S = 30.0  # systemd's STATUS= line
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"


def log_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "btfs" / "watch.log"


def setup_logging(level: int) -> Path:
    """Log lines to stderr (the journal under systemd) and to log_file()."""
    path = log_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    formatter = logging.Formatter(LOG_FORMAT, LOG_DATEFMT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr),
                                       logging.FileHandler(path)]
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    return path


def backoff(failures: int) -> float:
    """Seconds before retry number `failures` (1, 2, ...): 1 s doubling to 5 min, +-25%."""
    base = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
    return min(RETRY_MAX_S, base * random.uniform(0.75, 1.25))


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


class Daemon:
    def __init__(self, paths: Paths, web: WebSettings | None = None):
        self.paths = paths
        self.web = web  # serve the status page (btfs.web) there
        self.web_url: str | None = None
        config = config_mod.load(paths)
        self.settings = watch_settings_from_dict(config.watch, str(paths.config_file))
        if not config.tracked:
            raise BtfsError("nothing to watch: add a directory with 'btfs track DIR'")
        try:
            with Repo.open(paths, readonly=True):
                pass  # fail now on what no retry mends (not initialized, wrong vault)
        except (VaultError, OSError) as e:
            # An unplugged disk or S3 down at boot: watch anyway, the backups retry.
            log.warning("vault unreachable at start (%s); backups will be retried", e)
        self.config = config
        self.settler = Settler(self.settings)
        self.paused = False
        self.backing_up = False
        self.stopping = False
        self.stop_event = threading.Event()
        self.started_wall = time.time()
        self.last_backup: dict | None = None
        self.last_error: dict | None = None
        self.totals = {"backups": 0, "files_stored": 0, "failures": 0, "bytes_added": 0}
        self._failures_in_row = 0
        self._retry_at: float | None = None
        self._force = False
        self._next_scan = 0.0
        self._kicked = trio.Event()
        self._cancel: trio.CancelScope | None = None
        self.watches: Watches | None = None

    # ---- the main -----------------------------------------------------------------------

    async def run(self) -> None:
        watches = Watches(self.config.tracked, self.config.excludes, self.settings.skip,
                          never_backed_up(self.paths, self.config))
        self.watches = watches
        try:
            await trio.to_thread.run_sync(watches.watch_all)
            now = trio.current_time()
            self.settler.need_full(now, at_once=True)  # what changed while not running
            self._next_scan = now + self.settings.scan_interval
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                await nursery.start(control.serve, self.handle)
                if self.web is not None:
                    from ..web import server  # Starlette and hypercorn only when asked

                    self.web_url = await nursery.start(server.serve, self, self.paths,
                                                       self.web, log_file(), self.next_backup)
                nursery.start_soon(self._signals)
                nursery.start_soon(self._watch)
                nursery.start_soon(self._schedule)
                nursery.start_soon(self._report)
                log.info("btfs watch started: %s watched in %s (pid %d)",
                         plural(watches.watched, "directory", "directories"),
                         ", ".join(t.path for t in self.config.tracked), os.getpid())
                control.sd_notify("READY=1", f"STATUS={self.status_line()}")
        finally:
            watches.close()
        log.info("btfs watch stopped")

    def request_stop(self) -> None:
        if not self.stopping:
            log.info("stopping%s", " (the running backup is cancelled)"
                     if self.backing_up else "")
        self.stopping = True
        self.stop_event.set()
        control.sd_notify("STOPPING=1")
        if self._cancel is not None:
            self._cancel.cancel()

    def _kick(self) -> None:
        self._kicked.set()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self.request_stop()

    async def _watch(self) -> None:
        watches = self.watches
        while True:
            await trio.lowlevel.wait_readable(watches.fileno())
            changes, overflow = watches.read()
            now = trio.current_time()
            if overflow:
                if not self.settler.full_pending:
                    log.warning("inotify queue overflowed (raise fs.inotify.max_queued_events "
                                "if this recurs): changes were lost; rescanning every "
                                "tracked directory")
                watches.watch_all()  # on this thread: read() must not run meanwhile
                self.settler.need_full(now)
            for change in changes:
                self.settler.touch(change.path, now, deep=change.deep)
            self._kick()

    async def _schedule(self) -> None:
        while True:
            self._kicked = trio.Event()
            now = trio.current_time()
            if now >= self._next_scan:
                self.settler.need_full(now, at_once=True)
                self._next_scan = now + self.settings.scan_interval
                self.watches.watch_all()  # directories missed by the limit or an overflow
            batch = None
            if self._force or (not self.paused and (self._retry_at is None
                                                    or now >= self._retry_at)):
                if self._force or self._retry_at is not None:
                    self.settler.last_start = None  # the backoff decided, not min_interval
                batch = self.settler.take(now, force=self._force)
                self._force = False
            if batch is not None:
                await self._backup(batch)
                continue
            wake = [self._next_scan]
            if not self.paused:
                due = self.settler.next_due()
                if due is not None:
                    wake.append(max(due, self._retry_at or due))
            with trio.move_on_at(min(wake)):
                await self._kicked.wait()

    async def _backup(self, batch: Batch) -> None:
        self.backing_up = True
        what = ("a full scan" if batch.full
                else plural(len(batch.subtrees), "changed path"))
        log.info("backing up %s", what)
        started = time.time()
        try:
            stats = await trio.to_thread.run_sync(self._backup_blocking, batch)
        except Exception as e:
            self.backing_up = False
            self.settler.give_back(batch)
            if self.stopping:
                return
            self._failures_in_row += 1
            self.totals["failures"] += 1
            delay = backoff(self._failures_in_row)
            self._retry_at = trio.current_time() + delay
            message = str(e) if isinstance(e, BtfsError | OSError) else repr(e)
            self.last_error = {"time": time.time(), "message": message}
            log.warning("backup failed: %s; retrying in %.0f s, %d changes pending",
                        message, delay, self.settler.pending,
                        exc_info=not isinstance(e, BtfsError | OSError))
            return
        self.backing_up = False
        self._failures_in_row = 0
        self._retry_at = None
        stored = stats.files_new + stats.files_changed
        self.last_backup = {"time": started, "result": stats.state,
                            "snapshot": stats.snapshot_id or None, "full": batch.full,
                            "files": stored, "deleted": stats.files_deleted,
                            "bytes_added": stats.bytes_added,
                            "seconds": round(time.time() - started, 3)}
        if stats.state != "unchanged":
            self.totals["backups"] += 1
            self.totals["files_stored"] += stored
            self.totals["bytes_added"] += stats.bytes_added
            log.info("backup %s: snapshot %d, %d files stored, %d deleted, %d bytes added",
                     stats.state, stats.snapshot_id, stored, stats.files_deleted,
                     stats.bytes_added)
        else:
            log.info("nothing changed; no snapshot")
        control.sd_notify(f"STATUS={self.status_line()}")

    def _backup_blocking(self, batch: Batch):
        only = None if batch.full else batch.subtrees
        with Repo.open(self.paths) as repo, repo.writer():
            return repo.backup(only=only, stop=self.stop_event, skip_unchanged=True)

    async def _report(self) -> None:
        while True:
            await trio.sleep(STATUS_EVERY_S)
            control.sd_notify(f"STATUS={self.status_line()}")

    # ---- control ------------------------------------------------------------------------

    async def handle(self, command: str) -> dict:
        if command == "status":
            return {"ok": True, **self.status()}
        if command == "pause":
            self.paused = True
            log.info("paused: changes are remembered, not backed up")
        elif command == "resume":
            self.paused = False
            log.info("resumed")
        elif command == "backup-now":
            if not self.settler.pending:
                self.settler.need_full(trio.current_time(), at_once=True)
            self._force = True
        elif command == "stop":
            self.request_stop()
            return {"ok": True, "state": "stopping"}
        self._kick()
        return {"ok": True, "state": self.state}

    @property
    def state(self) -> str:
        if self.stopping:
            return "stopping"
        if self.backing_up:
            return "backing up"
        if self.paused:
            return "paused"
        if self._retry_at is not None:
            return "retrying"
        return "watching"

    def status(self) -> dict:
        now = trio.current_time()
        wall = time.time()
        watches = self.watches
        return {
            "state": self.state,
            "pid": os.getpid(),
            "started": self.started_wall,
            "uptime_s": round(wall - self.started_wall, 1),
            "tracked": [t.path for t in self.config.tracked],
            "watched_directories": watches.watched if watches else 0,
            "unwatched_directories": watches.unwatched if watches else 0,
            "pending_paths": self.settler.pending,
            "full_scan_pending": self.settler.full_pending,
            "last_backup": self.last_backup,
            "next_full_scan": wall + max(0.0, self._next_scan - now),
            "retry_in_s": (round(max(0.0, self._retry_at - now), 1)
                           if self._retry_at is not None else None),
            "totals": dict(self.totals),
            "last_error": self.last_error,
            "log": str(log_file()),
            "web": self.web_url,
        }

    def next_backup(self) -> dict:
        """When the next backup is due (wall clock), None when nothing is pending."""
        now = trio.current_time()
        due = None if self.paused else self.settler.next_due()
        if due is not None and self._retry_at is not None:
            due = max(due, self._retry_at)
        return {"next_backup": time.time() + max(0.0, due - now) if due is not None else None}

    def status_line(self) -> str:
        parts = [self.state]
        if self.last_backup:
            parts.append(f"last backup {_ago(time.time() - self.last_backup['time'])}")
        parts.append(f"{self.settler.pending} changes pending")
        if self.last_error and self._retry_at is not None:
            parts.append(f"last error: {self.last_error['message']}")
        return ", ".join(parts)


def start(paths: Paths, *, detach: bool, log_level: int,
          web: WebSettings | None = None) -> str | None:
    """`btfs watch`: run the daemon in this process until it stops (None), or, with
    `detach`, start it in the background and return a line saying where it runs. With
    `web`, it serves the status page there too."""
    if control.running():
        raise BtfsError(f"a btfs watch is already running (socket {control.socket_path()})")
    if detach:
        Daemon(paths, web)  # config and repo errors show here, in the terminal
        if not fork_to_background():
            for _ in range(300):
                if control.running():
                    pid = control.request("status")["pid"]
                    return f"btfs watch running (pid {pid}); log: {log_file()}"
                time.sleep(0.1)
            raise BtfsError(f"btfs watch did not start; see {log_file()}")
    setup_logging(log_level)
    if not detach:
        run_daemon(paths, web)
        return None
    try:  # the detached child: its stderr is /dev/null, so errors go to the log file
        run_daemon(paths, web)
    except BaseException as e:
        log.error("btfs watch: %s", e, exc_info=not isinstance(e, BtfsError))
        os._exit(1)
    os._exit(0)  # never back into the caller, which belongs to the parent


def ask(command: str) -> dict:
    """`btfs daemon COMMAND`: the running daemon's answer; BtfsError when it refused."""
    answer = control.request(command)
    if not answer.get("ok"):
        raise BtfsError(f"btfs watch: {answer.get('error', 'refused')}")
    return answer


def run_daemon(paths: Paths, web: WebSettings | None = None) -> None:
    """Run until stopped; BtfsError for what prevents it from starting."""
    daemon = Daemon(paths, web)
    trio.run(daemon.run)


def fork_to_background() -> bool:
    """Fork into the background (a new session, stdio on /dev/null): False in the
    original process, True in the daemon."""
    if os.fork():
        return False
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return True
