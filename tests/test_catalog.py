"""The catalog's data model: migrations, the path tree, history queries, staging, integrity.

A real SQLite catalog in tmp_path; history is written with the catalog's own methods (as
the backup does), and only the integrity tests break it on purpose with raw SQL.
"""

from __future__ import annotations

import apsw
import pytest

from btfs.catalog import DELETED, DIR, FILE, ROOT, SYMLINK, Catalog, Meta, NewChunk
from btfs.catalog.migrations import MIGRATIONS
from btfs.errors import BtfsError


@pytest.fixture
def cat(tmp_path):
    with Catalog(tmp_path / "catalog.db") as c:
        yield c


def meta(kind: str, mtime: int = 1, *, content_id: int | None = None, size: int = 0,
         target: bytes | None = None) -> Meta:
    mode = {FILE: 0o100644, DIR: 0o40755, SYMLINK: 0o120777, DELETED: 0}[kind]
    return Meta(kind, size, mode, 0, 0, mtime, mtime, mtime, None, 1, 1, target, None,
                content_id)


@pytest.fixture
def content(cat):
    """A real content row: one chunk in one (catalog-only) pack."""
    with cat.writer.transaction():
        ids = cat.chunks.add_pack("ab" * 32, 100, [NewChunk(b"h" * 32, 5, 8, 6)], 0)
        return cat.chunks.add_content(b"s" * 32, 5, [ids[b"h" * 32]])


def test_new_catalog_is_at_the_latest_format(tmp_path):
    path = tmp_path / "catalog.db"
    with Catalog(path) as c:
        assert c.db.get_val("PRAGMA user_version") == len(MIGRATIONS)
        assert c.history.node_path(ROOT) == b"/"
        assert c.db.get_val("PRAGMA journal_mode") == "wal"
        assert c.db.get_val("PRAGMA foreign_keys") == 1
    # Reopening migrates nothing (a second root insert would fail) and keeps the data.
    with Catalog(path) as c:
        assert c.db.get_val("SELECT count(*) FROM node") == 1
    with Catalog(path, readonly=True) as c:
        assert c.readonly and c.history.node_for_path(b"/") == ROOT


def test_every_connection_plans_each_statement_once(tmp_path):
    """The query planner stability guarantee, for the writer and for readers (the mount,
    the backup's worker threads): without it apsw's SQLite, built with STAT4, planned a
    statement that joins tables again at every execution."""
    path = tmp_path / "catalog.db"
    with Catalog(path) as writer, Catalog(path, readonly=True) as reader:
        for c in (writer, reader):
            assert c.db.conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, -1) == 1


def test_catalog_from_a_newer_btfs_is_refused(tmp_path):
    path = tmp_path / "catalog.db"
    with Catalog(path) as c:
        c.db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    with pytest.raises(BtfsError, match="newer btfs"):
        Catalog(path)
    with pytest.raises(BtfsError, match="newer btfs"):
        Catalog(path, readonly=True)


