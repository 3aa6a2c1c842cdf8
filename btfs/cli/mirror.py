"""Second vaults: `btfs mirror add|list|remove` edit the [[mirror]] tables, `btfs sync`
copies the vault into them (Repo.add_mirror, Repo.sync)."""

from __future__ import annotations

import shutil
import sys

import click

from ..errors import BtfsError, CheckFailed
from ..repo import Repo
from .main import pass_repo
from .output import emit_json, human_bytes, json_option, plural, print_table


@click.group("mirror")
def mirror_group() -> None:
    """Other vaults that 'btfs sync' keeps a copy of the vault in.

    \b
    Examples:
      btfs mirror add usb /media/usb/btfs-mirror
      btfs mirror add cloud s3://my-bucket/laptop --region eu-west-1
      btfs mirror list
      btfs sync
    """


@mirror_group.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--endpoint", metavar="URL",
              help="S3-compatible service of this mirror (MinIO, B2, R2...); not [s3]'s.")
@click.option("--region", help="S3 region of this mirror [default: boto3's].")
@click.option("--profile", help="AWS profile for this mirror's credentials [default: boto3's].")
@click.option("--sync-after-backup/--no-sync-after-backup", default=True,
              help="Sync this mirror after each backup [default: yes].")
@click.pass_obj
def mirror_add(obj, name: str, url: str, endpoint: str | None, region: str | None,
               profile: str | None, sync_after_backup: bool) -> None:
    """Add mirror NAME at URL (a directory or s3://BUCKET/PREFIX).

    The place must be reachable and writable, and empty or a mirror of this vault
    already; a directory is created if its parent exists. It gets this vault's
    identity at once; 'btfs sync NAME' fills it.
    """
    m = Repo.add_mirror(obj.paths, name, url, endpoint=endpoint, region=region,
                        profile=profile, sync_after_backup=sync_after_backup)
    when = "after each backup and by" if m.sync_after_backup else "by"
    click.echo(f"mirror {m.name} added: {m.url} (synced {when} 'btfs sync')")


@mirror_group.command("list")
@json_option
@click.pass_obj
def mirror_list(obj, as_json: bool) -> None:
    """The mirrors in the config."""
    mirrors = Repo.mirrors(obj.paths)
    if as_json:
        emit_json([{"name": m.name, "url": m.url, "endpoint": m.endpoint, "region": m.region,
                    "profile": m.profile, "sync_after_backup": m.sync_after_backup}
                   for m in mirrors])
    elif not mirrors:
        click.echo("no mirrors (add one with 'btfs mirror add NAME URL')")
    else:
        print_table(["NAME", "URL", "AFTER BACKUP"],
                    [[m.name, m.url, "yes" if m.sync_after_backup else "no"] for m in mirrors])


@mirror_group.command("remove")
@click.argument("name")
@click.pass_obj
def mirror_remove(obj, name: str) -> None:
    """Forget mirror NAME. Its data is left where it is."""
    m = Repo.remove_mirror(obj.paths, name)
    click.echo(f"mirror {m.name} removed from the config; {m.url} is left as it is")


class SyncProgress:
    """One self-rewriting line on a terminal: packs and bytes copied of those missing."""

    def __init__(self) -> None:
        self.width = shutil.get_terminal_size((100, 24)).columns - 1

    def __call__(self, report) -> None:
        line = (f"sync {report.name}: {report.packs_copied}/{report.packs_to_copy} packs, "
                f"{human_bytes(report.bytes_copied)} of {human_bytes(report.bytes_to_copy)}")
        sys.stderr.write("\r\033[K" + line[:self.width])
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--progress/--no-progress", default=None,
              help="Show progress [default: on when stderr is a terminal].")
@json_option
@pass_repo(readonly=True)
def sync(obj, repo, names: tuple[str, ...], progress: bool | None, as_json: bool) -> None:
    """Copy to the mirrors (all, or those NAMEd) every pack and catalog copy they lack.

    Each object is verified before it is copied (a pack's chunks against their digests,
    a catalog copy against the digest in its name); a damaged one is named and left
    out, the rest still copied. Exit 1 if a mirror could not be synced, 5 if damaged
    objects were left out.

    \b
    Examples:
      btfs sync
      btfs sync usb --json
    """
    show = progress if progress is not None else sys.stderr.isatty() and not obj.quiet
    meter = SyncProgress() if show and not as_json else None
    try:
        reports = repo.sync(names, progress=meter)
    finally:
        if meter:
            meter.done()
    if as_json:
        emit_json({"ok": all(r.ok for r in reports), "mirrors": [_as_dict(r) for r in reports]})
    elif not obj.quiet:
        for r in reports:
            _print_report(r)
    _exit_code(reports)


def _as_dict(r) -> dict:
    return {"name": r.name, "url": r.url, "ok": r.ok, "packs_copied": r.packs_copied,
            "catalog_copied": r.catalog_copied, "bytes_copied": r.bytes_copied,
            "skipped": r.skipped, "skipped_bytes": r.skipped_bytes, "vanished": r.vanished,
            "retired": r.retired, "damaged": r.damaged, "error": r.error,
            "seconds": round(r.seconds, 3)}


def _print_report(r) -> None:
    for problem in r.damaged:
        click.echo(f"mirror {r.name}: not copied: {problem}", err=True)
    if r.error:
        click.echo(f"mirror {r.name}: not synced: {r.error}", err=True)
        return
    click.echo(f"mirror {r.name}: copied {plural(r.packs_copied, 'pack')} and "
               f"{plural(r.catalog_copied, 'catalog object')} "
               f"({human_bytes(r.bytes_copied)}) in {r.seconds:.1f}s; "
               f"{plural(r.skipped, 'object')} already there")


def _exit_code(reports) -> None:
    failed = [r.name for r in reports if r.error]
    if failed:
        raise BtfsError(f"{plural(len(failed), 'mirror')} not synced: {', '.join(failed)}")
    damaged = sum(len(r.damaged) for r in reports)
    if damaged:
        raise CheckFailed(f"{plural(damaged, 'damaged object')} not copied (see above)")
