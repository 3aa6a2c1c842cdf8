"""Mirrors: the `[[mirror]]` tables of the config, other vaults that `btfs sync` keeps a
copy of the main vault in (btfs.replica.sync).

`add` refuses, with one line and nothing changed, what cannot work: a name in use or
badly formed, the main vault or another mirror again, a place that cannot be reached or
written, a directory whose parent is missing (an unmounted disk: a mirror is never made
on the disk it stands for), a place holding something else. On success the mirror holds
the main vault's identity, so it is claimed at once. `remove` only edits the config: the
mirror's data stays where it is.
"""

from __future__ import annotations

import os

from . import config as config_mod
from .config import MIRROR_NAME, Config, Mirror, Paths
from .errors import BtfsError, UsageError
from .userpath import is_under
from .vault import IDENTITY_KEY, Vault, normalize_url, open_vault, vault_kind


def open_mirror(paths: Paths, config: Config, mirror: Mirror) -> Vault:
    return open_vault(mirror.url, mirror.s3_settings(config.s3), paths.cache_dir)


def find(config: Config, name: str) -> Mirror:
    """The mirror called `name`; UsageError naming the known ones if there is none."""
    mirror = config.mirror(name)
    if mirror is None:
        known = ", ".join(m.name for m in config.mirrors) or "none configured"
        raise UsageError(f"no mirror named {name!r} (mirrors: {known})")
    return mirror


def add(paths: Paths, mirror: Mirror) -> Mirror:
    """Check `mirror` (see the module), claim its place and save it in the config."""
    cfg = config_mod.load(paths)
    if not MIRROR_NAME.match(mirror.name):
        raise UsageError(f"mirror name {mirror.name!r}: use letters, digits, '.', '_' and '-'")
    if cfg.mirror(mirror.name) is not None:
        raise UsageError(f"a mirror named {mirror.name!r} exists already "
                         f"({cfg.mirror(mirror.name).url})")
    url = normalize_url(mirror.url)
    if (mirror.endpoint or mirror.region or mirror.profile) and vault_kind(url).name != "s3":
        raise UsageError("--endpoint, --region and --profile are for s3:// mirrors only")
    if mirror.endpoint and not mirror.endpoint.startswith(("http://", "https://")):
        raise UsageError("--endpoint must be an http:// or https:// URL")
    _check_place(cfg, url)
    mirror = config_mod.with_changes(mirror, url=url)
    cfg = config_mod.with_changes(cfg, mirrors=(*cfg.mirrors, mirror))
    config_mod.validate(cfg, str(paths.config_file))
    main = open_vault(cfg.vault, cfg.s3, paths.cache_dir)
    vault = open_mirror(paths, cfg, mirror)
    try:
        _claim(main, vault)
    finally:
        vault.close()
        main.close()
    config_mod.save(paths, cfg)
    return mirror


def _check_place(cfg: Config, url: str) -> None:
    if url == normalize_url(cfg.vault):
        raise UsageError(f"{url} is the main vault; a mirror must be another place")
    for m in cfg.mirrors:
        if normalize_url(m.url) == url:
            raise UsageError(f"{url} is mirror {m.name!r} already")
    if not url.startswith("/"):
        return
    for other in [normalize_url(cfg.vault)] + [normalize_url(m.url) for m in cfg.mirrors]:
        if other.startswith("/") and (is_under(url, other) or is_under(other, url)):
            raise UsageError(f"{url} overlaps the vault {other}: a mirror must be a "
                             "directory of its own")
    if not os.path.isdir(os.path.dirname(url)):
        raise UsageError(f"{os.path.dirname(url)} does not exist (is the disk mounted?); "
                         "create it first")


def _claim(main: Vault, vault: Vault) -> None:
    """The mirror's place proved usable and given the main vault's identity."""
    ident = main.checked_identity()
    vault.check_access()
    theirs = vault.identity()
    if theirs is None:
        if vault.exists() and not vault.is_empty():
            raise BtfsError(f"{vault.url} is not empty and is not a btfs vault")
        try:
            vault.create()
        except OSError as e:
            raise BtfsError(f"cannot create {vault.url}: {e.strerror}") from None
        vault.put(IDENTITY_KEY, main.read_identity())
    elif theirs.vault_id != ident.vault_id:
        raise BtfsError(f"{vault.url} is another btfs vault (id {theirs.vault_id}), not a "
                        f"mirror of {main.url}")


def remove(paths: Paths, name: str) -> Mirror:
    """The config without mirror `name` (its data is left as it is)."""
    cfg = config_mod.load(paths)
    mirror = find(cfg, name)
    config_mod.save(paths, config_mod.with_changes(
        cfg, mirrors=tuple(m for m in cfg.mirrors if m.name != name)))
    return mirror
