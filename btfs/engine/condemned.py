"""Condemned records: the vault objects by which a prune in a shared vault says "these
packs are to be deleted" (the rules are btfs.engine.prune_shared's).

Key: ``prune/condemned/<condemned_ns:020d>-<host_id>-<random>``; bytes: JSON with the
condemning host, the time and the pack names. A record is put create-only and whole and
never rewritten: a record whose packs change is replaced by a new one (same time, the
packs left) before the old one is deleted, so a reader never misses a pack still
condemned. Reading them is one LIST and one GET per record (few: one per prune run that
condemned something, gone once its packs are deleted).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

from ..errors import VaultError
from ..vault import Vault

log = logging.getLogger(__name__)

PREFIX = "prune/condemned/"
_KEY = re.compile(r"^prune/condemned/(\d{20})-(.+)-([0-9a-f]{16})$")


@dataclass(frozen=True)
class Record:
    key: str
    host_id: str  # the host whose prune condemned the packs
    condemned_ns: int  # when (that host's clock)
    packs: tuple[str, ...]
    # New packs the prune that condemned them copied their live chunks into (a repack):
    # a host that learned those before the record finds its chunks there (sync_condemned).
    moved_to: tuple[str, ...] = ()


def put_record(vault: Vault, host_id: str, condemned_ns: int, packs: list[str],
               moved_to: list[str] | tuple[str, ...] = ()) -> Record:
    """A new record condemning `packs`, durable when this returns."""
    key = f"{PREFIX}{condemned_ns:020d}-{host_id}-{os.urandom(8).hex()}"
    body = {"host_id": host_id, "condemned_ns": condemned_ns, "packs": sorted(packs),
            "moved_to": sorted(moved_to)}
    vault.put(key, json.dumps(body).encode())
    return Record(key, host_id, condemned_ns, tuple(sorted(packs)), tuple(sorted(moved_to)))


def read_records(vault: Vault) -> list[Record]:
    """Every record in the vault, oldest first. One that cannot be read whole is an
    error (VaultError): a pack it names might be taken for live and deduplicated
    against, so the caller must not go on without it."""
    records = []
    for key, _ in vault.list(PREFIX):
        m = _KEY.match(key)
        if m is None:
            continue
        try:
            body = json.loads(vault.get(key))
            packs = tuple(str(p) for p in body["packs"])
            moved_to = tuple(str(p) for p in body.get("moved_to", ()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise VaultError(f"{key} is not a readable condemned record") from None
        records.append(Record(key, m[2], int(m[1]), packs, moved_to))
    return sorted(records, key=lambda r: r.key)


def condemned_packs(records: list[Record]) -> dict[str, int]:
    """pack name -> when it was first condemned."""
    marks: dict[str, int] = {}
    for r in records:
        for name in r.packs:
            marks[name] = min(marks.get(name, r.condemned_ns), r.condemned_ns)
    return marks


def rewrite(vault: Vault, record: Record, keep: set[str]) -> None:
    """Leave condemned only the packs of `record` in `keep`: a new record with them (same
    time), then the old one deleted; nothing new when none is left."""
    left = [p for p in record.packs if p in keep]
    if len(left) == len(record.packs):
        return
    if left:
        put_record(vault, record.host_id, record.condemned_ns, left, record.moved_to)
    vault.delete(record.key)
