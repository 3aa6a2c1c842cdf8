"""The service layer's front door: config + catalog + vault (+ writer lock) opened together.

The CLI, the mount and tests open a `Repo` and call into `btfs.engine` with it. Reading
commands use `Repo.open(readonly=True)` and never wait on a writer; writing commands use
`Repo.open()` inside `repo.writer()`, which holds the lock.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from . import config as config_mod
from .catalog import Catalog, Snapshot
from .config import Config, Paths, S3Settings, TrackedDir
from .engine.running import snapshots_now
from .errors import BtfsError, UsageError, VaultError
from .lock import WriterLock
from .own import check_trackable, never_backed_up
from .text import display_path
from .userpath import to_catalog_path
from .vault import Vault, open_vault

log = logging.getLogger(__name__)


@dataclass
class Repo:
    paths: Paths
    config: Config
    catalog: Catalog
    vault: Vault

    @classmethod
    def open(cls, paths: Paths, *, readonly: bool = False) -> Repo:
        cfg = config_mod.load(paths)
        if not paths.catalog.exists():
            raise BtfsError(f"no catalog at {paths.catalog}: run 'btfs init' first")
        vault = open_vault(cfg.vault, cfg.s3, paths.cache_dir)
        try:
            # The format first: a catalog is migrated when opened for writing, and one of
            # a vault this btfs cannot read must be left as it is.
            ident = vault.checked_identity()
            catalog = Catalog(paths.catalog, readonly=readonly)
        except BaseException:
            vault.close()
            raise
        if catalog.get_meta("vault_id") != ident.vault_id:
            catalog.close()
            vault.close()
            raise VaultError(f"vault {vault.url} is not the one this catalog belongs to")
        return cls(paths, cfg, catalog, vault)

    def close(self) -> None:
        self.catalog.close()
        self.vault.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest first; one whose backup was killed is 'interrupted'
        (btfs.engine.running), even before the next writer marks it so."""
        return snapshots_now(self.catalog, WriterLock(self.paths.lock))

    @contextmanager
    def writer(self, *, wait: bool = False, what: str = "backup"):
        """Hold the writer lock; clear what a killed writer left behind."""
        lock = WriterLock(self.paths.lock)
        lock.acquire(wait=wait, what=what)
        try:
            with self.catalog.transaction():
                dead = self.catalog.mark_interrupted()
            if dead:
                log.info("snapshots %s were interrupted; their committed files are kept", dead)
            self.vault.clean_tmp()
            yield
        finally:
            lock.release()

    def backup(self, *, progress=None, limit_upload: int | None = None):
        """Run one backup; the caller holds `writer()`. `limit_upload` (bytes per second)
        overrides the config's s3.limit_upload for this run."""
        from .engine.backup import run_backup
        from .engine.store import ChunkStore

        if limit_upload is not None:
            self.vault.limit_upload(limit_upload)
        store = ChunkStore(self.catalog, self.vault, self.config.pack_size)
        try:
            stats = run_backup(self.catalog, store, self.config, progress=progress,
                               never=never_backed_up(self.paths, self.config))
        finally:
            store.close()
        policy = self.config.retention
        if policy is not None and policy.forget_after_backup:
            try:
                self.forget(policy)
            except BtfsError as e:  # the backup itself is done and committed
                log.warning("backup done, but forget_after_backup failed: %s", e)
        return stats

    def forget(self, policy=None, *, dry_run: bool = False):
        """Apply a retention policy (default: the config's [retention]); the caller holds
        `writer()` unless `dry_run`. Returns a ForgetReport."""
        from .engine.forget import forget

        policy = policy if policy is not None else self.config.retention
        if policy is None:
            raise UsageError("no retention rule: give --keep-... options or add a "
                             f"[retention] table to {self.paths.config_file}")
        return forget(self.catalog, policy, dry_run=dry_run)

    def prune(self, *, max_unused: float = 0.05, dry_run: bool = False, progress=None):
        """Delete dead packs and repack wasteful ones; the caller holds `writer()` unless
        `dry_run`. Returns a PruneReport."""
        from .engine.prune import prune

        return prune(self.catalog, self.vault, pack_size=self.config.pack_size,
                     level=self.config.compression_level, max_unused=max_unused,
                     dry_run=dry_run, progress=progress)

    def status(self, under: bytes | None = None):
        """What the next backup would record (everywhere, or only below `under`)."""
        from .engine.status import status

        return status(self.catalog, self.config, under,
                      never=never_backed_up(self.paths, self.config))

    def repair(self):
        """Store afresh the damaged chunks still found in files; the caller holds
        `writer()`. Returns a RepairReport."""
        from .engine.repair import repair
        from .engine.store import ChunkStore

        store = ChunkStore(self.catalog, self.vault, self.config.pack_size)
        try:
            return repair(self.catalog, store, self.config)
        finally:
            store.close()

    def check(self, *, read_data: bool = False, progress=None):
        """`btfs check`, and the damage it found recorded in the catalog (schema v6), so
        that the next backup and `btfs repair` store those chunks afresh. Returns a
        CheckReport.

        The check reads (a reader's connection, no lock: it may take hours with
        --read-data). Recording is a write, so it takes the writer lock, waiting for a
        running backup: a backup that does not know of the damage would only go on
        reusing the damaged chunks. The record is kept only for chunks that still lie
        where the check read them (Catalog.record_damage)."""
        from .engine.check import check

        report = check(self.catalog, self.vault, read_data=read_data, progress=progress)
        if report.damaged or report.sound:
            lock = WriterLock(self.paths.lock)
            lock.acquire(wait=True, what="check")
            try:
                with Catalog(self.paths.catalog) as catalog, catalog.transaction():
                    marked = catalog.record_damage(report.damaged, report.sound,
                                                   time.time_ns())
            finally:
                lock.release()
            log.info("recorded %d damaged chunks; %d known damaged verified", marked,
                     len(report.sound))
        return report


