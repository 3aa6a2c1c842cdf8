"""`btfs prune` in a vault shared by several hosts: a pack is deleted only after a grace
period and a later backup of every host, with no lock on the vault.

Each host's catalog is its own, but content is stored once for all (engine/packsync.py):
host B's snapshots may use chunks in packs host A wrote, and A's catalog cannot see
which. What every host uses is in its catalog copy in the vault (btfs.replica), so a
prune there works in two phases, each run doing both, the sweep of earlier runs' marks
after its own marking:

Mark (host A, holding its writer lock). A plans from its own catalog as on a vault of one
host (btfs.engine.prune), then fetches each other host's newest catalog copy (read-only,
into the cache dir; `fetch_catalog`) and leaves whole every one of its candidate packs
that another host uses a chunk of: it is neither deleted nor repacked (`held`). The
others are repacked or dropped as usual: live chunks are copied into new packs, durable
before one transaction points A's rows at them and moves the old packs to pack_garbage.
Nothing is deleted then: A writes a condemned record naming them (btfs.engine.condemned,
create-only) and publishes its catalog. A host whose copy cannot be read counts as using
everything: nothing is condemned while it is so.

Every backup, of every host, first reads the records (packsync.sync_condemned, also
without dedup_across_hosts) into its catalog (condemned_pack). A chunk in a condemned
pack is not counted as stored, as a damaged one: a backup that meets it stores it afresh
and the row moves to the new copy; a new pack of another host holding it (a repack's
copy) takes the row too, and so does a copy learned before the record was written (the
record names the repack's new packs: `moved_to`). The catalog copy published after that
backup lists the pack as condemned: the host's backups since it started know.

Sweep (any host's later prune, or the same run's). A condemned pack is deleted when
  (a) the grace period ([retention] prune_grace, default 24h) has passed since it was
      condemned: it covers clocks that differ between hosts and mounts and restores that
      read from a catalog older than the condemnation (they get EIO once it is gone,
      never other bytes: every chunk is verified against its hash as it is read);
  (b) every other host in the vault (hosts/<id>/, from its `btfs init` on) has a newest
      catalog copy that lists it as condemned: that host's current catalog was built by
      backups that started knowing, and a backup only ever adds references to chunks it
      counts as stored, so none of its later backups will use it while the record
      stands (a host whose first backup has not finished has no copy: it waits); and
  (c) no host's newest catalog (copies of the others, this host's own) uses a chunk in
      it. One that is used is given back by the host that condemned it (the record
      rewritten without it; the pack is its own again, to be condemned when no host uses
      it); another host's sweep leaves it waiting.
The pack is deleted first, then its record rewritten: a backup that reads the records
(before it looks at packs) sees the pack either still condemned or gone, and a catalog
that knew it condemned drops its rows once the record no longer names it and the pack is
gone (sync_condemned). A host that never backs up again blocks deletion (b) for ever:
prune lists what waits for which host. One backup of it (on a new machine: `btfs
recover --host` first) lets it go on; a host gone for good can only be let go by hand,
by removing hosts/<its id>/ from the vault, which also removes its catalog copies.
A host of an older btfs never lists a pack as condemned: nothing is deleted until it is
upgraded.

Same bytes, same name: a pack is a vault key, and a backup that stored afresh exactly a
condemned pack's chunks would "write" that very pack (a create-only put of an existing
key does nothing) and refer to it. Backups never seal a pack under the name of a
condemned pack or of one the catalog knows, repacks under a condemned one's
(PackBuilder.seal's `avoid`: a few bytes no index entry points at make another name); a
host that does not know the condemnation yet is covered by (b).

Kill -9 at any moment: packs condemned by no record yet are A's pack_garbage rows not
in any record, condemned by the next run (or known gone and dropped); a sweep killed
between deleting and rewriting leaves records naming gone packs, dropped by the next
sweep.

A vault with no other host and no record is pruned at once, as before (prune.py).

Runs in the prune's thread, holding the writer lock. Never deletes a pack no record
names, never deletes a record before the packs it stops naming are gone or given back,
and never writes into another host's catalog: other hosts learn only through the vault.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import Catalog
from ..errors import BtfsError, VaultError
from ..vault import Vault, pack_key
from .condemned import Record, condemned_packs, put_record, read_records, rewrite

log = logging.getLogger(__name__)

@dataclass
class Waiting:
    """Condemned packs not deleted yet, and why."""

    packs: int
    bytes: int
    reason: str


@dataclass
class SharedReport:
    other_hosts: list[str] = field(default_factory=list)  # "name (id)" of each
    held: int = 0  # packs this prune would free but another host uses: left whole
    held_bytes: int = 0
    condemned: int = 0  # packs condemned by this run
    condemned_bytes: int = 0
    given_back: int = 0  # condemned packs found in use: this host's again
    waiting: list[Waiting] = field(default_factory=list)


@dataclass
class OtherHost:
    host_id: str
    name: str
    catalog: Catalog | None  # its newest copy; None when it cannot be read
    problem: str = ""
    marks: dict[str, int] = field(default_factory=dict)  # the packs it knows condemned
    new: bool = False  # no copy yet: its first backup has not finished (uses nothing)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.host_id})"


def shared_hosts(vault: Vault, host_id: str) -> list[str]:
    """Ids of the other hosts in the vault: those with anything under hosts/."""
    ids = {key.split("/")[1] for key, _ in vault.list("hosts/") if key.count("/") >= 2}
    return sorted(ids - {host_id})


class SharedPrune:
    """The shared-vault side of one prune run (see the module); the caller holds the
    writer lock, and closes it."""

    def __init__(self, catalog: Catalog, vault: Vault, *, host_id: str, cache_dir: Path,
                 grace_s: int, others: list[str]):
        self.catalog, self.vault, self.host_id = catalog, vault, host_id
        self.grace_ns = grace_s * 1_000_000_000
        self.report = SharedReport()
        from ..replica.fetch import list_hosts

        names = {h.host_id: h.name for h in list_hosts(vault)} if others else {}
        self.others = [_fetch(vault, h, names.get(h, "?"), cache_dir / "prune-hosts")
                       for h in others]
        self.report.other_hosts = [o.label for o in self.others]
        # A repack's new pack must not have a condemned pack's bytes (PackBuilder.seal).
        self.avoid = set(condemned_packs(read_records(vault))).__contains__
        self.moved_to: list[str] = []  # this run's repack's new packs (prune sets it)

    def close(self) -> None:
        for other in self.others:
            if other.catalog is not None:
                other.catalog.close()

    def leave_held(self, dead: list, repack: list, report) -> tuple[list, list]:
        """`dead` and `repack` (PackUse) without the packs another host uses, counted in
        `report` (a PruneReport) as kept."""
        names = {u.name for u in dead + repack}
        held: set[str] = set()
        for other in self.others:
            if other.catalog is not None:
                held |= other.catalog.condemned.uses(names)
            elif not other.new:  # a copy it cannot read may use any of them
                held = names
        dead_names = {u.name for u in dead}
        for use in [u for u in dead + repack if u.name in held]:
            self.report.held += 1
            self.report.held_bytes += use.size
            if use.name in dead_names:
                report.dead_pack_bytes -= use.size
            else:
                report.repacked_bytes -= use.size
                report.copied_bytes -= use.live_bytes
            report.left_unused_bytes += use.unused
        return ([u for u in dead if u.name not in held],
                [u for u in repack if u.name not in held])

    def settle(self, report, step=lambda name: None) -> None:
        """Condemn what this host retired and no record names yet, then sweep every
        record (the module's rules), counting deletions in `report` (a PruneReport).
        `step` is prune's test hook."""
        records = read_records(self.vault)
        self._condemn_retired(records, step)
        self._sweep(read_records(self.vault), report, step)

    def _condemn_retired(self, records: list[Record], step) -> None:
        named = {p for r in records for p in r.packs}
        with self.catalog.writer.transaction():
            garbage = self.catalog.retention.garbage()
        todo, gone = [], []
        for name, size in garbage:
            if name in named:
                continue
            if self.vault.size(pack_key(name)) is None:
                gone.append(name)
            else:
                todo.append(name)
                self.report.condemned_bytes += size
        if todo:
            put_record(self.vault, self.host_id, time.time_ns(), todo, self.moved_to)
            self.report.condemned += len(todo)
            log.info("condemned %d packs: deleted once every host knows", len(todo))
            step("condemned")
        if gone:  # deleted by another host's sweep
            with self.catalog.writer.transaction():
                self.catalog.retention.deleted(gone)

    def _sweep(self, records: list[Record], report, step) -> None:
        """Long because the three rules, the give-back and the waiting reasons are one
        pass over the condemned packs that all of them share."""
        first: dict[str, int] = {}
        owners: dict[str, set[str]] = {}
        for r in records:
            for name in r.packs:
                first[name] = min(first.get(name, r.condemned_ns), r.condemned_ns)
                owners.setdefault(name, set()).add(r.host_id)
        now = time.time_ns()
        delete, give_back, unlisted = [], [], set()
        waits: dict[str, list[int]] = {}
        for name, since in sorted(first.items()):
            size = self.vault.size(pack_key(name))
            if size is None:
                unlisted.add(name)  # gone: a killed sweep's, or another's
                continue
            reason = self._reason(name, since, now, owners[name])
            if reason == "give back":
                give_back.append((name, size))
            elif reason:
                waits.setdefault(reason, []).append(size)
            else:
                delete.append((name, size))
        for n, (name, size) in enumerate(delete):
            self.vault.delete(pack_key(name))
            report.deleted_packs += 1
            report.deleted_bytes += size
            if n == 0:
                step("sweeping")
        self._give_back(give_back)
        done = unlisted | {n for n, _ in delete} | {n for n, _ in give_back}
        with self.catalog.writer.transaction():
            mine = [n for n in done if self.catalog.chunks.has_pack(n)]
            self.catalog.condemned.drop_vanished(
                [n for n in mine if n not in dict(give_back)], now)
            self.catalog.retention.deleted(sorted(done - {n for n, _ in give_back}))
        for r in records:
            rewrite(self.vault, r, {p for p in r.packs if p not in done})
        self.report.waiting = [Waiting(len(s), sum(s), why) for why, s in waits.items()]

    def _reason(self, name: str, since: int, now: int, owners: set[str]) -> str:
        """Why condemned pack `name` may not be deleted yet ('' if it may; 'give back'
        when it is in use and this host condemned it)."""
        users = [o.label for o in self.others
                 if o.catalog is not None and o.catalog.condemned.uses({name})]
        if self.catalog.condemned.uses({name}):
            users.append("this host")
        if users:
            if self.host_id in owners:
                return "give back"
            return f"in use by {users[0]}: the host that condemned it gives it back"
        if now - since < self.grace_ns:
            return "condemned less than prune_grace ago"
        for other in self.others:
            if other.catalog is None:
                return f"host {other.label} {other.problem}"
            if name not in other.marks:
                return f"host {other.label} has not backed up since it was condemned"
        return ""

    def _give_back(self, packs: list[tuple[str, int]]) -> None:
        """This host's condemned packs found in use: its own packs again."""
        from .packsync import read_pack_index

        for name, size in packs:
            chunks, _ = read_pack_index(self.vault, pack_key(name), size)
            with self.catalog.writer.transaction():
                self.catalog.condemned.adopt(name, size, chunks, time.time_ns())
            self.report.given_back += 1
            log.info("pack %s is in use by another host: kept", name[:12])


def _fetch(vault: Vault, host_id: str, name: str, cache: Path) -> OtherHost:
    """Another host's newest catalog copy, rebuilt into `cache` unless the file there is
    that generation already."""
    from ..replica.fetch import fetch_catalog
    from ..replica.objects import generations

    gens = generations(vault, host_id)
    if not gens:
        return OtherHost(host_id, name, None, "has no catalog copy yet (its first backup "
                         "has not finished)", new=True)
    cache.mkdir(parents=True, exist_ok=True)
    dest, stamp = cache / f"{host_id}.db", cache / f"{host_id}.generation"
    try:
        if not (dest.exists() and stamp.exists() and stamp.read_text() == gens[-1].key):
            stamp.unlink(missing_ok=True)
            fetched = fetch_catalog(vault, host_id, dest)
            stamp.write_text(fetched.generation.key)
        catalog = Catalog(dest, readonly=True)
        return OtherHost(host_id, name, catalog, marks=catalog.condemned.marks())
    except (VaultError, BtfsError) as e:
        return OtherHost(host_id, name, None, f"has a catalog copy that cannot be read ({e})")
