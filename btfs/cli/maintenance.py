"""Commands that look after the vault: check."""

from __future__ import annotations

import sys

import click

from ..engine.check import check as run_check
from ..errors import CheckFailed
from ..names import snapshot_names
from ..repo import Repo
from .output import display_path, emit_json, human_bytes, json_option, json_path, plural


@click.command()
@click.option("--read-data", is_flag=True,
              help="Also read every pack and verify every chunk against its hash.")
@json_option
@click.pass_obj
def check(obj, read_data: bool, as_json: bool) -> None:
    """Verify the catalog and the vault. Exit code 5 and the affected files on problems.

    Without --read-data: the catalog is consistent and every pack it refers to exists
    with the right size. With it: every chunk is read and checked against its BLAKE3 digest.

    \b
    Examples:
      btfs check
      btfs check --read-data
    """
    with Repo.open(obj.paths, readonly=True) as repo:
        def progress(done: int, total: int) -> None:
            sys.stderr.write(f"\r\033[Kchecked {done}/{total} packs")
            sys.stderr.flush()

        show = sys.stderr.isatty() and not obj.quiet and not as_json
        report = run_check(repo.catalog, repo.vault, read_data=read_data,
                           progress=progress if show else None)
        if show:
            sys.stderr.write("\r\033[K")
        names = snapshot_names(repo.catalog.snapshots()) if report.affected else {}
    if as_json:
        emit_json({"ok": report.ok, "problems": report.problems,
                   "affected": [{"path": json_path(p), "snapshot": names.get(s)}
                                for p, s in report.affected],
                   "packs": report.packs, "chunks_verified": report.chunks_verified,
                   "bytes_read": report.bytes_read,
                   "unreferenced_packs": report.unreferenced_packs})
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        for path, snap in report.affected:
            click.echo(f"affected: {display_path(path)} (backup {names.get(snap, snap)})")
        if report.ok:
            verified = (f", {plural(report.chunks_verified, 'chunk')} verified "
                        f"({human_bytes(report.bytes_read)} read)" if read_data else "")
            click.echo(f"ok: {plural(report.packs, 'pack')}{verified}")
        if report.unreferenced_packs:
            are = "is" if report.unreferenced_packs == 1 else "are"
            click.echo(f"note: {plural(report.unreferenced_packs, 'pack')} in the vault {are} "
                       "not referenced (left by an interrupted backup; harmless)")
    if not report.ok:
        raise CheckFailed(f"{plural(len(report.problems), 'problem')} found")

