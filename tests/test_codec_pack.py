"""Property tests of the storage format: chunk codec, pack format, chunker, range reads.

These are the layers where a silent error returns wrong bytes, so each property is one a
user's data depends on: what goes in comes out, damage is detected and never returned,
and content-defined chunking keeps an edit local.
"""

from __future__ import annotations

import itertools
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyfastcdc.cy import FastCDC

from btfs.catalog.model import ChunkRef
from btfs.config import Config
from btfs.engine import codec
from btfs.engine.pack import MAGIC, TRAILER_SIZE, PackBuilder, parse_index
from btfs.engine.reader import ChunkSource, FileLayout, read_range
from btfs.errors import IntegrityError
from btfs.vault import LocalVault, pack_key

DEFAULTS = Config(host_id="test", vault="/nonexistent")

# Data that compresses (repeats) and data that does not, both in one strategy.
chunk_data = st.one_of(
    st.binary(max_size=5000),
    st.builds(lambda piece, n: piece * n, st.binary(min_size=1, max_size=40),
              st.integers(1, 500)),
)
levels = st.integers(0, 22)


@given(data=chunk_data, level=levels)
def test_codec_round_trip(data, level):
    stored = codec.Codec(level).encode(data)
    assert stored[0] in (codec.RAW, codec.ZSTD)
    assert len(stored) <= len(data) + 1  # incompressible data costs exactly one byte
    assert codec.Codec.decode(stored, codec.Codec.chunk_hash(data), len(data)) == data


def test_codec_compresses_when_it_pays_and_not_at_level_zero():
    data = b"abc" * 10_000
    assert codec.Codec(3).encode(data)[0] == codec.ZSTD
    assert len(codec.Codec(3).encode(data)) < len(data) // 10
    assert codec.Codec(0).encode(data) == bytes((codec.RAW,)) + data
    noise = random.Random(1).randbytes(10_000)
    assert codec.Codec(19).encode(noise)[0] == codec.RAW


def test_big_chunks_are_sampled_before_compressing():
    """A big chunk whose samples do not shrink is stored raw without compressing it all;
    one with compressible data where the samples fall is compressed whole, and round
    trips either way."""
    rng = random.Random(2)
    noise = rng.randbytes(1 << 20)
    text = b"".join(b"line %d of a log file\n" % i for i in range(60_000))[:1 << 20]
    assert codec.Codec(3).encode(noise)[0] == codec.RAW
    assert codec.Codec(3).encode(text)[0] == codec.ZSTD
    # Text where the samples are, noise elsewhere: compressed (it pays, if less).
    quarter = len(text) // 4
    mixed = b"".join(text[i * quarter:i * quarter + 32 * 1024] + noise[:quarter - 32 * 1024]
                     for i in range(4))
    stored = codec.Codec(3).encode(mixed)
    assert stored[0] == codec.ZSTD
    for data in (noise, text, mixed):
        stored = codec.Codec(3).encode(data)
        assert codec.Codec.decode(stored, codec.Codec.chunk_hash(data), len(data)) == data


def test_compression_contexts_are_shared_and_bounded():
    """Eight threads compressing at once, through a pool of two contexts per level: every
    result decodes to its input, and no more than two contexts were ever made."""
    pool = codec._CompressorPool(2)
    inputs = [bytes([i]) * 4096 + random.Random(i).randbytes(512) * 64 for i in range(8)]

    def work(data: bytes) -> list[bool]:
        return [codec.Codec.decode(bytes((codec.ZSTD,)) + pool.compress(data, level),
                             blake3(data).digest(), len(data)) == data
                for _ in range(20) for level in (1, 3)]

    with ThreadPoolExecutor(8) as threads:
        results = list(threads.map(work, inputs))
    assert all(all(r) for r in results)
    assert sorted(pool._idle) == [1, 3]
    assert all(1 <= len(idle) <= 2 for idle in pool._idle.values())


# Small chunks that look alike (as source files do), so groups compress.
group_members = st.lists(
    st.builds(lambda word, n, tail: word * n + tail, st.sampled_from([b"int ", b"for (;;) "]),
              st.integers(1, 300), st.binary(max_size=50)),
    min_size=2, max_size=12, unique=True)


