"""Shell completion from the history: backup names and paths the history has held.

The scripts in contrib/completions ask `btfs` itself (click's completion protocol); the
functions here are the `shell_complete` callbacks of the options and arguments that name
a backup or a backed-up path. A completion never prints an error: no catalog, a bad config,
anything that fails means "nothing to offer", and the shell then completes files.
"""

from __future__ import annotations

import logging

import click
from click.shell_completion import CompletionItem

from ..errors import BtfsError
from ..repo import Repo, xdg_paths

log = logging.getLogger(__name__)


def _repo(ctx: click.Context) -> Repo:
    # Completion parses without running the group's callback: no ctx.obj, so the paths
    # come from the --config the command line holds (or its default).
    return Repo.open(xdg_paths(ctx.find_root().params.get("config_file")), readonly=True)


def complete_snapshots(ctx: click.Context, param: click.Parameter, incomplete: str
                   ) -> list[CompletionItem]:
    """Backup names (and `latest`) starting with what was typed."""
    try:
        with _repo(ctx) as repo:
            names = [*repo.snapshot_names(), "latest"]
    except (BtfsError, OSError):
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_paths(ctx: click.Context, param: click.Parameter, incomplete: str
                  ) -> list[CompletionItem]:
    """Paths the history has held (deleted ones too) starting with what was typed; the
    shell's own file completion when the history has none."""
    try:
        with _repo(ctx) as repo:
            paths = repo.complete_path(incomplete)
    except (BtfsError, OSError):
        paths = []
    if not paths:
        return [CompletionItem(incomplete, type="file")]
    return [CompletionItem(p) for p in paths]
