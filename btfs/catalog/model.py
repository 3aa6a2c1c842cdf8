"""Plain records the catalog returns. No SQL, no I/O."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

FILE, DIR, SYMLINK, DELETED = "file", "dir", "symlink", "deleted"

# The one rule for "this file looks unchanged" without reading it: these fields of its
# newest version equal its lstat now. st_dev is left out on purpose: a btrfs/ZFS snapshot
# of the source has a new device but the same files. Meta.same_stat applies it; the
# scanner's per-entry loop compares a LiveChild (these fields after its node_id) with one
# tuple, and engine/files.py `same_content_stat` compares two stats of a file being read
# (its type cannot change under an open descriptor): both spell it inline for speed, and
# tests/test_layout.py holds them to this list.
UNCHANGED_BY_STAT = ("type", "size", "mtime_ns", "ctime_ns", "ino")
_unchanged_key = attrgetter(*UNCHANGED_BY_STAT)


class Meta(NamedTuple):
    """What btfs records of one path at one moment (a version without its identity).

    A named tuple: one is made for every entry a backup records and every version the
    mount reads, and a tuple is made in about half the time of a frozen dataclass."""

    type: str
    size: int
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    btime_ns: int | None
    ino: int
    nlink: int
    target: bytes | None = None
    xattrs: bytes | None = None
    content_id: int | None = None

    def same_stat(self, other: Meta) -> bool:
        """True when a file looks unchanged by stat alone (see UNCHANGED_BY_STAT)."""
        return _unchanged_key(self) == _unchanged_key(other)


@dataclass(frozen=True, slots=True)
class Version:
    id: int
    node_id: int
    snapshot_id: int | None  # None: staged
    meta: Meta

    @property
    def type(self) -> str:
        return self.meta.type


class LiveChild(NamedTuple):
    """What change detection needs of a path's newest version: the scanner compares
    the fields after node_id (UNCHANGED_BY_STAT, in that order) with lstat for every
    entry, so this stays a plain tuple rather than a full Version."""

    node_id: int
    type: str
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int


class ChildRow(NamedTuple):
    """A child of a directory as of a snapshot, flat: one row of the mount's readdir page
    (History.children_page). Flat and a tuple because a page is read for every directory
    `find` or `ls` lists, and nesting a Meta in a Version in an Entry per row cost as much
    as the query itself."""

    node_id: int
    name: bytes
    version_id: int
    snapshot_id: int  # of the version: where the path last changed, <= the one asked for
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    nlink: int
    xattrs: bytes | None


@dataclass(frozen=True, slots=True)
class Entry:
    """A child of a directory: its node, its name and its version at some snapshot."""

    node_id: int
    name: bytes
    version: Version


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: int
    host_id: str
    started_ns: int
    finished_ns: int | None
    state: str
    files_new: int
    files_changed: int
    files_deleted: int
    entries: int
    bytes_read: int
    bytes_added: int
    errors: int
    name: str = ""  # unique, stored when the backup was made (schema v7)
    forgotten_ns: int | None = None  # set: forgotten, kept as the home of needed versions


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where one chunk of a file lives: enough to fetch and verify it."""

    hash: bytes
    size: int
    pack: str
    offset: int
    stored_len: int


@dataclass(frozen=True, slots=True)
class Content:
    id: int
    digest: bytes  # of the whole content (btfs.digest)
    size: int
    chunk_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class NewChunk:
    """A chunk about to be recorded with its pack."""

    hash: bytes
    size: int
    offset: int
    stored_len: int


class StoredTotals(NamedTuple):
    """The vault's size and what it stands for (ChunkIndex.totals)."""

    packs: int
    pack_bytes: int  # stored: compressed chunks in their packs
    chunk_bytes: int  # every distinct chunk, uncompressed
    content_bytes: int  # every distinct file content, whole: chunk_bytes before dedup


class PackChunk(NamedTuple):
    """A chunk as `check` reads it from its pack."""

    id: int
    hash: bytes
    size: int
    offset: int
    stored_len: int


def pack_ids(ids: Iterable[int]) -> bytes:
    """content.chunks: chunk ids as little-endian int64."""
    ids = list(ids)
    return struct.pack(f"<{len(ids)}q", *ids)


def unpack_ids(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(blob) // 8}q", blob)
