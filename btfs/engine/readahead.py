"""Read-ahead planning for readers of stored files: which chunks to fetch before they are
asked for, and which are being fetched already.

Plain code, no trio and no I/O: the mount (btfs.fuse.ops) asks `ReadAhead.after_read`
what to fetch once a read is answered, schedules the fetches in worker threads, and
records them in `ReadAhead.inflight` with whatever it waits on (a trio.Event there). The
two lookups a plan needs come in as callables: which chunks follow one in its pack (the
catalog's, through the mount's model) and whether a chunk is cached (the ChunkSource's).
Not thread-safe: one thread plans (the mount's trio thread).

Two kinds of read-ahead:
  - in a file: a sequential reader of a large file gets the next chunks, one worker call
    each (verified in parallel while it copies this one), up to FILE_AHEAD_BYTES; with
    `file_run_bytes` (a remote vault, where each read costs a request), chunks that lie
    one after another in a pack are fetched in runs of that size, one vault read each;
  - along a pack: a reader that reaches a file's end most likely reads next the file a
    backup stored right after it (the next one in its directory), so the chunks after it
    in its pack are fetched, PACK_AHEAD_BYTES at a time in PACK_AHEAD_RUNS worker calls
    of one vault read each, and again once the reader is half-way through them. Small
    files read in directory order are then answered from the cache, without a worker
    call each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from ..catalog.model import ChunkRef
from .reader import FileLayout

log = logging.getLogger(__name__)

FILE_AHEAD_BYTES = 8 << 20  # a few chunks per worker thread of the mount
PACK_AHEAD_BYTES = 1 << 20  # about a directory of small files
PACK_AHEAD_RUNS = 2  # worker calls per stretch: the next reads need not wait for all of it
PACK_AHEAD_PACKS = 64  # packs whose read-ahead position is remembered (readers at once)

T = TypeVar("T")


class InFlight(Generic[T]):
    """Chunks being fetched, each with the token its fetcher will signal (a trio.Event in
    the mount), so a reader that needs one waits for it instead of fetching it again."""

    def __init__(self) -> None:
        self._tokens: dict[bytes, T] = {}

    def __contains__(self, chunk_hash: bytes) -> bool:
        return chunk_hash in self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def get(self, chunk_hash: bytes) -> T | None:
        return self._tokens.get(chunk_hash)

    def start(self, chunk_hash: bytes, token: T) -> None:
        self._tokens[chunk_hash] = token

    def done(self, chunk_hash: bytes, token: T) -> None:
        """The fetch that `token` stands for ended. After a failed fetch several waiters
        retry, each with a token of its own: only this one's entry is removed."""
        if self._tokens.get(chunk_hash) is token:
            del self._tokens[chunk_hash]


class Plan(NamedTuple):
    """What to fetch after a read: chunks of the file one worker call each, and runs of
    chunks lying one after another in a pack, one vault read each."""

    chunks: list[ChunkRef]
    runs: list[list[ChunkRef]]


NOTHING = Plan([], [])


@dataclass
class _PackAhead:
    """How far the read-ahead along one pack has gone."""

    last: ChunkRef  # the last chunk fetched ahead
    refill_at: int  # a reader at this pack offset makes it fetch the next stretch


