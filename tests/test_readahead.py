"""Read-ahead planning (btfs.engine.readahead), without trio or a kernel: a made-up pack
of chunks, a cache that is a set, and the plans read off.

The mount's adapter tests (tests/fuse/test_adapter_backup.py) check the same plans cut the
vault reads of a real mount; these check each rule on its own."""

from __future__ import annotations

from btfs.catalog.model import ChunkRef
from btfs.engine.readahead import InFlight, ReadAhead
from btfs.engine.reader import FileLayout

KiB = 1024


def pack_of(sizes: list[int], name: str = "p1") -> list[ChunkRef]:
    """Chunks stored one after another in one pack (stored as large as raw, for clarity)."""
    refs, offset = [], 0
    for i, size in enumerate(sizes):
        refs.append(ChunkRef(f"{name}-{i}".encode().ljust(32, b"."), size, name, offset,
                             size))
        offset += size
    return refs


class Pack:
    """The pack lookup the planner is given, over `refs`; counts its calls."""

    def __init__(self, refs: list[ChunkRef]):
        self.refs = refs
        self.calls: list[ChunkRef] = []

    def chunks_after(self, ref: ChunkRef, max_bytes: int) -> list[ChunkRef]:
        self.calls.append(ref)
        out, total = [], 0
        for r in self.refs:
            if r.pack == ref.pack and r.offset > ref.offset and total < max_bytes:
                out.append(r)
                total += r.size
        return out


def planner(pack: Pack, cached: set[bytes] | None = None, **limits) -> ReadAhead:
    cached = set() if cached is None else cached
    return ReadAhead(pack.chunks_after, lambda h: b"x" if h in cached else None, **limits)


def test_a_sequential_reader_gets_the_next_chunks_of_its_file_up_to_the_budget():
    refs = pack_of([1024 * KiB] * 12)
    layout = FileLayout(refs)
    ahead = planner(Pack(refs), file_bytes=4096 * KiB)
    plan = ahead.after_read(layout, 0, sequential=True)
    assert plan.chunks == refs[1:5]  # 4 MiB of content after chunk 0
    assert plan.runs == []  # not at the file's end: nothing along the pack


def test_a_random_reader_gets_no_read_ahead_in_its_file():
    refs = pack_of([1024 * KiB] * 4)
    ahead = planner(Pack(refs))
    assert ahead.after_read(FileLayout(refs), 1, sequential=False) == ([], [])


def test_cached_and_in_flight_chunks_are_not_fetched_again_but_count_against_the_budget():
    refs = pack_of([1024 * KiB] * 8)
    ahead = planner(Pack(refs), cached={refs[1].hash}, file_bytes=3072 * KiB)
    ahead.inflight.start(refs[2].hash, "event")
    assert ahead.in_file(FileLayout(refs), 0) == [refs[3]]


def test_reaching_a_files_end_fetches_what_follows_in_its_pack_in_runs():
    small = pack_of([10 * KiB] * 40)
    pack = Pack(small)
    ahead = planner(pack, pack_bytes=100 * KiB, pack_runs=2)
    plan = ahead.after_read(FileLayout(small[:1]), 0, sequential=True)
    assert plan.chunks == []
    assert plan.runs == [small[1:6], small[6:11]]  # 100 KiB after it, in two vault reads


def test_the_pack_read_ahead_refills_only_past_half_of_its_stretch():
    small = pack_of([10 * KiB] * 40)
    pack = Pack(small)
    ahead = planner(pack, pack_bytes=100 * KiB, pack_runs=2)
    fetched = [r for run in ahead.in_pack(small[0]) for r in run]
    assert fetched == small[1:11]
    cached = {r.hash for r in fetched}
    ahead.cached = lambda h: b"x" if h in cached else None
    # The reader goes on through the files fetched ahead: nothing until half-way (the
    # stretch's middle chunk is the refill point), then the next stretch.
    for i in range(1, 6):
        assert ahead.in_pack(small[i]) == [], i
    assert len(pack.calls) == 1
    runs = ahead.in_pack(small[6])
    assert [r for run in runs for r in run] == small[11:21]  # after the last fetched
    assert pack.calls[-1] == small[10]


