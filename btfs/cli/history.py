"""Commands that read history: snapshots, log, restore."""

from __future__ import annotations

import dataclasses
import os
import stat

import click

from .. import digest
from ..catalog import DELETED, FILE, SYMLINK
from ..engine.history import pick_version
from ..engine.reader import ChunkSource
from ..engine.restore import Restorer
from ..errors import EXIT_PARTIAL, BtfsError, UsageError
from ..repo import Repo
from ..userpath import to_catalog_path
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
@click.pass_obj
def snapshots(obj, as_json: bool) -> None:
    """List backups, oldest first: time, files changed, bytes added, state.

    STATE is complete, partial (some entries could not be read), running, or interrupted
    (the backup was stopped or killed; what it stored before is kept and shown).

    The NAME column is the directory name under by-time/ in the mount.

    \b
    Examples:
      btfs snapshots
      btfs snapshots --json | jq '.[-1].name'
    """
    with Repo.open(obj.paths, readonly=True) as repo:
        snaps = repo.snapshots()
    names = {s.id: s.name for s in snaps}
    if as_json:
        emit_json([{"name": names[s.id], **dataclasses.asdict(s)} for s in snaps])
        return
    if not snaps:
        click.echo("no backups yet: run 'btfs backup'")
        return
    rows = []
    for s in snaps:
        took = f"{(s.finished_ns - s.started_ns) / 1e9:.1f}s" if s.finished_ns else "-"
        rows.append([str(s.id), names[s.id], s.state, f"{s.entries:,}",
                     f"{s.files_new + s.files_changed:,}", f"{s.files_deleted:,}",
                     human_bytes(s.bytes_added), took])
    print_table(["ID", "NAME", "STATE", "ENTRIES", "CHANGED", "DELETED", "ADDED", "TOOK"],
                rows, right={0, 3, 4, 5, 6, 7})


def _node_for(repo: Repo, path: str) -> tuple[int, bytes]:
    raw = to_catalog_path(path, [t.path for t in repo.config.tracked])
    node = repo.catalog.node_for_path(raw)
    if node is None or not repo.catalog.versions_of(node):
        raise UsageError(f"{path} was never backed up")
    return node, raw


@click.command()
@click.argument("path", type=click.Path())
@json_option
@click.pass_obj
def log(obj, path: str, as_json: bool) -> None:
    """Every version of a path: backup time, size, mode, mtime, BLAKE3 of the content.

    Versions are numbered from 1 (oldest); `btfs restore --version N` takes that number.
    The BLAKE3 digest is what `b3sum` prints for the file's bytes.

    \b
    Example:
      btfs log ~/notes/plan.md
    """
    with Repo.open(obj.paths, readonly=True) as repo:
        node, _ = _node_for(repo, path)
        names = repo.catalog.snapshot_names()
        rows = []  # what --json prints
        shown = []  # the table's last column: the content hash, or a symlink's target
        number = 0
        for v in repo.catalog.versions_of(node):
            m = v.meta
            b3 = repo.catalog.content(m.content_id).digest.hex() if v.type == FILE else None
            if v.type != DELETED:
                number += 1
            rows.append({"version": number if v.type != DELETED else None,
                         "snapshot": names[v.snapshot_id], "snapshot_id": v.snapshot_id,
                         "type": v.type, "size": m.size, "blake3": b3,
                         "target": json_path(m.target) if m.target is not None else None,
                         "mode": stat.filemode(m.mode) if v.type != DELETED else None,
                         "uid": m.uid, "gid": m.gid, "mtime_ns": m.mtime_ns})
            shown.append(b3 or ("-> " + display_path(m.target) if v.type == SYMLINK else ""))
    if as_json:
        emit_json(rows)
        return
    print_table(["#", "BACKUP", "TYPE", "SIZE", "MODE", "MTIME", "BLAKE3"],
                [[str(r["version"] or "-"), r["snapshot"], r["type"],
                  f"{r['size']:,}" if r["type"] != DELETED else "-", r["mode"] or "-",
                  local_time(r["mtime_ns"]) if r["type"] != DELETED else "-", col]
                 for r, col in zip(rows, shown, strict=True)], right={0, 3})


@click.command()
@click.argument("path", type=click.Path())
@click.option("--at", "at", metavar="TIME",
              help="As it was at this time: YYYY-MM-DD (end of that day), "
                   "'YYYY-MM-DD HH:MM[:SS]' or a snapshot name.")
@click.option("--version", "number", type=int, metavar="N", help="Version N from 'btfs log'.")
@click.option("--snapshot", metavar="NAME", help="A snapshot by name or id.")
@click.option("--to", "dest", type=click.Path(), help="Where to write it (a new path, or an "
              "existing directory to write into) [default: beside the original].")
@click.option("--content-only", is_flag=True,
              help="Do not restore owner, mode, times or xattrs.")
@click.pass_obj
def restore(obj, path, at, number, snapshot, dest, content_only) -> None:
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
    """
    if sum(x is not None for x in (at, number, snapshot)) > 1:
        raise UsageError("give only one of --at, --version, --snapshot")
    with Repo.open(obj.paths, readonly=True) as repo:
        node, raw = _node_for(repo, path)
        version, snapshot_id = pick_version(repo.catalog, node, at=at, number=number,
                                            snapshot=snapshot)
        name = os.path.basename(raw) or b"root"
        if dest is None:
            if version.type == FILE:
                tag = repo.catalog.content(version.meta.content_id).digest.hex()[:8]
            elif version.type == SYMLINK:
                tag = digest.hexdigest(version.meta.target)[:8]
            else:
                tag = repo.catalog.snapshot_names()[version.snapshot_id]
            target = os.path.join(os.path.dirname(raw), name + b"." + tag.encode())
        else:
            target = os.fsencode(os.path.abspath(os.path.expanduser(dest)))
            if os.path.isdir(target) and not os.path.islink(target):
                target = os.path.join(target, name)
        restorer = Restorer(repo.catalog, ChunkSource(repo.vault, cache_bytes=16 << 20),
                            content_only=content_only)
        result = restorer.restore(node, version, snapshot_id, target, raw)
    hint = "damaged in the vault? see 'btfs check --read-data' and 'btfs repair'"
    if version.type == FILE and result.failed:
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

