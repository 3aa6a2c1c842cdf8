"""Commands that set btfs up: init, track, untrack, config show."""

from __future__ import annotations

import sys

import click

from ..errors import UsageError
from ..repo import Repo, Setup
from .output import emit_json, json_option, plural


@click.command()
@click.option("--vault", help="Where backups are stored: a directory (created if missing) "
                             "or s3://BUCKET/PREFIX.")
@click.option("--endpoint", metavar="URL",
              help="S3-compatible service to use instead of AWS (MinIO, B2, R2...).")
@click.option("--region", help="S3 region [default: boto3's (profile, AWS_REGION)].")
@click.option("--profile", help="AWS profile for credentials [default: boto3's].")
@click.option("--track", "track", multiple=True, type=click.Path(),
              help="Also start tracking this directory (repeatable).")
@click.option("--no-input", is_flag=True, help="Never prompt; fail if something is missing.")
@click.pass_obj
def init(obj, vault: str | None, endpoint: str | None, region: str | None,
         profile: str | None, track: tuple[str, ...], no_input: bool) -> None:
    """Create the configuration, the catalog and the vault.

    Running it again with the same vault changes nothing; with another vault it refuses.

    \b
    Examples:
      btfs init                                  # asks on a terminal
      btfs init --vault ~/btfs-vault --track ~/notes --no-input
      btfs init --vault s3://my-bucket/btfs --region eu-west-1
      btfs init --vault s3://backups/laptop --endpoint https://minio.example:9000

    S3 credentials come from boto3's usual places (AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, --profile); btfs never stores them.
    """
    interactive = not no_input and sys.stdin.isatty()
    if vault is None:
        if not interactive:
            raise UsageError("--vault is required with --no-input or without a terminal")
        vault = click.prompt("Vault (where backups are stored: a directory, or "
                             "s3://BUCKET/PREFIX)",
                             default="~/btfs-vault")
        if not track:
            first = click.prompt("First directory to back up (empty for none)", default="",
                                 show_default=False)
            track = (first,) if first.strip() else ()
    done = Repo.init(obj.paths, vault, list(track), endpoint=endpoint, region=region,
                     profile=profile)
    if done.created:
        click.echo(f"initialized btfs: vault {done.config.vault}, "
                   f"config {obj.paths.config_file}")
        if done.other_hosts:
            click.echo(f"the vault holds backups of {plural(done.other_hosts, 'other host')}: "
                       f"this host joins it as {done.config.host_id} (content they stored "
                       "is not stored again)")
    else:
        click.echo(f"already initialized with vault {done.config.vault}; nothing changed")
    for t in done.config.tracked:
        click.echo(f"tracking {t.path}")
    _note_skipped(done)


@click.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path())
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN",
              help="gitignore-style pattern to skip in these directories (repeatable).")
@click.option("--include", "includes", multiple=True, metavar="PATTERN",
              help="Store only files matching one of these patterns (repeatable).")
@click.pass_obj
def track(obj, dirs, excludes, includes) -> None:
    """Add directories to the backup set, or replace their patterns.

    Global excludes (config key `excludes`) apply too; by default they skip
    __pycache__/, *.pyc, *.tmp, *.swp and .cache/.

    Never backed up, whatever is tracked: the vault, btfs's catalog and cache
    directories, every btfs mount, /proc, /sys, /dev and /run. Tracking one of them (or a
    directory inside one) is refused; a tracked directory that holds one is fine, and a
    `note:` line names what in it is skipped.

    \b
    Examples:
      btfs track ~/notes ~/photos --exclude '*.tmp' --exclude 'build/'
      btfs track ~/downloads --include '*.tgz' --include '*.zip'
    """
    done = Repo.track(obj.paths, list(dirs), excludes, includes)
    for t in done.config.tracked:
        extra = "".join(f" --exclude {p}" for p in t.excludes) + "".join(
            f" --include {p}" for p in t.includes)
        click.echo(f"tracking {t.path}{extra}")
    _note_skipped(done)


def _note_skipped(done: Setup) -> None:
    """One line naming btfs's own directories and mounts inside what is tracked."""
    if done.skipped:
        click.echo("note: never backed up: "
                   + ", ".join(f"{d.path} ({d.what})" for d in done.skipped))


@click.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path())
@click.pass_obj
def untrack(obj, dirs) -> None:
    """Stop backing up directories. Their history stays; the next backup records them as
    gone from that point on.

    \b
    Example:
      btfs untrack ~/photos
    """
    cfg = Repo.untrack(obj.paths, list(dirs))
    click.echo(f"{plural(len(cfg.tracked), 'directory')} tracked")


@click.group("config")
def config_group() -> None:
    """Show the configuration.

    \b
    Example:
      btfs config show              # the file's settings, every default filled in
    """


@config_group.command("show")
@json_option
@click.pass_obj
def config_show(obj, as_json: bool) -> None:
    """Print the configuration with every default filled in.

    \b
    Example:
      btfs config show
    """
    view = Repo.show_config(obj.paths)
    if as_json:
        emit_json({"config_file": view.config_file, "catalog": view.catalog,
                   "cache_dir": view.cache_dir, **view.settings})
        return
    click.echo(f"# {view.config_file}")
    click.echo(f"# catalog: {view.catalog}")
    click.echo(f"# cache:   {view.cache_dir}")
    click.echo(view.text, nl=False)

