"""The mount's model without a kernel: names, listings, versions, paging, inodes."""

from __future__ import annotations

import os
import stat

import pytest

from btfs.catalog import ROOT, Catalog
from btfs.fuse.tree import (
    BY_FILE_INO,
    BY_TIME_INO,
    LATEST_INO,
    ROOT_INO,
    NotFound,
    Tree,
    tree_dir_ino,
    version_ino,
)


def walk(tree: Tree, start: int, path: bytes) -> int:
    ino = start
    for part in path.strip(b"/").split(b"/"):
        ino = tree.lookup(ino, part).ino
    return ino


def listing(tree: Tree, ino: int, page: int = 256) -> list[bytes]:
    names, after = [], 0
    while True:
        rows = tree.readdir(ino, after, page)
        if not rows:
            return names
        names += [name for name, _, _ in rows]
        after = rows[-1][2]


@pytest.fixture
def history(tmp_path, backed_up):
    """Two backups: plan.md changes, gone.txt is deleted, new.txt appears."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "plan.md").write_text("one")
    (src / "gone.txt").write_text("bye")
    (src / "sub" / "same.bin").write_bytes(b"\0" * 1000)
    os.mkdir(os.fsencode(src) + b"/caf\xe9")
    repo = backed_up(src)
    (src / "plan.md").write_text("two!")
    (src / "gone.txt").unlink()
    (src / "new.txt").write_text("hi")
    repo = backed_up(src)
    return repo, os.fsencode(src)


def test_top_level_and_latest(history):
    repo, _ = history
    tree = Tree(repo.catalog)
    assert listing(tree, ROOT_INO) == [b"by-time", b"by-file"]
    names = listing(tree, BY_TIME_INO)
    assert names[-1] == b"latest" and len(names) == 3
    assert tree.readlink(LATEST_INO) == names[1]
    assert stat.S_ISLNK(tree.lookup(BY_TIME_INO, b"latest").mode)


def test_each_snapshot_is_the_tree_as_it_was(history):
    repo, src = history
    tree = Tree(repo.catalog)
    first, second = (n.decode() for n in listing(tree, BY_TIME_INO)[:2])
    one = walk(tree, tree.lookup(BY_TIME_INO, first.encode()).ino, src)
    two = walk(tree, tree.lookup(BY_TIME_INO, second.encode()).ino, src)
    assert sorted(listing(tree, one)) == [b"caf\xe9", b"gone.txt", b"plan.md", b"sub"]
    assert sorted(listing(tree, two)) == [b"caf\xe9", b"new.txt", b"plan.md", b"sub"]
    assert tree.lookup(one, b"plan.md").size == 3
    assert tree.lookup(two, b"plan.md").size == 4
    with pytest.raises(NotFound):
        tree.lookup(two, b"gone.txt")
    # An unchanged file is the same inode in both snapshots; directories are not.
    same1 = tree.lookup(tree.lookup(one, b"sub").ino, b"same.bin").ino
    same2 = tree.lookup(tree.lookup(two, b"sub").ino, b"same.bin").ino
    assert same1 == same2
    assert tree.lookup(one, b"sub").ino != tree.lookup(two, b"sub").ino


def test_by_file_lists_one_entry_per_change_and_keeps_deleted_files(history):
    repo, src = history
    tree = Tree(repo.catalog)
    names = [n.decode() for n in listing(tree, BY_TIME_INO)[:2]]
    d = walk(tree, BY_FILE_INO, src)
    assert sorted(listing(tree, d)) == sorted([b"caf\xe9", b"gone.txt", b"new.txt",
                                               b"plan.md", b"sub"])
    plan = tree.lookup(d, b"plan.md").ino
    assert listing(tree, plan) == [f"plan.{n}.md".encode() for n in names]
    assert listing(tree, tree.lookup(d, b"gone.txt").ino) == [f"gone.{names[0]}.txt".encode()]
    unchanged = tree.lookup(tree.lookup(d, b"sub").ino, b"same.bin").ino
    assert listing(tree, unchanged) == [f"same.{names[0]}.bin".encode()]
    # The by-file entry is the very inode by-time shows.
    version = tree.lookup(plan, f"plan.{names[1]}.md".encode())
    snap = tree.lookup(BY_TIME_INO, names[1].encode()).ino
    assert version.ino == walk(tree, snap, src + b"/plan.md")


def test_names_collide_in_the_same_second(tmp_path, repo_factory):
    src = tmp_path / "s"
    src.mkdir()
    repo = repo_factory(src)
    cat: Catalog = repo.catalog
    with cat.transaction():
        for _ in range(3):
            sid = cat.begin_snapshot("h", 1_700_000_000_000_000_000)
            cat.update_snapshot(sid, state="complete", finished_ns=1_700_000_000_500_000_000)
    tree = Tree(cat)
    names = listing(tree, BY_TIME_INO)
    assert names[1] == names[0] + b"-1" and names[2] == names[0] + b"-2"
    assert tree.readlink(LATEST_INO) == names[2]


def test_running_snapshots_are_hidden_until_they_finish(tmp_path, backed_up):
    src = tmp_path / "s"
    src.mkdir()
    repo = backed_up(src)
    # The mount reads through a connection of its own, and data_version only moves for
    # commits made by other connections.
    tree = Tree(Catalog(repo.catalog.path, readonly=True))
    with repo.catalog.transaction():
        running = repo.catalog.begin_snapshot("h", 2_000_000_000_000_000_000)
    assert not tree.refresh()
    assert len(listing(tree, BY_TIME_INO)) == 2
    with repo.catalog.transaction():
        repo.catalog.update_snapshot(running, state="complete")
    assert tree.refresh()
    assert len(listing(tree, BY_TIME_INO)) == 3


def test_readdir_pages_are_stable_and_complete(tmp_path, repo_factory):
    """A large directory built in the catalog: every page resumes exactly after its
    cookie, whatever the page size; nothing is listed twice or skipped."""
    src = tmp_path / "s"
    src.mkdir()
    repo = repo_factory(src)
    cat = repo.catalog
    from btfs.catalog import DIR, FILE, Meta
    with cat.transaction():
        sid = cat.begin_snapshot("h", 1_700_000_000_000_000_000)
        cat.update_snapshot(sid, state="complete")
        empty = cat.add_content(b"\0" * 32, 0, ())
        big = cat.node_for_path(b"/big", create=True)
        cat.add_version(big, sid, Meta(DIR, 0, stat.S_IFDIR | 0o755, 0, 0, 1, 1, 1, None, 1, 2))
        for i in range(5000):
            node = cat.add_node(big, b"f%05d" % i)
            cat.add_version(node, sid, Meta(FILE, 0, stat.S_IFREG | 0o644, 0, 0, 1, 1, 1,
                                            None, 10 + i, 1, content_id=empty))
    tree = Tree(cat)
    snap = tree.lookup(BY_TIME_INO, listing(tree, BY_TIME_INO)[0]).ino
    d = tree.lookup(snap, b"big").ino
    for page in (1, 7, 256, 10_000):
        names = listing(tree, d, page)
        assert len(names) == 5000 == len(set(names)), page
    assert tree_dir_ino(sid, ROOT) == snap


def test_unknown_inodes_and_names(history):
    repo, _ = history
    tree = Tree(repo.catalog)
    with pytest.raises(NotFound):
        tree.getattr(version_ino(10_000_000))
    with pytest.raises(NotFound):
        tree.lookup(ROOT_INO, b"nope")
    with pytest.raises(NotFound):
        tree.lookup(BY_TIME_INO, b"1999-01-01_000000")
