"""ChunkIndex: where content lives — chunks, packs, contents, and the damaged-chunk records.

Its writes (add_pack, add_content, record_damage) run inside a transaction the caller began
(BackupWriter.begin or .transaction); they never open one, and never touch node or version
rows, so a writer's queued rows need not be sent before them. A `chunk` row is added only
for a pack that is already durable in the vault (the caller's promise, see engine/store.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from .db import Database, NoSuchRow
from .model import (
    ChunkRef,
    Content,
    NewChunk,
    PackChunk,
    StoredTotals,
    pack_ids,
    unpack_ids,
)
from .reads import History

log = logging.getLogger(__name__)

_IN_BATCH = 500  # ids per `IN (...)` query: under SQLite's limit on parameters
# A chunk row a backup may reuse is not in a pack a prune condemned. The subquery runs
# once per statement and walks condemned_pack first (CROSS JOIN keeps that order), which
# is empty but in a shared vault being pruned: the backup's lookups cost what they did.
_NOT_CONDEMNED = ("c.pack_id NOT IN (SELECT p.id FROM condemned_pack k "
                  "CROSS JOIN pack p ON p.name = k.name)")


def _unless_condemned(condemned: bool) -> str:
    # Leaving the clause out keeps the lookup on the covering hash index alone.
    return f" AND {_NOT_CONDEMNED}" if condemned else ""


class ChunkIndex:
    def __init__(self, db: Database, history: History):
        self.db = db
        self._history = history  # paths, for paths_using_chunks

    # ---- lookups (the backup's dedup) -----------------------------------------------------

    def chunk_id(self, chunk_hash: bytes) -> int | None:
        """The chunk's id, damaged or not (what a content refers to)."""
        row = self.db.get_row_or_none("SELECT id FROM chunk WHERE hash=?", (chunk_hash,))
        return row[0] if row else None

    def sound_chunk_id(self, chunk_hash: bytes, *, condemned: bool = True) -> int | None:
        """The chunk's id if it is stored and not known damaged nor in a condemned pack:
        what a backup may reuse. `condemned=False` when the caller knows no pack is (the
        query is then as cheap as it was before prune_shared)."""
        row = self.db.get_row_or_none(
            "SELECT c.id FROM chunk c LEFT JOIN damaged_chunk d ON d.chunk_id = c.id "
            "WHERE c.hash=? AND d.chunk_id IS NULL" + _unless_condemned(condemned),
            (chunk_hash,))
        return row[0] if row else None

    def stored_chunks(self, hashes: list[bytes], *, condemned: bool = True) -> set[bytes]:
        """Which of `hashes` (a few dozen: one query's parameters) are in the catalog and
        not known damaged nor in a condemned pack: such a chunk met again is stored afresh.
        `condemned` as for sound_chunk_id."""
        if not hashes:
            return set()
        marks = ",".join("?" * len(hashes))
        # One probe of damaged_chunk's primary key per chunk found (the table is empty
        # but after a check found damage).
        return {r[0] for r in self.db.query(
            "SELECT c.hash FROM chunk c LEFT JOIN damaged_chunk d ON d.chunk_id = c.id "
            f"WHERE c.hash IN ({marks}) AND d.chunk_id IS NULL" + _unless_condemned(condemned),
            hashes)}

    # ---- writes (inside the caller's transaction) ------------------------------------------

    def add_pack(self, name: str, size: int, chunks: list[NewChunk], created_ns: int
                 ) -> dict[bytes, int]:
        """Record a pack that is durable in the vault; returns chunk hash -> chunk id.

        A chunk that is known damaged keeps its row and id: the row is pointed at its new
        copy in this pack and its damaged mark goes, which heals every content (and so
        every snapshot) that uses it at once."""
        assert self.db.in_transaction, "add_pack runs in the writer's transaction"
        self.db.execute("INSERT INTO pack (name, size, chunks, created_ns) VALUES (?, ?, ?, ?)",
                        (name, size, len(chunks), created_ns))
        pack_id = self.db.last_rowid()
        damaged = self.damaged_chunks()
        healed: dict[bytes, int] = {}
        if damaged:
            by_hash = {h: cid for cid, h in damaged.items()}
            for c in chunks:
                cid = by_hash.get(c.hash)
                if cid is None:
                    continue
                self.db.execute("UPDATE chunk SET pack_id=?, offset=?, stored_len=? WHERE id=?",
                                (pack_id, c.offset, c.stored_len, cid))
                self.db.execute("DELETE FROM damaged_chunk WHERE chunk_id=?", (cid,))
                healed[c.hash] = cid
                log.info("chunk %s healed: stored again in pack %s", c.hash.hex()[:16],
                         name[:12])
            chunks = [c for c in chunks if c.hash not in healed]
        moved = self._move_condemned(pack_id, chunks)
        chunks = [c for c in chunks if c.hash not in moved]
        healed.update(moved)
        # Ids given here, so the rows go in as a few multi-row statements (see db.py).
        first = (self.db.get_val("SELECT max(id) FROM chunk") or 0) + 1
        if chunks:
            self.db.run_rows("INSERT INTO chunk (id, hash, size, pack_id, offset, stored_len) "
                             "VALUES {rows}",
                             [(first + i, c.hash, c.size, pack_id, c.offset, c.stored_len)
                              for i, c in enumerate(chunks)])
        return {**{c.hash: first + i for i, c in enumerate(chunks)}, **healed}

    def move_condemned_to(self, name: str, chunks: list[NewChunk]) -> int:
        """Pack `name` (known, read from its index: `chunks`) holds copies of chunks whose
        rows lie in condemned packs: they point at it from now on. How many moved."""
        assert self.db.in_transaction, "move_condemned_to runs in the writer's transaction"
        pack_id = self.db.get_val("SELECT id FROM pack WHERE name = ?", (name,))
        return len(self._move_condemned(pack_id, chunks))

    def _move_condemned(self, pack_id: int, chunks: list[NewChunk]) -> dict[bytes, int]:
        """Point the rows of `chunks` that lie in a condemned pack (a backup stored them
        afresh, or another host's new pack holds them) at their copy in pack `pack_id`,
        keeping their ids, so every content using them uses the copy; hash -> id of
        those moved. One probe of an empty table when nothing is condemned."""
        if not chunks or not self.db.get_val("SELECT EXISTS (SELECT 1 FROM condemned_pack)"):
            return {}
        where = {c.hash: c for c in chunks}
        found: dict[bytes, int] = {}
        hashes = list(where)
        for i in range(0, len(hashes), _IN_BATCH):
            batch = hashes[i:i + _IN_BATCH]
            found.update((r[1], r[0]) for r in self.db.query(
                f"SELECT c.id, c.hash FROM chunk c WHERE c.hash IN ({','.join('?' * len(batch))})"
                f" AND NOT ({_NOT_CONDEMNED})", batch))
        if found:
            self.db.run_rows(
                "UPDATE chunk SET pack_id = v.column2, offset = v.column3, "
                "stored_len = v.column4 FROM (VALUES {rows}) AS v WHERE chunk.id = v.column1",
                [(cid, pack_id, where[h].offset, where[h].stored_len)
                 for h, cid in found.items()])
        return found

    def has_pack(self, name: str) -> bool:
        return self.db.get_row_or_none("SELECT 1 FROM pack WHERE name=?", (name,)) is not None

    def add_foreign_pack(self, name: str, size: int, chunks: list[NewChunk],
                         created_ns: int) -> int:
        """Record a pack another host wrote into the shared vault (durable there: it is
        listed), from its index; its chunks this catalog does not know yet point at it,
        so a backup counts them as stored. Chunks already known keep their place. The
        row is kept even when nothing was new: it says the pack was read. A chunk known in
        a condemned pack moves here (a repack's copy). Returns how many chunks were
        learned."""
        assert self.db.in_transaction, "add_foreign_pack runs in the writer's transaction"
        self.db.execute("INSERT INTO pack (name, size, chunks, created_ns, foreign_host) "
                        "VALUES (?, ?, ?, ?, 1)", (name, size, len(chunks), created_ns))
        pack_id = self.db.last_rowid()
        if not self.db.get_row_or_none("SELECT 1 FROM condemned_pack WHERE name=?", (name,)):
            self._move_condemned(pack_id, chunks)
        if chunks:
            self.db.run_rows("INSERT OR IGNORE INTO chunk (hash, size, pack_id, offset, "
                             "stored_len) VALUES {rows}",
                             [(c.hash, c.size, pack_id, c.offset, c.stored_len)
                              for c in chunks])
        return self.db.get_val("SELECT count(*) FROM chunk WHERE pack_id=?", (pack_id,))

    def add_content(self, content_digest: bytes, size: int, chunk_ids: Iterable[int]) -> int:
        """The id of this content, added if new: one statement in the common (new) case,
        since the backup calls this for every file it reads."""
        assert self.db.in_transaction, "add_content runs in the writer's transaction"
        chunk_ids = list(chunk_ids)
        row = self.db.get_row_or_none(
            "INSERT INTO content (digest, size, chunks) VALUES (?, ?, ?) "
            "ON CONFLICT(digest) DO NOTHING RETURNING id",
            (content_digest, size, pack_ids(chunk_ids)))
        if row is None:
            return self.content_id(content_digest)
        if chunk_ids:  # the way back from its chunks, for prune (schema: content_chunk)
            self.db.run_rows("INSERT INTO content_chunk (chunk_id, content_id) VALUES {rows}",
                             [(chunk_id, row[0]) for chunk_id in set(chunk_ids)])
        return row[0]

    # ---- contents and where their chunks live ----------------------------------------------

    def content_id(self, content_digest: bytes) -> int | None:
        row = self.db.get_row_or_none("SELECT id FROM content WHERE digest=?",
                                      (content_digest,))
        return row[0] if row else None

    def content(self, content_id: int) -> Content:
        cid, content_digest, size, blob = self.db.get_row(
            "SELECT id, digest, size, chunks FROM content WHERE id=?", (content_id,))
        return Content(cid, content_digest, size, unpack_ids(blob))

    def content_refs(self, content_id: int) -> list[ChunkRef]:
        """Where each chunk of a file's content lives, in file order."""
        return self.chunk_refs(self.content(content_id).chunk_ids)

    def contents_refs(self, content_ids: Iterable[int]) -> dict[int, list[ChunkRef]]:
        """`content_refs` of many contents (a directory's files, for restore) in a few
        queries: one per _IN_BATCH contents and one per _IN_BATCH distinct chunks."""
        distinct = list(set(content_ids))
        chunks: dict[int, tuple[int, ...]] = {}
        for i in range(0, len(distinct), _IN_BATCH):
            batch = distinct[i:i + _IN_BATCH]
            for cid, blob in self.db.query(
                    f"SELECT id, chunks FROM content WHERE id IN ({','.join('?' * len(batch))})",
                    batch):
                chunks[cid] = unpack_ids(blob)
        missing = [cid for cid in distinct if cid not in chunks]
        if missing:
            raise NoSuchRow(f"content {missing[0]}")
        return self._refs_of(chunks)

    def _refs_of(self, chunk_lists: dict[int, tuple[int, ...]]) -> dict[int, list[ChunkRef]]:
        """chunk_refs of several lists of chunk ids in one go, under the same keys."""
        refs = iter(self.chunk_refs(i for ids in chunk_lists.values() for i in ids))
        return {key: [next(refs) for _ in ids] for key, ids in chunk_lists.items()}

    def chunk_refs(self, chunk_ids: Iterable[int]) -> list[ChunkRef]:
        """Where each chunk lives, in the order given (a chunk may repeat in a file): one
        query per _IN_BATCH distinct chunks, not one per chunk."""
        ids = list(chunk_ids)
        found: dict[int, ChunkRef] = {}
        distinct = list(set(ids))
        for i in range(0, len(distinct), _IN_BATCH):
            batch = distinct[i:i + _IN_BATCH]
            for r in self.db.query(
                    "SELECT c.id, c.hash, c.size, p.name, c.offset, c.stored_len FROM chunk c "
                    f"JOIN pack p ON p.id = c.pack_id WHERE c.id IN ({','.join('?' * len(batch))})",
                    batch):
                found[r[0]] = ChunkRef(*r[1:])
        try:
            return [found[i] for i in ids]
        except KeyError as e:
            raise NoSuchRow(f"chunk {e.args[0]}") from None

    def file_chunk_refs(self, version_id: int) -> list[ChunkRef] | None:
        """Where each chunk of a file version's content lives, in file order; None if the
        version is not a file. The mount's open, in two queries instead of 2 + chunks."""
        row = self.db.get_row_or_none(
            "SELECT v.type, c.chunks FROM version v LEFT JOIN content c ON c.id = v.content_id "
            "WHERE v.id = ?", (version_id,))
        if row is None or row[0] != "file":
            return None
        if row[1] is None:
            raise NoSuchRow(f"content of version {version_id}")
        return self.chunk_refs(unpack_ids(row[1]))

    def file_chunk_refs_from(self, version_id: int, count: int, max_chunks: int
                             ) -> dict[int, list[ChunkRef]]:
        """file_chunk_refs of the file versions among the `count` version ids from
        `version_id` on, in two queries: files opened in directory order (cp -a, tar) are
        mostly versions a backup wrote one after another. `version_id` itself is in
        if it is a file version with content; the others only while all their chunks add
        up to at most `max_chunks`. Only versions whose recorded size is their content's
        (all but a file that kept changing while a backup read it): the mount hands
        these whole to the kernel at open (btfs.fuse.ops), where the size must agree."""
        contents: dict[int, tuple[int, ...]] = {}
        total = 0
        for vid, chunks in self.db.query(
                "SELECT v.id, c.chunks FROM version v JOIN content c ON c.id = v.content_id "
                "WHERE v.id >= ? AND v.id < ? AND v.type = 'file' AND v.size = c.size "
                "ORDER BY v.id", (version_id, version_id + count)):
            ids = unpack_ids(chunks)
            if vid != version_id and total + len(ids) > max_chunks:
                continue
            contents[vid] = ids
            total += len(ids)
        return self._refs_of(contents)

    def chunks_after(self, chunk_hash: bytes, max_bytes: int) -> list[ChunkRef]:
        """The chunks stored after `chunk_hash` in its pack, in pack order, until their raw
        sizes add up to `max_bytes`: the mount's read-ahead along a pack (files read in
        directory order were mostly stored one after another)."""
        refs, total = [], 0
        for r in self.db.query(
                "SELECT c.hash, c.size, p.name, c.offset, c.stored_len FROM chunk c "
                "JOIN pack p ON p.id = c.pack_id "
                "WHERE c.pack_id = (SELECT pack_id FROM chunk WHERE hash = ?) "
                "AND c.id > (SELECT id FROM chunk WHERE hash = ?) ORDER BY c.id",
                (chunk_hash, chunk_hash)):
            refs.append(ChunkRef(*r))
            total += r[1]
            if total >= max_bytes:
                break
        return refs

    def group_members(self, ref: ChunkRef) -> list[ChunkRef]:
        """The chunks stored at the same place as `ref` (the members of its group, `ref`
        among them), in pack order: a backup records a group's members one after another,
        so two short scans of the pack's index from `ref`'s row find them, each stopping at
        the first chunk stored elsewhere. Empty if `ref` is not in the catalog."""
        row = self.db.get_row_or_none("SELECT id, pack_id FROM chunk WHERE hash = ?",
                                      (ref.hash,))
        if row is None:
            return []
        chunk_id, pack_id = row
        place = (ref.offset, ref.stored_len)
        sql = ("SELECT hash, size, offset, stored_len FROM chunk WHERE pack_id = ? "
               "AND id {} ? ORDER BY id {}")
        before = []
        for r in self.db.query(sql.format("<", "DESC"), (pack_id, chunk_id)):
            if (r[2], r[3]) != place:
                break
            before.append(ChunkRef(r[0], r[1], ref.pack, r[2], r[3]))
        members = before[::-1]
        for r in self.db.query(sql.format(">=", "ASC"), (pack_id, chunk_id)):
            if (r[2], r[3]) != place:
                break
            members.append(ChunkRef(r[0], r[1], ref.pack, r[2], r[3]))
        return members

    # ---- packs (check) ----------------------------------------------------------------------

    def packs(self) -> Iterator[tuple[str, int]]:
        """(name, size) of every pack, by name."""
        return ((r[0], r[1]) for r in self.db.query("SELECT name, size FROM pack ORDER BY name"))

    def foreign_packs(self) -> set[str]:
        """Names of the packs learned from other hosts (few per pack written: a set)."""
        return {r[0] for r in self.db.query("SELECT name FROM pack WHERE foreign_host = 1")}

    def packs_used(self) -> set[str]:
        """Names of the packs holding a chunk of some content of this catalog: one pass
        over the contents, one query per _IN_BATCH chunk references."""
        used: set[str] = set()
        batch: list[int] = []

        def flush() -> None:
            distinct = list(set(batch))
            used.update(r[0] for r in self.db.query(
                "SELECT DISTINCT p.name FROM chunk c JOIN pack p ON p.id = c.pack_id "
                f"WHERE c.id IN ({','.join('?' * len(distinct))})", distinct))
            batch.clear()

        for (blob,) in self.db.query("SELECT chunks FROM content"):
            batch.extend(unpack_ids(blob))
            if len(batch) >= _IN_BATCH:
                flush()
        if batch:
            flush()
        return used

    def totals(self) -> StoredTotals:
        """How much the vault holds against what it stands for (the status page)."""
        return StoredTotals(*self.db.get_row(
            "SELECT (SELECT count(*) FROM pack), (SELECT coalesce(sum(size), 0) FROM pack), "
            "(SELECT coalesce(sum(size), 0) FROM chunk), "
            "(SELECT coalesce(sum(size), 0) FROM content)"))

    def pack_chunk_ids(self, pack_name: str) -> set[int]:
        return {c.id for c in self.pack_chunks(pack_name)}

    def pack_chunks(self, pack_name: str) -> list[PackChunk]:
        """Every chunk in a pack, by offset."""
        new = tuple.__new__
        return [new(PackChunk, r) for r in self.db.query(
            "SELECT c.id, c.hash, c.size, c.offset, c.stored_len FROM chunk c "
            "JOIN pack p ON p.id = c.pack_id WHERE p.name=? ORDER BY c.offset", (pack_name,))]

    def integrity_problems(self) -> list[str]:
        """Catalog-internal inconsistencies, as sentences; empty when all is well."""
        problems = []
        for (message,) in self.db.query("PRAGMA integrity_check"):
            if message != "ok":
                problems.append(f"sqlite: {message}")
        for row in self.db.query("PRAGMA foreign_key_check"):
            problems.append(f"dangling reference in {row[0]} row {row[1]} to {row[2]}")
        checks = [
            ("versions of type 'file' without content",
             "SELECT count(*) FROM version WHERE type='file' AND content_id IS NULL"),
            ("nodes whose head is not their newest version",
             "SELECT count(*) FROM node n WHERE n.head IS NOT ("
             "SELECT id FROM version WHERE node_id=n.id AND snapshot_id IS NOT NULL "
             "ORDER BY snapshot_id DESC LIMIT 1)"),
        ]
        for label, sql in checks:
            if n := self.db.get_val(sql):
                problems.append(f"{label}: {n:,}")
        for cid, size, blob in self.db.query("SELECT id, size, chunks FROM content"):
            ids = unpack_ids(blob)
            total = 0
            for chunk_id in ids:
                row = self.db.get_row_or_none("SELECT size FROM chunk WHERE id=?", (chunk_id,))
                if row is None:
                    problems.append(f"content {cid} refers to missing chunk {chunk_id}")
                    break
                total += row[0]
            else:
                if total != size:
                    problems.append(f"content {cid} has size {size} but its chunks hold {total}")
        return problems

    # ---- damaged chunks ----------------------------------------------------------------------

    def damaged_chunks(self) -> dict[int, bytes]:
        """chunk id -> hash of every chunk known damaged (few: only what checks found)."""
        return {r[0]: r[1] for r in self.db.query(
            "SELECT c.id, c.hash FROM damaged_chunk d JOIN chunk c ON c.id = d.chunk_id")}

    def damaged_problems(self) -> list[tuple[int, str]]:
        """(chunk id, the problem a check recorded) of every chunk known damaged."""
        return [(r[0], r[1]) for r in self.db.query(
            "SELECT chunk_id, problem FROM damaged_chunk ORDER BY chunk_id")]

    def record_damage(self, damaged: list[tuple[int, str, str]], sound: list[tuple[int, str]],
                      found_ns: int) -> int:
        """What a check found: `damaged` (chunk id, pack name, problem) are marked,
        `sound` (chunk id, pack name) that verified are unmarked; each only while the
        chunk still lies in that pack (a backup may have healed it since the check read
        it). Returns how many chunks were newly marked."""
        assert self.db.in_transaction, "record_damage runs in the writer's transaction"
        before = self.db.get_val("SELECT count(*) FROM damaged_chunk")
        for chunk_id, pack, problem in damaged:
            self.db.execute(
                "INSERT OR IGNORE INTO damaged_chunk (chunk_id, found_ns, problem) "
                "SELECT c.id, ?, ? FROM chunk c JOIN pack p ON p.id = c.pack_id "
                "WHERE c.id = ? AND p.name = ?", (found_ns, problem, chunk_id, pack))
        after = self.db.get_val("SELECT count(*) FROM damaged_chunk")
        for chunk_id, pack in sound:
            self.db.execute(
                "DELETE FROM damaged_chunk WHERE chunk_id = ? AND chunk_id IN ("
                "SELECT c.id FROM chunk c JOIN pack p ON p.id = c.pack_id WHERE p.name = ?)",
                (chunk_id, pack))
        return after - before

    def paths_using_chunks(self, chunk_ids: set[int], limit: int = 1000
                           ) -> list[tuple[bytes, int]]:
        """(path, snapshot id) of versions whose content includes any of `chunk_ids`."""
        affected = []
        for cid, blob in self.db.query("SELECT id, chunks FROM content"):
            if chunk_ids.intersection(unpack_ids(blob)):
                for node_id, snapshot_id in self.db.query(
                        "SELECT node_id, snapshot_id FROM version WHERE content_id=?", (cid,)):
                    affected.append((self._history.node_path(node_id), snapshot_id))
                    if len(affected) >= limit:
                        return affected
        return affected