class ReadAhead(Generic[T]):
    """Plans read-ahead for every reader of one mount (see the module docstring)."""

    def __init__(self, chunks_after: Callable[[ChunkRef, int], list[ChunkRef]],
                 cached: Callable[[bytes], object | None], *,
                 file_bytes: int = FILE_AHEAD_BYTES, pack_bytes: int = PACK_AHEAD_BYTES,
                 pack_runs: int = PACK_AHEAD_RUNS, packs_kept: int = PACK_AHEAD_PACKS,
                 file_run_bytes: int = 0,
                 group_of: Callable[[ChunkRef], list[ChunkRef]] | None = None):
        """`chunks_after(ref, max_bytes)`: the chunks stored after `ref` in its pack, up to
        `max_bytes` of content; `cached(hash)`: the chunk if cached, else None;
        `file_run_bytes`: fetch a file's next chunks in runs of about this many stored
        bytes (0: one chunk per fetch); `group_of(ref)`: the chunks stored at the same
        place as `ref` (its group's members), for `siblings`."""
        self.chunks_after = chunks_after
        self.group_of = group_of
        self.cached = cached
        self.file_bytes = file_bytes
        self.pack_bytes = pack_bytes
        self.pack_runs = pack_runs
        self.packs_kept = packs_kept
        self.file_run_bytes = file_run_bytes
        self.inflight: InFlight[T] = InFlight()
        self._packs: dict[str, _PackAhead] = {}  # insertion order: oldest first

    def _wanted(self, ref: ChunkRef) -> bool:
        return ref.hash not in self.inflight and self.cached(ref.hash) is None

    def after_read(self, layout: FileLayout, last: int, *, sequential: bool) -> Plan:
        """What to fetch now that a read of `layout` ended in chunk `last`; `sequential`:
        the read started where the previous one of this open file ended."""
        chunks = self.in_file(layout, last) if sequential else []
        runs = self.in_pack(layout.refs[last]) if last == len(layout.refs) - 1 else []
        if self.file_run_bytes and chunks:
            runs = self.adjacent_runs(chunks) + runs
            chunks = []
        return Plan(chunks, runs) if chunks or runs else NOTHING

    def siblings(self, ref: ChunkRef) -> list[ChunkRef]:
        """The other members of `ref`'s group not cached nor in flight, to decode with it
        when a read misses it: decompressing the group is most of the cost, and a reader
        that jumped into it (not where the pack read-ahead was) most likely reads the rest.
        None for a chunk stored alone: a stored form longer than its chunk plus the codec
        byte holds more than that chunk, and only then is the catalog asked."""
        if self.group_of is None or ref.stored_len <= ref.size + 1:
            return []
        return [r for r in self.group_of(ref) if r.hash != ref.hash and self._wanted(r)]

    def adjacent_runs(self, refs: list[ChunkRef]) -> list[list[ChunkRef]]:
        """`refs` cut into runs that each lie one after another in one pack, of at most
        file_run_bytes stored bytes (a single chunk may be larger)."""
        runs: list[list[ChunkRef]] = []
        size = 0
        for ref in refs:
            run = runs[-1] if runs else None
            follows = (run is not None and ref.pack == run[-1].pack
                       and ref.offset == run[-1].offset + run[-1].stored_len)
            if follows and size + ref.stored_len <= self.file_run_bytes:
                run.append(ref)
                size += ref.stored_len
            else:
                runs.append([ref])
                size = ref.stored_len
        return runs

    def in_file(self, layout: FileLayout, last: int) -> list[ChunkRef]:
        """The chunks after `last` not cached nor in flight, up to file_bytes of content
        (counting those that are: they are ahead of the reader too)."""
        out = []
        budget = self.file_bytes
        for ahead in layout.refs[last + 1:]:
            if budget <= 0:
                break
            budget -= ahead.size
            if self._wanted(ahead):
                out.append(ahead)
        return out

    def in_pack(self, ref: ChunkRef) -> list[list[ChunkRef]]:
        """Runs of the chunks after `ref` in its pack to fetch, or none while the stretch
        fetched last for this pack is still ahead of the reader."""
        ahead = self._packs.get(ref.pack)
        within = ahead is not None and ref.offset <= ahead.last.offset
        if within and ref.offset < ahead.refill_at:
            return []
        refs = self.chunks_after(ahead.last if within else ref, self.pack_bytes)
        if not refs:
            return []
        self._packs.pop(ref.pack, None)
        if len(self._packs) >= self.packs_kept:
            self._packs.pop(next(iter(self._packs)))
        self._packs[ref.pack] = _PackAhead(refs[-1], refs[len(refs) // 2].offset)
        todo = [r for r in refs if self._wanted(r)]
        if not todo:
            return []
        per_run = -(-len(todo) // self.pack_runs)
        return [todo[i:i + per_run] for i in range(0, len(todo), per_run)]
