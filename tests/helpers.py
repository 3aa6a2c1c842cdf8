"""Helpers for tests: build awkward source trees, read a stored tree back, compare the two.

A tree (source or stored) is a dict: path relative to its root (bytes, b'' for the root)
-> `Item`, the facts a backup must preserve. `source_tree` reads one from the filesystem,
`stored_tree` from the catalog and vault (content read through btfs.engine.reader, so every
chunk is verified), and `assert_same_tree` names every difference. `source_tree` reads any
directory, so a mounted snapshot or a restored tree compares the same way:
`assert_same_tree(source_tree(mnt / "by-time" / name / ...), source_tree(src))`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from blake3 import blake3

from btfs.catalog import DELETED, DIR, FILE, SYMLINK, Catalog
from btfs.engine.codec import Codec
from btfs.engine.meta import decode_xattrs
from btfs.engine.reader import ChunkSource, FileLayout, read_range
from btfs.vault import Vault

MiB = 1 << 20
NS_MTIME = 1_600_000_000_123_456_789  # nanoseconds that a float timestamp would round


@dataclass(frozen=True)
class Item:
    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int | None  # None: not compared (directories whose mtime the test changes)
    size: int | None = None  # files only
    target: bytes | None = None  # symlinks only
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    sha256: bytes | None = None  # files only: of the content
    nlink: int = 1


def rand_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def xattrs_supported(directory: Path) -> bool:
    probe = directory / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.btfs-probe", b"1")
        return True
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return False
        raise
    finally:
        probe.unlink()


@dataclass
class AwkwardTree:
    """What `make_awkward_tree` made, for tests that want to look at one entry."""

    root: Path
    xattrs: bool
    owners: bool
    notes: dict[str, bytes] = field(default_factory=dict)  # label -> relative path


def make_awkward_tree(root: Path, *, xattrs: bool | None = None) -> AwkwardTree:
    """A tree with every kind of entry a backup tends to get wrong. Needs root for owners
    and setuid bits (it is skipped where the process is not root)."""
    root.mkdir(parents=True, exist_ok=True)
    rootb = os.fsencode(root)
    is_root = os.geteuid() == 0
    if xattrs is None:
        xattrs = xattrs_supported(root)
    t = AwkwardTree(root, xattrs, is_root)

    def put(rel: bytes, data: bytes = b"", mode: int | None = None) -> bytes:
        path = rootb + b"/" + rel
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(path, mode)
        return rel

    t.notes["non_utf8"] = put(b"caf\xe9-latin1.txt", b"latin-1 name\n")
    t.notes["newline"] = put(b"line\nbreak", b"newline in name\n")
    t.notes["long_name"] = put(b"n" * 255, b"255-byte name\n")
    t.notes["utf8"] = put("ünïcödé-日本.md".encode(), b"utf-8 name\n")
    t.notes["empty_file"] = put(b"empty")
    os.mkdir(rootb + b"/empty-dir")
    t.notes["empty_dir"] = b"empty-dir"
    t.notes["deep"] = put(b"a/b/c/d/e/f/g/deep.txt", b"deep\n" * 100)
    t.notes["compressible"] = put(b"a/text.txt", b"all work and no play\n" * 50_000)
    t.notes["random_small"] = put(b"a/random.bin", rand_bytes(100_000, 1))
    # Symlinks: relative, dangling, absolute, to a directory, with a non-UTF-8 target.
    os.symlink(b"a/text.txt", rootb + b"/link-rel")
    os.symlink(b"/nonexistent/nowhere", rootb + b"/link-dangling")
    os.symlink(b"a/b", rootb + b"/link-dir")
    os.symlink(b"caf\xe9-latin1.txt", rootb + b"/link-non-utf8")
    t.notes["dangling"] = b"link-dangling"
    # Sparse: a hole, data, a hole; content must read back as the same bytes.
    sparse = rootb + b"/sparse.img"
    with open(sparse, "wb") as f:
        f.truncate(6 * MiB)
        f.seek(3 * MiB)
        f.write(b"island in the middle" * 1000)
    t.notes["sparse"] = b"sparse.img"
    # Modes, including none at all (root can still read it) and the special bits.
    t.notes["mode000"] = put(b"modes/none", b"nobody may read this\n", 0o000)
    put(b"modes/private", b"mine\n", 0o600)
    put(b"modes/exec", b"#!/bin/sh\necho hi\n", 0o755)
    os.mkdir(rootb + b"/modes/sticky")
    os.chmod(rootb + b"/modes/sticky", 0o1777)
    if is_root:
        put(b"modes/setuid", b"setuid\n", 0o4755)
        put(b"modes/setgid", b"setgid\n", 0o2750)
    # Owners other than ours.
    if is_root:
        t.notes["owned"] = put(b"owned/by-1234", b"someone else's\n")
        os.chown(rootb + b"/owned/by-1234", 1234, 5678)
        os.chown(rootb + b"/owned", 1234, 1234)
        os.symlink(b"by-1234", rootb + b"/owned/link")
        os.chown(rootb + b"/owned/link", 4321, 4321, follow_symlinks=False)
    # Hard links: one content, two names, in different directories.
    t.notes["hard_a"] = put(b"hard-a", b"linked twice\n")
    os.makedirs(rootb + b"/other", exist_ok=True)
    os.link(rootb + b"/hard-a", rootb + b"/other/hard-b")
    t.notes["hard_b"] = b"other/hard-b"
    # Extended attributes, binary values, on a file and a directory.
    if xattrs:
        t.notes["xattr_file"] = put(b"xattr-file", b"has attributes\n")
        os.setxattr(rootb + b"/xattr-file", "user.comment", b"hello")
        os.setxattr(rootb + b"/xattr-file", "user.binary", bytes(range(256)))
        os.mkdir(rootb + b"/xattr-dir")
        os.setxattr(rootb + b"/xattr-dir", "user.tag", b"")
    # A FIFO is not stored (and is not an error).
    os.mkfifo(rootb + b"/a-fifo")
    # Times last, so the writes above do not move them: nanoseconds, the far past, and
    # directories (set deepest first, parents after their children).
    os.utime(rootb + b"/a/text.txt", ns=(NS_MTIME, NS_MTIME))
    os.utime(rootb + b"/empty", ns=(0, 1))
    os.utime(rootb + b"/link-dangling", ns=(NS_MTIME, NS_MTIME + 1), follow_symlinks=False)
    for d in (b"/a/b/c/d/e/f/g", b"/empty-dir", b"/modes"):
        os.utime(rootb + d, ns=(NS_MTIME, NS_MTIME + 2))
    return t


def _file_sha(path: bytes) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.digest()


def _read_xattrs(path: bytes) -> tuple[tuple[bytes, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    return tuple(sorted((n.encode("utf-8", "surrogateescape"),
                         os.getxattr(path, n, follow_symlinks=False)) for n in names))


def source_item(path: bytes) -> Item | None:
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        return Item(FILE, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size,
                    xattrs=_read_xattrs(path), sha256=_file_sha(path), nlink=st.st_nlink)
    if stat.S_ISDIR(st.st_mode):
        return Item(DIR, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                    xattrs=_read_xattrs(path), nlink=st.st_nlink)
    if stat.S_ISLNK(st.st_mode):
        return Item(SYMLINK, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                    target=os.readlink(path), xattrs=_read_xattrs(path), nlink=st.st_nlink)
    return None  # fifos, sockets, devices: btfs does not store them


def source_tree(root: Path | bytes, *, skip=lambda rel, is_dir: False) -> dict[bytes, Item]:
    """Every storable entry under `root`; `skip(rel, is_dir)` leaves an entry (and, for a
    directory, its contents) out, as an exclude pattern would."""
    rootb = os.fsencode(root)
    tree = {b"": source_item(rootb)}
    stack = [b""]
    while stack:
        rel = stack.pop()
        for name in sorted(os.listdir(rootb + b"/" + rel if rel else rootb)):
            child = rel + b"/" + name if rel else name
            item = source_item(rootb + b"/" + child)
            if item is None or skip(child, item.type == DIR):
                continue
            tree[child] = item
            if item.type == DIR:
                stack.append(child)
    return tree


class StoredReader:
    """Reads what a snapshot holds, through the same code the mount and restore use."""

    def __init__(self, catalog: Catalog, vault: Vault):
        self.catalog = catalog
        self.source = ChunkSource(vault, Codec(3), cache_bytes=8 * MiB)

    def content(self, content_id: int) -> bytes:
        content = self.catalog.chunks.content(content_id)
        layout = FileLayout(self.catalog.chunks.chunk_refs(content.chunk_ids))
        assert layout.size == content.size
        data = read_range(self.source, layout, 0, layout.size) if layout.size else b""
        assert blake3(data).digest() == content.digest
        return data

    def tree(self, root: Path | bytes, snapshot_id: int) -> dict[bytes, Item]:
        node = self.catalog.history.node_for_path(os.fsencode(root))
        assert node is not None, f"{root} was never backed up"
        version = self.catalog.history.version_at(node, snapshot_id)
        assert version is not None, f"{root} is not in snapshot {snapshot_id}"
        tree = {b"": self._item(version)}
        stack = [(b"", node)]
        while stack:
            rel, parent = stack.pop()
            for entry in self.catalog.history.children_at(parent, snapshot_id):
                child = rel + b"/" + entry.name if rel else entry.name
                tree[child] = self._item(entry.version)
                if entry.version.type == DIR:
                    stack.append((child, entry.node_id))
        return tree

    def _item(self, version) -> Item:
        m = version.meta
        assert m.type != DELETED
        sha = None
        if m.type == FILE:
            assert m.content_id is not None
            sha = hashlib.sha256(self.content(m.content_id)).digest()
        return Item(m.type, m.mode, m.uid, m.gid, m.mtime_ns,
                    m.size if m.type == FILE else None, m.target,
                    tuple(sorted(decode_xattrs(m.xattrs))), sha, m.nlink)


def stored_tree(catalog: Catalog, vault: Vault, root: Path | bytes,
                snapshot_id: int) -> dict[bytes, Item]:
    return StoredReader(catalog, vault).tree(root, snapshot_id)


def assert_same_tree(stored: dict[bytes, Item], source: dict[bytes, Item], *,
                     ignore_mtime: set[bytes] = frozenset(), ignore_nlink: bool = False) -> None:
    """Equal entries and equal facts; the message lists every difference."""
    problems = []
    for rel in sorted(source.keys() - stored.keys()):
        problems.append(f"missing from backup: {rel!r}")
    for rel in sorted(stored.keys() - source.keys()):
        problems.append(f"in backup but not in source: {rel!r}")
    for rel in sorted(source.keys() & stored.keys()):
        a, b = stored[rel], source[rel]
        for fname in Item.__dataclass_fields__:
            if fname == "mtime_ns" and rel in ignore_mtime:
                continue
            if fname == "nlink" and (ignore_nlink or a.type == DIR):
                continue  # a directory's link count depends on the filesystem
            if getattr(a, fname) != getattr(b, fname):
                problems.append(f"{rel!r}: {fname} stored {getattr(a, fname)!r}, "
                                f"source {getattr(b, fname)!r}")
    assert not problems, "\n".join(problems[:50])


def backup(repo):
    """One backup as the CLI runs it: under the writer lock. Returns its Stats."""
    with repo.writer():
        return repo.backup()


def recorded(catalog: Catalog, snapshot_id: int, under: Path | bytes) -> dict[bytes, str]:
    """Absolute path -> version type of every version `snapshot_id` recorded at or below
    `under` (the directories above a tracked one are recorded too, and /tmp changes under
    a test's feet, so tests look only inside their own tree)."""
    prefix = os.fsencode(under)
    out = {}
    for node_id, kind in catalog.db.query(
            "SELECT node_id, type FROM version WHERE snapshot_id=?", (snapshot_id,)):
        path = catalog.history.node_path(node_id)
        if path == prefix or path.startswith(prefix + b"/"):
            out[path] = kind
    return out


def count(catalog: Catalog, table: str) -> int:
    return catalog.db.get_val(f"SELECT count(*) FROM {table}")


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    """The predicate's first true value, polled every `every` seconds; AssertionError
    naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def flip_byte(path: Path, at: int) -> None:
    """Damage a (read-only) vault object in place: one bit of the byte at `at`."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))
