"""`btfs forget`: kept backups stay whole, stored names stay, the keep_versions safety net,
node.head, --dry-run, the config's [retention] and forget_after_backup, and the v7
migration of an older catalog (names, content_chunk)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_same_tree, backup, rand_bytes, source_tree, stored_tree

from btfs import config as config_mod
from btfs.catalog import Catalog
from btfs.catalog.db import Database
from btfs.catalog.migrations import MIGRATIONS
from btfs.engine.history import committed_versions
from btfs.engine.reader import ChunkSource
from btfs.engine.retention import Policy
from btfs.names import snapshot_names


def cli(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def churn(src: Path, step: int) -> None:
    """Backup `step`'s changes: a file rewritten, one added, one deleted, one touched."""
    (src / "always.txt").write_bytes(b"version %d\n" % step)
    (src / f"added-{step}.bin").write_bytes(rand_bytes(50_000, seed=step))
    gone = src / f"added-{step - 2}.bin"
    if gone.exists():
        gone.unlink()
    (src / "sub").mkdir(exist_ok=True)
    (src / "sub" / "touched").write_bytes(b"same")
    os.utime(src / "sub" / "touched", ns=(step * 10**9, step * 10**9))


def history(repo, src: Path, backups: int) -> dict[int, dict]:
    """`backups` backups of `src`, churned before each: snapshot id -> its stored tree."""
    trees = {}
    for step in range(backups):
        churn(src, step)
        snap = backup(repo).snapshot_id
        trees[snap] = stored_tree(repo.catalog, repo.vault, src, snap)
    return trees


def forget(repo, **policy):
    with repo.writer():
        return repo.forget(Policy(**policy))


def test_kept_backups_stay_whole_and_keep_their_names(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src)
    trees = history(repo, src, 6)
    names = repo.catalog.history.snapshot_names()
    ids = sorted(trees)
    pins = (names[ids[1]], names[ids[3]])
    report = forget(repo, keep_last=1, keep_snapshots=pins)
    kept = {ids[1], ids[3], ids[5]}
    assert {d.id for d in report.decisions if d.keep} == kept
    assert [s.id for s in repo.catalog.history.snapshots()] == sorted(kept)
    for snap in kept:
        assert repo.catalog.history.snapshot_names()[snap] == names[snap]
        assert stored_tree(repo.catalog, repo.vault, src, snap) == trees[snap]
    assert repo.catalog.chunks.integrity_problems() == []
    # The forgotten ones are gone, or ghosts only while they hold versions kept ones show.
    ghosts = [s for s in repo.catalog.history.snapshots(forgotten=True) if s.forgotten_ns]
    assert {g.id for g in ghosts} <= {ids[0], ids[2], ids[4]}
    # A new backup after forgetting: whole, and the next one's tree is the source's.
    churn(src, 6)
    snap = backup(repo).snapshot_id
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, snap), source_tree(src))
    assert repo.catalog.chunks.integrity_problems() == []


def test_forgetting_the_newest_backups_keeps_node_heads_right(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src)
    trees = history(repo, src, 4)
    first = min(trees)
    forget(repo, keep_snapshots=(str(first),))
    assert [s.id for s in repo.catalog.history.snapshots()] == [first]
    assert repo.catalog.chunks.integrity_problems() == []  # includes "head is the newest version"
    # The next backup compares the disk with what is left: every change is recorded.
    snap = backup(repo).snapshot_id
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, snap), source_tree(src))
    assert stored_tree(repo.catalog, repo.vault, src, first) == trees[first]


def _versions(repo, path: Path) -> list[bytes]:
    node = repo.catalog.history.node_for_path(os.fsencode(path))
    source = ChunkSource(repo.vault, repo.codec)
    out = []
    for v in committed_versions(repo.catalog, node):
        refs = repo.catalog.chunks.content_refs(v.meta.content_id)
        out.append(b"".join(bytes(source.chunk(r)) for r in refs))
    return out


@pytest.mark.parametrize("keep_versions", [0, 2])
def test_keep_versions_keeps_the_newest_distinct_versions_of_a_file(repo_factory, tmp_path,
                                                                     keep_versions):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src)
    doc = src / "doc.txt"
    for text in (b"one", b"two", b"three", b"three"):  # the last: touched, same bytes
        doc.write_bytes(text)
        backup(repo)
    doc.unlink()
    backup(repo)
    last = backup(repo).snapshot_id
    assert _versions(repo, doc) == [b"one", b"two", b"three", b"three"]
    forget(repo, keep_snapshots=(str(last),), keep_versions=keep_versions)
    assert [s.id for s in repo.catalog.history.snapshots()] == [last]
    # The newest two distinct contents; the touched copy is the one kept of "three".
    assert _versions(repo, doc) == ([b"two", b"three"] if keep_versions else [])
    assert repo.catalog.chunks.integrity_problems() == []
    # The ghosts holding them keep their names for by-file/ and 'btfs log'.
    names = repo.catalog.history.snapshot_names()
    node = repo.catalog.history.node_for_path(os.fsencode(doc))
    assert all(v.snapshot_id in names for v in repo.catalog.history.versions_of(node))
    if keep_versions:  # restore --version reads them too, and `btfs log` lists them
        repo.close()
        log = cli("log", str(doc)).stdout
        with Catalog(repo.paths.catalog, readonly=True) as catalog:
            expected = [names[v.snapshot_id] for v in committed_versions(catalog, node)]
        assert [line.split()[1] for line in log.splitlines()[1:3]] == expected
        cli("restore", str(doc), "--version", "1", "--to", str(tmp_path / "one"))
        assert (tmp_path / "one").read_bytes() == b"two"


