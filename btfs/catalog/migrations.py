"""The catalog's history: MIGRATIONS[i] takes a catalog from format i to i + 1.

The schema version lives in SQLite's `user_version`. A new catalog is made from schema.py
(the current schema, whole) and stamped with the newest format; an older one is brought up
to date here, one migration per transaction. Never edit a released migration: append one,
and change schema.py to match (tests/test_catalog.py builds a catalog both ways and
compares them, so the two cannot drift). The comments below are as each migration was
written; schema.py's are the true ones today.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from .db import Database

log = logging.getLogger(__name__)

SCHEMA_V1 = """
-- Catalog-wide facts: 'vault_id' (must match the vault's own id), 'host_id'.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every path btfs has ever seen, as a tree. Names are raw bytes so that names which are
-- not valid UTF-8 survive; the full path is the names from the root joined with '/'.
CREATE TABLE node (
    id     INTEGER PRIMARY KEY,          -- 1 is '/', the root; ids are never reused
    parent INTEGER REFERENCES node(id),  -- NULL only for the root
    name   BLOB NOT NULL,                -- one path component; b'' for the root
    head   INTEGER                       -- newest committed version.id of this path, NULL
                                         -- until the first one (no FK: set after insert)
);
CREATE UNIQUE INDEX node_by_parent ON node(parent, name);

-- One row per backup run.
CREATE TABLE snapshot (
    id            INTEGER PRIMARY KEY,
    host_id       TEXT NOT NULL,       -- config host_id of the machine that made it
    started_ns    INTEGER NOT NULL,    -- wall clock at start, ns since the epoch (UTC)
    finished_ns   INTEGER,             -- NULL while running, or forever if interrupted
    state         TEXT NOT NULL        -- running: in progress (or killed: see below)
                  CHECK (state IN ('running', 'complete', 'partial', 'interrupted')),
                                       -- complete: every tracked entry was recorded
                                       -- partial: some entries could not be read
                                       -- interrupted: the process died; what it committed
                                       --   is valid, unrecorded paths keep older versions
    files_new     INTEGER NOT NULL DEFAULT 0,  -- paths that got their first version
    files_changed INTEGER NOT NULL DEFAULT 0,  -- paths with a new version
    files_deleted INTEGER NOT NULL DEFAULT 0,  -- paths marked deleted
    entries       INTEGER NOT NULL DEFAULT 0,  -- entries in the tree at this snapshot
    bytes_read    INTEGER NOT NULL DEFAULT 0,  -- source bytes read (changed files only)
    bytes_added   INTEGER NOT NULL DEFAULT 0,  -- bytes written to the vault (packs)
    errors        INTEGER NOT NULL DEFAULT 0   -- entries skipped because of errors
);

-- Immutable objects in the vault holding chunks; see btfs.engine.pack for the format.
CREATE TABLE pack (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,  -- hex SHA-256 of the pack's bytes; its vault key
    size       INTEGER NOT NULL,      -- bytes; `check` compares it with the vault's
    chunks     INTEGER NOT NULL,      -- how many chunks it holds
    created_ns INTEGER NOT NULL
);

-- A deduplicated piece of file content.
CREATE TABLE chunk (
    id         INTEGER PRIMARY KEY,
    hash       BLOB NOT NULL UNIQUE,  -- SHA-256 of the raw (uncompressed) bytes: its identity
    size       INTEGER NOT NULL,      -- raw length
    pack_id    INTEGER NOT NULL REFERENCES pack(id),
    offset     INTEGER NOT NULL,      -- where its stored form starts in the pack
    stored_len INTEGER NOT NULL       -- length of its stored form (codec byte + payload)
);
CREATE INDEX chunk_by_pack ON chunk(pack_id);

-- The content of a regular file, shared by every version with the same bytes.
CREATE TABLE content (
    id     INTEGER PRIMARY KEY,
    sha256 BLOB NOT NULL UNIQUE,  -- SHA-256 of the whole content
    size   INTEGER NOT NULL,
    chunks BLOB NOT NULL          -- chunk.id of each chunk in file order, packed as
                                  -- little-endian int64; empty for an empty file
);

-- The state of one path in the snapshot where it changed (see the invariants above).
CREATE TABLE version (
    id          INTEGER PRIMARY KEY,
    node_id     INTEGER NOT NULL REFERENCES node(id),
    snapshot_id INTEGER REFERENCES snapshot(id), -- NULL: staged by 'btfs add', committed by
                                                 -- the next backup (at most one per node)
    type        TEXT NOT NULL CHECK (type IN ('file', 'dir', 'symlink', 'deleted')),
    size        INTEGER NOT NULL,   -- st_size; 0 for 'deleted'
    mode        INTEGER NOT NULL,   -- st_mode including the type bits
    uid         INTEGER NOT NULL,
    gid         INTEGER NOT NULL,
    atime_ns    INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    ctime_ns    INTEGER NOT NULL,   -- not restorable; kept for change detection and display
    btime_ns    INTEGER,            -- birth time where the filesystem reports it, else NULL
    ino         INTEGER NOT NULL,   -- st_ino at backup: change detection, hard-link groups
    nlink       INTEGER NOT NULL,
    target      BLOB,               -- symlink target bytes; NULL otherwise
    xattrs      BLOB,               -- extended attributes, see btfs.engine.meta; NULL if none
    content_id  INTEGER REFERENCES content(id)  -- 'file' only
);
CREATE UNIQUE INDEX version_by_node ON version(node_id, snapshot_id);
CREATE INDEX version_by_snapshot ON version(snapshot_id);
CREATE INDEX version_by_content ON version(content_id);
"""

# v2: children in id order (an index entry carries the rowid). The mount pages directory
# listings by node id, which is stable and puts paths added later at the end.
SCHEMA_V2 = """
CREATE INDEX node_by_parent_id ON node(parent);
"""

# v3: hard-link groups. Files that shared an inode at a backup (same snapshot, same st_ino,
# nlink > 1) are shown as one inode by the mount. Partial, so it costs nothing for the
# vast majority of files that have a single link.
SCHEMA_V3 = """
CREATE INDEX version_hardlinks ON version(snapshot_id, ino) WHERE type = 'file' AND nlink > 1;
"""

# v4: the versions that carry extended attributes. Partial, so it holds only those: most
# trees have none, and then "does any backup have xattrs?" is one probe of an empty index.
# A mount of such a catalog tells the kernel it has no xattrs at all, which spares a
# listxattr and a getxattr round trip per file that `cp -a` would otherwise make.
SCHEMA_V4 = """
CREATE INDEX version_with_xattrs ON version(snapshot_id) WHERE xattrs IS NOT NULL;
"""

# v5: vault format 2 names chunks, contents and packs by BLAKE3 (btfs.digest) instead of
# SHA-256 (v1's comments say SHA-256; schema.py's are current). The content key's
# column now says what it holds without naming an algorithm. Digests cannot be converted
# without the data, so btfs refuses a format-1 vault before its catalog is opened
# (Repo.open): this runs on catalogs of format 2 only.
SCHEMA_V5 = """
ALTER TABLE content RENAME COLUMN sha256 TO digest;
"""

# v6: chunks known to be damaged. `btfs check` records every chunk whose stored form failed
# verification (or whose pack is missing or has the wrong size). While a chunk is listed
# here a backup does not count it as stored: content with its digest is stored afresh, and
# recording the new pack points the chunk's row (same id, so every content and snapshot
# that uses it) at the good copy and deletes this row. `btfs repair` does that on purpose.
SCHEMA_V6 = """
CREATE TABLE damaged_chunk (
    chunk_id INTEGER PRIMARY KEY REFERENCES chunk(id),  -- the chunk, at its current place
    found_ns INTEGER NOT NULL,  -- when a check found it damaged, ns since the epoch
    problem  TEXT NOT NULL      -- what the check saw, as a sentence for the user
);
"""

# v7: retention (btfs forget, btfs prune).
# - A snapshot's name is stored when it is made, so forgetting one never renames another;
#   existing rows get the name btfs.names.snapshot_names gave them (local time of the
#   start, -1, -2 ... for the same second in (start, id) order).
# - A forgotten snapshot whose versions are still needed stays as a "ghost": hidden from
#   by-time/ and `btfs snapshots`, it keeps its name and id so its remaining versions keep
#   their place in the tree-at-S rule and their names in by-file/ (btfs.engine.forget).
# - content_chunk is the way back from a chunk to the contents that use it: prune's live
#   set is "chunks with a row here", read from the index, never from the BLOBs.
# - pack_garbage lists packs no chunk row refers to any more, recorded in the transaction
#   that stopped referring to them; prune deletes them from the vault after that commit,
#   and a rerun finishes the deletes a killed prune left.
SCHEMA_V7 = """
ALTER TABLE snapshot ADD COLUMN name TEXT;  -- unique, for people: YYYY-MM-DD_HHMMSS in the
                                           -- local time of the start, -N for the same second
ALTER TABLE snapshot ADD COLUMN forgotten_ns INTEGER;  -- NULL: a backup; else when forget
                                                      -- removed it (a ghost, see above)
UPDATE snapshot SET name = n.name FROM (
    SELECT id, base || CASE WHEN nr = 0 THEN '' ELSE '-' || nr END AS name FROM (
        SELECT id, base, row_number() OVER (PARTITION BY base ORDER BY started_ns, id) - 1 AS nr
        FROM (SELECT id, started_ns, strftime('%Y-%m-%d_%H%M%S', started_ns / 1000000000,
                                              'unixepoch', 'localtime') AS base
              FROM snapshot))) AS n
WHERE snapshot.id = n.id;
CREATE UNIQUE INDEX snapshot_by_name ON snapshot(name);

-- One row per distinct chunk of each content (content.chunks keeps the file order).
CREATE TABLE content_chunk (
    chunk_id   INTEGER NOT NULL REFERENCES chunk(id),
    content_id INTEGER NOT NULL REFERENCES content(id),
    PRIMARY KEY (chunk_id, content_id)
) WITHOUT ROWID;
CREATE INDEX content_chunk_by_content ON content_chunk(content_id);

-- Packs to delete from the vault: nothing in the catalog refers to them.
CREATE TABLE pack_garbage (
    name    TEXT PRIMARY KEY,   -- the pack's name (its vault key is packs/<name>)
    size    INTEGER NOT NULL,   -- bytes, for the report
    dead_ns INTEGER NOT NULL    -- when the catalog stopped referring to it
);
"""


def _fill_content_chunk(db: Database) -> None:
    """v7's content_chunk rows for the contents already in the catalog (the chunk ids are
    only in content.chunks, a BLOB SQL cannot take apart)."""
    rows: list[tuple[int, int]] = []
    for content_id, blob in db.conn.execute("SELECT id, chunks FROM content"):
        ids = struct.unpack(f"<{len(blob) // 8}q", blob)
        rows += [(chunk_id, content_id) for chunk_id in set(ids)]
        if len(rows) >= 65536:
            db.run_rows("INSERT INTO content_chunk (chunk_id, content_id) VALUES {rows}", rows)
            rows = []
    if rows:
        db.run_rows("INSERT INTO content_chunk (chunk_id, content_id) VALUES {rows}", rows)


# v8: several hosts back up into one vault. A backup first learns the packs other hosts
# wrote (their trailer and index), so content already in the vault is not stored again;
# such a pack is marked foreign: this host did not write it, and uses only some of it.
SCHEMA_V8 = """
ALTER TABLE pack ADD COLUMN foreign_host INTEGER NOT NULL DEFAULT 0;
"""

# v9: prune in a vault shared by several hosts (btfs.engine.prune_shared). A host learns,
# before each backup, which packs a prune condemned; its backups stop using them, and its
# published catalog tells the pruning host that it knows.
SCHEMA_V9 = """
CREATE TABLE condemned_pack (
    name         TEXT PRIMARY KEY,
    condemned_ns INTEGER NOT NULL
);
"""

# Each step is SQL, or SQL and a function of the Database that completes it in the same
# transaction (for what SQL cannot do, such as taking a BLOB apart).
MIGRATIONS: list[str | tuple[str, Callable[[Database], None]]] = [
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6,
    (SCHEMA_V7, _fill_content_chunk), SCHEMA_V8, SCHEMA_V9]


def apply_migrations(db: Database, current: int, first_rows: str = "") -> None:
    """Bring `db`, at format `current`, up to len(MIGRATIONS); `first_rows` (SQL) runs
    with the first migration (the root node of a new catalog)."""
    for number in range(current, len(MIGRATIONS)):
        step = MIGRATIONS[number]
        sql, fill = step if isinstance(step, tuple) else (step, None)
        with db.transaction():
            db.execute(sql)
            if fill is not None:
                fill(db)
            if number == 0 and first_rows:
                db.execute(first_rows)
            db.execute(f"PRAGMA user_version={number + 1}")
        log.debug("catalog migrated to format %d", number + 1)
