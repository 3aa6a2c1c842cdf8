"""Commands that look after the vault: check, repair."""

from __future__ import annotations

import sys

import click

from ..errors import CheckFailed
from .main import pass_repo
from .output import display_path, emit_json, human_bytes, json_option, json_path, plural


@click.command()
@click.option("--read-data", is_flag=True,
              help="Also read every pack and verify every chunk against its hash.")
@click.option("--mirror", metavar="NAME",
              help="Check mirror NAME (see 'btfs mirror') against this catalog instead.")
@json_option
@pass_repo(readonly=True)
def check(obj, repo, read_data: bool, mirror: str | None, as_json: bool) -> None:
    """Verify the catalog and the vault. Exit code 5 and the affected files on problems.

    Without --read-data: the catalog is consistent, every pack it refers to exists with
    the right size, and no chunk is known damaged. With it: every chunk is read and
    checked against its BLAKE3 digest. Damaged chunks are remembered: the next backup
    stores their content afresh where it meets it, and 'btfs repair' looks for it.
    With --mirror NAME the mirror is checked the same way, and nothing is remembered.

    \b
    Examples:
      btfs check
      btfs check --read-data
      btfs check --mirror usb --read-data
    """
    show = sys.stderr.isatty() and not obj.quiet and not as_json
    report = repo.check(read_data=read_data, progress=_pack_progress if show else None,
                        mirror=mirror)
    if show:
        sys.stderr.write("\r\033[K")
    if as_json:
        names = report.names
        emit_json({"ok": report.ok, "problems": report.problems,
                   "affected": [{"path": json_path(p), "snapshot": names.get(s)}
                                for p, s in report.affected],
                   "packs": report.packs, "chunks_verified": report.chunks_verified,
                   "bytes_read": report.bytes_read, "notes": report.notes,
                   "unreferenced_packs": report.unreferenced_packs})
    else:
        _print_check(report, read_data)
    if not report.ok:
        hint = "; run 'btfs repair'" if report.affected else ""
        raise CheckFailed(f"{plural(len(report.problems), 'problem')} found{hint}")


def _print_check(report, read_data: bool) -> None:
    """The check's report for people: problems and affected files, then the summary."""
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    for path, snap in report.affected:
        click.echo(f"affected: {display_path(path)} (backup {report.names.get(snap, snap)})")
    if report.ok:
        verified = (f", {plural(report.chunks_verified, 'chunk')} verified "
                    f"({human_bytes(report.bytes_read)} read)" if read_data else "")
        click.echo(f"ok: {plural(report.packs, 'pack')}{verified}")
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.unreferenced_packs:
        are = "is" if report.unreferenced_packs == 1 else "are"
        click.echo(f"note: {plural(report.unreferenced_packs, 'pack')} in the vault {are} "
                   "not referenced (left by an interrupted backup; harmless)")


def _pack_progress(done: int, total: int) -> None:
    sys.stderr.write(f"\r\033[Kchecked {done}/{total} packs")
    sys.stderr.flush()


@click.command()
@click.option("--wait", is_flag=True, help="If a backup is running, wait for it.")
@json_option
@pass_repo(writer="repair")
def repair(obj, repo, as_json: bool) -> None:
    """Store afresh the damaged chunks that files on disk still hold.

    Damage is what 'btfs check' found (it remembers it). For each damaged chunk, repair
    reads the files whose backed-up versions use it, newest first, and stores the chunk
    again from any that still holds its bytes: every backup that used it is healed at
    once. Lists the files that stay damaged (their bytes are nowhere on disk any more)
    and exits 5 if there are any.

    \b
    Examples:
      btfs check --read-data; btfs repair
      btfs repair --json
    """
    report = repo.repair()
    names = report.names
    if as_json:
        emit_json({"ok": report.ok, "damaged_chunks": report.damaged,
                   "healed_chunks": report.healed, "files_read": report.files_read,
                   "still_damaged": [{"path": json_path(p), "snapshot": names.get(s)}
                                     for p, s in report.still_damaged]})
    elif not report.damaged:
        click.echo("ok: no damaged chunks known (run 'btfs check --read-data' to look)")
    else:
        click.echo(f"healed {report.healed} of {plural(report.damaged, 'damaged chunk')} "
                   f"from {plural(report.files_read, 'file')}")
        for path, snap in report.still_damaged:
            click.echo(f"still damaged: {display_path(path)} (backup {names.get(snap, snap)})")
    if not report.ok:
        raise CheckFailed(f"{plural(report.damaged - report.healed, 'damaged chunk')} found "
                          f"in no file on disk; still damaged: "
                          f"{plural(len(report.still_damaged), 'file version')}")

