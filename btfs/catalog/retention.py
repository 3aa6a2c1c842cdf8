"""The catalog's side of `btfs forget` and `btfs prune`: which rows go, in SQL.

Forget (see btfs.engine.forget for the rules in words) marks snapshots forgotten and drops
the versions no kept snapshot shows and the per-file safety net does not keep; prune finds
the chunks no content uses and the packs they leave (partly) dead, and moves or drops their
rows. Every writing method runs inside a transaction the caller began (catalog.writer's
`transaction()`; the caller holds the writer lock) and never opens one; none touches the
vault. The live set always comes from indexes (content_chunk,
version_by_snapshot, version_by_node), never from walking trees or reading BLOBs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .db import Database
from .model import NewChunk

log = logging.getLogger(__name__)

_NEVER = 1 << 62  # a snapshot id after every real one
# A pack's bytes besides its stored chunks (btfs.engine.pack): magic and trailer, and one
# index entry per chunk.
PACK_OVERHEAD = 8 + 24
INDEX_ENTRY = 48


@dataclass(frozen=True)
class ForgetCounts:
    snapshots: int  # backups forgotten now
    versions_dropped: int  # version rows deleted
    versions_kept: int  # versions only the safety net (keep_versions) keeps
    ghosts: int  # forgotten snapshots kept as the home of versions still needed
    contents_dropped: int  # contents no version uses any more


@dataclass(frozen=True)
class PackUse:
    """How much of a pack the catalog still uses."""

    id: int
    name: str
    size: int
    entries: int  # index entries the pack was written with (pack.chunks)
    live_bytes: int  # stored bytes of chunks some content uses; a codec group's stored
                     # form counts in proportion to its members' raw bytes that live
    live_chunks: int
    dead_chunks: int
    damaged: bool  # holds a live chunk known damaged: left as it is

    @property
    def unused(self) -> int:
        """Stored bytes no live chunk needs: dead chunks, dead members' share of their
        codec groups, the damaged copies of chunks healed elsewhere. The pack's own
        header, index and trailer are not unused."""
        return self.size - self.live_bytes - PACK_OVERHEAD - INDEX_ENTRY * self.entries


@dataclass(frozen=True)
class PackedChunk:
    """A chunk row of a pack being repacked: where its stored form is, and whether some
    content uses it."""

    id: int
    hash: bytes
    size: int
    offset: int
    stored_len: int
    live: bool


class RetentionStore:
    def __init__(self, db: Database):
        self.db = db

    # ---- forget -------------------------------------------------------------------------

    def forget(self, snapshot_ids: Iterable[int], keep_versions: int, now_ns: int
               ) -> ForgetCounts:
        """Forget these snapshots and drop every version that no longer matters.

        A version is needed while a kept snapshot shows it (the tree-at-S rule: a kept
        snapshot K with the version's snapshot <= K < the path's next version) or the
        safety net keeps it (one of the `keep_versions` newest distinct contents or
        targets of its path). Versions are never moved, so a version's name in by-file/
        and its hard-link group stay what they were; a forgotten snapshot that still holds
        needed versions stays as a ghost. Earlier ghosts are looked at again, since
        forgetting more can leave their versions unneeded."""
        db = self.db
        assert db.in_transaction, "forget runs in the writer's transaction"
        ids = sorted(set(snapshot_ids))
        db.execute("CREATE TEMP TABLE IF NOT EXISTS forget_id (id INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM forget_id")
        if ids:
            db.run_rows("INSERT INTO forget_id (id) VALUES {rows}", [(i,) for i in ids])
        forgotten = db.execute(
            "UPDATE snapshot SET forgotten_ns = ? WHERE id IN (SELECT id FROM forget_id) "
            "AND forgotten_ns IS NULL AND state != 'running' RETURNING id", (now_ns,)
        ).fetchall()
        # Each ghost with the first kept snapshot after it: one seek per ghost.
        db.execute("CREATE TEMP TABLE IF NOT EXISTS ghost "
                   "(id INTEGER PRIMARY KEY, next_kept INTEGER)")
        db.execute("DELETE FROM ghost")
        db.execute("INSERT INTO ghost (id, next_kept) SELECT g.id, (SELECT k.id FROM snapshot k "
                   "WHERE k.id > g.id AND k.forgotten_ns IS NULL ORDER BY k.id LIMIT 1) "
                   "FROM snapshot g WHERE g.forgotten_ns IS NOT NULL")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS drop_version "
                   "(id INTEGER PRIMARY KEY, node_id INTEGER, content_id INTEGER)")
        db.execute("DELETE FROM drop_version")
        # Shown by no kept snapshot: none after it, or the path changed again before the
        # first kept one (the next version's snapshot <= next_kept).
        db.execute(
            "INSERT INTO drop_version (id, node_id, content_id) "
            "SELECT v.id, v.node_id, v.content_id FROM ghost g "
            "JOIN version v INDEXED BY version_by_snapshot ON v.snapshot_id = g.id "
            "WHERE g.next_kept IS NULL OR g.next_kept >= coalesce("
            "(SELECT w.snapshot_id FROM version w WHERE w.node_id = v.node_id "
            "AND w.snapshot_id > g.id ORDER BY w.snapshot_id LIMIT 1), ?)", (_NEVER,))
        kept = self._keep_newest(keep_versions) if keep_versions else 0
        dropped = db.get_val("SELECT count(*) FROM drop_version")
        ghosts, contents = self._drop()
        for table in ("forget_id", "ghost", "drop_version", "drop_content"):
            db.execute(f"DELETE FROM {table}")
        return ForgetCounts(len(forgotten), dropped, kept, ghosts, contents)

    def _keep_newest(self, keep_versions: int) -> int:
        """Take the `keep_versions` newest distinct versions of each path out of
        drop_version (the safety net); how many it took out."""
        return len(self.db.execute(
            "DELETE FROM drop_version WHERE id IN ("
            " SELECT id FROM ("
            "  SELECT id, row_number() OVER (PARTITION BY node_id "
            "                                ORDER BY snapshot_id DESC) AS nr FROM ("
            "   SELECT v.id, v.node_id, v.snapshot_id, row_number() OVER ("
            "     PARTITION BY v.node_id, v.type, coalesce(v.content_id, v.target) "
            "     ORDER BY v.snapshot_id DESC) AS dup FROM version v "
            "   WHERE v.node_id IN (SELECT node_id FROM drop_version) "
            "   AND v.snapshot_id IS NOT NULL AND v.type IN ('file', 'symlink'))"
            "  WHERE dup = 1)"
            " WHERE nr <= ?) RETURNING id", (keep_versions,)).fetchall())

    def _drop(self) -> tuple[int, int]:
        """Delete the versions in drop_version, the ghosts left empty and the contents
        no version uses any more; (ghosts left, contents dropped)."""
        db = self.db
        db.execute("DELETE FROM version WHERE id IN (SELECT id FROM drop_version)")
        # node.head is the newest committed version that is left (NULL if none is): the
        # next backup compares the disk with it, and records a new version if they differ.
        db.execute(
            "UPDATE node SET head = (SELECT id FROM version WHERE node_id = node.id "
            "AND snapshot_id IS NOT NULL ORDER BY snapshot_id DESC LIMIT 1) "
            "WHERE id IN (SELECT node_id FROM drop_version)")
        db.execute("DELETE FROM snapshot WHERE forgotten_ns IS NOT NULL AND NOT EXISTS ("
                   "SELECT 1 FROM version WHERE snapshot_id = snapshot.id)")
        ghosts = db.get_val("SELECT count(*) FROM snapshot WHERE forgotten_ns IS NOT NULL")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS drop_content (id INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM drop_content")
        db.execute("INSERT OR IGNORE INTO drop_content (id) SELECT content_id FROM drop_version "
                   "WHERE content_id IS NOT NULL AND NOT EXISTS ("
                   "SELECT 1 FROM version v WHERE v.content_id = drop_version.content_id)")
        contents = db.get_val("SELECT count(*) FROM drop_content")
        db.execute("DELETE FROM content_chunk WHERE content_id IN (SELECT id FROM drop_content)")
        db.execute("DELETE FROM content WHERE id IN (SELECT id FROM drop_content)")
        return ghosts, contents

    # ---- prune --------------------------------------------------------------------------

    def pack_use(self) -> Iterator[PackUse]:
        """Every pack this host wrote, with how much of it is live, in pack id order. One
        aggregate query per pack along chunk_by_pack with a content_chunk probe per chunk:
        the sums are made in SQLite, so Python sees a row per pack, not per chunk (a
        million-file catalog holds millions of chunks; turning each into a Python row
        was most of planning's time), and the sort that groups a pack's chunks by stored
        form stays one pack's size."""
        damaged = self._damaged_packs()
        # Another host's pack (learned for dedup) is that host's to keep: never ours to
        # delete or repack, whatever this catalog still uses of it.
        packs = self.db.query("SELECT id, name, size, chunks FROM pack WHERE foreign_host = 0 "
                              "ORDER BY id")
        for pack_id, name, size, entries in packs:
            live_bytes, live, dead = self.db.get_row(_PACK_USE, (pack_id,))
            yield PackUse(pack_id, name, size, entries, live_bytes, live, dead,
                          pack_id in damaged)

    def _damaged_packs(self) -> set[int]:
        """Ids of the packs holding a live chunk known damaged (damaged_chunk is empty but
        after a check found damage)."""
        return {r[0] for r in self.db.query(
            "SELECT DISTINCT c.pack_id FROM damaged_chunk d JOIN chunk c ON c.id = d.chunk_id "
            "WHERE EXISTS (SELECT 1 FROM content_chunk cc WHERE cc.chunk_id = c.id)")}

    def pack_chunks(self, pack_id: int) -> list[PackedChunk]:
        """The chunk rows of a pack, by offset (members of a codec group share one)."""
        return [PackedChunk(*r[:5], bool(r[5])) for r in self.db.query(
            "SELECT c.id, c.hash, c.size, c.offset, c.stored_len, EXISTS (SELECT 1 FROM "
            "content_chunk cc WHERE cc.chunk_id = c.id) FROM chunk c INDEXED BY chunk_by_pack "
            "WHERE c.pack_id = ? ORDER BY c.offset, c.id", (pack_id,))]

    def dead_chunk_count(self) -> int:
        return self.db.get_val(
            "SELECT count(*) FROM chunk c WHERE NOT EXISTS ("
            "SELECT 1 FROM content_chunk cc WHERE cc.chunk_id = c.id)")

    def move_chunks(self, name: str, size: int, chunks: list[NewChunk], created_ns: int,
                    ids: dict[bytes, int]) -> None:
        """Record a new pack, durable in the vault, holding copies of existing chunks
        (`ids`: hash -> chunk id): their rows point at it from now on."""
        assert self.db.in_transaction, "move_chunks runs in the writer's transaction"
        self.db.execute("INSERT INTO pack (name, size, chunks, created_ns) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(name) DO NOTHING", (name, size, len(chunks), created_ns))
        pack_id = self.db.get_val("SELECT id FROM pack WHERE name = ?", (name,))
        self.db.run_rows(
            "UPDATE chunk SET pack_id = v.column2, offset = v.column3, stored_len = v.column4 "
            "FROM (VALUES {rows}) AS v WHERE chunk.id = v.column1",
            [(ids[c.hash], pack_id, c.offset, c.stored_len) for c in chunks])

    def retire_packs(self, pack_ids: list[int], now_ns: int) -> None:
        """These packs go from `pack` to `pack_garbage`, with the rows (and damaged marks)
        of the dead chunks still in them, in the caller's transaction: that commit is what
        makes deleting them safe. Every live chunk must have been moved out. Dead chunks
        in packs that stay keep their rows: the next prune still sees their bytes as
        unused, and a backup that meets one again may use it where it is."""
        assert self.db.in_transaction, "retire_packs runs in the writer's transaction"
        for start in range(0, len(pack_ids), 500):
            batch = pack_ids[start:start + 500]
            marks = ",".join("?" * len(batch))
            self.db.execute(f"DELETE FROM damaged_chunk WHERE chunk_id IN (SELECT id FROM "
                            f"chunk WHERE pack_id IN ({marks}))", batch)
            self.db.execute(f"DELETE FROM chunk WHERE pack_id IN ({marks})", batch)
            self.db.execute(
                "INSERT OR REPLACE INTO pack_garbage (name, size, dead_ns) "
                f"SELECT name, size, ? FROM pack WHERE id IN ({marks})", (now_ns, *batch))
            self.db.execute(f"DELETE FROM pack WHERE id IN ({marks})", batch)

    def garbage(self) -> list[tuple[str, int]]:
        """(name, size) of packs recorded dead. One whose name a backup has since stored
        again (same bytes, same name) is live again: its record goes, not the pack."""
        assert self.db.in_transaction, "garbage runs in the writer's transaction"
        self.db.execute("DELETE FROM pack_garbage WHERE name IN (SELECT name FROM pack)")
        return [(r[0], r[1]) for r in self.db.query(
            "SELECT name, size FROM pack_garbage ORDER BY dead_ns, name")]

    def deleted(self, names: list[str]) -> None:
        """These packs are gone from the vault."""
        assert self.db.in_transaction, "deleted runs in the writer's transaction"
        self.db.run_rows("DELETE FROM pack_garbage WHERE name IN (VALUES {rows})",
                         [(n,) for n in names])

    def temp_on_disk(self):
        """A block whose temporary data goes to files (Database.temp_on_disk): forget's
        and prune's transactions, whose deletes grow with the catalog. Outside any
        transaction."""
        return self.db.temp_on_disk()

    def free_fraction(self) -> float:
        """The share of the catalog file's pages that are free (what VACUUM gives back)."""
        pages = self.db.get_val("PRAGMA page_count")
        return self.db.get_val("PRAGMA freelist_count") / pages if pages else 0.0

    def vacuum(self) -> None:
        """Rewrite the catalog without its free pages, then empty the WAL VACUUM wrote
        the copy through. Outside any transaction. Its copy and index sorts go to
        temporary files (see temp_on_disk)."""
        assert not self.db.in_transaction, "VACUUM cannot run in a transaction"
        with self.db.temp_on_disk():
            self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# How much of one pack is live: (live stored bytes, live chunks, dead chunks). Chunks
# sharing an offset share one stored form (a codec group): it counts in proportion to its
# members' raw bytes that live (stored * live_raw / raw, rounded down as Python's //), in
# full when its raw size is 0, and not at all when nothing in it lives.
_PACK_USE = (
    "SELECT coalesce(sum(CASE WHEN raw = 0 THEN stored WHEN live_raw > 0 "
    "THEN stored * live_raw / raw ELSE 0 END), 0), coalesce(sum(live), 0), "
    "coalesce(sum(n - live), 0) FROM ("
    " SELECT max(stored_len) AS stored, sum(size) AS raw, sum(size * live) AS live_raw, "
    " sum(live) AS live, count(*) AS n FROM ("
    "  SELECT c.offset, c.stored_len, c.size, EXISTS (SELECT 1 FROM content_chunk cc "
    "  WHERE cc.chunk_id = c.id) AS live FROM chunk c INDEXED BY chunk_by_pack "
    "  WHERE c.pack_id = ?) GROUP BY offset)")
