"""The catalog schema as it is today, whole and commented column by column.

A new catalog is made from SCHEMA; an older one reaches the same schema through
migrations.py (a test builds a catalog both ways and compares sqlite_master, so this file
always shows what a catalog holds). A schema change is a new migration AND a change here.

Invariants the rest of btfs relies on:
- A `chunk` row exists only once its pack is durable in the vault.
- A `version` row exists only in the snapshot where its path changed; "the tree as of
  snapshot S" is, per path, the version with the greatest snapshot_id <= S, if it is not
  'deleted'. Both "children of a directory at S" and "versions of a path" use the index
  version_by_node, never a scan.
- `node.head` is the newest committed version of that path in any snapshot; it is updated
  in the same transaction that inserts the version.
- Digests are BLAKE3 (btfs.digest, vault format 2); a format-1 vault (SHA-256) is refused
  before its catalog is opened.
"""

from __future__ import annotations

ROOT = 1  # node id of '/'

SCHEMA = """
-- Catalog-wide facts: 'vault_id' (must match the vault's own id), 'host_id', and 'roots'
-- (JSON list of the directories the last backup tracked).
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
-- Children in id order (an index entry carries the rowid): the mount pages directory
-- listings by node id, which is stable and puts paths added later at the end.
CREATE INDEX node_by_parent_id ON node(parent);

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
    errors        INTEGER NOT NULL DEFAULT 0,  -- entries skipped because of errors
    name          TEXT,                -- unique, for people, stored when it is made (so
                                       -- forgetting one never renames another):
                                       -- YYYY-MM-DD_HHMMSS in the local time of the start,
                                       -- -1, -2 ... for the same second
    forgotten_ns  INTEGER              -- NULL: a backup. Else when `btfs forget` removed
                                       -- it: a "ghost", hidden from by-time/ and `btfs
                                       -- snapshots`, kept (id and name) only as the home
                                       -- of versions still needed (btfs.engine.forget);
                                       -- deleted once no version is left in it
);
CREATE UNIQUE INDEX snapshot_by_name ON snapshot(name);

-- Immutable objects in the vault holding chunks; see btfs.engine.pack for the format.
CREATE TABLE pack (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,  -- hex BLAKE3 of the pack's bytes; its vault key
    size       INTEGER NOT NULL,      -- bytes; `check` compares it with the vault's
    chunks     INTEGER NOT NULL,      -- how many chunks it holds
    created_ns INTEGER NOT NULL,
    foreign_host INTEGER NOT NULL DEFAULT 0  -- 1: written by another host into the shared
                                   -- vault, learned from its index (engine/packsync.py);
                                   -- its chunks this catalog did not know point at it
);

-- A deduplicated piece of file content.
CREATE TABLE chunk (
    id         INTEGER PRIMARY KEY,
    hash       BLOB NOT NULL UNIQUE,  -- BLAKE3 of the raw (uncompressed) bytes: its identity
    size       INTEGER NOT NULL,      -- raw length
    pack_id    INTEGER NOT NULL REFERENCES pack(id),
    offset     INTEGER NOT NULL,      -- where its stored form starts in the pack
    stored_len INTEGER NOT NULL       -- length of its stored form (codec byte + payload)
);
CREATE INDEX chunk_by_pack ON chunk(pack_id);

-- Chunks known to be damaged. `btfs check` records every chunk whose stored form failed
-- verification (or whose pack is missing or has the wrong size). While a chunk is listed
-- here a backup does not count it as stored: content with its digest is stored afresh, and
-- recording the new pack points the chunk's row (same id, so every content and snapshot
-- that uses it) at the good copy and deletes this row. `btfs repair` does that on purpose.
-- Empty but after a check found damage.
CREATE TABLE damaged_chunk (
    chunk_id INTEGER PRIMARY KEY REFERENCES chunk(id),  -- the chunk, at its current place
    found_ns INTEGER NOT NULL,  -- when a check found it damaged, ns since the epoch
    problem  TEXT NOT NULL      -- what the check saw, as a sentence for the user
);

-- The content of a regular file, shared by every version with the same bytes.
CREATE TABLE content (
    id     INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,  -- BLAKE3 of the whole content
    size   INTEGER NOT NULL,
    chunks BLOB NOT NULL          -- chunk.id of each chunk in file order, packed as
                                  -- little-endian int64; empty for an empty file
);

-- The way back from a chunk to the contents that use it, one row per distinct chunk of
-- each content (content.chunks keeps the file order), kept in the transaction that adds
-- the content. `btfs prune`'s live set is "chunks with a row here", read from this index,
-- never from the BLOBs.
CREATE TABLE content_chunk (
    chunk_id   INTEGER NOT NULL REFERENCES chunk(id),
    content_id INTEGER NOT NULL REFERENCES content(id),
    PRIMARY KEY (chunk_id, content_id)
) WITHOUT ROWID;
CREATE INDEX content_chunk_by_content ON content_chunk(content_id);

-- Packs to delete from the vault: no chunk row refers to them any more. Recorded in the
-- transaction that stopped referring to them; `btfs prune` deletes them from the vault
-- after that commit, each row removed once its pack is gone, and a rerun finishes the
-- deletes a killed prune left. A name a backup stored again (same bytes) is live again.
CREATE TABLE pack_garbage (
    name    TEXT PRIMARY KEY,   -- the pack's name (its vault key is packs/<name>)
    size    INTEGER NOT NULL,   -- bytes, for the report
    dead_ns INTEGER NOT NULL    -- when the catalog stopped referring to it
);

-- Packs a `btfs prune` of some host condemned in a shared vault (btfs.engine.prune_shared):
-- set before each backup to exactly the packs the vault's records under prune/condemned/
-- name. A chunk whose row points at one of them is not counted as stored (its content is
-- stored afresh, and the row moves to the new copy, as for a damaged chunk); a pack listed
-- here that this catalog never knew is listed all the same: the published copy of this
-- catalog tells the pruning host that this host's backups no longer use it.
CREATE TABLE condemned_pack (
    name         TEXT PRIMARY KEY,  -- the pack's name (vault key packs/<name>)
    condemned_ns INTEGER NOT NULL   -- when it was condemned (the condemning host's clock)
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
-- Hard-link groups: files that shared an inode at a backup (same snapshot, same st_ino,
-- nlink > 1) are shown as one inode by the mount. Partial, so it costs nothing for the
-- vast majority of files that have a single link.
CREATE INDEX version_hardlinks ON version(snapshot_id, ino) WHERE type = 'file' AND nlink > 1;
-- The versions that carry extended attributes. Partial, so it holds only those: most trees
-- have none, and then "does any backup have xattrs?" is one probe of an empty index, and a
-- mount tells the kernel it has no xattrs at all (sparing a listxattr and a getxattr round
-- trip per file that `cp -a` would otherwise make).
CREATE INDEX version_with_xattrs ON version(snapshot_id) WHERE xattrs IS NOT NULL;
"""

# Rows every catalog starts with: the root of the path tree.
FIRST_ROWS = f"INSERT INTO node (id, parent, name) VALUES ({ROOT}, NULL, x'')"
