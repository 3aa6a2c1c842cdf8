"""`btfs recover`: a machine with nothing set up gets a host's catalog and config back
from the vault (Repo.recover)."""

from __future__ import annotations

import click

from ..errors import ChooseHost
from ..repo import Repo
from .hosts import print_hosts
from .output import human_bytes, local_time


@click.command("recover")
@click.option("--vault", "vault_url", required=True,
              help="The vault to recover from: a directory or s3://BUCKET/PREFIX.")
@click.option("--endpoint", metavar="URL",
              help="S3-compatible service to use instead of AWS (MinIO, B2, R2...).")
@click.option("--region", help="S3 region [default: boto3's (profile, AWS_REGION)].")
@click.option("--profile", help="AWS profile for credentials [default: boto3's].")
@click.option("--host", metavar="NAME|ID",
              help="The host to recover, when the vault holds several.")
@click.option("--read-only", is_flag=True,
              help="Only browse and restore; backups from this machine are refused.")
@click.pass_obj
def recover_cmd(obj, vault_url: str, endpoint: str | None, region: str | None,
                profile: str | None, host: str | None, read_only: bool) -> None:
    """Set up this machine from a vault alone: the catalog and the config of a host.

    Lists the hosts when the vault holds several and no --host is given. Afterwards
    `btfs log`, `btfs mount` and `btfs restore` work at once; without --read-only,
    `btfs backup` continues that host's history.

    \b
    Examples:
      btfs recover --vault /media/usb/btfs-vault
      btfs recover --vault /media/usb/btfs-vault --host laptop --read-only
      btfs recover --vault s3://my-bucket/btfs --region eu-west-1

    S3 credentials come from boto3's usual places, as for `btfs init`.
    """
    try:
        done = Repo.recover(obj.paths, vault_url, host, read_only=read_only,
                            endpoint=endpoint, region=region, profile=profile)
    except ChooseHost as e:
        print_hosts(e.hosts)
        raise
    for problem in done.fetched.skipped:
        click.echo(f"skipped catalog copy {problem}", err=True)
    h = done.host
    click.echo(f"recovered host {h.name} ({h.host_id}) from catalog generation "
               f"{done.fetched.generation.number}: {h.snapshots} snapshots, last backup "
               f"{local_time(h.last_backup_ns)}, catalog {human_bytes(h.catalog_size)}, "
               f"in {done.seconds:.1f}s")
    click.echo(f"config written to {obj.paths.config_file}"
               + (" (read-only: backups are refused)" if read_only else ""))
    for t in done.config.tracked:
        click.echo(f"tracking {t.path}")
