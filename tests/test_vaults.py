"""What holds for every kind of vault, run on each: a local directory and S3 (moto over
HTTP on 127.0.0.1). Backup, read back, check, restore, and a second backup that stores only
what changed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import (
    MiB,
    assert_same_tree,
    backup,
    make_awkward_tree,
    rand_bytes,
    source_tree,
    stored_tree,
)

from btfs import config as config_mod
from btfs.engine.check import check
from btfs.engine.reader import ChunkSource
from btfs.engine.restore import Restorer
from btfs.repo import Repo, init_repo, track_dirs


@pytest.fixture(params=["local", "s3"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def any_repo(kind, request, paths, tmp_path):
    """make(*dirs, **config changes) -> an open Repo on a vault of kind `kind`."""
    if kind == "s3":
        s3 = request.getfixturevalue("s3")
        init_repo(paths, s3.url(), s3.settings())
    else:
        init_repo(paths, str(tmp_path / "vault"))
    opened: list[Repo] = []

    def make(*dirs) -> Repo:
        track_dirs(paths, [str(d) for d in dirs])
        repo = Repo.open(paths)
        opened.append(repo)
        return repo

    yield make
    for repo in opened:
        repo.close()


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    return d


def test_round_trip_backup_read_check_restore(any_repo, src, tmp_path):
    make_awkward_tree(src)
    (src / "big.bin").write_bytes(rand_bytes(5 * MiB, seed=3))
    repo = any_repo(src)
    stats = backup(repo)
    assert stats.state == "complete" and stats.errors == 0
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id),
                     source_tree(src))
    report = check(repo.catalog, repo.vault, repo.codec, read_data=True)
    assert report.ok, report.problems
    assert report.chunks_verified > 0 and report.unreferenced_packs == 0

    node = repo.catalog.history.node_for_path(os.fsencode(src))
    version = repo.catalog.history.version_at(node, stats.snapshot_id)
    dest = tmp_path / "restored"
    restorer = Restorer(repo.catalog, ChunkSource(repo.vault, repo.codec))
    restorer.restore(node, version, stats.snapshot_id, os.fsencode(dest))
    assert_same_tree(source_tree(dest), source_tree(src), ignore_mtime={b""})


def test_a_second_backup_uploads_only_new_packs(any_repo, src):
    (src / "a.bin").write_bytes(rand_bytes(3 * MiB, seed=1))
    repo = any_repo(src)
    backup(repo)
    before = dict(repo.vault.list("packs/"))
    (src / "b.bin").write_bytes(rand_bytes(2 * MiB, seed=2))
    stats = backup(repo)
    after = dict(repo.vault.list("packs/"))
    new = after.keys() - before.keys()
    assert new and {k: after[k] for k in before} == before
    assert sum(after[k] for k in new) == stats.bytes_added
    assert 2 * MiB <= stats.bytes_added < 3 * MiB
    assert backup(repo).bytes_added == 0
    assert dict(repo.vault.list("packs/")) == after
    assert check(repo.catalog, repo.vault, repo.codec, read_data=True).ok


def test_many_packs_in_flight_all_land_in_order(any_repo, src, paths, kind):
    for i in range(16):
        (src / f"f{i}").write_bytes(rand_bytes(600_000, seed=10 + i))
    repo = any_repo(src)
    repo.close()
    config_mod.save(paths, config_mod.with_changes(config_mod.load(paths), pack_size=MiB))
    repo = any_repo()
    assert repo.vault.max_uploads == (8 if kind == "s3" else 1)
    stats = backup(repo)
    assert stats.bytes_added > 8 * MiB
    packs = list(repo.catalog.chunks.packs())
    assert len(packs) >= 6
    assert dict(repo.vault.list("packs/")) == {f"packs/{n}": s for n, s in packs}
    assert check(repo.catalog, repo.vault, repo.codec, read_data=True).ok
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id),
                     source_tree(src))


def test_cli_backup_check_and_restore(kind, request, tmp_path, src):
    """The commands a user types, on each kind of vault."""
    if kind == "s3":
        s3 = request.getfixturevalue("s3")
        init = ["init", "--vault", s3.url("cli/prefix"), "--endpoint", s3.endpoint]
    else:
        init = ["init", "--vault", str(tmp_path / "vault")]
    (src / "notes.txt").write_text("hello\n")
    (src / "data.bin").write_bytes(rand_bytes(MiB, seed=4))
    for args in (init + ["--no-input"], ["track", str(src)],
                 ["backup", "--limit-upload", "100M"], ["check", "--read-data"],
                 ["restore", str(src), "--to", str(tmp_path / "out")]):
        proc = subprocess.run([sys.executable, "-m", "btfs", *args], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=120)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert proc.stderr == "", (args, proc.stderr)
    assert_same_tree(source_tree(tmp_path / "out"), source_tree(src),
                     ignore_mtime={b""})
