"""The `btfs` command: one click group; each command module parses, calls one method of
the service layer (btfs.repo.Repo) and prints. `pass_repo` opens the Repo for a command.
Errors are turned into one stderr line and an exit code here, once."""

from __future__ import annotations

import functools
import importlib
import logging
import signal
import sys
from dataclasses import dataclass

import click

from .. import __version__
from ..errors import EXIT_ERROR, BtfsError
from ..repo import Paths, Repo, xdg_paths
from .output import display_path, setup_logging

log = logging.getLogger(__name__)


@dataclass
class Context:
    paths: Paths
    verbose: int
    quiet: bool


# Each command's module is imported only when that command runs (or --help lists them):
# `btfs mount` does not need the backup engine, and its start-up time is the time until a
# mount answers. Name -> (module in btfs.cli, attribute).
COMMANDS = {
    "init": ("setup", "init"),
    "track": ("setup", "track"),
    "untrack": ("setup", "untrack"),
    "config": ("setup", "config_group"),
    "backup": ("backup", "backup"),
    "add": ("backup", "add"),
    "status": ("backup", "status"),
    "snapshots": ("history", "snapshots"),
    "log": ("history", "log"),
    "restore": ("history", "restore"),
    "find": ("browse", "find"),
    "diff": ("browse", "diff"),
    "check": ("maintenance", "check"),
    "repair": ("maintenance", "repair"),
    "forget": ("retention", "forget"),
    "prune": ("retention", "prune"),
    "mount": ("mount", "mount_cmd"),
    "umount": ("mount", "umount_cmd"),
    "watch": ("watch", "watch"),
    "daemon": ("watch", "daemon_group"),
    "web-url": ("watch", "web_url"),
    "recover": ("recover", "recover_cmd"),
    "mirror": ("mirror", "mirror_group"),
    "sync": ("mirror", "sync"),
    "hosts": ("hosts", "hosts"),
}


def pass_repo(*, readonly: bool = False, writer: str | None = None,
              unless: str | None = None):
    """Open the Repo for a command: the command gets (obj, repo, its parameters...), and
    the Repo is closed when it returns. `readonly`: a reader's connection, never waiting
    on a writer. `writer`: the command writes, as `writer` (the name another command
    waiting on it is told); it runs holding the writer lock, waiting for it if the
    command's --wait option is given. `unless`: the name of a flag (--dry-run) with which
    the command only reads, as with `readonly`."""

    def decorate(command):
        @click.pass_obj
        @functools.wraps(command)
        def run(obj: Context, *args, **kwargs):
            wait = kwargs.pop("wait") if writer is not None else False
            host = kwargs.pop("host", None)  # host_option: another host's history
            reading = readonly or (unless is not None and kwargs[unless])
            with Repo.open(obj.paths, readonly=reading, host=host) as repo:
                if writer is None or reading:
                    return command(obj, repo, *args, **kwargs)
                with repo.writer(wait=wait, what=writer):
                    return command(obj, repo, *args, **kwargs)

        return run

    return decorate


# For commands that read history (pass_repo(readonly=True)): read another host's instead.
host_option = click.option(
    "--host", metavar="NAME|ID",
    help="Another host's history, from its catalog copy in the shared vault (see 'btfs "
         "hosts'); content is read from the vault.")


class LazyGroup(click.Group):
    """A group whose commands come from COMMANDS, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module = importlib.import_module(f"{__package__}.{where[0]}")
        return getattr(module, where[1])


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="BTFS_CONFIG",
              help="Configuration file [default: $XDG_CONFIG_HOME/btfs/config.toml; "
                   "env BTFS_CONFIG].")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress.")
@click.version_option(__version__, prog_name="btfs")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: int, quiet: bool) -> None:
    """btfs: personal backups you can browse.

    \b
    Quick start:
      btfs init --vault ~/btfs-vault
      btfs track ~/notes ~/photos
      btfs backup
      btfs mount ~/backups          # then: ls ~/backups/by-time/latest

    Exit codes: 0 ok, 1 error, 2 bad usage, 3 partial (a backup could not read some
    files, a restore could not restore some), 4 another backup is running, 5 check found
    problems or repair left damage.
    """
    setup_logging(verbose, quiet)
    ctx.obj = Context(xdg_paths(config_file), verbose, quiet)


def _terminate(signum, frame) -> None:
    # systemd stops a unit with SIGTERM: unwind like Ctrl-C, so a backup rolls back its
    # open transaction and marks its snapshot interrupted instead of just vanishing.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = cli.main(args=argv, prog_name="btfs", standalone_mode=False)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C (and our SIGTERM) into Abort.
        click.echo("btfs: interrupted", err=True)
        code = 130
    except BtfsError as e:
        click.echo(f"btfs: error: {e}", err=True)
        code = e.exit_code
    except OSError as e:
        # An OS error that reached here names a path the user gave us (or our own files):
        # one line, not a traceback, and its paths (often bytes) as text, never b'...'.
        where = "".join(f": {display_path(f) if isinstance(f, bytes | str) else f}"
                        for f in (e.filename, e.filename2) if f is not None)
        click.echo(f"btfs: error: {e.strerror or e}{where}", err=True)
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else 0)
