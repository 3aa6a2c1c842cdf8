"""Another host's history on this machine: its catalog copy in the shared vault, fetched
into this machine's cache and opened read-only (`btfs mount --host`, `btfs log --host` ...).

The copy lives in `<cache dir>/hosts/<host id>/`: `catalog.db` and the pages.State of the
generation it was rebuilt from. Each open brings it up to the vault's newest generation:
nothing is read when the cached generation is the newest; when it is in the newest
generation's chain, only the deltas after it are downloaded and applied to a copy of the
cached file; otherwise (a new base since, or the cache is gone or damaged) the newest sound
generation is rebuilt whole (fetch.fetch_catalog). Either way the result is verified
against the manifest's `file_digest` before it replaces the cached file, atomically: a
mount of the older file keeps reading its own inode. The file is opened with SQLite's
`immutable` flag, so it is never changed in place, not even by SQLite's -wal and -shm.

Content is read from the vault this machine already uses: every host of a vault stores
its chunks there. Never writes to the vault; the config it returns is read-only (writing
commands refuse). Concurrent opens of the same host (a mount and a `btfs log`) take turns
on a lock file in that directory.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import config as config_mod
from ..catalog import Catalog
from ..config import Config, Paths
from ..errors import BtfsError, VaultError
from ..vault import Vault
from .fetch import HostCopy, check_host_choice, fetch_catalog, list_hosts, rebuild
from .objects import CopyDamaged, generations
from .pages import State, load_state, save_state

log = logging.getLogger(__name__)

HOSTS_DIR = "hosts"  # in the cache dir: one directory per host id


@dataclass(frozen=True)
class HostView:
    """Another host's history, ready to open: `paths.catalog` is its cached copy (and
    `paths.lock` a lock no writer ever takes), `config` this machine's vault settings with
    that host's id and tracked directories, read-only."""

    host: HostCopy
    paths: Paths
    config: Config
    key: str  # of the generation `paths.catalog` was rebuilt from
    generation: int
    how: str  # 'cached', 'delta' or 'whole': what bringing the copy up to date took
    downloaded: int  # bytes of generation objects read from the vault


def host_view(paths: Paths, config: Config, vault: Vault, wanted: str) -> HostView | None:
    """The history of host `wanted` (a name, an id or a unique id prefix) from its copy,
    brought up to date; None when `wanted` is this host (its own catalog is newer than
    any copy). A one-line BtfsError naming the vault's hosts when none matches."""
    hosts = list_hosts(vault)
    if not hosts:
        raise BtfsError(f"vault {vault.url} holds no catalog copy of any host yet")
    host = check_host_choice(hosts, wanted)
    if host.host_id == config.host_id:
        return None
    data_dir = paths.cache_dir / HOSTS_DIR / host.host_id
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _turn(data_dir):
        state, how, downloaded = update_copy(vault, host.host_id, data_dir)
    theirs = config_mod.from_dict({**host.manifest.get("config", {}), "host_id": host.host_id,
                                   "vault": config.vault}, f"the config of host {host.name}")
    view_config = config_mod.with_changes(config, host_id=host.host_id, tracked=theirs.tracked,
                                          read_only=True)
    return HostView(host, Paths(paths.config_file, data_dir, paths.cache_dir), view_config,
                    state.key, state.number, how, downloaded)


def refresh(view: HostView, vault: Vault) -> HostView | None:
    """The copy brought up to date again (a mount that follows the host); None when the
    newest generation is still the one `view` was opened at. Cheap then: one listing."""
    gens = generations(vault, view.config.host_id)
    if not gens or gens[-1].key == view.key:
        return None
    with _turn(view.paths.data_dir):
        state, how, downloaded = update_copy(vault, view.config.host_id, view.paths.data_dir)
    if state.key == view.key:
        return None
    return dataclasses.replace(view, key=state.key, generation=state.number, how=how,
                               downloaded=downloaded)


def update_copy(vault: Vault, host_id: str, data_dir: Path) -> tuple[State, str, int]:
    """Bring `data_dir`'s copy of `host_id`'s catalog up to the newest sound generation;
    (its state, how: 'cached' | 'delta' | 'whole', bytes downloaded)."""
    gens = generations(vault, host_id)
    if not gens:
        raise VaultError(f"vault {vault.url} holds no catalog copy of host {host_id}")
    head = gens[-1]
    catalog = data_dir / "catalog.db"
    state = load_state(data_dir) if catalog.exists() else None
    if state is not None and state.key == head.key:
        return state, "cached", 0
    tmp = data_dir / f"catalog.db.{os.getpid()}.tmp"
    try:
        done = _apply_newer(vault, head, state, catalog, tmp) if state is not None else None
        if done is not None:
            (_, result), how = done, "delta"
            new = State(head.key, head.number, result)
            applied = {g.key for g in gens if g.number > state.number}
            downloaded = sum(g.size for g in gens if g.key in applied)
        else:
            fetched = fetch_catalog(vault, host_id, tmp)
            gen, how = fetched.generation, "whole"
            new = State(gen.key, gen.number, fetched.scan)
            downloaded = sum(g.size for g in gens if g.key in
                             {*fetched.manifest["chain"], gen.key})
        _migrate(tmp)
        os.replace(tmp, catalog)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    save_state(data_dir, new)
    log.info("catalog copy of host %s: generation %d (%s, %d bytes downloaded)", host_id,
             new.number, how, downloaded)
    return new, how, downloaded


def _apply_newer(vault: Vault, head, state: State, catalog: Path, tmp: Path):
    """The cached file brought to `head` by applying only the deltas after it, into
    `tmp`: (manifest, scan); None when that cannot be done (then the caller fetches whole)."""
    try:
        shutil.copyfile(catalog, tmp)
        return rebuild(vault, head, tmp, have=state.key)
    except (CopyDamaged, VaultError, OSError) as e:
        log.info("catalog copy of host %s: fetching generation %d whole (%s)", head.host_id,
                 head.number, e)
        tmp.unlink(missing_ok=True)
        return None


def _migrate(path: Path) -> None:
    """A copy published by an older btfs gets this btfs's indexes and tables now, once
    (the file is opened `immutable` afterwards); a no-op for a current one."""
    Catalog(path, readonly=True).close()


class _turn:
    """An exclusive lock on `data_dir/fetch.lock` while a copy is brought up to date."""

    def __init__(self, data_dir: Path):
        self._path = data_dir / "fetch.lock"
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        os.close(self._fd)
