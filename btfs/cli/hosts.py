"""`btfs hosts`: the hosts whose history a vault holds (their catalog copies), and the
table of them that `btfs recover` prints too."""

from __future__ import annotations

import click

from .main import pass_repo
from .output import emit_json, human_bytes, json_option, local_time, print_table

THIS_HOST = " (this host)"


def print_hosts(hosts: list, this_host_id: str | None = None) -> None:
    """One row per host (btfs.replica.fetch.HostCopy); this host's name marked."""
    print_table(["NAME", "ID", "LAST BACKUP", "SNAPSHOTS", "CATALOG"],
                [[h.name + (THIS_HOST if h.host_id == this_host_id else ""), h.host_id,
                  local_time(h.last_backup_ns), f"{h.snapshots:,}",
                  human_bytes(h.catalog_size)] for h in hosts], right={3, 4})


@click.command()
@json_option
@pass_repo(readonly=True)
def hosts(obj, repo, as_json: bool) -> None:
    """List the hosts that back up into this vault: name, id, last backup, number of
    backups, catalog size, as each one's newest catalog copy in the vault says.

    A host appears after its first backup. Browse another host's history with
    `btfs mount --host NAME|ID DIR`, or `btfs log`, `snapshots`, `find`, `diff` and
    `restore` with --host.

    \b
    Examples:
      btfs hosts
      btfs hosts --json | jq -r '.[].name'
    """
    found, mine = repo.hosts(), repo.config.host_id
    if as_json:
        emit_json([{"name": h.name, "host_id": h.host_id, "this_host": h.host_id == mine,
                    "last_backup_ns": h.last_backup_ns, "snapshots": h.snapshots,
                    "catalog_size": h.catalog_size, "generation": h.generation}
                   for h in found])
    elif not found:
        click.echo("no host has published a catalog copy to this vault yet")
    else:
        print_hosts(found, mine)
