"""The mount's model (btfs.fuse.tree) on hand-built histories, without a kernel.

Histories here are written straight into a catalog (builder.py) so that each test can
choose what a real backup rarely produces on demand: backups in the same second, a
snapshot still running or interrupted, a path that turns from a directory into a file,
hard-link groups, names that are not UTF-8.
"""

from __future__ import annotations

import stat
import time

import pytest
from builder import NS, T0, local_ns

from btfs.catalog import FILE, Catalog
from btfs.fuse.tree import (
    BY_FILE_INO,
    BY_TIME_INO,
    LATEST_INO,
    ROOT_INO,
    NotFound,
    Tree,
)
from btfs.lock import WriterLock
from btfs.names import version_name

MON = local_ns("2026-11-23 09:30:00")
NAME_MAX = 255  # bytes in a file name (Linux)


def walk(tree: Tree, ino: int, path: bytes) -> int:
    for part in path.strip(b"/").split(b"/"):
        if part:
            ino = tree.lookup(ino, part).ino
    return ino


def entries(tree: Tree, ino: int, page: int = 256) -> dict[bytes, object]:
    """name -> Attr of a whole directory, read the way the kernel does: page by page,
    resuming after the cookie of the last entry taken; each name must come once."""
    out, after = {}, 0
    while rows := tree.readdir(ino, after, page):
        for name, attr, cookie in rows:
            assert name not in out, f"{name!r} listed twice"
            out[name] = attr
            after = cookie
    return out


def at(tree: Tree, name: str, path: bytes = b"/") -> int:
    return walk(tree, tree.lookup(BY_TIME_INO, name.encode()).ino, path)


