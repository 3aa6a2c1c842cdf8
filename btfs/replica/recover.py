"""`btfs recover`: set up a machine that has nothing (no config, no catalog) from a vault:
the chosen host's catalog rebuilt from its copy and verified, and its config written.

Without `read_only` the machine continues as that host (same host id: the next backup
adds to its history and publishes the next generation); with it, the config records
`read_only = true` and every writing command refuses. Never overwrites an existing
config or catalog, and writes the config last: a recovery killed half-way is not taken
for a finished one.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from .. import config as config_mod
from ..catalog import Catalog
from ..config import Config, Paths, S3Settings
from ..errors import BtfsError, ChooseHost, VaultError
from ..vault import normalize_url, open_vault
from .fetch import Fetched, HostCopy, check_host_choice, fetch_catalog, list_hosts
from .pages import State, save_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    host: HostCopy
    fetched: Fetched
    config: Config
    seconds: float


def recover(paths: Paths, vault_url: str, host: str | None = None, *,
            read_only: bool = False, s3: S3Settings | None = None) -> Recovered:
    """`s3`: how to reach an s3:// vault from this machine; the settings it gives
    (endpoint, region, profile) replace the host's recorded ones in the config written."""
    start = time.monotonic()
    for existing in (paths.config_file, paths.catalog):
        if existing.exists():
            raise BtfsError(f"btfs is already set up here ({existing} exists); recover is "
                            "for a machine without one: move it away first")
    url = normalize_url(vault_url)
    vault = open_vault(url, s3, paths.cache_dir)
    try:
        ident = vault.checked_identity()
        hosts = list_hosts(vault)
        if not hosts:
            raise VaultError(f"vault {url} holds no catalog copy (no host backed up into it "
                             "with a btfs that publishes one)")
        if host is not None:
            chosen = check_host_choice(hosts, host)
        elif len(hosts) > 1:
            raise ChooseHost(f"the vault holds {len(hosts)} hosts: choose one with "
                             "--host NAME|ID", hosts)
        else:
            chosen = hosts[0]
        paths.ensure()
        tmp = paths.catalog.with_name(paths.catalog.name + ".recover")
        try:
            fetched = fetch_catalog(vault, chosen.host_id, tmp)
            doc = {**fetched.manifest.get("config", {}), "host_id": chosen.host_id,
                   "vault": url}
            if read_only:
                doc["read_only"] = True
            # Recovered from a mirror: it is the vault now, no longer one of its mirrors.
            doc["mirror"] = [m for m in doc.get("mirror", []) if not isinstance(m, dict)
                             or normalize_url(str(m.get("url", ""))) != url]
            if s3 is not None:
                given = config_mod.to_dict(Config("", "", s3=s3)).get("s3", {})
                doc["s3"] = {**doc.get("s3", {}), **given}
            cfg = config_mod.from_dict(doc, f"the config in {fetched.generation.key}")
            with Catalog(tmp) as catalog:
                if catalog.history.get_meta("vault_id") != ident.vault_id:
                    raise VaultError(f"the catalog copy of host {chosen.host_id} belongs to "
                                     f"another vault than {url}")
            os.replace(tmp, paths.catalog)
        finally:
            tmp.unlink(missing_ok=True)
        # What the vault's copy holds: the next publish sends only the pages changed since.
        save_state(paths.data_dir, State(fetched.generation.key, fetched.generation.number,
                                         fetched.scan))
        config_mod.save(paths, cfg)
    finally:
        vault.close()
    return Recovered(chosen, fetched, cfg, time.monotonic() - start)