@given(members=group_members, level=st.integers(1, 9))
def test_group_round_trip(members, level):
    """Every member of a group decodes to its own bytes; an id that is not a member, or a
    member asked for with the wrong size, is an integrity error."""
    pairs = [(codec.Codec.chunk_hash(m), m) for m in members]
    stored = codec.Codec(level).encode_group(pairs)
    assume(stored is not None)
    assert stored[0] == codec.GROUP
    for h, m in reversed(pairs):  # any order: each read finds its member
        assert codec.Codec.decode(stored, h, len(m)) == m
    with pytest.raises(IntegrityError):
        codec.Codec.decode(stored, codec.Codec.chunk_hash(b"stranger"), 8)
    with pytest.raises(IntegrityError):
        codec.Codec.decode(stored, pairs[0][0], len(pairs[0][1]) + 1)


def test_threads_reading_one_group_at_once_decompress_it_once(monkeypatch):
    rng = random.Random(11)
    words = [b"static ", b"int ", b"return ", b"struct ", b"unsigned "]
    members = [b"".join(rng.choice(words) for _ in range(4000)) + bytes([i]) for i in range(16)]
    pairs = [(codec.Codec.chunk_hash(m), m) for m in members]
    stored = codec.Codec(3).encode_group(pairs)
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0xFF
    decompressions = []
    member_index = codec._member_index
    monkeypatch.setattr(codec, "_member_index",
                        lambda raw, h: decompressions.append(h) or member_index(raw, h))

    def read(pair):
        h, m = pair
        return codec.Codec.decode(stored, h, len(m)) == m

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(read, pairs * 4))
        assert len(decompressions) == 1
        # A group that fails is no one's to wait on: every reader gets the error.
        bad = [pool.submit(codec.Codec.decode, bytes(damaged), h, len(m)) for h, m in pairs]
        for future in bad:
            with pytest.raises(IntegrityError):
                future.result(timeout=30)


def test_group_that_does_not_pay_is_not_made():
    noise = random.Random(3)
    pairs = [(codec.Codec.chunk_hash(d), d) for d in (noise.randbytes(5000), noise.randbytes(7000))]
    assert codec.Codec(3).encode_group(pairs) is None
    assert codec.Codec(0).encode_group(pairs) is None


@given(members=group_members, which=st.integers(min_value=0), where=st.integers(min_value=0),
       bit=st.integers(0, 7))
def test_a_flipped_bit_in_a_group_never_returns_wrong_bytes(members, which, where, bit):
    """Damage anywhere in a group (also after a good read of it was cached) is an
    integrity error or the right bytes, never other bytes or another exception."""
    pairs = [(codec.Codec.chunk_hash(m), m) for m in members]
    stored = codec.Codec(3).encode_group(pairs)
    assume(stored is not None)
    h, m = pairs[which % len(pairs)]
    assert codec.Codec.decode(stored, h, len(m)) == m  # now in the cache
    damaged = bytearray(stored)
    damaged[where % len(damaged)] ^= 1 << bit
    try:
        result = codec.Codec.decode(bytes(damaged), h, len(m))
    except IntegrityError:
        return
    assert result == m