def test_a_reader_behind_or_past_the_stretch_starts_from_where_it_reads():
    small = pack_of([10 * KiB] * 40)
    pack = Pack(small)
    ahead = planner(pack, pack_bytes=50 * KiB, pack_runs=1)
    ahead.in_pack(small[0])
    assert ahead.in_pack(small[30]) == [small[31:36]]  # jumped past it
    assert pack.calls[-1] == small[30]


def test_the_end_of_a_pack_plans_nothing():
    small = pack_of([10 * KiB] * 3)
    ahead = planner(Pack(small))
    assert ahead.in_pack(small[2]) == []


def test_packs_remembered_are_bounded_oldest_first():
    refs = [r for i in range(5) for r in pack_of([10 * KiB] * 4, f"p{i}")]
    pack = Pack(refs)
    ahead = planner(pack, packs_kept=3, pack_runs=1)
    for i in range(5):
        ahead.in_pack(refs[4 * i])
    assert list(ahead._packs) == ["p2", "p3", "p4"]
    # A forgotten pack plans again from where its reader is.
    assert ahead.in_pack(refs[1]) == [refs[2:4]]


def test_in_flight_keeps_only_the_latest_token_of_a_chunk():
    inflight: InFlight[object] = InFlight()
    first, retry = object(), object()
    inflight.start(b"h", first)
    inflight.start(b"h", retry)  # a waiter retries after the first fetch failed
    inflight.done(b"h", first)  # the failed fetch ends late: the retry stays in flight
    assert b"h" in inflight and inflight.get(b"h") is retry
    inflight.done(b"h", retry)
    assert b"h" not in inflight and len(inflight) == 0


def test_planning_needs_neither_trio_nor_pyfuse3():
    import subprocess
    import sys

    code = ("import sys, btfs.engine.readahead; "
            "sys.exit(bool({'trio', 'pyfuse3'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_remote_vault_gets_a_files_next_chunks_in_runs_that_lie_together():
    # A remote vault pays a request per read: chunks one after another in a pack go in
    # one read of at most file_run_bytes; a chunk elsewhere (deduplicated from another
    # pack) starts a run of its own.
    refs = pack_of([1024 * KiB] * 10)
    elsewhere = pack_of([1024 * KiB], name="p2")[0]
    layout = FileLayout(refs[:6] + [elsewhere] + refs[6:])
    ahead = planner(Pack(refs), file_bytes=8192 * KiB, file_run_bytes=3072 * KiB)
    plan = ahead.after_read(layout, 0, sequential=True)
    assert plan.chunks == []
    assert plan.runs == [refs[1:4], refs[4:6], [elsewhere], refs[6:8]]
    # A local vault keeps one chunk per fetch (verified in parallel by the workers).
    local = planner(Pack(refs), file_bytes=8192 * KiB)
    assert local.after_read(layout, 0, sequential=True).runs == []


def test_a_missed_group_member_brings_its_uncached_siblings_and_a_lone_chunk_none():
    # Three chunks share one stored form (a group: stored_len beyond any one of them);
    # the catalog is asked only for such a chunk.
    group = [ChunkRef(f"g{i}".encode().ljust(32, b"."), 3 * KiB, "p1", 0, 5 * KiB)
             for i in range(3)]
    lone = pack_of([10 * KiB])[0]
    asked = []
    ahead = ReadAhead(Pack(group).chunks_after,
                      lambda h: b"x" if h == group[2].hash else None,
                      group_of=lambda ref: asked.append(ref) or list(group))
    assert ahead.siblings(lone) == [] and asked == []
    ahead.inflight.start(group[0].hash, object())
    assert ahead.siblings(group[1]) == []  # [0] in flight, [2] cached, [1] itself
    ahead.inflight.done(group[0].hash, ahead.inflight.get(group[0].hash))
    assert ahead.siblings(group[1]) == [group[0]]
    assert asked == [group[1], group[1]]
