"""Commands that remove history: forget (backups, by a retention policy) and prune (the
vault space nothing uses any more). They parse, call Repo.forget / Repo.prune, print."""

from __future__ import annotations

import dataclasses

import click

from .main import pass_repo
from .output import emit_json, human_bytes, json_option, plural

_PERIODS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _count_option(which: str):
    return click.option(f"--keep-{which}", f"keep_{which}", metavar="N",
                        help=f"Keep the newest backup of each of the N newest {which} "
                             "periods ('unlimited': all)." if which != "last"
                        else "Keep the N newest backups.")


@click.command()
@_count_option("last")
@_count_option("hourly")
@_count_option("daily")
@_count_option("weekly")
@_count_option("monthly")
@_count_option("yearly")
@click.option("--keep-within", metavar="DURATION",
              help="Keep every backup newer than DURATION before the newest, e.g. 2w3d "
                   "(y, m, w, d, h).")
@click.option("--keep-snapshot", "pins", multiple=True, metavar="NAME",
              help="Keep this backup (a name or id); repeatable.")
@click.option("--keep-versions", metavar="N",
              help="Per-file safety net: the N newest distinct versions of every file stay "
                   "reachable even when their backups go [default: the config's].")
@click.option("--dry-run", "-n", is_flag=True, help="Only list what would be kept and removed.")
@click.option("--wait", is_flag=True, help="If a backup is running, wait for it.")
@json_option
@pass_repo(writer="forget", unless="dry_run")
def forget(obj, repo, pins: tuple[str, ...], keep_within: str | None,
           keep_versions: str | None, dry_run: bool, as_json: bool, **counts) -> None:
    """Remove backups by a retention policy (restic's rules).

    With no --keep-... option, the [retention] table of the config applies. Backups are
    kept if any rule keeps them. Removing a backup drops the file versions no kept backup
    shows, except those the keep_versions safety net keeps (they stay in by-file/,
    'btfs log' and 'restore --version'). Vault space is given back by 'btfs prune'.

    \b
    Examples:
      btfs forget --keep-daily 7 --keep-weekly 5 --dry-run
      btfs forget --keep-within 2w3d --keep-monthly unlimited
      btfs forget                       # the config's [retention]
    """
    keep = {p: counts[f"keep_{p}"] for p in _PERIODS}
    report = repo.forget(keep=keep, within=keep_within, pins=pins,
                         keep_versions=keep_versions, dry_run=dry_run)
    if as_json:
        emit_json({
            "dry_run": dry_run,
            "snapshots": [{"id": d.id, "name": d.name, "time": d.time.isoformat(),
                           "keep": d.keep, "reasons": list(d.reasons)}
                          for d in report.decisions],
            **({} if report.counts is None else dataclasses.asdict(report.counts))})
    else:
        _print_forget(report)


def _print_forget(report) -> None:
    """Each backup kept or removed, with the rules that kept it, then the summary."""
    for d in report.decisions:
        why = f"  ({', '.join(d.reasons)})" if d.reasons else ""
        click.echo(f"{'keep' if d.keep else 'remove':6} {d.name}{why}")
    removed = len(report.removed)
    total = plural(len(report.decisions), "backup")
    counts = report.counts
    if counts is None:
        click.echo(f"would remove {removed} of {total} (dry run: nothing changed)")
        return
    click.echo(f"removed {removed} of {total}; "
               f"{plural(counts.versions_dropped, 'file version')} dropped, "
               f"{counts.versions_kept:,} kept by keep_versions; "
               "run 'btfs prune' to free vault space")


@click.command()
@click.option("--max-unused", default="5%", show_default=True, metavar="PERCENT",
              help="Repack a pack when more than this share of it is unused.")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be deleted.")
@click.option("--wait", is_flag=True, help="If a backup is running, wait for it.")
@json_option
@pass_repo(writer="prune", unless="dry_run")
def prune(obj, repo, max_unused: str, dry_run: bool, as_json: bool) -> None:
    """Free vault space: delete chunks no backup uses any more.

    Packs with nothing in use are deleted; packs with more than --max-unused unused are
    repacked (their chunks in use copied, verified, into new packs) and deleted. Safe to
    interrupt: run it again and it finishes. Backups wait for it (or fail, without
    --wait) as for another backup.

    In a vault shared with other hosts, packs another host uses are left whole, and the
    others are condemned instead of deleted: a later prune deletes them once [retention]
    prune_grace (default 24h) has passed and every host has backed up since.

    \b
    Examples:
      btfs forget --keep-daily 7 && btfs prune
      btfs prune --dry-run --max-unused 20%
    """
    report = repo.prune(max_unused=max_unused, dry_run=dry_run)
    if as_json:
        emit_json({**dataclasses.asdict(report), "freed_bytes": report.freed_bytes})
        return
    verb = "would free" if dry_run else "freed"
    click.echo(f"{plural(report.packs, 'pack')} ({human_bytes(report.vault_bytes)}): "
               f"{report.dead_packs:,} unused ({human_bytes(report.dead_pack_bytes)}), "
               f"{report.repacked:,} repacked ({human_bytes(report.repacked_bytes)}, "
               f"{human_bytes(report.copied_bytes)} copied), "
               f"{plural(report.dead_chunks, 'unused chunk')}; "
               f"{verb} {human_bytes(max(report.freed_bytes, 0))}"
               + ("; catalog compacted" if report.vacuumed else ""))
    if report.skipped_damaged:
        click.echo(f"note: {plural(report.skipped_damaged, 'pack')} with damaged chunks left "
                   "as they are (run 'btfs repair')")
    if report.shared is not None:
        _echo_shared(report.shared, dry_run)


def _echo_shared(shared, dry_run: bool) -> None:
    """What prune did in a vault shared with other hosts (btfs.engine.prune_shared)."""
    if shared.held:
        click.echo(f"{plural(shared.held, 'pack')} ({human_bytes(shared.held_bytes)}) left "
                   "whole: other hosts use them")
    if dry_run:
        return
    if shared.condemned:
        click.echo(f"condemned {plural(shared.condemned, 'pack')} "
                   f"({human_bytes(shared.condemned_bytes)}): deleted once the grace period "
                   "is over and every other host has backed up since")
    if shared.given_back:
        click.echo(f"{plural(shared.given_back, 'condemned pack')} given back: another host "
                   "uses them")
    for wait in shared.waiting:
        click.echo(f"waiting: {plural(wait.packs, 'condemned pack')} "
                   f"({human_bytes(wait.bytes)}): {wait.reason}")
