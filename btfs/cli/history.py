"""Commands that read history: snapshots, log, restore."""

from __future__ import annotations

import dataclasses

import click

from ..errors import EXIT_PARTIAL, BtfsError
from .browse import print_folder_log
from .complete import complete_paths, complete_snapshots
from .main import host_option, pass_repo
from .output import (
    display_path,
    emit_json,
    human_bytes,
    json_option,
    json_path,
    local_time,
    plural,
    print_table,
)


@click.command()
@json_option
@host_option
@pass_repo(readonly=True)
def snapshots(obj, repo, as_json: bool) -> None:
    """List backups, oldest first: time, files changed, bytes added, state.

    STATE is complete, partial (some entries could not be read), running, or interrupted
    (the backup was stopped or killed; what it stored before is kept and shown).

    The NAME column is the directory name under by-time/ in the mount.

    \b
    Examples:
      btfs snapshots
      btfs snapshots --json | jq '.[-1].name'
    """
    snaps = repo.named_snapshots()
    if as_json:
        emit_json([{"name": name, **dataclasses.asdict(s)} for name, s in snaps])
        return
    if not snaps:
        click.echo("no backups yet: run 'btfs backup'")
        return
    rows = []
    for name, s in snaps:
        took = f"{(s.finished_ns - s.started_ns) / 1e9:.1f}s" if s.finished_ns else "-"
        rows.append([str(s.id), name, s.state, f"{s.entries:,}",
                     f"{s.files_new + s.files_changed:,}", f"{s.files_deleted:,}",
                     human_bytes(s.bytes_added), took])
    print_table(["ID", "NAME", "STATE", "ENTRIES", "CHANGED", "DELETED", "ADDED", "TOOK"],
                rows, right={0, 3, 4, 5, 6, 7})


@click.command()
@click.argument("path", type=click.Path(), shell_complete=complete_paths)
@click.option("--files", is_flag=True, help="A directory: list the paths that changed.")
@json_option
@host_option
@pass_repo(readonly=True)
def log(obj, repo, path: str, files: bool, as_json: bool) -> None:
    """Every version of a path: backup time, size, mode, mtime, BLAKE3 of the content.

    Versions are numbered from 1 (oldest); `btfs restore --version N` takes that number.
    The BLAKE3 digest is what `b3sum` prints for the file's bytes.

    A directory: every backup in which something below it was added, modified or
    deleted, with counts; --files lists those paths (+ added, M modified, - deleted).

    \b
    Examples:
      btfs log ~/notes/plan.md
      btfs log ~/notes --files
    """
    steps = repo.folder_log(path, files=files)
    if steps is not None:
        return print_folder_log(steps, files, as_json)
    rows = repo.log(path)
    if as_json:
        emit_json([{**dataclasses.asdict(r), "target": json_path(r.target)
                    if r.target is not None else None} for r in rows])
        return
    print_table(["#", "BACKUP", "TYPE", "SIZE", "MODE", "MTIME", "BLAKE3"],
                [[str(r.version or "-"), r.snapshot, r.type,
                  f"{r.size:,}" if not r.deleted else "-", r.mode or "-",
                  local_time(r.mtime_ns) if not r.deleted else "-",
                  r.blake3 or ("-> " + display_path(r.target) if r.target is not None else "")]
                 for r in rows], right={0, 3})


@click.command()
@click.argument("path", type=click.Path(), shell_complete=complete_paths)
@click.option("--at", "at", metavar="TIME",
              help="As it was at this time: YYYY-MM-DD (end of that day), "
                   "'YYYY-MM-DD HH:MM[:SS]' or a snapshot name.")
@click.option("--version", "number", type=int, metavar="N", help="Version N from 'btfs log'.")
@click.option("--snapshot", metavar="NAME", help="A snapshot by name or id.",
              shell_complete=complete_snapshots)
@click.option("--to", "dest", type=click.Path(), help="Where to write it (a new path, or an "
              "existing directory to write into) [default: beside the original].")
@click.option("--content-only", is_flag=True,
              help="Do not restore owner, mode, times or xattrs.")
@host_option
@pass_repo(readonly=True)
def restore(obj, repo, path, at, number, snapshot, dest, content_only) -> None:
    """Restore a file, symlink or directory as it was. Never overwrites anything.

    Without --to, writes beside the original as NAME.<first 8 hex of its BLAKE3> (a
    directory: NAME.<backup time>). Metadata (mode, owner, times, xattrs) is restored
    unless --content-only. Each file is written under a temporary name and renamed when
    complete and verified. A file damaged in the vault is not restored; every other
    file is, each one that was not is named on stderr, and the exit code is 3.

    \b
    Examples:
      btfs restore ~/notes/plan.md --at 2026-11-20
      btfs restore ~/notes --version 3 --to /tmp/notes-then
      btfs restore --host laptop /home/me/notes/plan.md --to /tmp/

    With --host, paths are as on that host (absolute), and --to is needed.
    """
    restored = repo.restore(path, at=at, number=number, snapshot=snapshot, dest=dest,
                            content_only=content_only)
    result = restored.result
    hint = "damaged in the vault? see 'btfs check --read-data' and 'btfs repair'"
    if restored.single_file and result.failed:
        (path, why), = result.failed
        raise BtfsError(f"cannot restore {display_path(path)}: {why} ({hint})", EXIT_PARTIAL)
    click.echo(f"restored {display_path(result.target)}: {plural(result.files, 'file')}, "
               f"{plural(result.dirs, 'directory')}, {plural(result.symlinks, 'symlink')}, "
               f"{human_bytes(result.bytes)}")
    if result.failed:
        for path, why in result.failed:
            click.echo(f"btfs: not restored: {display_path(path)}: {why}", err=True)
        raise BtfsError(f"{len(result.failed)} of {result.files + len(result.failed)} files "
                        f"could not be restored ({hint})", EXIT_PARTIAL)

