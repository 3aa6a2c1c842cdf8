"""Read a vault's catalog copies: which hosts it holds, and a host's catalog rebuilt from
its newest sound generation.

Every byte is verified before it is trusted: each object against the digest in its key,
the rebuilt file against the manifest's `file_digest`. A generation that fails (missing
chain object, damaged bytes, a different file) is skipped with a warning naming what was
wrong, and the one before is tried. Objects are streamed by range reads: memory stays
bounded whatever the catalog's size. Never writes to the vault.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import zstandard

from .. import digest as digest_mod
from ..errors import BtfsError, VaultError
from ..vault import Vault
from .objects import (
    FORMAT,
    MAGIC,
    MAX_MANIFEST,
    RECORD,
    CopyDamaged,
    Generation,
    generations,
    host_record_key,
    parse_key,
)
from .pages import Scan, scan

log = logging.getLogger(__name__)

READ_SIZE = 4 << 20  # bytes per range read of an object


@dataclass(frozen=True)
class HostCopy:
    """A host as its newest readable generation describes it."""

    host_id: str
    name: str
    generation: int | None  # None: no generation could be read
    last_backup_ns: int | None
    snapshots: int
    catalog_size: int
    manifest: dict


@dataclass(frozen=True)
class Fetched:
    generation: Generation
    manifest: dict
    scan: Scan  # of the rebuilt file: the state the next publish compares against
    skipped: tuple[str, ...]  # what was wrong with each newer generation


def list_hosts(vault: Vault) -> list[HostCopy]:
    """Every host with a catalog copy in the vault, by name then id; reads manifests only."""
    by_host: dict[str, list[Generation]] = {}
    for gen in generations(vault):
        by_host.setdefault(gen.host_id, []).append(gen)
    hosts = []
    for host_id, gens in by_host.items():
        manifest, number = {}, None
        for gen in reversed(gens):
            try:
                manifest = read_manifest(vault, gen)
            except (CopyDamaged, VaultError) as e:
                log.debug("host %s: %s", host_id, e)
                continue
            number = gen.number
            break
        facts = manifest.get("facts", {})
        hosts.append(HostCopy(host_id, manifest.get("host_name") or _record_name(vault, host_id),
                              number, facts.get("last_backup_ns"), facts.get("snapshots", 0),
                              manifest.get("page_size", 0) * manifest.get("page_count", 0),
                              manifest))
    return sorted(hosts, key=lambda h: (h.name, h.host_id))


def _record_name(vault: Vault, host_id: str) -> str:
    try:
        return json.loads(vault.get(host_record_key(host_id)))["name"]
    except (VaultError, ValueError, KeyError, TypeError):
        return "?"


def fetch_catalog(vault: Vault, host_id: str, dest: Path) -> Fetched:
    """Rebuild `host_id`'s catalog into `dest` (replaced) from the newest generation that
    verifies; VaultError when none does."""
    gens = generations(vault, host_id)
    if not gens:
        raise VaultError(f"vault {vault.url} holds no catalog copy of host {host_id}")
    skipped: list[str] = []
    for gen in reversed(gens):
        try:
            manifest, result = rebuild(vault, gen, dest)
        except (CopyDamaged, VaultError) as e:
            dest.unlink(missing_ok=True)
            log.warning("catalog copy generation %d of host %s is unusable (%s); trying the "
                        "one before", gen.number, host_id, e)
            skipped.append(f"generation {gen.number}: {e}")
            continue
        return Fetched(gen, manifest, result, tuple(skipped))
    raise VaultError(f"no catalog copy of host {host_id} in {vault.url} is complete and "
                     f"sound ({len(gens)} generations tried; newest: {skipped[0]})")


def rebuild(vault: Vault, gen: Generation, dest: Path, *,
            have: str | None = None) -> tuple[dict, Scan]:
    """Write the file generation `gen` stands for to `dest` and verify it whole.

    `have`: the key of a generation of `gen`'s chain that `dest` already holds; only the
    objects after it are applied (a delta holds the pages that differ from the generation
    before). CopyDamaged when `have` is not in the chain."""
    manifest = read_manifest(vault, gen)
    chain = [*manifest["chain"], gen.key]
    if have is not None:
        if have not in chain:
            raise CopyDamaged(f"{gen.key} is not built on {have}")
        chain = chain[chain.index(have) + 1:]
    page_size, page_count = manifest["page_size"], manifest["page_count"]
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | (0 if have else os.O_TRUNC), 0o600)
    with os.fdopen(fd, "r+b") as out:
        for key in chain:
            size = vault.size(key)
            link = parse_key(key, size or 0)
            if size is None or link is None or link.host_id != gen.host_id:
                raise CopyDamaged(f"{key}, which it is built on, is missing")
            _apply(vault, link, out, page_size)
        out.truncate(page_size * page_count)
        out.flush()
        os.fsync(out.fileno())
    result = scan(dest)
    if result.file_digest != manifest["file_digest"] or result.page_size != page_size:
        raise CopyDamaged(f"the rebuilt catalog of {gen.key} differs from the one published")
    return manifest, result


def read_manifest(vault: Vault, gen: Generation) -> dict:
    reader = _ObjectReader(vault, gen)
    manifest = _read_header(reader, gen)
    for field, want in (("host_id", gen.host_id), ("generation", gen.number),
                        ("kind", gen.kind)):
        if manifest.get(field) != want:
            raise CopyDamaged(f"{gen.key} says {field} {manifest.get(field)!r}")
    return manifest


def _read_header(reader: _ObjectReader, gen: Generation) -> dict:
    start = reader.read_exact(len(MAGIC) + 4)
    if start[:len(MAGIC)] != MAGIC:
        raise CopyDamaged(f"{gen.key} is not a catalog copy (bad magic)")
    length = int.from_bytes(start[len(MAGIC):], "big")
    if length > MAX_MANIFEST:
        raise CopyDamaged(f"{gen.key} has a damaged manifest length")
    try:
        manifest = json.loads(reader.read_exact(length))
    except (ValueError, UnicodeDecodeError):
        raise CopyDamaged(f"{gen.key} has a damaged manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CopyDamaged(f"{gen.key} has an unknown format (written by a newer btfs?)")
    return manifest


def _apply(vault: Vault, gen: Generation, out, page_size: int) -> None:
    """Write the pages of one object into `out`; its digest is checked before returning
    (the caller discards `out` on any failure)."""
    reader = _ObjectReader(vault, gen)
    manifest = _read_header(reader, gen)
    if manifest.get("page_size") != page_size:
        raise CopyDamaged(f"{gen.key} has another page size than its chain")
    record = RECORD.size + page_size
    written = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(reader, read_size=READ_SIZE,
                                                        closefd=False) as pages:
            while data := _read_full(pages, record):
                if len(data) != record:
                    raise CopyDamaged(f"{gen.key} ends inside a page")
                (number,) = RECORD.unpack_from(data)
                out.seek(number * page_size)
                out.write(memoryview(data)[RECORD.size:])
                written += 1
    except zstandard.ZstdError as e:
        raise CopyDamaged(f"{gen.key} is damaged ({e})") from None
    reader.read_rest()
    if reader.hexdigest() != gen.digest:
        raise CopyDamaged(f"{gen.key} is damaged (its digest does not match its name)")
    if written != manifest.get("pages"):
        raise CopyDamaged(f"{gen.key} holds {written} pages, not {manifest.get('pages')}")


def _read_full(stream, n: int) -> bytes:
    parts = []
    while n:
        data = stream.read(n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


class _ObjectReader(io.RawIOBase):
    """A vault object as a stream of range reads, digested as it is read."""

    def __init__(self, vault: Vault, gen: Generation):
        self._vault = vault
        self._gen = gen
        self._pos = 0
        self._hasher = digest_mod.hasher()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._gen.size - self._pos, READ_SIZE)
        if n <= 0:
            return 0
        data = self._vault.get(self._gen.key, self._pos, n)
        buffer[:n] = data
        self._hasher.update(data)
        self._pos += n
        return n

    def read_exact(self, n: int) -> bytes:
        data = _read_full(self, n)
        if len(data) != n:
            raise CopyDamaged(f"{self._gen.key} is truncated")
        return data

    def read_rest(self) -> None:
        while self.read(READ_SIZE):
            pass

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


def check_host_choice(hosts: list[HostCopy], wanted: str) -> HostCopy:
    """The host named `wanted` (an id, a unique id prefix, or a name)."""
    exact = [h for h in hosts if wanted in (h.host_id, h.name)]
    if not exact:
        exact = [h for h in hosts if h.host_id.startswith(wanted)]
    if len(exact) == 1:
        return exact[0]
    if not exact:
        raise BtfsError(f"no host {wanted!r} in the vault (it holds: "
                        f"{', '.join(f'{h.name} {h.host_id}' for h in hosts)})")
    raise BtfsError(f"{len(exact)} hosts match {wanted!r}: choose by id "
                    f"({', '.join(h.host_id for h in exact)})")
