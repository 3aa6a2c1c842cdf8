"""`btfs check`: is the catalog consistent, and does the vault hold what it refers to?

Without --read-data: catalog integrity, and every referenced pack exists with the size the
catalog recorded. With it: every pack is read whole (one at a time: memory stays at one
pack), its name checked against its digest, and every chunk decoded and verified. Packs
in the vault that the catalog does not know (left by a backup killed before its commit)
are reported but are not an error: nothing refers to them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import digest
from ..catalog import Catalog
from ..errors import BtfsError
from ..text import plural
from ..vault import Vault, pack_key
from . import codec

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    affected: list[tuple[bytes, int]] = field(default_factory=list)  # (path, snapshot id)
    packs: int = 0
    chunks_verified: int = 0
    bytes_read: int = 0
    unreferenced_packs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check(catalog: Catalog, vault: Vault, *, read_data: bool = False,
          progress: Callable[[int, int], None] | None = None) -> CheckReport:
    report = CheckReport()
    report.problems += catalog.integrity_problems()
    in_vault = dict(vault.list("packs/"))
    bad_chunks: set[int] = set()
    known = list(catalog.packs())
    for n, (name, size) in enumerate(known):
        report.packs += 1
        key = pack_key(name)
        actual = in_vault.pop(key, None)
        if actual is None:
            report.problems.append(f"pack {name} is missing from the vault")
            bad_chunks |= catalog.pack_chunk_ids(name)
        elif actual != size:
            report.problems.append(f"pack {name} has {plural(actual, 'byte')}, "
                                   f"the catalog says {size:,}")
            bad_chunks |= catalog.pack_chunk_ids(name)
        elif read_data:
            bad_chunks.update(_verify_pack(catalog, vault, name, report))
        if progress:
            progress(n + 1, len(known))
    report.unreferenced_packs = len(in_vault)
    if bad_chunks:
        report.affected = catalog.paths_using_chunks(bad_chunks)
    return report


def _verify_pack(catalog: Catalog, vault: Vault, name: str, report: CheckReport) -> set[int]:
    try:
        data = vault.get(pack_key(name))
    except BtfsError as e:
        report.problems.append(f"pack {name}: {e}")
        return catalog.pack_chunk_ids(name)
    report.bytes_read += len(data)
    bad = set()
    if digest.hexdigest(data) != name:
        report.problems.append(f"pack {name} does not match its name (damaged)")
    for chunk_id, chunk_hash, size, offset, stored_len in catalog.pack_chunks(name):
        try:
            codec.decode(data[offset:offset + stored_len], chunk_hash, size)
            report.chunks_verified += 1
        except BtfsError as e:
            report.problems.append(f"pack {name}: {e}")
            bad.add(chunk_id)
    return bad
