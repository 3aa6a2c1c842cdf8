"""`btfs sync`: copy a vault into a mirror (another vault, holding the same vault identity
since `btfs mirror add`, so a catalog of the main vault opens on the mirror as on the
main one): every pack and every catalog copy the mirror lacks, verified on the way,
never trusted.

What a mirror lacks is found by listing both sides (name and size): nothing the mirror
holds is read or sent again. Every object is checked before it is committed: a pack's
chunks are decoded and verified against their ids (from the pack's own index, so packs
of other hosts sharing the vault are verified too) and its bytes against its name; a
catalog generation object against the digest in its key. A damaged object is left out
and named; the others are still copied.

Order, so that a mirror is usable at every moment: packs, then catalog generations,
oldest first per host. The generations are listed before the packs:
a host publishes a generation only after its packs are durable, so every pack a listed
generation names is in the pack listing, and the mirror's newest catalog copy never names
a pack the mirror lacks. Objects are written once, atomically, through the mirror's own
create-only `writer()`; a sync killed at any moment leaves whole objects or none (the
temp files of dead writers go with the next run) and the rerun copies what is missing.

Every host's generations are copied, not only this host's: packs are shared by the
hosts of a vault, so a mirror is a copy of the whole vault and any of its hosts can be
recovered from it. Old generations are retired on the mirror by publish's rule.

Memory: one read run (RUN_BYTES, plus at most one stored chunk) per worker; a pack is
streamed into the mirror's writer (a temp file, or an S3 spool file), never held whole.
Only reads the source; worker threads copy objects, the caller's thread keeps the count.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .. import digest as digest_mod
from ..engine.codec import Codec
from ..engine.pack import MAGIC
from ..engine.packsync import read_pack_index
from ..errors import BtfsError, IntegrityError, VaultError
from ..vault import Vault
from .objects import generations, parse_key
from .publish import retire

log = logging.getLogger(__name__)

RUN_BYTES = 4 << 20  # bytes of an object read per range read
PASSES = 3  # see sync_vault
_HOST_RECORD = "host.json"


@dataclass
class SyncReport:
    """What one `btfs sync` of one mirror did."""

    name: str
    url: str
    packs_copied: int = 0
    catalog_copied: int = 0  # catalog generation objects and host records
    bytes_copied: int = 0
    skipped: int = 0  # objects the mirror held already
    skipped_bytes: int = 0
    packs_to_copy: int = 0  # what the listings said was missing (for progress)
    bytes_to_copy: int = 0
    vanished: int = 0  # listed in the source, deleted there (prune) before being copied
    retired: int = 0  # old catalog generations deleted on the mirror
    damaged: list[str] = field(default_factory=list)  # objects left out, and why
    error: str | None = None  # the sync stopped: this is why
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.damaged


def sync_vault(source: Vault, mirror: Vault, report: SyncReport, *, workers: int = 1,
               progress: Callable[[SyncReport], None] | None = None,
               stop: threading.Event | None = None) -> SyncReport:
    """Copy into `mirror` what it lacks of `source` (see the module), filling `report`.
    VaultError when the mirror cannot be used at all (another vault's, unreachable, a
    write failing); damaged objects go to `report.damaged` and do not stop it.

    A pass is run again (at most PASSES in all) when the source gained catalog
    generations while it ran: a prune publishes a generation before it deletes the packs
    the older ones name, so a pass whose generation listing stayed the same copied a
    newest generation whose packs were all there to copy.

    `stop` set (the daemon stopping) ends it between packs, before any catalog copy of
    the pass is copied: SyncStopped."""
    start = time.monotonic()
    _claim(source, mirror)
    mirror.clean_tmp()
    for number in range(PASSES):
        skipped = (report.skipped, report.skipped_bytes)
        stable = _pass(source, mirror, report, workers, progress, stop)
        if number:  # what a later pass finds there, an earlier one copied or counted
            report.skipped, report.skipped_bytes = skipped
        if stable:
            break
        log.info("the source gained catalog copies during the sync: another pass")
    for host_id in {g.host_id for g in generations(mirror)}:
        report.retired += retire(mirror, generations(mirror, host_id))
    report.seconds = time.monotonic() - start
    return report


def _pass(source: Vault, mirror: Vault, report: SyncReport, workers: int,
          progress: Callable[[SyncReport], None] | None, stop: threading.Event | None
          ) -> bool:
    """Packs, then the catalog objects listed before them; True when no generation
    appeared in the source meanwhile."""
    catalog_objects = sorted(source.list("hosts/"), key=_catalog_order)  # before packs
    packs = [(k, s) for k, s in source.list("packs/") if _is_pack_key(k)]
    missing = _missing(packs, dict(mirror.list("packs/")), report, "pack")
    report.packs_to_copy += len(missing)
    report.bytes_to_copy += sum(size for _, size in missing)

    def copied(key: str, size: int) -> None:
        report.packs_copied += 1
        report.bytes_copied += size
        if progress:
            progress(report)

    _run(missing, lambda k, s: _copy_pack(source, mirror, k, s), copied, report, workers,
         stop)
    listed = {k for k, _ in catalog_objects}
    stable = all(k in listed for k, _ in source.list("hosts/"))
    _copy_catalog(source, mirror, catalog_objects, report)
    return stable


def _claim(source: Vault, mirror: Vault) -> None:
    """Prove the mirror is a copy of `source` (`btfs mirror add` gave it the source's
    identity). A mirror without one is refused, never made here: a missing directory is
    most likely a disk that is not mounted, and must not be created on the disk below."""
    ident = source.checked_identity()
    theirs = mirror.checked_identity()
    if theirs.vault_id != ident.vault_id:
        raise VaultError(f"{mirror.url} is another btfs vault (id {theirs.vault_id}), not a "
                         f"mirror of {source.url}")


def _is_pack_key(key: str) -> bool:
    name = key[len("packs/"):]
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _catalog_order(item: tuple[str, int]) -> tuple:
    """Host records first, then each host's generations oldest first (the keys' numbers
    are zero-padded, so key order is generation order within a host)."""
    key = item[0]
    return (not key.endswith("/" + _HOST_RECORD), key)


def _missing(listed: list[tuple[str, int]], there: dict[str, int], report: SyncReport,
             what: str) -> list[tuple[str, int]]:
    """The objects of `listed` the mirror lacks; one it holds with another size is
    damaged there (objects are never rewritten, so it cannot be mended by a put)."""
    missing = []
    for key, size in listed:
        have = there.get(key)
        if have is None:
            missing.append((key, size))
        elif have != size:
            report.damaged.append(f"{what} {key} has {have:,} bytes on the mirror, "
                                  f"{size:,} in the source: damaged on the mirror (remove it "
                                  "there and sync again)")
        else:
            report.skipped += 1
            report.skipped_bytes += size
    return missing


def _run(items: list[tuple[str, int]], copy: Callable[[str, int], None],
         copied: Callable[[str, int], None], report: SyncReport, workers: int,
         stop: threading.Event | None) -> None:
    """copy(key, size) for each item on `workers` threads, at most 2 x workers queued
    (each holds a read run while it works); damage and vanished objects are counted, any
    other VaultError stops everything and is raised. With `stop` set, what is queued
    is finished and SyncStopped raised."""
    pending: dict = {}
    todo = iter(items)
    if stop is not None and stop.is_set():
        raise SyncStopped()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sync") as pool:
        try:
            while True:
                while len(pending) < 2 * max(1, workers):
                    if stop is not None and stop.is_set():
                        todo = iter(())
                    item = next(todo, None)
                    if item is None:
                        break
                    pending[pool.submit(copy, *item)] = item
                if not pending:
                    if stop is not None and stop.is_set():
                        raise SyncStopped()
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    key, size = pending.pop(future)
                    if _outcome(future, key, report):
                        copied(key, size)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _outcome(future, key: str, report: SyncReport) -> bool:
    """True when the object was copied; damage and vanished objects are counted."""
    try:
        future.result()
    except _Vanished:
        report.vanished += 1
        return False
    except IntegrityError as e:
        log.info("not copied to the mirror: %s", e)
        report.damaged.append(str(e))
        return False
    return True


class SyncStopped(BtfsError):
    """The sync was asked to stop; what it copied stays, the next sync goes on."""

    def __init__(self) -> None:
        super().__init__("stopped before it finished (the next sync goes on from there)",
                         exit_code=130)


class _Vanished(Exception):
    """An object listed in the source is gone from it (a prune deleted it meanwhile)."""


def _read(source: Vault, key: str, offset: int, length: int) -> bytes:
    try:
        return source.get(key, offset, length)
    except IntegrityError:
        raise
    except VaultError:
        if source.size(key) is None:
            raise _Vanished(key) from None
        raise


def _copy_pack(source: Vault, mirror: Vault, key: str, size: int) -> None:
    """Stream one pack into the mirror, every chunk verified and the whole against its
    name before it is committed; IntegrityError (naming the pack) if it does not verify."""
    name = key[len("packs/"):]
    try:
        chunks, _ = read_pack_index(source, key, size)
    except IntegrityError as e:
        raise IntegrityError(f"pack {name} is damaged in the source: {e}") from None
    except VaultError:
        if source.size(key) is None:
            raise _Vanished(key) from None
        raise
    forms: dict[tuple[int, int], list] = {}  # a group's members share one stored form
    for c in chunks:
        forms.setdefault((c.offset, c.stored_len), []).append(c)
    hasher = digest_mod.hasher()
    writer = mirror.writer()
    try:
        pos = 0
        for end, run in _runs(sorted(forms)):
            data = _read(source, key, pos, (size if end is None else end) - pos)
            if pos == 0 and data[:len(MAGIC)] != MAGIC:
                raise IntegrityError(f"pack {name} is damaged in the source: bad magic")
            for offset, length in run:
                if offset < pos:
                    raise IntegrityError(f"pack {name} is damaged in the source: its index "
                                         "entries overlap")
                _verify_form(name, data[offset - pos:offset - pos + length],
                             forms[(offset, length)])
            hasher.update(data)
            writer.write(data)
            pos += len(data)
        if hasher.hexdigest() != name:
            raise IntegrityError(f"pack {name} is damaged in the source: its bytes do not "
                                 "match its name")
        writer.commit(key)
    except BaseException:
        writer.abort()
        raise


def _verify_form(name: str, stored: bytes, members: list) -> None:
    """Decode one stored form for each chunk it holds (a group holds several)."""
    for c in members:
        try:
            Codec.decode(stored, c.hash, c.size)
        except IntegrityError as e:
            raise IntegrityError(f"pack {name} is damaged in the source: {e}") from None


def _runs(forms: list[tuple[int, int]]) -> list[tuple[int | None, list[tuple[int, int]]]]:
    """The stored forms (offset, length), in offset order, grouped into read runs of
    about RUN_BYTES: (where the run's read ends, its forms). The last run, with no end
    and no forms, reads the rest: the index and the trailer."""
    runs: list[tuple[int | None, list[tuple[int, int]]]] = []
    current: list[tuple[int, int]] = []
    start = end = 0
    for offset, length in forms:
        current.append((offset, length))
        end = max(end, offset + length)
        if end - start >= RUN_BYTES:
            runs.append((end, current))
            start, current = end, []
    if current:
        runs.append((end, current))
    runs.append((None, []))
    return runs


def _copy_catalog(source: Vault, mirror: Vault, listed: list[tuple[str, int]],
                  report: SyncReport) -> None:
    """Host records, then generation objects oldest first, each verified against the
    digest in its key; one at a time (they are few, and their order matters)."""
    there = dict(mirror.list("hosts/"))
    for key, size in _missing(listed, there, report, "catalog copy"):
        try:
            if key.endswith("/" + _HOST_RECORD):
                _copy_host_record(source, mirror, key, size)
            elif parse_key(key, size) is not None:
                _copy_generation(source, mirror, key, size)
            else:
                continue  # not an object of ours: left alone
        except _Vanished:
            report.vanished += 1
            continue
        except IntegrityError as e:
            log.info("not copied to the mirror: %s", e)
            report.damaged.append(str(e))
            continue
        report.catalog_copied += 1
        report.bytes_copied += size


def _copy_host_record(source: Vault, mirror: Vault, key: str, size: int) -> None:
    data = _read(source, key, 0, size)
    try:
        json.loads(data)["host_id"]
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{key} is damaged in the source") from None
    mirror.put(key, data)


def _copy_generation(source: Vault, mirror: Vault, key: str, size: int) -> None:
    expected = parse_key(key, size).digest
    hasher = digest_mod.hasher()
    writer = mirror.writer()
    try:
        for pos in range(0, size, RUN_BYTES):
            data = _read(source, key, pos, min(RUN_BYTES, size - pos))
            hasher.update(data)
            writer.write(data)
        if hasher.hexdigest() != expected:
            raise IntegrityError(f"catalog copy {key} is damaged in the source: its bytes do "
                                 "not match its name")
        writer.commit(key)
    except BaseException:
        writer.abort()
        raise
