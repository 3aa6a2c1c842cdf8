"""`btfs watch` (the always-on daemon, btfs/watch/) and `btfs daemon ...` (its control)."""

from __future__ import annotations

import logging

import click

from ..repo import Repo
from .output import emit_json, human_bytes, local_time

log = logging.getLogger(__name__)


@click.command()
@click.option("--detach", is_flag=True, help="Run in the background (without systemd).")
@click.option("--web", "web_listen", metavar="[ADDR:PORT]", is_flag=False, flag_value="",
              default=None, help="Serve the status page (default 127.0.0.1:8080, or "
              "[web] listen); open it with 'btfs web-url'.")
@click.option("--allow-remote", is_flag=True,
              help="Let the status page listen on an address other machines can reach.")
@click.pass_obj
def watch(obj, detach: bool, web_listen: str | None, allow_remote: bool) -> None:
    """Back up changes as they happen: watch the tracked directories with inotify.

    A changed file is backed up once it has been left alone for `settle` seconds (only
    what changed is scanned); a full scan runs at start and every `scan_interval`.
    Runs in the foreground (for systemd: contrib/systemd/btfs-watch.service); control
    it with 'btfs daemon status|pause|resume|backup-now|stop'. Settings: the [watch]
    table of config.toml. With --web (or a [web] table), it also serves the status page.
    """
    level = (logging.ERROR if obj.quiet else
             {0: logging.INFO, 1: logging.INFO}.get(obj.verbose, logging.DEBUG))
    started = Repo.watch(obj.paths, detach=detach, log_level=level, web_listen=web_listen,
                         allow_remote=allow_remote)
    if started:
        click.echo(started)


@click.command("web-url")
@click.pass_obj
def web_url(obj) -> None:
    """Print the status page's address with its token (from a running 'btfs watch --web')."""
    click.echo(Repo.web_url(obj.paths))


def _control(command: str, as_json: bool) -> dict:
    answer = Repo.daemon_request(command)
    if as_json:
        emit_json(answer)
    return answer


@click.group("daemon")
def daemon_group() -> None:
    """Control a running 'btfs watch' (over its socket in $XDG_RUNTIME_DIR)."""


json_flag = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@daemon_group.command()
@json_flag
def status(as_json: bool) -> None:
    """State, pending changes, last backup, totals and last error."""
    s = _control("status", as_json)
    if not as_json:
        _print_status(s)


def _print_status(s: dict) -> None:
    click.echo(f"state: {s['state']} (pid {s['pid']}, up {_duration(s['uptime_s'])})")
    click.echo(f"watching: {s['watched_directories']} directories in "
               f"{', '.join(s['tracked'])}"
               + (f" ({s['unwatched_directories']} over the inotify limit)"
                  if s["unwatched_directories"] else ""))
    click.echo(f"pending: {s['pending_paths']} changed paths"
               + (" (a full scan is due)" if s["full_scan_pending"] else ""))
    last = s["last_backup"]
    if last:
        click.echo(f"last backup: {local_time(int(last['time'] * 1e9))} {last['result']}, "
                   f"{last['files']} files, {human_bytes(last['bytes_added'])} added")
    else:
        click.echo("last backup: none yet")
    click.echo(f"next full scan: {local_time(int(s['next_full_scan'] * 1e9))}")
    t = s["totals"]
    click.echo(f"since start: {t['backups']} backups, {t['files_stored']} files stored, "
               f"{human_bytes(t['bytes_added'])} added, {t['failures']} failures")
    if s["last_error"]:
        retry = (f" (retrying in {s['retry_in_s']:.0f} s)"
                 if s["retry_in_s"] is not None else "")
        click.echo(f"last error: {local_time(int(s['last_error']['time'] * 1e9))} "
                   f"{s['last_error']['message']}{retry}")
    click.echo(f"log: {s['log']}")


def _simple(name: str, done: str, help_text: str):
    @json_flag
    def command(as_json: bool) -> None:
        answer = _control(name, as_json)
        if not as_json:
            click.echo(f"{done} (state: {answer['state']})")

    command.__doc__ = help_text
    return daemon_group.command(name)(command)


_simple("pause", "paused", "Stop backing up; changes are still watched and remembered.")
_simple("resume", "resumed", "Back up again, starting with what changed while paused.")
_simple("backup-now", "backup started", "Back up pending changes now (a full scan if none).")
_simple("stop", "stopping", "Stop the daemon; a running backup is cancelled cleanly.")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


