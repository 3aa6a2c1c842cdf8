"""One generation of a host's catalog copy: a single immutable vault object.

Key: ``hosts/<host_id>/catalog/<generation:012d>-<kind>-<digest>``, kind ``base`` (every
page of the file) or ``delta`` (the pages that differ from the generation before), digest
the BLAKE3 of the object's bytes. Objects are put create-only and whole, so a reader sees
a generation complete or not at all; the newest generation that rebuilds and verifies is
the head. No object is ever rewritten, so there is no head pointer to leave half-written.

Bytes: MAGIC, a 4-byte big-endian length, the manifest as JSON (readable with two small
range reads, so listing hosts never downloads a catalog), then one zstd stream of records
(4-byte big-endian page number from 0, then the page). The manifest names the chain the
generation is rebuilt from (its base's key and the deltas' keys in order, itself last),
the page size and count of the resulting file, that file's BLAKE3 (`file_digest`), and
the facts `recover` lists (host name, last backup, snapshot count, catalog size) with the
host's config (without the vault URL; btfs's config holds no credentials).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass

from ..vault import Vault

MAGIC = b"btfs-catalog-copy\n"
FORMAT = 1
_LEN = struct.Struct(">I")
RECORD = struct.Struct(">I")  # the page number before each page
MAX_MANIFEST = 1 << 20  # a manifest is a few KiB (the config); more means damage

_KEY = re.compile(r"^hosts/([^/]+)/catalog/(\d{12})-(base|delta)-([0-9a-f]{64})$")


class CopyDamaged(Exception):
    """A generation that cannot be rebuilt: missing, damaged or incomplete (the message
    says which); the caller falls back to the generation before."""


@dataclass(frozen=True)
class Generation:
    """One generation object as listed in the vault."""

    key: str
    host_id: str
    number: int
    kind: str  # 'base' or 'delta'
    digest: str  # hex BLAKE3 of the object's bytes
    size: int


def catalog_prefix(host_id: str) -> str:
    return f"hosts/{host_id}/catalog/"


def host_record_key(host_id: str) -> str:
    return f"hosts/{host_id}/host.json"


def generation_key(host_id: str, number: int, kind: str, digest: str) -> str:
    return f"{catalog_prefix(host_id)}{number:012d}-{kind}-{digest}"


def parse_key(key: str, size: int) -> Generation | None:
    m = _KEY.match(key)
    if m is None:
        return None
    return Generation(key, m[1], int(m[2]), m[3], m[4], size)


def generations(vault: Vault, host_id: str | None = None) -> list[Generation]:
    """Every generation object of one host (or of all hosts), oldest first; equal numbers
    (two machines that ran as the same host) in key order."""
    found = (parse_key(key, size)
             for key, size in vault.list(catalog_prefix(host_id) if host_id else "hosts/"))
    return sorted((g for g in found if g is not None), key=lambda g: (g.host_id, g.number,
                                                                       g.key))


def header(manifest: dict) -> bytes:
    text = json.dumps(manifest, sort_keys=True).encode()
    return MAGIC + _LEN.pack(len(text)) + text

