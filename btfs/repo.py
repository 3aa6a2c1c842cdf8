"""The service layer's front door: config + catalog + vault (+ writer lock) opened together.

The CLI, the mount and tests open a `Repo` and call into `btfs.engine` with it. Reading
commands use `Repo.open(readonly=True)` and never wait on a writer; writing commands use
`Repo.open()` inside `repo.writer()`, which holds the lock.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

from . import config as config_mod
from .catalog import Catalog
from .config import Config, Paths
from .errors import BtfsError, VaultError
from .lock import WriterLock
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
        catalog = Catalog(paths.catalog, readonly=readonly)
        vault = open_vault(cfg.vault)
        repo = cls(paths, cfg, catalog, vault)
        repo.check_vault_matches()
        return repo

    def check_vault_matches(self) -> None:
        ident = self.vault.identity()
        if ident is None:
            raise VaultError(f"vault {self.vault.url} is missing or not initialized "
                             "(is it mounted?)")
        expected = self.catalog.get_meta("vault_id")
        if expected != ident.vault_id:
            raise VaultError(f"vault {self.vault.url} is not the one this catalog belongs to")

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
            clean = getattr(self.vault, "clean_tmp", None)
            if clean:
                clean()
            yield
        finally:
            lock.release()