@given(data=chunk_data, level=levels, where=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_flipped_bit_never_returns_wrong_bytes(data, level, where, bit):
    """IntegrityError (never another exception), or the original bytes: a few bits of a
    zstd frame header are unused and decoders ignore them (found by hypothesis)."""
    stored = bytearray(codec.Codec(level).encode(data))
    stored[where % len(stored)] ^= 1 << bit
    try:
        result = codec.Codec.decode(bytes(stored), codec.Codec.chunk_hash(data), len(data))
    except IntegrityError:
        return
    assert stored[0] == codec.ZSTD and result == data


@given(data=chunk_data, where=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_flipped_bit_in_a_raw_chunk_always_raises(data, where, bit):
    stored = bytearray(codec.Codec(0).encode(data))
    stored[where % len(stored)] ^= 1 << bit
    with pytest.raises(IntegrityError):
        codec.Codec.decode(bytes(stored), codec.Codec.chunk_hash(data), len(data))


@given(data=st.binary(min_size=1, max_size=2000), level=levels)
def test_wrong_size_or_hash_or_truncation_is_an_integrity_error(data, level):
    stored = codec.Codec(level).encode(data)
    h = codec.Codec.chunk_hash(data)
    for bad in [(stored, h, len(data) + 1), (stored, h, len(data) - 1),
                (stored, blake3(b"other").digest(), len(data)),
                (stored[:-1], h, len(data)), (b"", h, len(data))]:
        with pytest.raises(IntegrityError):
            codec.Codec.decode(*bad)


def _stored_chunks(chunks: list[bytes], level: int):
    return [(codec.Codec.chunk_hash(c), len(c), codec.Codec(level).encode(c)) for c in chunks]


@given(chunks=st.lists(chunk_data, max_size=20), level=st.integers(0, 5))
def test_pack_round_trip(chunks, level):
    builder = PackBuilder()
    for h, size, stored in _stored_chunks(chunks, level):
        builder.add(h, size, stored)
        builder.add(h, size, stored)  # a chunk is stored once per pack
    unique = {codec.Codec.chunk_hash(c): c for c in chunks}
    assert len(builder) == len(unique)
    sealed = builder.seal()
    data = bytes(sealed.data)
    assert sealed.name == blake3(data).hexdigest()
    assert sealed.size == len(data)
    assert data.startswith(MAGIC)
    assert parse_index(data) == sealed.chunks
    assert [c.hash for c in sealed.chunks] == list(unique)  # order of first addition
    for c in sealed.chunks:
        stored = data[c.offset:c.offset + c.stored_len]
        assert codec.Codec.decode(stored, c.hash, c.size) == unique[c.hash]


@given(chunks=st.lists(chunk_data, max_size=8), where=st.integers(min_value=0),
       bit=st.integers(0, 7))
def test_damaged_pack_index_or_trailer_is_detected(chunks, where, bit):
    builder = PackBuilder()
    for h, size, stored in _stored_chunks(chunks, 3):
        builder.add(h, size, stored)
    sealed = builder.seal()
    data = bytearray(sealed.data)
    index_start = len(data) - TRAILER_SIZE - 48 * len(sealed.chunks)
    # Anywhere in the magic, the index or the trailer (chunk payloads are covered by the
    # codec's hash and the pack name).
    region = list(range(0, len(MAGIC))) + list(range(index_start, len(data)))
    data[region[where % len(region)]] ^= 1 << bit
    with pytest.raises(IntegrityError):
        parse_index(bytes(data))


def test_truncated_pack_is_not_a_pack():
    sealed = PackBuilder().seal()
    assert parse_index(bytes(sealed.data)) == []
    with pytest.raises(IntegrityError):
        parse_index(bytes(sealed.data)[:-1])
    with pytest.raises(IntegrityError):
        parse_index(b"")


def _cdc(config: Config = DEFAULTS) -> FastCDC:
    return FastCDC(config.chunk_avg, min_size=config.chunk_min, max_size=config.chunk_max)


chunker_settings = settings(max_examples=8, deadline=None)


@chunker_settings
@given(seed=st.integers(0, 2**32), size=st.integers(0, 12 << 20),
       repetitive=st.booleans())
def test_chunker_reassembles_and_respects_bounds(seed, size, repetitive):
    rng = random.Random(seed)
    if repetitive:  # long runs stress the max-size cut
        data = (rng.randbytes(1000) + bytes(rng.randrange(1, 3 << 20))) * 4
        data = data[:size]
    else:
        data = rng.randbytes(size)
    chunks = list(_cdc().cut_buf(data))
    assert b"".join(bytes(c.data) for c in chunks) == data
    offsets = [c.offset for c in chunks]
    assert offsets == sorted(offsets) and (not chunks or offsets[0] == 0)
    for c in chunks[:-1]:
        assert DEFAULTS.chunk_min <= c.length <= DEFAULTS.chunk_max
    if chunks:
        assert 0 < chunks[-1].length <= DEFAULTS.chunk_max


@chunker_settings
@given(seed=st.integers(0, 2**32), where=st.floats(0.2, 0.8),
       insert=st.binary(min_size=1, max_size=100))
def test_chunker_keeps_an_insertion_local(seed, where, insert):
    data = random.Random(seed).randbytes(24 << 20)
    at = int(len(data) * where)
    edited = data[:at] + insert + data[at:]
    before = {codec.Codec.chunk_hash(bytes(c.data)) for c in _cdc().cut_buf(data)}
    after = [codec.Codec.chunk_hash(bytes(c.data)) for c in _cdc().cut_buf(edited)]
    new = [h for h in after if h not in before]
    assert len(before) >= 10
    assert 1 <= len(new) <= 3, f"{len(new)} of {len(after)} chunks changed"


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    v = LocalVault(tmp_path_factory.mktemp("codec") / "vault")
    v.create()
    return v


def _store_file(vault: LocalVault, data: bytes, cuts: list[int], level: int = 1) -> FileLayout:
    """Cut `data` at `cuts`, store the pieces in one pack, return the file's layout."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    builder = PackBuilder()
    for piece in pieces:
        builder.add(codec.Codec.chunk_hash(piece), len(piece), codec.Codec(level).encode(piece))
    sealed = builder.seal()
    vault.put(pack_key(sealed.name), bytes(sealed.data))
    where = {c.hash: c for c in sealed.chunks}
    refs = []
    for piece in pieces:  # a repeated piece is stored once and referenced twice
        c = where[codec.Codec.chunk_hash(piece)]
        refs.append(ChunkRef(c.hash, c.size, sealed.name, c.offset, c.stored_len))
    return FileLayout(refs)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None,
          max_examples=60)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=12),
       ranges=st.lists(st.tuples(st.integers(0, 3100), st.integers(0, 3100)), max_size=10))
def test_read_range_returns_exactly_the_slice(vault, data, cuts, ranges):
    layout = _store_file(vault, data, cuts)
    assert layout.size == len(data)
    source = ChunkSource(vault, codec.Codec(3), cache_bytes=4096)  # small: evictions happen too
    for offset, length in ranges + [(0, len(data))]:
        expected = data[offset:offset + length]
        pieces = list(layout.pieces(offset, length))
        assert sum(b - a for _, a, b in pieces) == len(expected)
        assert all(0 <= a < b <= layout.refs[i].size for i, a, b in pieces)
        got = read_range(source, layout, offset, length) if pieces else b""
        assert got == expected


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None,
          max_examples=30)
@given(data=st.binary(min_size=1, max_size=2000), where=st.integers(min_value=0),
       bit=st.integers(0, 7))
def test_damage_in_the_vault_raises_and_is_not_cached(vault, data, where, bit):
    layout = _store_file(vault, data, [len(data) // 2], level=0)  # raw: every bit counts
    ref = layout.refs[where % len(layout.refs)]
    path = vault._path(pack_key(ref.pack))
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[ref.offset + (where // 7) % ref.stored_len] ^= 1 << bit
    assume(damaged != original)
    path.chmod(0o600)
    path.write_bytes(damaged)
    try:
        source = ChunkSource(vault, codec.Codec(3))
        with pytest.raises(IntegrityError):
            source.chunk(ref)
        with pytest.raises(IntegrityError):  # nothing wrong was remembered
            read_range(source, layout, 0, layout.size)
    finally:
        path.write_bytes(original)


def test_a_damaged_frame_header_claiming_a_huge_size_is_an_integrity_error():
    """Found by hypothesis: the flipped bit made the header declare a content size so large
    that decompress raised MemoryError instead of IntegrityError."""
    data = b"\x00" * 300 + b"\x01" * 6 + b"\x00" * 6
    stored = bytearray(codec.Codec(1).encode(data))
    assert stored[0] == codec.ZSTD
    stored[672 % len(stored)] ^= 1 << 7
    with pytest.raises(IntegrityError, match="damaged header"):
        codec.Codec.decode(bytes(stored), codec.Codec.chunk_hash(data), len(data))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 3 << 20), max_size=6), seed=st.integers(0, 2**32))
def test_pack_streamed_to_the_vault_is_the_pack_built_in_memory(tmp_path, sizes, seed):
    """A pack written chunk by chunk into a vault temp file (small writes gathered, big
    ones direct), and hashed on a thread of its own as the backup does, has exactly the
    bytes, name and index of the same pack built in memory; committing leaves no temp
    file behind."""
    rng = random.Random(seed)
    vault = LocalVault(tmp_path / f"v{seed}-{len(sizes)}")
    vault.create()
    writer = vault.writer()
    hasher = ThreadPoolExecutor(1)
    streamed, in_memory = PackBuilder(writer, hasher), PackBuilder()
    streamed.HASH_BACKLOG_BYTES = 3000  # so the backlog bound is exercised too
    chunks = [rng.randbytes(n) for n in sizes]
    for c in chunks:
        for b in (streamed, in_memory):
            b.add(codec.Codec.chunk_hash(c), len(c), codec.Codec(0).encode(c))
    expected = in_memory.seal()
    got = streamed.seal()
    hasher.shutdown()
    assert got.data is None and (got.name, got.size, got.chunks) == \
        (expected.name, expected.size, expected.chunks)
    writer.commit(pack_key(got.name))
    assert vault.get(pack_key(got.name)) == bytes(expected.data)
    assert list((vault.root / "tmp").iterdir()) == []


def test_aborted_or_duplicate_object_leaves_nothing_behind(tmp_path):
    vault = LocalVault(tmp_path / "v")
    vault.create()
    vault.put("packs/" + "ab" * 32, b"first")
    again = vault.writer()
    again.write(b"second")
    again.commit("packs/" + "ab" * 32)  # written once: the existing object stays
    assert vault.get("packs/" + "ab" * 32) == b"first"
    dropped = vault.writer()
    dropped.write(b"x" * (2 << 20))
    dropped.abort()
    assert list((vault.root / "tmp").iterdir()) == []
    assert [k for k, _ in vault.list("packs/")] == ["packs/" + "ab" * 32]