def test_names_are_stored_and_survive_forgetting(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src)
    ns = 1_795_000_000 * 10**9
    with repo.writer(), repo.catalog.writer.transaction():
        ids = [repo.catalog.writer.begin_snapshot("h", ns) for _ in range(3)]
        for i in ids:
            repo.catalog.writer.update_snapshot(i, state="complete", finished_ns=ns)
    before = repo.catalog.history.snapshot_names()
    assert [before[i] for i in ids] == [snapshot_names(repo.catalog.history.snapshots())[i]
                                        for i in ids]
    base = before[ids[0]]
    assert [before[i] for i in ids] == [base, base + "-1", base + "-2"]
    forget(repo, keep_snapshots=(str(ids[0]), str(ids[2])))
    after = repo.catalog.history.snapshot_names()
    assert after == {ids[0]: base, ids[2]: base + "-2"}
    with repo.writer(), repo.catalog.writer.transaction():
        new = repo.catalog.writer.begin_snapshot("h", ns)
    assert repo.catalog.history.snapshot_names()[new] == base + "-3"  # never a forgotten one's


def test_migration_v7_fills_names_and_content_chunks(tmp_path):
    path = tmp_path / "old.db"
    with Database(path) as db:
        for step in MIGRATIONS[:6]:
            db.conn.execute(step)
        db.execute("INSERT INTO node (id, parent, name) VALUES (1, NULL, x'')")
        db.execute("PRAGMA user_version=6")
        ns = 1_795_000_000 * 10**9
        for i, started in enumerate((ns, ns, ns + 10**9, ns)):
            db.execute("INSERT INTO snapshot (id, host_id, started_ns, state) "
                       "VALUES (?, 'h', ?, 'complete')", (i + 1, started))
        db.execute("INSERT INTO pack (id, name, size, chunks, created_ns) "
                   "VALUES (1, 'p', 1, 2, 0)")
        for cid in (1, 2):
            db.execute("INSERT INTO chunk (id, hash, size, pack_id, offset, stored_len) "
                       "VALUES (?, ?, 1, 1, 0, 1)", (cid, bytes([cid]) * 32))
        db.execute("INSERT INTO content (id, digest, size, chunks) VALUES (1, x'01', 3, ?)",
                   (struct.pack("<3q", 1, 2, 1),))
        db.execute("INSERT INTO content (id, digest, size, chunks) VALUES (2, x'02', 0, x'')")
    with Catalog(path) as catalog:
        snaps = catalog.history.snapshots()
        assert {s.id: s.name for s in snaps} == snapshot_names(snaps)
        assert sorted(catalog.db.query("SELECT chunk_id, content_id FROM content_chunk")) == [
            (1, 1), (2, 1)]
        assert catalog.chunks.integrity_problems() == []


def _digests(*paths: Path) -> dict[str, str]:
    """Path -> digest of every file under `paths`; a missing file counts as empty (a
    reader of a WAL catalog may create the empty WAL file a writer removed)."""
    out = {}
    for root in paths:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file() or not p.exists():
                data = p.read_bytes() if p.exists() else b""
                out[str(p)] = hashlib.sha256(data).hexdigest()
    return out


def test_dry_run_changes_nothing_and_lists_every_backup(repo_factory, tmp_path, paths,
                                                         vault_dir):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src)
    history(repo, src, 3)
    repo.close()
    watched = (vault_dir, paths.catalog, Path(f"{paths.catalog}-wal"))
    before = _digests(*watched)
    out = cli("forget", "--keep-last", "1", "--dry-run", "--json")
    rows = json.loads(out.stdout)["snapshots"]
    assert [(r["keep"], r["reasons"]) for r in rows] == [
        (True, ["last 1"]), (False, []), (False, [])]
    text = cli("forget", "--keep-last", "1", "--dry-run").stdout.splitlines()
    assert text[0].startswith("keep   ") and text[0].endswith("(last 1)")
    assert [line.split()[0] for line in text[1:3]] == ["remove", "remove"]
    assert text[-1] == "would remove 2 of 3 backups (dry run: nothing changed)"
    cli("prune", "--dry-run")
    assert _digests(*watched) == before


def test_forget_without_rules_uses_the_config_or_says_what_is_missing(repo_factory, tmp_path,
                                                                      paths):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src)
    history(repo, src, 3)
    repo.close()
    out = cli("forget", check=2)
    assert out.stderr.startswith("btfs: error: no retention rule: give --keep-...")
    cfg = config_mod.with_changes(config_mod.load(paths), retention=Policy(keep_last=2))
    config_mod.save(paths, cfg)
    assert "[retention]" in paths.config_file.read_text()
    out = cli("forget")
    assert out.stdout.splitlines()[-1].startswith("removed 1 of 3 backups")
    assert cli("forget", "--keep-daily", "x", check=2).stderr == (
        "btfs: error: --keep-daily must be a whole number or 'unlimited', not 'x'\n")


def test_forget_after_backup(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src, retention=Policy(keep_last=2, forget_after_backup=True))
    trees = history(repo, src, 4)
    newest = sorted(trees)[-2:]
    assert [s.id for s in repo.catalog.history.snapshots()] == newest
    for snap in newest:
        assert stored_tree(repo.catalog, repo.vault, src, snap) == trees[snap]
