"""Commands that record: backup, add, and status (what the next backup would record)."""

from __future__ import annotations

import shutil
import sys
import time

import click

from .. import config as config_mod
from ..catalog import Snapshot
from ..engine.stage import stage_paths
from ..engine.store import ChunkStore
from ..errors import EXIT_PARTIAL
from ..repo import Repo
from ..userpath import to_catalog_path
from .output import display_path, emit_json, human_bytes, json_option, json_path, plural

# For the ETA, a scanned entry (lstat, catalog lookup) counts as much work as reading,
# hashing and compressing this many bytes: a rough exchange rate that lets entries and
# bytes add up to one measure of work.
ENTRY_WORK_BYTES = 4096


def expected_work(snaps: list[Snapshot]) -> tuple[int, int]:
    """(entries, bytes) the next backup will likely go through, from the last finished
    one: its entries, and the bytes it read — unless most of its entries were new (an
    initial backup, or a newly tracked directory), whose reads will not come again."""
    done = [s for s in snaps if s.state in ("complete", "partial")]
    if not done:
        return 0, 0
    last = done[-1]
    repeats = last.files_new * 2 < last.entries
    return last.entries, last.bytes_read if repeats else 0


def eta_seconds(elapsed: float, entries: int, bytes_read: int, expected_entries: int,
                expected_bytes: int) -> float | None:
    """Time left, from the share of the expected work done so far (entries and bytes in
    one measure, see ENTRY_WORK_BYTES); None when there is nothing to go by."""
    total = expected_entries * ENTRY_WORK_BYTES + expected_bytes
    done = (min(entries, expected_entries) * ENTRY_WORK_BYTES
            + min(bytes_read, expected_bytes))
    if not total or not done or elapsed < 1 or done >= total:
        return None
    return elapsed * (total - done) / done


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


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
    """One self-rewriting line on a terminal, never wider than it; silent otherwise (e.g.
    under a timer). Called by the backup at most every PROGRESS_EVERY_S, also while it
    reads a large file, so bytes and the ETA move within one file."""

    def __init__(self, expected_entries: int, expected_bytes: int = 0):
        self.expected_entries = expected_entries
        self.expected_bytes = expected_bytes
        self.start = time.monotonic()
        # One column short of the terminal: a line that fills it exactly wraps on some.
        self.width = shutil.get_terminal_size((100, 24)).columns - 1

    def line(self, stats, path: bytes, elapsed: float) -> str:
        rate = stats.bytes_read / elapsed if elapsed > 0 else 0
        left = eta_seconds(elapsed, stats.entries, stats.bytes_read, self.expected_entries,
                           self.expected_bytes)
        eta = f"  ETA {_clock(left)}" if left is not None else ""
        line = (f"{plural(stats.entries, 'entry')}  {human_bytes(stats.bytes_read)} read  "
                f"{human_bytes(rate)}/s  {human_bytes(stats.bytes_added)} added{eta}  ")
        room = self.width - len(line)
        shown = display_path(path)
        if room > 10:
            line += shown if len(shown) <= room else "…" + shown[-(room - 1):]
        return line[:self.width]

    def __call__(self, stats, path: bytes) -> None:
        line = self.line(stats, path, time.monotonic() - self.start)
        sys.stderr.write("\r\033[K" + line)
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
        meter = Progress(*expected_work(repo.catalog.snapshots())) if show else None
        try:
            stats = repo.backup(progress=meter, limit_upload=limit_upload)
        finally:
            if meter:
                meter.done()
    if as_json:
        emit_json(stats.as_dict())
    elif not obj.quiet:
        click.echo(f"snapshot {stats.snapshot_id} {stats.state}: "
                   f"{plural(stats.entries, 'entry')}, "
                   f"{stats.files_new:,} new, {stats.files_changed:,} changed, "
                   f"{stats.files_deleted:,} deleted; {human_bytes(stats.bytes_read)} read, "
                   f"{human_bytes(stats.bytes_added)} added in "
                   f"{(stats.finished_ns - stats.started_ns) / 1e9:.1f}s")
        if stats.errors:
            click.echo(f"{plural(stats.errors, 'entry')} could not be backed up "
                       "(see warnings above)", err=True)
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
            staged = stage_paths(repo.catalog, store, repo.config, repo.codec, list(paths))
        finally:
            store.close()
    for path in staged:
        click.echo(f"staged {display_path(path)}")


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
    with Repo.open(obj.paths, readonly=True) as repo:
        under = to_catalog_path(path, [t.path for t in repo.config.tracked]) if path else None
        result = repo.status(under)
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

