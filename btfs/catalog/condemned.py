"""The catalog's side of prune in a shared vault (btfs.engine.prune_shared): which packs
this host knows are condemned, and what is left of packs gone from the vault.

Writes run inside a transaction the caller began (the caller holds the writer lock);
reads also serve another host's catalog, fetched from its copy in the vault and opened
here only to be asked what it knows and what it uses. Never touches the vault.
"""

from __future__ import annotations

import logging

from .db import Database
from .model import NewChunk

log = logging.getLogger(__name__)

VANISHED = "its pack is gone from the vault (deleted by a prune of another host)"


class CondemnedPacks:
    def __init__(self, db: Database):
        self.db = db

    def marks(self) -> dict[str, int]:
        """pack name -> when it was condemned, for every pack this catalog knows is."""
        return {r[0]: r[1] for r in self.db.query(
            "SELECT name, condemned_ns FROM condemned_pack")}

    def set_marks(self, marks: dict[str, int]) -> tuple[int, int]:
        """Make the condemned packs exactly `marks` (name -> condemned_ns); (added,
        removed)."""
        assert self.db.in_transaction, "set_marks runs in the writer's transaction"
        old = self.marks()
        gone = [(name,) for name in old if name not in marks]
        new = [(name, ns) for name, ns in marks.items() if old.get(name) != ns]
        if gone:
            self.db.run_rows("DELETE FROM condemned_pack WHERE name IN (VALUES {rows})", gone)
        if new:
            self.db.run_rows("INSERT OR REPLACE INTO condemned_pack (name, condemned_ns) "
                             "VALUES {rows}", new)
        return len([n for n, _ in new if n not in old]), len(gone)

    def foreign_pack_names(self) -> set[str]:
        return {r[0] for r in self.db.query("SELECT name FROM pack WHERE foreign_host = 1")}

    def drop_vanished(self, names: list[str], now_ns: int) -> int:
        """Foreign packs `names` are gone from the vault: their chunk rows no content uses
        go (a backup must never count them as stored), with the pack row once empty. A
        chunk some content still uses (the rules of prune_shared make that a lost race
        or a foreign hand) keeps its row, marked damaged so that a backup stores it
        afresh and `check` names what it affects. Returns how many such chunks."""
        assert self.db.in_transaction, "drop_vanished runs in the writer's transaction"
        damaged = 0
        for name in names:
            pack_id = self.db.get_val("SELECT id FROM pack WHERE name = ?", (name,))
            unused = ("SELECT id FROM chunk c WHERE c.pack_id = ? AND NOT EXISTS ("
                      "SELECT 1 FROM content_chunk cc WHERE cc.chunk_id = c.id)")
            self.db.execute(f"DELETE FROM damaged_chunk WHERE chunk_id IN ({unused})",
                            (pack_id,))
            self.db.execute(f"DELETE FROM chunk WHERE id IN ({unused})", (pack_id,))
            left = self.db.execute(
                "INSERT OR IGNORE INTO damaged_chunk (chunk_id, found_ns, problem) "
                "SELECT id, ?, ? FROM chunk WHERE pack_id = ? RETURNING chunk_id",
                (now_ns, VANISHED, pack_id)).fetchall()
            damaged += len(left)
            if not self.db.get_val("SELECT EXISTS (SELECT 1 FROM chunk WHERE pack_id = ?)",
                                   (pack_id,)):
                self.db.execute("DELETE FROM pack WHERE id = ?", (pack_id,))
        if damaged:
            log.warning("%d chunks this catalog uses were in packs gone from the vault: "
                        "the next backup stores what it still finds afresh; run "
                        "'btfs check' to see what is affected", damaged)
        return damaged

    def uses(self, names: set[str]) -> set[str]:
        """Which of the packs `names` hold a chunk some content of this catalog uses."""
        used = set()
        for name in names:
            if self.db.get_val(
                    "SELECT EXISTS (SELECT 1 FROM pack p JOIN chunk c INDEXED BY chunk_by_pack "
                    "ON c.pack_id = p.id JOIN content_chunk cc ON cc.chunk_id = c.id "
                    "WHERE p.name = ?)", (name,)):
                used.add(name)
        return used

    # ---- this host's retired packs (pack_garbage) in a shared vault ------------------------

    def garbage_names(self) -> set[str]:
        """Packs this host's prune retired and has not deleted (few)."""
        return {r[0] for r in self.db.query("SELECT name FROM pack_garbage")}

    def adopt(self, name: str, size: int, chunks: list[NewChunk], now_ns: int) -> None:
        """Take back a retired pack found in use by another host: its own pack again
        (so a later prune condemns it once no host uses it), with rows for the chunks
        this catalog does not hold elsewhere."""
        assert self.db.in_transaction, "adopt runs in the writer's transaction"
        self.db.execute("DELETE FROM pack_garbage WHERE name = ?", (name,))
        if self.db.get_row_or_none("SELECT 1 FROM pack WHERE name = ?", (name,)):
            return
        self.db.execute("INSERT INTO pack (name, size, chunks, created_ns) VALUES (?, ?, ?, ?)",
                        (name, size, len(chunks), now_ns))
        pack_id = self.db.last_rowid()
        if chunks:
            self.db.run_rows("INSERT OR IGNORE INTO chunk (hash, size, pack_id, offset, "
                             "stored_len) VALUES {rows}",
                             [(c.hash, c.size, pack_id, c.offset, c.stored_len)
                              for c in chunks])
