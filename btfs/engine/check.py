"""`btfs check`: is the catalog consistent, and does the vault hold what it refers to?

Without --read-data: catalog integrity, every referenced pack exists with the size the
catalog recorded, and no chunk is known damaged. With it: every pack is read whole (one at
a time: memory stays at one pack), its name checked against its digest, and every chunk
decoded and verified. Packs in the vault that the catalog does not know (left by a backup
killed before its commit) are reported but are not an error: nothing refers to them.

The check itself only reads. What it found goes into the report as `damaged` (and
`sound`: chunks known damaged that verified at their place); `Repo.check` records that in
the catalog (schema v6), so that the next backup or `btfs repair` stores those chunks
afresh.
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
from .codec import Codec

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not a problem
    affected: list[tuple[bytes, int]] = field(default_factory=list)  # (path, snapshot id)
    packs: int = 0
    chunks_verified: int = 0
    bytes_read: int = 0
    unreferenced_packs: int = 0
    foreign_unused: int = 0  # packs of other hosts that no content of this catalog uses
    # (chunk id, pack name, problem) of chunks this check found damaged, not yet recorded.
    damaged: list[tuple[int, str, str]] = field(default_factory=list)
    # (chunk id, pack name) of chunks recorded damaged that verified where they lie now.
    sound: list[tuple[int, str]] = field(default_factory=list)
    # snapshot id -> name, for the snapshots listed above (filled by Repo).
    names: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(catalog: Catalog, vault: Vault, codec: Codec, *, read_data: bool = False,
          progress: Callable[[int, int], None] | None = None,
          known_damage: bool = True) -> CheckReport:
    """`known_damage=False` for a vault other than the one the catalog's damage records
    are about (a mirror, btfs.replica.sync): its copies may well be sound."""
    report = CheckReport()
    report.problems += catalog.chunks.integrity_problems()
    known = dict(catalog.chunks.damaged_problems()) if known_damage else {}
    in_vault = dict(vault.list("packs/"))
    bad_chunks: set[int] = set()
    packs = list(catalog.chunks.packs())
    foreign = catalog.chunks.foreign_packs()
    if foreign:
        # Packs other hosts wrote (engine/packsync.py) are this catalog's only where its
        # contents use them; the rest are the other hosts' to check (or prune).
        unused = foreign - catalog.chunks.packs_used()
        for name in unused:
            in_vault.pop(pack_key(name), None)
        packs = [(name, size) for name, size in packs if name not in unused]
        report.foreign_unused = len(unused)
    for n, (name, size) in enumerate(packs):
        report.packs += 1
        key = pack_key(name)
        actual = in_vault.pop(key, None)
        problem = None
        if actual is None:
            problem = f"pack {name} is missing from the vault"
        elif actual != size:
            problem = f"pack {name} has {plural(actual, 'byte')}, the catalog says {size:,}"
        if problem is not None:
            report.problems.append(problem)
            ids = catalog.chunks.pack_chunk_ids(name)
            bad_chunks |= ids
            report.damaged += [(i, name, problem) for i in ids if i not in known]
        elif read_data:
            bad_chunks.update(_verify_pack(catalog, vault, codec, name, known, report))
        if progress:
            progress(n + 1, len(packs))
    if not read_data:
        # Recorded by an earlier check and not stored again since: still damaged.
        for chunk_id, problem in known.items():
            if chunk_id not in bad_chunks:
                report.problems.append(f"known damaged (found by an earlier check): {problem}")
                bad_chunks.add(chunk_id)
    _condemned_note(vault, in_vault, report)
    report.unreferenced_packs = len(in_vault)
    if bad_chunks:
        report.affected = catalog.chunks.paths_using_chunks(bad_chunks)
    return report


def _condemned_note(vault: Vault, in_vault: dict[str, int], report: CheckReport) -> None:
    """Packs a prune condemned (btfs.engine.prune_shared) are not unreferenced leftovers:
    they leave `in_vault` for a note of their own."""
    from .condemned import condemned_packs, read_records

    try:
        names = condemned_packs(read_records(vault))
    except BtfsError as e:
        report.notes.append(f"condemned packs not counted: {e}")
        return
    keys = [pack_key(name) for name in names if pack_key(name) in in_vault]
    for key in keys:
        del in_vault[key]
    if keys:
        report.notes.append(f"{plural(len(keys), 'pack')} condemned by a prune of this "
                            "shared vault: deleted once every host has backed up since")


def _verify_pack(catalog: Catalog, vault: Vault, codec: Codec, name: str, known: dict[int, str],
                 report: CheckReport) -> set[int]:
    try:
        data = vault.get(pack_key(name))
    except BtfsError as e:
        problem = f"pack {name}: {e}"
        report.problems.append(problem)
        ids = catalog.chunks.pack_chunk_ids(name)
        report.damaged += [(i, name, problem) for i in ids if i not in known]
        return ids
    report.bytes_read += len(data)
    bad = set()
    for chunk_id, chunk_hash, size, offset, stored_len in catalog.chunks.pack_chunks(name):
        try:
            codec.decode(data[offset:offset + stored_len], chunk_hash, size)
            report.chunks_verified += 1
            if chunk_id in known:
                report.sound.append((chunk_id, name))
        except BtfsError as e:
            problem = f"pack {name}: {e}"
            report.problems.append(problem)
            bad.add(chunk_id)
            if chunk_id not in known:
                report.damaged.append((chunk_id, name, problem))
    if digest.hexdigest(data) != name:
        if bad:
            report.problems.append(f"pack {name} does not match its name (damaged)")
        else:
            # A chunk healed since (stored again elsewhere, its row moved) leaves its
            # damaged bytes here, where nothing refers to them any more.
            report.notes.append(f"pack {name} does not match its name, but every chunk the "
                                "catalog uses in it verified: the damage is in bytes no "
                                "backup refers to")
    return bad
