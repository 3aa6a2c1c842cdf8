"""Vaults: where packs live. One registry maps a URL's scheme to the kind of vault it names;
`normalize_url` and `open_vault` are the only ways in, so a new kind is one entry here.

The S3 kind is imported only when an s3:// URL is opened: boto3 takes a while to import,
and a local vault's commands (and the mount's start) must not pay for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..config import S3Settings
from ..errors import ConfigError
from .base import IDENTITY_KEY, Vault, VaultIdentity, pack_key
from .local import LocalVault


@dataclass(frozen=True)
class VaultKind:
    name: str
    normalize: Callable[[str], str]  # the canonical URL stored in the config
    open: Callable[[str, S3Settings, Path], Vault]  # (normalized URL, settings, cache dir)


def _local_normalize(url: str) -> str:
    parsed = urlparse(url)
    path = parsed.path if parsed.scheme == "file" else url
    return os.path.abspath(os.path.expanduser(path))


def _s3_normalize(url: str) -> str:
    from .s3 import normalize_url as s3_normalize

    return s3_normalize(url)


def _s3_open(url: str, settings: S3Settings, cache_dir: Path) -> Vault:
    from .s3 import S3Vault

    return S3Vault(url, settings, cache_dir)


_LOCAL = VaultKind("local", _local_normalize, lambda url, settings, cache: LocalVault(url))
KINDS: dict[str, VaultKind] = {
    "": _LOCAL,
    "file": _LOCAL,
    "s3": VaultKind("s3", _s3_normalize, _s3_open),
}


def vault_kind(url: str) -> VaultKind:
    scheme = urlparse(url).scheme
    kind = KINDS.get(scheme)
    if kind is None:
        raise ConfigError(f"vault {url}: unknown scheme '{scheme}' (use a directory path "
                          "or s3://BUCKET/PREFIX)")
    return kind


def normalize_url(url: str) -> str:
    """The canonical form stored in the config: an absolute path for local vaults."""
    return vault_kind(url).normalize(url)


def open_vault(url: str, settings: S3Settings | None = None,
               cache_dir: Path | None = None) -> Vault:
    """The vault `url` names; `settings` and `cache_dir` matter to remote kinds only."""
    kind = vault_kind(url)
    if cache_dir is None:
        from ..config import xdg_paths

        cache_dir = xdg_paths().cache_dir
    return kind.open(kind.normalize(url), settings or S3Settings(), cache_dir)


__all__ = ["Vault", "VaultIdentity", "LocalVault", "open_vault", "normalize_url", "pack_key",
           "IDENTITY_KEY", "KINDS", "vault_kind"]