def init_repo(paths: Paths, vault_url: str,
              s3: S3Settings | None = None) -> tuple[Config, bool]:
    """Create config, catalog and vault; (config, created). Idempotent for the same vault.
    `s3` holds the settings an S3 vault is reached with (init's --endpoint and friends)."""
    from .vault import normalize_url, vault_kind

    url = normalize_url(vault_url)
    existing = None
    if paths.config_file.exists():
        existing = config_mod.load(paths)
        if normalize_url(existing.vault) != url:
            raise BtfsError(f"already initialized with vault {existing.vault}; refusing to "
                            f"switch to {url} (edit {paths.config_file} if you mean it)")
        if s3 is not None and s3 != existing.s3:
            raise BtfsError(f"already initialized; the [s3] settings differ from "
                            f"{paths.config_file} (edit it if you mean it)")
    if s3 is not None and s3 != S3Settings() and vault_kind(url).name != "s3":
        raise UsageError("--endpoint, --region and --profile are for s3:// vaults only")
    settings = existing.s3 if existing else (s3 or S3Settings())
    vault = open_vault(url, settings, paths.cache_dir)
    try:
        vault.check_access()
        ident = vault.identity()
        if ident is not None:
            vault.check_format(ident)
        catalog_exists = paths.catalog.exists()
        if existing and ident and catalog_exists:
            return existing, False
        if ident is None:
            if vault.exists() and not vault.is_empty():
                raise BtfsError(f"{url} is not empty and is not a btfs vault")
            vault.create()
            ident = vault.create_identity()
    finally:
        vault.close()
    paths.ensure()
    cfg = existing or Config(host_id=str(uuid.uuid4()), vault=url, s3=settings)
    with Catalog(paths.catalog) as catalog:
        known = catalog.get_meta("vault_id")
        if known is not None and known != ident.vault_id:
            raise BtfsError(f"catalog {paths.catalog} belongs to another vault")
        with catalog.transaction():
            catalog.set_meta("vault_id", ident.vault_id)
            catalog.set_meta("host_id", cfg.host_id)
    os.chmod(paths.catalog, 0o600)
    config_mod.save(paths, cfg)
    return cfg, True


def track_dirs(paths: Paths, dirs: list[str], excludes=(), includes=()) -> Config:
    """Add directories to the backup set (or update their patterns)."""
    cfg = config_mod.load(paths)
    tracked = list(cfg.tracked)
    for d in dirs:
        path = os.fsdecode(to_catalog_path(d, directory=True))
        if not os.path.isdir(path):
            raise UsageError(f"not a directory: {d}")
        check_trackable(path, paths, cfg)
        for t in tracked:
            if t.path != path and (path.startswith(t.path.rstrip("/") + "/")
                                   or t.path.startswith(path.rstrip("/") + "/")):
                raise UsageError(f"{display_path(path)} overlaps tracked directory "
                                 f"{display_path(t.path)}")
        entry = TrackedDir(path, tuple(excludes), tuple(includes))
        tracked = [entry if t.path == path else t for t in tracked]
        if entry not in tracked:
            tracked.append(entry)
    cfg = config_mod.with_changes(cfg, tracked=tuple(tracked))
    config_mod.save(paths, cfg)
    return cfg


def untrack_dirs(paths: Paths, dirs: list[str]) -> Config:
    cfg = config_mod.load(paths)
    wanted = {os.fsdecode(to_catalog_path(d, directory=True)) for d in dirs}
    missing = wanted - {t.path for t in cfg.tracked}
    if missing:
        raise UsageError(f"not tracked: {display_path(sorted(missing)[0])}")
    cfg = config_mod.with_changes(cfg, tracked=tuple(t for t in cfg.tracked
                                                     if t.path not in wanted))
    config_mod.save(paths, cfg)
    return cfg
