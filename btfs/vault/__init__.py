"""Vaults: where packs live. `open_vault` turns a config URL into an implementation."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from ..errors import ConfigError
from .base import IDENTITY_KEY, Vault, VaultIdentity, pack_key
from .local import LocalVault


def normalize_url(url: str) -> str:
    """The canonical form stored in the config: an absolute path for local vaults."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme == "file" else url
        return os.path.abspath(os.path.expanduser(path))
    if parsed.scheme == "s3":
        raise ConfigError(f"vault {url}: S3 vaults are not supported by this release yet")
    raise ConfigError(f"vault {url}: unknown scheme '{parsed.scheme}' (use a directory path)")


def open_vault(url: str) -> Vault:
    return LocalVault(normalize_url(url))


__all__ = ["Vault", "VaultIdentity", "LocalVault", "open_vault", "normalize_url", "pack_key",
           "IDENTITY_KEY"]
