"""Commands that record: backup, add, and status (what the next backup would record)."""

from __future__ import annotations

import os
import sys
import time

import click

from .. import config as config_mod
from ..engine.stage import stage_paths
from ..engine.status import status as scan_status
from ..engine.store import ChunkStore
from ..errors import EXIT_PARTIAL
from ..repo import Repo
from .output import display_path, emit_json, human_bytes, json_option, json_path


class Rate(click.ParamType):
    """Bytes per second: 500K, 20M, 1.5G (powers of 1024), a bare number of bytes; 0 for
    no limit."""

    name = "RATE"
    _UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("/S").removesuffix("IB")
        text = text.removesuffix("B")
        unit = text[-1:] if text[-1:] in ("K", "M", "G") else ""
        try:
            number = float(text[:-1] if unit else text)
        except ValueError:
            self.fail(f"{value!r} is not a rate (e.g. 500K, 20M, 1G bytes per second)",
                      param, ctx)
        if number < 0:
            self.fail(f"{value!r}: a rate cannot be negative", param, ctx)
        return int(number * self._UNITS[unit])


class Progress:
    """One self-rewriting line on a terminal; silent otherwise (e.g. under a timer)."""

    def __init__(self, expected_entries: int):
        self.expected = expected_entries
        self.start = time.monotonic()
        self.width = 100

    def __call__(self, stats, path: bytes) -> None:
        elapsed = time.monotonic() - self.start
        rate = stats.bytes_read / elapsed if elapsed > 0 else 0
        eta = ""
        if self.expected and stats.entries and elapsed > 1:
            left = max(self.expected - stats.entries, 0) * elapsed / stats.entries
            eta = f"  ETA {int(left) // 60}:{int(left) % 60:02d}"
        line = (f"{stats.entries:,} files  {human_bytes(stats.bytes_read)} read  "
                f"{human_bytes(rate)}/s  {human_bytes(stats.bytes_added)} added{eta}  ")
        room = self.width - len(line)
        shown = display_path(path)
        if room > 10:
            line += shown if len(shown) <= room else "…" + shown[-(room - 1):]
        sys.stderr.write("\r\033[K" + line[:self.width])
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


@click.command()
@click.option("--wait", is_flag=True, help="If another backup is running, wait for it.")
@click.option("--one-file-system", "-x", is_flag=True,
              help="Do not descend into other mounted filesystems (config: one_file_system).")
@click.option("--progress/--no-progress", default=None,
              help="Show progress [default: on when stderr is a terminal].")
@click.option("--limit-upload", type=Rate(), default=None,
              help="Upload at most RATE bytes per second to an S3 vault, e.g. 20M "
                   "(config: s3.limit_upload; 0 for no limit).")
@json_option
@click.pass_obj
def backup(obj, wait: bool, one_file_system: bool, progress: bool | None,
           limit_upload: int | None, as_json: bool) -> int:
    """Back up every tracked directory: store what changed since the last backup.

    Unchanged files (same size, mtime, ctime and inode) are not read. Exit code 3 means
    the backup completed but some entries could not be read (named in warnings).

    \b
    Examples:
      btfs backup
      btfs backup --json --wait          # from a script or timer
    """
    with Repo.open(obj.paths) as repo, repo.writer(wait=wait):
        if one_file_system:
            repo.config = config_mod.with_changes(repo.config, one_file_system=True)
        show = progress if progress is not None else (sys.stderr.isatty() and not obj.quiet)
        snaps = repo.catalog.snapshots()
        meter = Progress(snaps[-1].entries if snaps else 0) if show else None
        try:
            stats = repo.backup(progress=meter, limit_upload=limit_upload)
        finally:
            if meter:
                meter.done()
    if as_json:
        emit_json(stats.as_dict())
    elif not obj.quiet:
        click.echo(f"snapshot {stats.snapshot_id} {stats.state}: {stats.entries:,} entries, "
                   f"{stats.files_new:,} new, {stats.files_changed:,} changed, "
                   f"{stats.files_deleted:,} deleted; {human_bytes(stats.bytes_read)} read, "
                   f"{human_bytes(stats.bytes_added)} added in "
                   f"{(stats.finished_ns - stats.started_ns) / 1e9:.1f}s")
        if stats.errors:
            click.echo(f"{stats.errors} entries could not be backed up (see warnings above)",
                       err=True)
    return EXIT_PARTIAL if stats.errors else 0


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--wait", is_flag=True, help="If a backup is running, wait for it.")
@click.pass_obj
def add(obj, paths, wait: bool) -> None:
    """Stage files now: their current content goes to the vault at once, and the next
    backup records exactly this state for them.

    \b
    Example:
      btfs add ~/notes/plan.md
    """
    with Repo.open(obj.paths) as repo, repo.writer(wait=wait, what="backup"):
        store = ChunkStore(repo.catalog, repo.vault, repo.config.pack_size)
        try:
            staged = stage_paths(repo.catalog, store, repo.config, list(paths))
        finally:
            store.close()
    for path in staged:
        click.echo(f"staged {path}")


@click.command()
@click.argument("path", required=False, type=click.Path())
@json_option
@click.pass_obj
def status(obj, path: str | None, as_json: bool) -> None:
    """What changed since the last backup: new, modified, deleted and staged paths.

    Looks at file metadata only; nothing is read or written.

    \b
    Examples:
      btfs status
      btfs status ~/notes --json
    """
    under = os.fsencode(os.path.abspath(os.path.expanduser(path))) if path else None
    with Repo.open(obj.paths, readonly=True) as repo:
        result = scan_status(repo.catalog, repo.config, under)
    groups = [("staged", result.staged), ("new", result.new), ("modified", result.modified),
              ("deleted", result.deleted)]
    if as_json:
        emit_json({name: [json_path(p) for p in items] for name, items in groups})
        return
    if not any(items for _, items in groups):
        click.echo("nothing changed since the last backup")
    for name, items in groups:
        for p in items:
            click.echo(f"{name + ':':10}{display_path(p)}")

