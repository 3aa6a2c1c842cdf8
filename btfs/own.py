"""btfs's own places: what a backup never stores, and what cannot be tracked.

Tracking `~` with the vault in `~/btfs-vault` would otherwise store each backup's new packs
and the catalog's WAL again in the next one, and a btfs mount below `~` would be copied
into the backup it shows. So the vault and its mirrors (local ones), the data directory
(catalog, lock), the cache directory, every btfs mount (found in the mount table when a
backup starts, dead ones included) and the system's /proc, /sys, /dev and /run are left
out of every backup and `btfs status`, whatever is tracked. The scanner drops them from
their parent's listing: one lookup per directory, nothing per file.

`check_trackable` is `btfs track`'s rule: none of these, nor anything inside one, can be
tracked; a tracked directory may contain them. Reads the mount table; never writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from .config import Config, Paths
from .errors import UsageError
from .mounts import btfs_mounts
from .userpath import is_under
from .vault import normalize_url

# The kernel's and the running system's state, not files anyone restores; /proc and /sys
# are also endless or huge when read.
SYSTEM_DIRS = ("/proc", "/sys", "/dev", "/run")


@dataclass(frozen=True)
class OwnDir:
    path: str  # absolute, symlinks resolved
    what: str  # for the user: "the vault", "a btfs mount", ...


def vault_dir(config: Config) -> str | None:
    """The local vault's directory, symlinks resolved; None for a remote vault."""
    url = normalize_url(config.vault)
    return os.path.realpath(url) if url.startswith("/") else None


def data_dirs(paths: Paths, config: Config) -> list[OwnDir]:
    """The directories btfs writes its own files in: the vault, catalog and cache."""
    found = []
    vault = vault_dir(config)
    if vault:
        found.append(OwnDir(vault, "the vault"))
    for m in config.mirrors:  # a mirror's packs are the vault's again (btfs.mirrors)
        url = normalize_url(m.url)
        if url.startswith("/"):
            found.append(OwnDir(os.path.realpath(url), f"mirror {m.name}"))
    found.append(OwnDir(os.path.realpath(paths.data_dir), "btfs's catalog directory"))
    found.append(OwnDir(os.path.realpath(paths.cache_dir), "btfs's cache directory"))
    return found


def own_dirs(paths: Paths, config: Config) -> list[OwnDir]:
    """Every directory a backup leaves out, as of now."""
    found = [OwnDir(d, "the system's live state") for d in SYSTEM_DIRS]
    found += data_dirs(paths, config)
    # As the kernel names them (resolved): realpath would stat a dead one.
    found.extend(OwnDir(m, "a btfs mount") for m in btfs_mounts())
    return found


def never_backed_up(paths: Paths, config: Config) -> frozenset[bytes]:
    """The absolute paths (bytes, as the scanner builds them) a backup never stores."""
    return frozenset(os.fsencode(d.path) for d in own_dirs(paths, config))


def skipped_inside(paths: Paths, config: Config, dirs: Iterable[str]) -> list[OwnDir]:
    """btfs's own directories inside any of `dirs` (tracked directories)."""
    dirs = list(dirs)
    return [d for d in own_dirs(paths, config)
            if any(is_under(d.path, t) and d.path != t for t in dirs)]


def check_trackable(path: str, paths: Paths, config: Config) -> None:
    """Refuse (UsageError) a directory that must not be tracked. `path` is resolved."""
    for own in own_dirs(paths, config):
        if is_under(path, own.path):
            where = own.what if path == own.path else f"inside {own.what} ({own.path})"
            raise UsageError(f"cannot track {path}: it is {where}, which is never backed up")