def test_readonly_open_of_a_missing_catalog_does_not_create_it(tmp_path):
    with pytest.raises(BtfsError, match="btfs init"):
        Catalog(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()


def test_node_for_path_with_non_utf8_names(cat):
    with cat.writer.transaction():
        latin = cat.writer.node_for_path(b"/home/caf\xe9/x")
        utf8 = cat.writer.node_for_path("/home/café/x".encode())
        newline = cat.writer.node_for_path(b"/home/a\nb")
    assert len({latin, utf8, newline}) == 3
    assert cat.history.node_for_path(b"/home/caf\xe9/x") == latin
    assert cat.history.node_for_path(b"//home//caf\xe9/x/") == latin  # empty components ignored
    assert cat.history.node_path(latin) == b"/home/caf\xe9/x"
    assert cat.history.node_path(newline) == b"/home/a\nb"
    assert cat.history.node_for_path(b"/home/caf\xe9/y") is None
    assert cat.history.node_for_path(b"/") == ROOT
    home = cat.history.node_for_path(b"/home")
    assert [name for _, name in cat.history.node_children(home)] == sorted(
        [b"caf\xe9", "café".encode(), b"a\nb"])


def _names(entries) -> list[bytes]:
    return [e.name for e in entries]


def test_history_across_snapshots_with_deletion_and_recreation(cat, content):
    """s1: /d/{x,y}; s2: y deleted, x changed; s3: y re-created as a directory; s4: d gone."""
    with cat.writer.transaction():
        d = cat.writer.node_for_path(b"/d")
        x = cat.writer.node_for_path(b"/d/x")
        y = cat.writer.node_for_path(b"/d/y")
        s1 = cat.writer.begin_snapshot("host", 10)
        cat.writer.add_version(d, s1, meta(DIR))
        cat.writer.add_version(x, s1, meta(FILE, 1, content_id=content, size=5))
        cat.writer.add_version(y, s1, meta(FILE, 1, content_id=content, size=5))
        s2 = cat.writer.begin_snapshot("host", 20)
        cat.writer.add_version(x, s2, meta(FILE, 2, content_id=content, size=5))
        cat.writer.add_version(y, s2, meta(DELETED, 0))
        s3 = cat.writer.begin_snapshot("host", 30)
        cat.writer.add_version(y, s3, meta(DIR, 3))
        s4 = cat.writer.begin_snapshot("host", 40)
        for node in (d, x, y):
            cat.writer.add_version(node, s4, meta(DELETED, 0))

    assert _names(cat.history.children_at(d, s1)) == [b"x", b"y"]
    assert _names(cat.history.children_at(d, s2)) == [b"x"]
    assert [(e.name, e.version.type) for e in cat.history.children_at(d, s3)] == [
        (b"x", FILE), (b"y", DIR)]
    assert cat.history.children_at(d, s4) == []
    assert _names(cat.history.children_at(ROOT, s3)) == [b"d"]
    assert cat.history.children_at(ROOT, s4) == []
    # Before the first snapshot nothing existed.
    assert cat.history.children_at(d, s1 - 1) == [] and cat.history.version_at(x, s1 - 1) is None

    assert [v.type for v in cat.history.versions_of(y)] == [FILE, DELETED, DIR, DELETED]
    assert [v.snapshot_id for v in cat.history.versions_of(y)] == [s1, s2, s3, s4]
    assert [v.meta.mtime_ns for v in cat.history.versions_of(x)] == [1, 2, 0]
    assert cat.history.version_at(y, s2) is None
    assert cat.history.version_at(x, s3).meta.mtime_ns == 2  # unchanged in s3: s2's version
    assert cat.history.version_at(y, s3).type == DIR
    assert cat.history.head(y).type == DELETED and cat.history.head(y).snapshot_id == s4
    assert cat.history.live_children(d) == {}
    # node_children keeps every name ever seen, for the by-file view.
    assert [n for _, n in cat.history.node_children(d)] == [b"x", b"y"]
    assert cat.history.child_at(d, b"x", s2).version.meta.mtime_ns == 2
    assert cat.history.child_at(d, b"y", s2) is None
    assert cat.history.child_at(d, b"nope", s2) is None
    assert cat.history.count_entries(s1) == 3 and cat.history.count_entries(s2) == 2
    assert cat.chunks.integrity_problems() == []


def test_children_at_and_its_pages_agree(cat):
    names = [bytes([c]) * 3 for c in b"edcba"] + [b"\xff", b"\x01"]
    with cat.writer.transaction():
        s = cat.writer.begin_snapshot("host", 1)
        parent = cat.writer.node_for_path(b"/p")
        cat.writer.add_version(parent, s, meta(DIR))
        for name in names:
            cat.writer.add_version(cat.writer.add_node(parent, name), s, meta(SYMLINK, target=b"t"))
    every = _names(cat.history.children_at(parent, s))
    assert every == sorted(names)
    pages, after = [], 0
    while page := cat.history.children_page(parent, s, after, 3):  # the mount's readdir pages
        pages.append([row[1] for row in page])
        after = page[-1][0]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sum(pages, []) == names  # node id order: the order they were added


def test_staged_versions_are_invisible_until_committed(cat, content):
    with cat.writer.transaction():
        s1 = cat.writer.begin_snapshot("host", 10)
        d = cat.writer.node_for_path(b"/d")
        old = cat.writer.node_for_path(b"/d/old")
        cat.writer.add_version(d, s1, meta(DIR))
        cat.writer.add_version(old, s1, meta(FILE, 1, content_id=content, size=5))
        new = cat.writer.node_for_path(b"/d/new")
        cat.writer.stage(new, meta(FILE, 5, content_id=content, size=5))
        cat.writer.stage(old, meta(FILE, 6, content_id=content, size=5))
        cat.writer.stage(old, meta(FILE, 7, content_id=content, size=5))  # replaces the first
        s2 = cat.writer.begin_snapshot("host", 20)

    for s in (s1, s2):
        assert [(e.name, e.version.meta.mtime_ns) for e in cat.history.children_at(d, s)] == [
            (b"old", 1)]
    assert cat.history.versions_of(new) == [] and cat.history.head(new) is None
    assert [v.meta.mtime_ns for v in cat.history.versions_of(old)] == [1]
    assert cat.history.head(old).meta.mtime_ns == 1
    assert sorted(v.meta.mtime_ns for v in cat.history.all_staged()) == [5, 7]
    assert cat.history.staged(old).meta.mtime_ns == 7
    assert cat.chunks.integrity_problems() == []

    with cat.writer.transaction():
        for version in cat.history.all_staged():
            cat.writer.commit_staged(version.id, s2)
    assert cat.history.all_staged() == [] and cat.history.staged(old) is None
    assert [(e.name, e.version.meta.mtime_ns) for e in cat.history.children_at(d, s2)] == [
        (b"new", 5), (b"old", 7)]
    assert _names(cat.history.children_at(d, s1)) == [b"old"]
    assert [v.meta.mtime_ns for v in cat.history.versions_of(old)] == [1, 7]
    assert cat.history.head(new).snapshot_id == s2
    assert cat.chunks.integrity_problems() == []


def test_snapshots_states_and_lookup_by_time(cat):
    with cat.writer.transaction():
        a = cat.writer.begin_snapshot("host", 100)
        b = cat.writer.begin_snapshot("host", 200)
        cat.writer.update_snapshot(a, state="complete", finished_ns=150, entries=3)
    assert [s.state for s in cat.history.snapshots()] == ["complete", "running"]
    assert cat.history.snapshot(a).entries == 3 and cat.history.snapshot(a).finished_ns == 150
    with cat.writer.transaction():
        assert cat.writer.mark_interrupted() == [b]
        assert cat.writer.mark_interrupted() == []
    assert cat.history.snapshot(b).state == "interrupted"
    assert cat.history.snapshot_at(99) is None
    assert cat.history.snapshot_at(100).id == a and cat.history.snapshot_at(10**12).id == b
    assert cat.history.latest_snapshot_id() == b
    with pytest.raises(BtfsError, match="no snapshot"):
        cat.history.snapshot(b + 1)
    with pytest.raises(ValueError):
        cat.writer.update_snapshot(a, host_id="other")


def test_a_failed_transaction_leaves_nothing(cat):
    with pytest.raises(RuntimeError), cat.writer.transaction():
        cat.writer.node_for_path(b"/a/b/c")
        cat.writer.begin_snapshot("host", 1)
        raise RuntimeError("boom")
    assert cat.history.node_for_path(b"/a") is None and cat.history.snapshots() == []


def test_queued_rows_go_in_at_explicit_points_and_a_rollback_drops_them(cat, content):
    w = cat.writer
    w.begin()
    snap = w.begin_snapshot("host", 1)
    top = w.add_node(ROOT, b"top")
    child = w.add_node(top, b"child")
    w.add_version(top, snap, meta(DIR))
    w.add_version(child, snap, meta(FILE))
    assert w.queued == 6  # two nodes, and a version and a head for each
    # No unrelated statement sends them: not a write to other tables, not a read.
    w.update_snapshot(snap, entries=2)
    cat.chunks.add_content(b"q" * 32, 0, [])
    assert cat.history.child_node(ROOT, b"top") is None
    assert w.queued == 6
    # The writer's own lookups see them (it sends its queue first).
    assert w.child_node(ROOT, b"top") == top and w.queued == 0
    assert cat.history.node_path(child) == b"/top/child"
    assert w.head(top).meta.type == DIR
    w.add_node(ROOT, b"gone")
    w.rollback()
    assert w.queued == 0
    assert cat.history.node_for_path(b"/top") is None
    assert cat.history.node_for_path(b"/gone") is None
    # Ids given out by the rolled-back transaction are given out again, without a clash.
    with w.transaction():
        assert w.add_node(ROOT, b"again") == top


def test_writes_need_an_explicit_transaction(cat):
    """No write opens a transaction as a side effect."""
    with pytest.raises(AssertionError, match="transaction"):
        cat.writer.add_node(ROOT, b"x")
    with pytest.raises(AssertionError, match="transaction"):
        cat.chunks.add_content(b"s" * 32, 0, [])
    assert not cat.db.in_transaction


def test_schema_py_is_what_the_migrations_build(tmp_path):
    """A new catalog is made from schema.py, an old one through the migrations: the two
    must hold the same tables and indexes, column for column (comments aside)."""
    import re

    import apsw

    from btfs.catalog.migrations import apply_migrations
    from btfs.catalog.schema import FIRST_ROWS

    def objects(path) -> dict[str, str]:
        conn = apsw.Connection(str(path))
        try:
            rows = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
        finally:
            conn.close()
        out = {}
        for kind, name, sql in rows:
            sql = re.sub(r"--[^\n]*", "", sql or "")
            # Spaces around punctuation aside too: ALTER TABLE ADD COLUMN splices its column
            # in after the last one's comment, before the closing parenthesis.
            out[f"{kind} {name}"] = re.sub(r"\s*([(),])\s*", r"\1",
                                           " ".join(sql.replace('"', "").split()))
        return out

    from btfs.catalog.db import Database

    migrated = tmp_path / "migrated.db"
    with Database(migrated) as db:
        apply_migrations(db, 0, FIRST_ROWS)
    with Catalog(tmp_path / "new.db") as new:
        assert new.db.get_val("PRAGMA user_version") == len(MIGRATIONS)
        assert new.history.node_path(ROOT) == b"/"
    assert objects(tmp_path / "new.db") == objects(migrated)


def test_many_rows_go_in_several_statements(cat, content):
    count = 600  # more than one statement's worth of rows (db.ROWS_PER_STATEMENT)
    with cat.writer.transaction():
        snap = cat.writer.begin_snapshot("host", 1)
        nodes = [cat.writer.add_node(ROOT, b"f%d" % i) for i in range(count)]
        files = [(n, meta(FILE, i, size=5), b"%032d" % i if i % 2 else b"s" * 32,
                  5, cat.chunks.content(content).chunk_ids) for i, n in enumerate(nodes)]
        cat.writer.add_file_versions(snap, files)
        cat.writer.add_version(nodes[0], None, meta(FILE, 7, content_id=content))  # staged
    assert cat.chunks.integrity_problems() == []
    for i, node in enumerate(nodes):
        head = cat.history.head(node)
        assert head.snapshot_id == snap and head.meta.mtime_ns == i
        # Even files share the first content, odd ones one per distinct digest.
        assert (head.meta.content_id == content) == (i % 2 == 0)
    assert cat.history.staged(nodes[0]).meta.mtime_ns == 7
    assert cat.db.get_val("SELECT count(*) FROM content") == 1 + count // 2


def test_content_is_deduplicated_by_digest(cat, content):
    with cat.writer.transaction():
        again = cat.chunks.add_content(b"s" * 32, 5, [])
        empty = cat.chunks.add_content(b"e" * 32, 0, [])
    assert again == content
    assert cat.chunks.content(empty).chunk_ids == ()
    refs = cat.chunks.chunk_refs(cat.chunks.content(content).chunk_ids * 2)  # a chunk may repeat
    assert [(r.pack, r.offset, r.stored_len, r.size) for r in refs] == [
        ("ab" * 32, 8, 6, 5)] * 2


def test_contents_refs_of_many_contents_equal_their_content_refs(cat):
    """The restore's batch lookup: every content's chunks in file order (repeats and empty
    contents included), across more than one batch of 500, and a missing content is an
    error rather than a short answer."""
    chunks = [NewChunk(bytes([i % 256, i // 256]) * 16, 10 + i, 8 + 20 * i, 20)
              for i in range(700)]
    with cat.writer.transaction():
        ids = list(cat.chunks.add_pack("cd" * 32, 20_000, chunks, 0).values())
        contents = [cat.chunks.add_content(bytes([n % 256, n // 256]) * 16, 0,
                                    [ids[(n * 7 + k) % 700] for k in range(n % 4)]
                                    + [ids[(n * 7) % 700]] * (n % 3 == 0))
                    for n in range(600)]
    batched = cat.chunks.contents_refs(contents + contents[:5])
    assert sorted(batched) == sorted(contents)
    assert all(batched[c] == cat.chunks.content_refs(c) for c in contents)
    assert len(batched[contents[3]]) == 4
    assert batched[contents[3]][0] == batched[contents[3]][-1]  # a repeated chunk
    assert batched[contents[4]] == []  # an empty file
    assert [r.size for r in batched[contents[5]]] == [10 + 35]
    with pytest.raises(LookupError):  # NoSuchRow, as content_refs raises
        cat.chunks.contents_refs([contents[0], 10**9])


def test_file_chunk_refs_from_agrees_with_one_version_at_a_time(cat):
    """The mount's open loads the refs of the versions after the one opened: each one it
    returns is what file_chunk_refs says; directories, symlinks, deleted versions and
    empty files are skipped or empty; neighbours stop at the chunk budget, the version
    asked for never does."""
    chunks = [NewChunk(bytes([i % 256, i // 256]) * 16, 10 + i, 8 + 20 * i, 20)
              for i in range(400)]
    with cat.writer.transaction():
        ids = list(cat.chunks.add_pack("cd" * 32, 10_000, chunks, 0).values())
        snap = cat.writer.begin_snapshot("host", 10)
        versions = []
        for n in range(120):
            node = cat.writer.node_for_path(b"/d/%d" % n)
            if n % 10 == 3:
                versions.append(cat.writer.add_version(node, snap, meta(DIR)))
            elif n % 10 == 7:
                versions.append(cat.writer.add_version(node, snap, meta(SYMLINK, target=b"x")))
            else:
                count = 300 if n == 50 else n % 4  # one big file; n % 4 == 0: empty
                content = cat.chunks.add_content(bytes([n]) * 32, 0,
                                          [ids[(n * 3 + k) % 400] for k in range(count)])
                versions.append(cat.writer.add_version(node, snap, meta(FILE, content_id=content)))
    for i, vid in enumerate(versions):
        loaded = cat.chunks.file_chunk_refs_from(vid, 16, 20)
        window = [v for v in versions[i:] if v < vid + 16]
        assert set(loaded) <= set(window)
        assert all(loaded[v] == cat.chunks.file_chunk_refs(v) for v in loaded)
        assert (vid in loaded) == (cat.chunks.file_chunk_refs(vid) is not None)
        assert sum(len(refs) for v, refs in loaded.items() if v != vid) <= 20
    big = versions[50]
    assert len(cat.chunks.file_chunk_refs_from(big, 16, 20)[big]) == 300
    assert len(cat.chunks.file_chunk_refs_from(versions[0], 64, 1000)) == 51  # 64 less 13 non-files
    assert cat.chunks.file_chunk_refs_from(10**9, 64, 256) == {}


@pytest.fixture
def good(cat, content):
    with cat.writer.transaction():
        s = cat.writer.begin_snapshot("host", 1)
        f = cat.writer.node_for_path(b"/f")
        cat.writer.add_version(cat.writer.node_for_path(b"/"), s, meta(DIR))
        cat.writer.add_version(f, s, meta(FILE, content_id=content, size=5))
    assert cat.chunks.integrity_problems() == []
    return cat


def _raw(cat: Catalog, *statements) -> None:
    """Break the catalog as a bug or a bad edit would: foreign keys off, no checks."""
    cat.db.execute("PRAGMA foreign_keys=OFF")
    for sql in statements:
        cat.db.execute(sql)
    cat.db.execute("PRAGMA foreign_keys=ON")


def test_integrity_problems_finds_a_missing_chunk(good):
    _raw(good, "DELETE FROM chunk")
    problems = good.chunks.integrity_problems()
    assert any("refers to missing chunk" in p for p in problems), problems


def test_integrity_problems_finds_a_missing_pack(good):
    _raw(good, "DELETE FROM pack")
    problems = good.chunks.integrity_problems()
    assert any("dangling reference in chunk" in p for p in problems), problems


def test_integrity_problems_finds_a_missing_content(good):
    _raw(good, "DELETE FROM content")
    assert any("dangling reference in version" in p for p in good.chunks.integrity_problems())


def test_integrity_problems_finds_a_file_without_content(good):
    _raw(good, "UPDATE version SET content_id=NULL WHERE type='file'")
    assert good.chunks.integrity_problems() == ["versions of type 'file' without content: 1"]


def test_integrity_problems_finds_a_wrong_head(good):
    _raw(good, "UPDATE node SET head=NULL WHERE id != 1")
    assert good.chunks.integrity_problems() == ["nodes whose head is not their newest version: 1"]


def test_integrity_problems_finds_a_wrong_content_size(good):
    _raw(good, "UPDATE content SET size=size+1")
    assert any("but its chunks hold 5" in p for p in good.chunks.integrity_problems())


def test_a_reader_upgrades_an_older_catalog(tmp_path):
    """The mount or `btfs log` may be the first to open a catalog after an upgrade."""
    import apsw

    from btfs.catalog.migrations import MIGRATIONS as ALL
    path = tmp_path / "old.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(ALL[0])
    conn.execute("INSERT INTO node (id, parent, name) VALUES (1, NULL, x'')")
    conn.execute("PRAGMA user_version=1")
    conn.close()
    with Catalog(path, readonly=True) as c:
        assert c.db.get_val("PRAGMA user_version") == len(ALL)
        assert c.history.node_children_page(1, 0, 10) == []


def test_has_xattrs_says_whether_any_version_carries_them(cat):
    from btfs.engine.meta import encode_xattrs
    with cat.writer.transaction():
        s1 = cat.writer.begin_snapshot("host", 10)
        cat.writer.add_version(cat.writer.node_for_path(b"/d"), s1, meta(DIR))
    assert not cat.history.has_xattrs()
    with cat.writer.transaction():
        s2 = cat.writer.begin_snapshot("host", 20)
        cat.writer.add_version(cat.writer.node_for_path(b"/e"), s2,
                        meta(DIR)._replace(xattrs=encode_xattrs([(b"user.k", b"v")])))
    assert cat.history.has_xattrs()