def test_names_are_local_start_times_with_suffixes_in_time_then_id_order(hand):
    for started in (MON, MON + NS // 2, MON + NS - 1, MON + 5 * NS):
        hand.begin(started)
        hand.dirs(b"/home/me")
    tree = Tree(hand.catalog)
    names = list(entries(tree, BY_TIME_INO))
    assert sorted(names) == [b"2026-11-23_093000", b"2026-11-23_093000-1",
                             b"2026-11-23_093000-2", b"2026-11-23_093005", b"latest"]
    assert tree.readlink(LATEST_INO) == b"2026-11-23_093005"
    latest = tree.lookup(BY_TIME_INO, b"latest")
    assert stat.S_ISLNK(latest.mode) and latest.size == len(b"2026-11-23_093005")


def test_running_snapshots_are_hidden_and_interrupted_ones_shown(hand):
    hand.begin(MON)
    hand.dirs(b"/data")
    hand.file(b"/data/a", b"one")
    hand.begin(MON + 60 * NS, state="interrupted")
    hand.file(b"/data/a", b"two")
    running = hand.begin(MON + 120 * NS, state="running")
    hand.file(b"/data/a", b"three, not finished")
    hand.file(b"/data/new", b"not yet")
    tree = Tree(hand.catalog)
    assert sorted(entries(tree, BY_TIME_INO)) == [b"2026-11-23_093000", b"2026-11-23_093100",
                                                  b"latest"]
    assert tree.readlink(LATEST_INO) == b"2026-11-23_093100"
    # by-file shows neither the running snapshot's versions nor its new paths.
    data = walk(tree, BY_FILE_INO, b"/data")
    assert sorted(entries(tree, data)) == [b"a"]
    assert sorted(entries(tree, tree.lookup(data, b"a").ino)) == [
        b"a.2026-11-23_093000", b"a.2026-11-23_093100"]
    with pytest.raises(NotFound):
        tree.lookup(BY_TIME_INO, b"2026-11-23_093200")
    # Finishing it is seen by refresh (the mount's own, read-only connection).
    reader = Tree(Catalog(hand.catalog.path, readonly=True))
    assert not reader.refresh()
    hand.finish(running)
    assert reader.refresh()
    assert reader.readlink(LATEST_INO) == b"2026-11-23_093200"
    assert not reader.refresh()


def test_a_running_snapshot_whose_writer_lock_is_free_is_shown_as_interrupted(hand,
                                                                               tmp_path):
    """A backup killed by kill -9 leaves its snapshot 'running' and the catalog unchanged:
    the tree sees its writer lock free, and shows what it committed."""
    hand.begin(MON)
    hand.dirs(b"/data")
    hand.file(b"/data/a", b"one")
    writer = WriterLock(tmp_path / "writer.lock")
    writer.acquire()
    killed = hand.begin(MON + 60 * NS, state="running")
    hand.file(b"/data/a", b"two")
    tree = Tree(Catalog(hand.catalog.path, readonly=True), WriterLock(writer.path))
    assert tree.readlink(LATEST_INO) == b"2026-11-23_093000"
    assert not tree.refresh()
    writer.release()  # what the kernel does when the writer dies
    assert tree.refresh()
    assert tree.readlink(LATEST_INO) == b"2026-11-23_093100"
    a = walk(tree, BY_FILE_INO, b"/data/a")
    assert sorted(entries(tree, a)) == [b"a.2026-11-23_093000", b"a.2026-11-23_093100"]
    assert hand.catalog.history.snapshot(killed).state == "running"  # a reader changes nothing
    # The next writer marks it interrupted in the catalog: nothing changes for the tree.
    with hand.catalog.writer.transaction():
        hand.catalog.writer.mark_interrupted()
    assert not tree.refresh()
    assert tree.readlink(LATEST_INO) == b"2026-11-23_093100"


@pytest.mark.parametrize("name", [
    b"n" * 255,  # no suffix
    b"n" * 251 + b".txt",
    "\u00e9t\u00e9-\u65e5\u672c".encode() * 21 + b".md",  # multibyte UTF-8, 255 bytes
    b"\xff" * 240 + b".bin",  # not UTF-8
    b"a" * 200 + b"." + b"x" * 54,  # an "extension" too long to keep
    b"b" * 236 + b".txt",  # fits alone, not with a backup's name
], ids=["no-suffix", "suffix", "utf8", "not-utf8", "long-suffix", "near-limit"])
def test_version_names_of_long_file_names_fit_name_max(hand, name):
    """Each version name fits in 255 bytes (so `cp -a` of the by-file directory can make
    it), keeps the backup's name and the extension, stays valid UTF-8 when the file's
    name is, and is found again by lookup."""
    assert len(name) <= NAME_MAX
    hand.begin(MON)
    hand.dirs(b"/o")
    hand.file(b"/o/" + name, b"first")
    for i in range(1, 3):  # same second: -1, -2
        hand.begin(MON + i)
        hand.file(b"/o/" + name, b"version %d" % i)
    tree = Tree(hand.catalog)
    versions = entries(tree, walk(tree, BY_FILE_INO, b"/o/" + name))
    assert len(versions) == 3
    for shown, stamp in zip(versions, ["2026-11-23_093000", "2026-11-23_093000-1",
                                    "2026-11-23_093000-2"], strict=True):
        assert len(shown) <= NAME_MAX
        assert stamp.encode() in shown
        if name.endswith((b".txt", b".md", b".bin")):
            assert shown.endswith(name[name.rfind(b"."):])
        try:
            name.decode()
        except UnicodeDecodeError:
            pass
        else:
            shown.decode()  # cut at a character boundary
        attr = tree.lookup(walk(tree, BY_FILE_INO, b"/o/" + name), shown)
        assert attr.ino == versions[shown].ino
    assert tree.lookup(walk(tree, BY_FILE_INO, b"/o/" + name),
                       next(iter(versions))).size == len(b"first")


@pytest.mark.parametrize("name, shown", [
    (b"archive.tar.gz", b"archive.2026-11-23_093000.tar.gz"),
    (b"a.b.tar.xz", b"a.b.2026-11-23_093000.tar.xz"),
    (b"src.tar.zst", b"src.2026-11-23_093000.tar.zst"),
    (b"old.tar.bz2", b"old.2026-11-23_093000.tar.bz2"),
    (b"notes.gz", b"notes.2026-11-23_093000.gz"),
    (b"plain.tar", b"plain.2026-11-23_093000.tar"),
    (b".tar.gz", b".tar.2026-11-23_093000.gz"),  # a dot file: nothing before the suffix
    (b"x" * 240 + b".tar.gz", None),  # shortened: the compound suffix still ends it
])
def test_compound_suffixes_stay_together_in_version_names(hand, name, shown):
    stamp = "2026-11-23_093000"
    made = version_name(name, stamp)
    if shown is not None:
        assert made == shown
    else:
        assert len(made) <= NAME_MAX and made.endswith(b"." + stamp.encode() + b".tar.gz")
    hand.begin(MON)
    hand.dirs(b"/c")
    hand.file(b"/c/" + name, b"data")
    tree = Tree(hand.catalog)
    versions = walk(tree, BY_FILE_INO, b"/c/" + name)
    assert list(entries(tree, versions)) == [made]
    assert tree.lookup(versions, made).size == 4


def test_long_names_sharing_a_beginning_get_distinct_version_names():
    one, two = b"s" * 250 + b"1.txt", b"s" * 250 + b"2.txt"
    assert version_name(one, "2026-11-23_093000") != version_name(two, "2026-11-23_093000")
    assert len(version_name(one, "2026-11-23_093000")) <= NAME_MAX


def test_each_snapshot_shows_the_tree_as_it_was(hand):
    hand.begin(MON)
    hand.dirs(b"/home/me/docs")
    keep = hand.file(b"/home/me/docs/keep.txt", b"unchanged")
    hand.file(b"/home/me/docs/edit.txt", b"v1")
    hand.file(b"/home/me/docs/gone.txt", b"bye")
    hand.begin(MON + 3600 * NS)
    hand.file(b"/home/me/docs/edit.txt", b"v2 longer")
    hand.delete(b"/home/me/docs/gone.txt")
    hand.begin(MON + 7200 * NS)
    hand.file(b"/home/me/docs/gone.txt", b"back again")
    tree = Tree(hand.catalog)
    one, two, three = "2026-11-23_093000", "2026-11-23_103000", "2026-11-23_113000"
    docs = b"/home/me/docs"
    assert sorted(entries(tree, at(tree, one, docs))) == [b"edit.txt", b"gone.txt",
                                                          b"keep.txt"]
    assert sorted(entries(tree, at(tree, two, docs))) == [b"edit.txt", b"keep.txt"]
    assert sorted(entries(tree, at(tree, three, docs))) == [b"edit.txt", b"gone.txt",
                                                            b"keep.txt"]
    with pytest.raises(NotFound):
        tree.lookup(at(tree, two, docs), b"gone.txt")
    assert tree.lookup(at(tree, one, docs), b"edit.txt").size == 2
    assert tree.lookup(at(tree, two, docs), b"edit.txt").size == 9
    # An unchanged file is one inode (its version) in every snapshot and in by-file.
    inos = {tree.lookup(at(tree, s, docs), b"keep.txt").ino for s in (one, two, three)}
    by_file = walk(tree, BY_FILE_INO, docs + b"/keep.txt")
    assert inos == {tree.lookup(by_file, f"keep.{one}.txt".encode()).ino}
    assert tree.getattr(inos.pop()).size == len(b"unchanged")
    assert keep  # the builder's version id is what by-time and by-file both show


def test_by_file_has_one_entry_per_change_and_keeps_deleted_files(hand):
    hand.begin(MON)
    hand.dirs(b"/p")
    hand.file(b"/p/plan.md", b"1")
    hand.file(b"/p/.bashrc", b"rc")
    hand.file(b"/p/archive.tar.gz", b"gz")
    hand.file(b"/p/README", b"r")
    hand.symlink(b"/p/link", b"plan.md")
    hand.begin(MON + 60 * NS)
    hand.file(b"/p/plan.md", b"22")
    hand.symlink(b"/p/link", b"elsewhere")
    hand.delete(b"/p/README")
    hand.begin(MON + 120 * NS)
    hand.file(b"/p/plan.md", b"333")
    tree = Tree(hand.catalog)
    p = walk(tree, BY_FILE_INO, b"/p")
    assert sorted(entries(tree, p)) == [b".bashrc", b"README", b"archive.tar.gz", b"link",
                                        b"plan.md"]
    listing = entries(tree, tree.lookup(p, b"plan.md").ino)
    assert sorted(listing) == [b"plan.2026-11-23_093000.md", b"plan.2026-11-23_093100.md",
                               b"plan.2026-11-23_093200.md"]
    assert [listing[n].size for n in sorted(listing)] == [1, 2, 3]
    assert list(entries(tree, tree.lookup(p, b".bashrc").ino)) == [
        b".bashrc.2026-11-23_093000"]
    assert list(entries(tree, tree.lookup(p, b"archive.tar.gz").ino)) == [
        b"archive.2026-11-23_093000.tar.gz"]
    # Deleted: still there, with its one version, and marked.
    assert list(entries(tree, tree.lookup(p, b"README").ino)) == [
        b"README.2026-11-23_093000", b"(deleted in 2026-11-23_093100)"]
    links = tree.lookup(p, b"link").ino
    targets = sorted(tree.readlink(a.ino) for a in entries(tree, links).values())
    assert targets == [b"elsewhere", b"plan.md"]
    # Every version dir is a directory; lookups by version name work.
    assert tree.lookup(p, b"README").is_dir
    v = tree.lookup(tree.lookup(p, b"plan.md").ino, b"plan.2026-11-23_093100.md")
    assert stat.S_ISREG(v.mode) and v.size == 2


@pytest.mark.parametrize("page", [1, 2, 256])
def test_a_path_gone_from_the_newest_backup_is_marked_in_by_file(hand, page):
    """Its by-file directory ends with an empty read-only file naming the backup that
    found it gone; a path that came back, or was never deleted, has none."""
    hand.begin(MON)
    hand.dirs(b"/d/old")
    hand.file(b"/d/gone.txt", b"one")
    hand.file(b"/d/back.txt", b"b")
    hand.file(b"/d/old/inside", b"i")
    hand.begin(MON + 60 * NS)
    hand.file(b"/d/gone.txt", b"two")
    hand.delete(b"/d/back.txt")
    hand.begin(MON + 120 * NS)
    hand.delete(b"/d/gone.txt")
    hand.delete(b"/d/old/inside")
    hand.delete(b"/d/old")
    hand.file(b"/d/back.txt", b"b again")
    tree = Tree(hand.catalog)
    mark = b"(deleted in 2026-11-23_093200)"
    gone = walk(tree, BY_FILE_INO, b"/d/gone.txt")
    listing = entries(tree, gone, page)
    assert list(listing) == [b"gone.2026-11-23_093000.txt", b"gone.2026-11-23_093100.txt", mark]
    attr = tree.lookup(gone, mark)
    assert stat.S_ISREG(attr.mode) and attr.mode & 0o777 == 0o444 and attr.size == 0
    assert attr == listing[mark] == tree.getattr(attr.ino)
    assert attr.mtime_ns == MON + 120 * NS
    assert tree.file_refs(attr.ino).refs == []  # opens as an empty file
    # A deleted directory: its children (themselves marked), then its mark.
    old = walk(tree, BY_FILE_INO, b"/d/old")
    assert list(entries(tree, old, page)) == [b"inside", mark]
    assert list(entries(tree, tree.lookup(old, b"inside").ino, page)) == [
        b"inside.2026-11-23_093000", mark]
    back = walk(tree, BY_FILE_INO, b"/d/back.txt")
    assert list(entries(tree, back, page)) == [b"back.2026-11-23_093000.txt",
                                               b"back.2026-11-23_093200.txt"]
    for wrong in (b"(deleted in 2026-11-23_093100)", b"(deleted in nothing)"):
        with pytest.raises(NotFound):
            tree.lookup(gone, wrong)
    with pytest.raises(NotFound):
        tree.lookup(back, b"(deleted in 2026-11-23_093100)")
    assert sorted(entries(tree, walk(tree, BY_FILE_INO, b"/d"), page)) == [
        b"back.txt", b"gone.txt", b"old"]


def test_a_path_that_was_a_directory_and_a_file_is_a_directory_in_by_file(hand):
    """The documented rule: a path that ever had children lists them in by-file; its file
    versions are in by-time."""
    hand.begin(MON)
    hand.dirs(b"/x/thing")
    hand.file(b"/x/thing/inside", b"child")
    hand.begin(MON + 60 * NS)
    hand.delete(b"/x/thing/inside")
    hand.file(b"/x/thing", b"now a file")
    tree = Tree(hand.catalog)
    one, two = "2026-11-23_093000", "2026-11-23_093100"
    assert tree.lookup(at(tree, one, b"/x"), b"thing").is_dir
    as_file = tree.lookup(at(tree, two, b"/x"), b"thing")
    assert stat.S_ISREG(as_file.mode) and as_file.size == len(b"now a file")
    thing = walk(tree, BY_FILE_INO, b"/x/thing")
    assert tree.getattr(thing).is_dir
    assert list(entries(tree, thing)) == [b"inside"]
    assert list(entries(tree, tree.lookup(thing, b"inside").ino)) == [
        f"inside.{one}".encode(), f"(deleted in {two})".encode()]


def test_names_are_bytes_end_to_end(hand):
    odd = [b"caf\xe9", b"line\nbreak", b"n" * 255, b"tab\there", b"\xff\xfe.bin"]
    hand.begin(MON)
    hand.dirs(b"/o")
    for name in odd:
        hand.file(b"/o/" + name, name)
    tree = Tree(hand.catalog)
    snap_dir = at(tree, "2026-11-23_093000", b"/o")
    assert sorted(entries(tree, snap_dir)) == sorted(odd)
    for name in odd:
        assert tree.lookup(snap_dir, name).size == len(name)
    versions = entries(tree, walk(tree, BY_FILE_INO, b"/o/" + b"n" * 255))
    assert [len(v) for v in versions] == [len(version_name(b"n" * 255, "2026-11-23_093000"))]
    bin_versions = entries(tree, walk(tree, BY_FILE_INO, b"/o/\xff\xfe.bin"))
    assert list(bin_versions) == [b"\xff\xfe.2026-11-23_093000.bin"]


def test_every_recorded_field_is_shown(hand):
    hand.begin(MON)
    hand.dirs(b"/m")
    hand.file(b"/m/f", b"x" * 5000, mode=0o4750, uid=1234, gid=5678, atime_ns=T0 + 11,
              mtime_ns=T0 + 22, ctime_ns=T0 + 33, xattrs=_xattrs([(b"user.a", b"\0\1"),
                                                                  (b"user.b", b"")]))
    hand.dir(b"/m/d", mode=0o1777, uid=7, gid=8, nlink=5, mtime_ns=1,
             xattrs=_xattrs([(b"user.tag", b"dir")]))
    hand.symlink(b"/m/l", b"/nowhere/\xff", uid=9, gid=10, mtime_ns=T0 - 5)
    tree = Tree(hand.catalog)
    m = at(tree, "2026-11-23_093000", b"/m")
    f = tree.lookup(m, b"f")
    assert (f.mode, f.uid, f.gid, f.size, f.nlink) == (stat.S_IFREG | 0o4750, 1234, 5678,
                                                       5000, 1)
    assert (f.atime_ns, f.mtime_ns, f.ctime_ns) == (T0 + 11, T0 + 22, T0 + 33)
    assert f.blocks >= 5000 // 512
    assert tree.describe(f.ino) == (f, {b"user.a": b"\0\1", b"user.b": b""})
    d = tree.lookup(m, b"d")
    assert (d.mode, d.uid, d.gid, d.nlink, d.mtime_ns) == (stat.S_IFDIR | 0o1777, 7, 8, 5, 1)
    assert tree.describe(d.ino) == (d, {b"user.tag": b"dir"})
    link = tree.lookup(m, b"l")
    assert stat.S_ISLNK(link.mode) and link.size == len(b"/nowhere/\xff")
    assert (link.uid, link.gid, link.mtime_ns) == (9, 10, T0 - 5)
    assert tree.readlink(link.ino) == b"/nowhere/\xff"
    assert tree.getattr(f.ino) == f  # getattr agrees with lookup


def _xattrs(pairs):
    from btfs.engine.meta import encode_xattrs
    return encode_xattrs(pairs)


def test_hard_links_share_one_inode_within_a_snapshot(hand):
    hand.begin(MON)
    hand.dirs(b"/h/sub")
    hand.file(b"/h/a", b"linked", ino=77, nlink=2)
    hand.file(b"/h/sub/b", b"linked", ino=77, nlink=2)
    hand.file(b"/h/copy", b"linked", ino=78, nlink=1)  # same bytes, not a link
    tree = Tree(hand.catalog)
    h = at(tree, "2026-11-23_093000", b"/h")
    a = tree.lookup(h, b"a")
    b = tree.lookup(tree.lookup(h, b"sub").ino, b"b")
    copy = tree.lookup(h, b"copy")
    assert a.ino == b.ino and a.nlink == b.nlink == 2
    assert copy.ino != a.ino
    assert tree.getattr(a.ino).nlink == 2


def test_readdir_pages_resume_after_their_cookie_in_a_100k_directory(hand):
    hand.begin(MON)
    hand.dirs(b"/big")
    cat = hand.catalog
    from btfs.catalog import FILE
    empty = hand.content(b"")
    meta = hand.meta(FILE, stat.S_IFREG | 0o644, content_id=empty)
    with cat.writer.transaction():
        big = cat.history.node_for_path(b"/big")
        for i in range(100_000):
            cat.writer.add_version(cat.writer.add_node(big, b"%06d" % (i * 7919 % 100_000)),
                            hand.snapshot_id, meta)
    tree = Tree(cat)
    d = at(tree, "2026-11-23_093000", b"/big")
    started = time.perf_counter()
    names = entries(tree, d, page=300)
    took = time.perf_counter() - started
    assert len(names) == 100_000 and sorted(names)[0] == b"000000"
    assert took < 20, f"listing 100k entries took {took:.1f}s"
    # by-file lists the same 100k paths, each as a directory of its one version.
    by_file = entries(tree, walk(tree, BY_FILE_INO, b"/big"), page=1000)
    assert len(by_file) == 100_000 and all(a.is_dir for a in by_file.values())


def test_the_model_loads_nothing_of_the_history_up_front(hand):
    """Ready at once whatever the size: building the tree reads only the snapshot list."""
    hand.begin(MON)
    hand.dirs(b"/w")
    from btfs.catalog import FILE
    meta = hand.meta(FILE, stat.S_IFREG | 0o644, content_id=hand.content(b""))
    with hand.catalog.writer.transaction():
        w = hand.catalog.history.node_for_path(b"/w")
        for i in range(50_000):
            writer = hand.catalog.writer
            writer.add_version(writer.add_node(w, b"f%d" % i), hand.snapshot_id, meta)
    started = time.perf_counter()
    tree = Tree(Catalog(hand.catalog.path, readonly=True))
    assert list(entries(tree, ROOT_INO)) == [b"by-time", b"by-file"]
    assert time.perf_counter() - started < 0.1


def test_unknown_names_and_inodes_are_not_found(hand):
    hand.begin(MON)
    hand.dirs(b"/u")
    hand.file(b"/u/f", b"f")
    tree = Tree(hand.catalog)
    u = at(tree, "2026-11-23_093000", b"/u")
    for parent, name in ((ROOT_INO, b"nope"), (BY_TIME_INO, b"2020-01-01_000000"),
                         (BY_TIME_INO, b"\xff"), (u, b"g"), (BY_FILE_INO, b"zzz")):
        with pytest.raises(NotFound):
            tree.lookup(parent, name)
    with pytest.raises(NotFound):
        tree.lookup(walk(tree, BY_FILE_INO, b"/u/f"), b"f.1999-01-01_000000")


def test_listings_do_not_slow_down_with_history(hand):
    """3000 hourly backups of a directory whose 50 files change every time: each listing
    is one indexed range per page, not a pass over every version or snapshot per page."""
    from btfs.catalog import DIR, FILE
    cat = hand.catalog
    hand.begin(MON)
    hand.dirs(b"/d")
    content = hand.content(b"x")
    with cat.writer.transaction():
        files = [cat.writer.node_for_path(b"/d/f%02d" % i) for i in range(50)]
        d = cat.history.node_for_path(b"/d")
        for hour in range(1, 3000):
            sid = cat.writer.begin_snapshot("h", MON + hour * 3600 * NS)
            cat.writer.update_snapshot(sid, state="complete", finished_ns=MON + hour * 3600 * NS)
            cat.writer.add_version(d, sid, hand.meta(DIR, stat.S_IFDIR | 0o755, mtime_ns=hour))
            for node in files:
                cat.writer.add_version(node, sid, hand.meta(FILE, stat.S_IFREG | 0o644,
                                                     content_id=content, mtime_ns=hour))
    tree = Tree(Catalog(cat.path, readonly=True))
    timings = {}

    def timed(label, fn):
        started = time.perf_counter()
        result = fn()
        timings[label] = time.perf_counter() - started
        return result

    assert len(timed("by-time", lambda: entries(tree, BY_TIME_INO, page=25))) == 3001
    d_ino = walk(tree, BY_FILE_INO, b"/d")
    assert len(timed("by-file dir", lambda: entries(tree, d_ino, page=25))) == 50
    f_ino = tree.lookup(d_ino, b"f00").ino
    versions = timed("versions", lambda: entries(tree, f_ino, page=25))
    assert len(versions) == 2999  # from the second backup on
    name = sorted(versions)[1234]
    assert timed("lookup", lambda: tree.lookup(f_ino, name)).ino == versions[name].ino
    assert all(t < 0.5 for t in timings.values()), timings


def test_a_file_version_is_named_for_error_reports_by_its_path_and_backup(hand):
    hand.begin(MON)
    hand.dirs(b"/m")
    hand.file(b"/m/f", b"x" * 10)
    tree = Tree(hand.catalog)
    f = tree.lookup(at(tree, "2026-11-23_093000", b"/m"), b"f")
    assert tree.name_file(f.ino) == "/m/f (backup 2026-11-23_093000)"
    with pytest.raises(NotFound):
        tree.name_file(BY_TIME_INO)


def test_use_catalog_switches_to_a_newer_copy_of_the_history(backed_up, tmp_path):
    """`btfs mount --host` follows the other host: the tree switches to a newer copy of its
    catalog (another file, opened immutable) and by-time and by-file show what it adds."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("one\n")
    repo = backed_up(src)
    shutil.copyfile(repo.paths.catalog, tmp_path / "old.db")
    time.sleep(1.1)  # the backups get different names
    (src / "f").write_text("two\n")
    backed_up(src)
    shutil.copyfile(repo.paths.catalog, tmp_path / "new.db")
    old = Catalog(tmp_path / "old.db", immutable=True)
    new = Catalog(tmp_path / "new.db", immutable=True)
    tree = Tree(old)
    assert len(tree.snapshots) == 1
    by_file = walk(tree, BY_FILE_INO, bytes(src / "f"))
    assert len(entries(tree, by_file)) == 1
    assert tree.use_catalog(new)
    assert len(tree.snapshots) == 2
    assert len(entries(tree, by_file)) == 2
    assert not tree.use_catalog(new)  # the same history again: nothing changed
    old.close()
    new.close()


def test_an_open_says_whether_the_content_is_as_long_as_the_size_shown(hand):
    """The mount hands a small file whole to the kernel only when its stored content is
    as long as the size its attributes give (a file that kept changing while a backup
    read it can disagree): such a version comes from the one-version query, so marked."""
    hand.begin(T0)
    hand.dirs(b"/d")
    for i in range(5):
        hand.file(b"/d/f%d" % i, b"x" * (10 + i))
    stat_size = hand.meta(FILE, stat.S_IFREG | 0o644, size=99, content_id=hand.content(b"y" * 7))
    hand._add(b"/d/grew", stat_size)
    tree = Tree(hand.catalog)
    d = walk(tree, BY_TIME_INO, tree.names[hand.snapshot_id].encode() + b"/d")
    for name, attr in entries(tree, d).items():
        content = tree.file_refs(attr.ino)
        assert sum(r.size for r in content.refs) == (7 if name == b"grew" else attr.size)
        assert content.size_as_shown == (name != b"grew"), name
