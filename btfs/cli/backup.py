"""Commands that record: backup, add, and status (what the next backup would record)."""

from __future__ import annotations

import shutil
import sys
import time

import click

from ..errors import EXIT_PARTIAL
from .main import pass_repo
from .output import display_path, emit_json, human_bytes, json_option, json_path, plural

# For the ETA, a scanned entry (lstat, catalog lookup) counts as much work as reading,
# hashing and compressing this many bytes: a rough exchange rate that lets entries and
# bytes add up to one measure of work.
ENTRY_WORK_BYTES = 4096


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
@pass_repo(writer="backup")
def backup(obj, repo, one_file_system: bool, progress: bool | None,
           limit_upload: int | None, as_json: bool) -> int:
    """Back up every tracked directory: store what changed since the last backup.

    Unchanged files (same size, mtime, ctime and inode) are not read. Exit code 3 means
    the backup completed but some entries could not be read (named in warnings).

    \b
    Examples:
      btfs backup
      btfs backup --json --wait          # from a script or timer
    """
    show = progress if progress is not None else (sys.stderr.isatty() and not obj.quiet)
    meter = Progress(*repo.expected_work()) if show else None
    try:
        stats = repo.backup(one_file_system=one_file_system, limit_upload=limit_upload,
                            progress=meter)
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
@pass_repo(writer="backup")
def add(obj, repo, paths) -> None:
    """Stage files now: their current content goes to the vault at once, and the next
    backup records exactly this state for them.

    \b
    Example:
      btfs add ~/notes/plan.md
    """
    for path in repo.add(list(paths)):
        click.echo(f"staged {display_path(path)}")


@click.command()
@click.argument("path", required=False, type=click.Path())
@json_option
@pass_repo(readonly=True)
def status(obj, repo, path: str | None, as_json: bool) -> None:
    """What changed since the last backup: new, modified, deleted and staged paths.

    Looks at file metadata only; nothing is read or written.

    \b
    Examples:
      btfs status
      btfs status ~/notes --json
    """
    result = repo.status(path)
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

