"""Commands that mount the history: mount, umount."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from typing import NoReturn

import click

from ..errors import BtfsError
from ..repo import Repo

READY_TIMEOUT = 30.0


@click.command("mount")
@click.argument("mountpoint", type=click.Path())
@click.option("--foreground", "-f", is_flag=True,
              help="Stay attached and log to stderr; Ctrl-C unmounts.")
@click.option("--host", metavar="NAME|ID",
              help="Another host's history (see 'btfs hosts'), from its catalog copy in "
                   "the shared vault, fetched into the cache dir.")
@click.option("--allow-other", is_flag=True,
              help="Let other users in (original permissions are enforced); needs "
                   "user_allow_other in /etc/fuse.conf for non-root users.")
@click.pass_obj
def mount_cmd(obj, mountpoint: str, foreground: bool, host: str | None,
              allow_other: bool) -> None:
    """Mount every backup as a read-only filesystem.

    \b
      MOUNTPOINT/by-time/<backup>/<absolute path>   the tree at that backup
      MOUNTPOINT/by-time/latest                     the newest backup
      MOUNTPOINT/by-file/<absolute path>/           each version of a file:
                                                    <stem>.<backup><suffix>

    Returns once the mount answers and keeps serving in the background (log in the cache
    directory); new backups appear without a remount. Restore with cp.

    With --host, the same tree for another host that backs up into the same vault, from
    its catalog copy there (fetched into the cache directory; later, only what changed).
    That host's new backups appear within a minute.

    MOUNTPOINT is created if missing (its parent must exist). It must be empty, must not
    be or hold a tracked directory, nor lie inside another btfs mount; inside a tracked
    directory is fine (a mount is never backed up). A dead mount left there (its server
    was killed) is cleared first.

    \b
    Examples:
      btfs mount ~/backups && ls ~/backups/by-time/latest
      cp -a ~/backups/by-time/2026-11-20_093000/home/me/notes /tmp/notes-then
      btfs umount ~/backups
      btfs mount --host desktop ~/desktop-backups
    """
    target = Repo.prepare_mountpoint(obj.paths, mountpoint, host)
    if foreground:
        Repo.serve_mount(obj.paths, target, allow_other=allow_other, host=host)
    else:
        _start_background(obj, target, allow_other, host)


def _start_background(obj, target: str, allow_other: bool, host: str | None) -> None:
    """Fork a detached server (its own session, output to a log in the cache directory)
    and return once the mount answers, so a script can use it at once. A fork rather than
    a new `btfs mount --foreground` process: the interpreter and pyfuse3/trio are already
    loaded, and loading them again would be most of the time to a ready mount."""
    obj.paths.ensure()
    log_path = obj.paths.cache_dir / f"mount-{target.strip('/').replace('/', '_')}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _serve_detached(obj.paths, target, allow_other, host, log_path)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            raise BtfsError(f"mount failed: {_last_line(log_path)} (log: {log_path})")
        if os.path.ismount(target):
            try:
                os.stat(os.path.join(target, "by-time"))
            except OSError:
                pass
            else:
                click.echo(f"mounted at {target} (pid {pid}; log {log_path})")
                _exit_at_once()
        time.sleep(0.002)  # short: a forked server is ready soon, and a script waits on us
    os.kill(pid, signal.SIGTERM)
    raise BtfsError(f"mount did not answer within {READY_TIMEOUT:.0f}s (log: {log_path})")


def _exit_at_once() -> NoReturn:
    """The mount is up and this process has nothing left to do: skip the interpreter's
    teardown of the modules pyfuse3 and trio bring, a large share of a `btfs mount`
    that a script waiting on it would pay for nothing."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


def _serve_detached(paths, target: str, allow_other: bool, host: str | None,
                    log_path) -> NoReturn:
    """The forked child: never returns into click; its exit code is for the log only."""
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        root = logging.getLogger()
        root.setLevel(min(root.level, logging.INFO))  # the log says what the mount did
        Repo.serve_mount(paths, target, allow_other=allow_other, host=host)
        code = 0
    except BtfsError as e:
        print(f"btfs: error: {e}", file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _last_line(path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line]
    except OSError:
        return "no log"
    text = lines[-1] if lines else "no output"
    return text.removeprefix("btfs: error: ")


@click.command("umount")
@click.argument("mountpoint", type=click.Path())
def umount_cmd(mountpoint: str) -> None:
    """Unmount a btfs mount (the background process then exits); a dead one (its server
    was killed: "Transport endpoint is not connected") is cleared.

    \b
    Example:
      btfs umount ~/backups
    """
    if Repo.unmount(mountpoint):
        click.echo(f"unmounted {mountpoint} (its server had died)")
