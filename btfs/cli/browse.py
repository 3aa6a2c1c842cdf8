"""Commands that search history: find, diff, and the folder form of log."""

from __future__ import annotations

import click

from .complete import complete_paths, complete_snapshots
from .main import host_option, pass_repo
from .output import display_path, emit_json, json_option, json_path, plural, print_table

# The mark of each kind of change, as `restic diff` prints them.
_MARKS = {"added": "+", "removed": "-", "type": "T"}
_FOLDER_MARKS = {"added": "+", "modified": "M", "deleted": "-"}


@click.command()
@click.argument("pattern")
@click.option("--path", "under", metavar="DIR", help="Only paths below DIR.",
              shell_complete=complete_paths)
@click.option("--since", metavar="TIME", help="Only versions from backups at or after TIME.")
@click.option("--until", metavar="TIME", help="Only versions from backups at or before TIME.")
@click.option("--deleted", is_flag=True, help="Only paths deleted since (not in the newest "
              "backup).")
@json_option
@host_option
@pass_repo(readonly=True)
def find(obj, repo, pattern, under, since, until, deleted, as_json) -> None:
    """Every path in the whole history whose name matches PATTERN, with its versions.

    PATTERN is a glob (* ? [abc] [!abc]; quote it) matched against the last component of
    each path, or, when it holds a '/', against the path: * and ? stay within a
    component, ** crosses any number, and a pattern not starting with '/' matches a tail
    of whole components. Each version shows its backup, type, size and the BLAKE3 of its
    content. TIME is YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' or a backup's name. Exits 1 when
    nothing matches.

    \b
    Examples:
      btfs find '*.md' --path ~/notes
      btfs find 'docs/**/draft*' --deleted
    """
    found = repo.find(pattern, under=under, since=since, until=until, deleted=deleted)
    if as_json:
        emit_json([{"path": json_path(f.path), "deleted": f.deleted,
                    "versions": [{"snapshot": v.snapshot, "snapshot_id": v.snapshot_id,
                                  "type": v.type, "size": v.size, "blake3": v.blake3,
                                  "deleted": v.deleted} for v in f.versions]} for f in found])
    for f in [] if as_json else found:
        click.echo(display_path(f.path) + ("  (deleted)" if f.deleted else ""))
        for v in f.versions:
            click.echo("  " + "  ".join([v.snapshot, f"{v.type:<7}", f"{v.size:>14,}"
                                         if not v.deleted else " " * 14, v.blake3 or ""])
                       .rstrip())
    if not found:
        click.echo(f"btfs: no path in the history matches '{pattern}'", err=True)
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("before", metavar="A", shell_complete=complete_snapshots)
@click.argument("after", metavar="B", shell_complete=complete_snapshots)
@click.argument("path", required=False, shell_complete=complete_paths)
@json_option
@host_option
@pass_repo(readonly=True)
def diff(obj, repo, before, after, path, as_json) -> None:
    """What changed between backups A and B (names from 'btfs snapshots', ids, or
    'latest'), below PATH if given.

    One line per path: + added, - removed, M modified (its content, and/or metadata:
    mode, owner, mtime, xattrs; said in brackets), T type changed (e.g. file -> dir).
    Directories end in '/'. A renamed path is removed and added.

    \b
    Examples:
      btfs diff 2026-11-20_093000 latest
      btfs diff 3 5 ~/notes --json
    """
    changes = repo.diff(before, after, path)
    if as_json:
        emit_json([{"path": json_path(c.path), "change": c.change, "type": c.type,
                    "content": c.content, "metadata": list(c.metadata),
                    "before_type": c.before_type} for c in changes])
        return
    for c in changes:
        click.echo(f"{_MARKS.get(c.change, 'M')}  {_shown(c.path, c.type)}{_detail(c)}")
    counts = {kind: sum(c.change == kind for c in changes)
              for kind in ("added", "removed", "modified", "type")}
    click.echo(f"{plural(counts['added'], 'path')} added, {counts['removed']:,} removed, "
               f"{counts['modified']:,} modified, {counts['type']:,} changed type")


def _shown(path: bytes, kind: str) -> str:
    return display_path(path) + ("/" if kind == "dir" and path != b"/" else "")


def _detail(change) -> str:
    if change.change == "type":
        return f"  ({change.before_type} -> {change.type})"
    if change.change == "modified":
        return "  (" + ", ".join((["content"] if change.content else [])
                                 + list(change.metadata)) + ")"
    return ""


def print_folder_log(steps: list, files: bool, as_json: bool) -> None:
    """`btfs log DIR`: one row per backup that changed something below DIR."""
    if as_json:
        emit_json([{"snapshot": s.snapshot, "snapshot_id": s.snapshot_id, "added": s.added,
                    "modified": s.modified, "deleted": s.deleted,
                    **({"paths": [{"change": c, "path": json_path(p)} for c, p in s.paths]}
                       if files else {})} for s in steps])
        return
    if not files:
        print_table(["BACKUP", "ADDED", "MODIFIED", "DELETED"],
                    [[s.snapshot, f"{s.added:,}", f"{s.modified:,}", f"{s.deleted:,}"]
                     for s in steps], right={1, 2, 3})
        return
    for s in steps:
        click.echo(f"{s.snapshot}  {s.added:,} added, {s.modified:,} modified, "
                   f"{s.deleted:,} deleted")
        for change, path in s.paths:
            click.echo(f"  {_FOLDER_MARKS[change]}  {display_path(path)}")
