"""`btfs prune` on real vaults (local, and S3 through moto): kept backups restore
byte-identical, `check --read-data` is clean, the vault shrinks by what the dead chunks
held, kill -9 at each step leaves a sound vault that a rerun finishes, and backups run
before, during and after a prune stay whole."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_same_tree, backup, rand_bytes, source_tree, stored_tree

from btfs.engine.prune import KILL_AT_ENV, PAUSE_AT_ENV
from btfs.engine.retention import Policy
from btfs.errors import BtfsError
from btfs.repo import Repo, init_repo, track_dirs

MiB = 1 << 20
FILE = 300_000  # random, so one incompressible chunk per file


def fill(src: Path, step: int, files: int = 8) -> None:
    """Backup `step`'s files: `files` new random ones; those of step - 1 deleted, so
    forgetting a backup leaves whole packs and parts of packs dead."""
    for i in range(files):
        (src / f"s{step}-{i}").write_bytes(rand_bytes(FILE, seed=step * 100 + i))
    for i in range(files):
        old = src / f"s{step - 1}-{i}"
        if old.exists() and i % 2 == 0:
            old.unlink()
    (src / "small.txt").write_text(f"step {step}\n")


def make_history(repo: Repo, src: Path, backups: int = 5) -> dict[int, dict]:
    trees = {}
    for step in range(backups):
        fill(src, step)
        snap = backup(repo).snapshot_id
        trees[snap] = stored_tree(repo.catalog, repo.vault, src, snap)
    return trees


def dead_stored_bytes(repo: Repo) -> int:
    """Stored bytes of the chunks no content uses (codec groups once)."""
    return repo.catalog.db.get_val(
        "SELECT coalesce(sum(stored_len), 0) FROM (SELECT DISTINCT pack_id, offset, stored_len "
        "FROM chunk c WHERE NOT EXISTS (SELECT 1 FROM content_chunk cc "
        "WHERE cc.chunk_id = c.id))")


def vault_bytes(repo: Repo) -> int:
    return sum(size for _, size in repo.vault.list("packs/"))


def assert_whole(repo: Repo, src: Path, trees: dict[int, dict]) -> None:
    kept = [s.id for s in repo.catalog.history.snapshots()]
    for snap in kept:
        assert stored_tree(repo.catalog, repo.vault, src, snap) == trees[snap]
    report = repo.check(read_data=True)
    assert report.ok, report.problems
    assert report.unreferenced_packs == 0
    assert repo.catalog.db.get_val("SELECT count(*) FROM pack_garbage") == 0


def forget_and_prune(repo: Repo, **prune_args):
    with repo.writer():
        second = repo.catalog.history.snapshots()[1].id
        repo.forget(Policy(keep_last=1, keep_snapshots=(str(second),)))
        return repo.prune(**prune_args)


def run_prune_roundtrip(repo: Repo, src: Path) -> None:
    trees = make_history(repo, src)
    with repo.writer():
        repo.forget(Policy(keep_last=1, keep_snapshots=(str(min(trees) + 1),)))
    dead = dead_stored_bytes(repo)
    assert dead > 4 * FILE
    before = vault_bytes(repo)
    plan = repo.prune(dry_run=True)
    assert vault_bytes(repo) == before
    with repo.writer():
        report = repo.prune()
    after = vault_bytes(repo)
    assert report.freed_bytes == before - after
    # What the dead chunks held, give or take the packs' headers and indexes (48 bytes a
    # chunk, 32 a pack) and the dead bytes left in packs under --max-unused; the dry
    # run's estimate leaves out the new packs' headers and indexes.
    slack = 48 * 40 + 32 * 10 + report.left_unused_bytes
    assert dead - slack <= before - after <= dead + slack
    assert abs(plan.freed_bytes - (before - after)) <= 48 * 40 + 32 * 10
    assert_whole(repo, src, trees)
    # A second prune finds nothing to do.
    with repo.writer():
        again = repo.prune()
    assert (again.dead_packs, again.repacked, again.deleted_packs) == (0, 0, 0)


def test_prune_local_vault(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    run_prune_roundtrip(repo_factory(src, pack_size=MiB), src)


def test_prune_s3_vault(s3, paths, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    init_repo(paths, s3.url(), s3.settings())
    track_dirs(paths, [str(src)])
    from btfs import config as config_mod

    config_mod.save(paths, config_mod.with_changes(config_mod.load(paths), pack_size=MiB))
    with Repo.open(paths) as repo:
        run_prune_roundtrip(repo, src)
    assert all(size for size in s3.keys("vault/packs/").values())


def test_a_big_repack_is_committed_in_batches(repo_factory, tmp_path, monkeypatch):
    """What a repack moved waits in memory for its commit, so packs are repacked and
    committed a batch at a time (BATCH_CHUNKS live chunks, one here: a batch a pack);
    the vault and the figures come out as with one commit."""
    from btfs.catalog.retention import RetentionStore
    from btfs.engine import prune as prune_mod

    monkeypatch.setattr(prune_mod, "BATCH_CHUNKS", 1)
    commits = []
    retire = RetentionStore.retire_packs
    monkeypatch.setattr(RetentionStore, "retire_packs",
                        lambda self, ids, now: commits.append(ids) or retire(self, ids, now))
    src = tmp_path / "src"
    src.mkdir()
    run_prune_roundtrip(repo_factory(src, pack_size=MiB), src)
    repacked = [ids for ids in commits if ids]
    assert len(repacked) >= 2, commits


def test_max_unused_decides_what_is_repacked(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src, pack_size=MiB)
    trees = make_history(repo, src)
    with repo.writer():
        repo.forget(Policy(keep_last=1, keep_snapshots=(str(min(trees) + 1),)))
    lax = repo.prune(max_unused=1.0, dry_run=True)
    strict = repo.prune(max_unused=0.0, dry_run=True)
    assert lax.repacked == 0 and strict.repacked > 0
    assert lax.dead_packs == strict.dead_packs > 0
    with repo.writer():
        repo.prune(max_unused=1.0)
    assert repo.prune(max_unused=0.0, dry_run=True).repacked == strict.repacked
    assert_whole(repo, src, trees)


def test_codec_groups_with_dead_members_are_compressed_again_without_them(repo_factory,
                                                                         tmp_path):
    """Small files are stored in codec groups; a group with dead members keeps only its
    live ones when its pack is repacked."""
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src, pack_size=MiB)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon"]
    for i in range(300):
        rng = rand_bytes(2000, seed=i)
        (src / f"note{i:03}.txt").write_bytes(b" ".join(words[b % 5] + b"%d" % b for b in rng))
    first = backup(repo).snapshot_id
    groups = repo.catalog.db.get_val(
        "SELECT count(*) FROM (SELECT pack_id, offset FROM chunk GROUP BY 1, 2 "
        "HAVING count(*) > 1)")
    assert groups > 0
    for i in range(0, 300, 2):
        (src / f"note{i:03}.txt").unlink()
    last = backup(repo).snapshot_id
    trees = {last: stored_tree(repo.catalog, repo.vault, src, last)}
    with repo.writer():
        repo.forget(Policy(keep_snapshots=(str(last),)))
    assert [s.id for s in repo.catalog.history.snapshots()] == [last] and first != last
    before = vault_bytes(repo)
    with repo.writer():
        report = repo.prune(max_unused=0.0)
    assert report.repacked and report.freed_bytes > 0.3 * before
    assert vault_bytes(repo) == before - report.freed_bytes
    assert_whole(repo, src, trees)
    assert repo.prune(dry_run=True, max_unused=0.0).repacked == 0


def test_a_damaged_live_chunk_stops_the_repack_and_changes_nothing(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src, pack_size=MiB)
    make_history(repo, src)
    with repo.writer():
        repo.forget(Policy(keep_last=1))
    pack_id, offset, stored_len, name = repo.catalog.db.get_row(
        "SELECT c.pack_id, c.offset, c.stored_len, p.name FROM chunk c JOIN pack p "
        "ON p.id = c.pack_id WHERE EXISTS (SELECT 1 FROM content_chunk cc "
        "WHERE cc.chunk_id = c.id) AND EXISTS (SELECT 1 FROM chunk d WHERE d.pack_id = "
        "c.pack_id AND NOT EXISTS (SELECT 1 FROM content_chunk cc WHERE cc.chunk_id = d.id)) "
        "AND c.stored_len > 1000 LIMIT 1")
    path = repo.vault._path(f"packs/{name}")
    data = bytearray(path.read_bytes())
    data[offset + stored_len // 2] ^= 0xFF
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    packs = sorted(repo.catalog.chunks.packs())
    with repo.writer(), pytest.raises(BtfsError, match="run 'btfs check --read-data'"):
        repo.prune(max_unused=0.0)
    assert sorted(repo.catalog.chunks.packs()) == packs
    assert repo.catalog.db.get_val("SELECT count(*) FROM pack_garbage") == 0
    assert path.exists()


def test_the_catalog_shrinks(repo_factory, tmp_path, paths):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src)
    for i in range(3000):
        (src / f"name-long-enough-to-take-room-{i:05}.txt").write_text(f"file {i}\n" * 20)
    backup(repo)
    for f in src.iterdir():
        f.unlink()
    last = backup(repo).snapshot_id
    with repo.writer():
        repo.forget(Policy(keep_snapshots=(str(last),)))
    pages = repo.catalog.db.get_val("PRAGMA page_count")
    with repo.writer():
        report = repo.prune()
    assert report.vacuumed
    assert repo.catalog.db.get_val("PRAGMA page_count") < 0.8 * pages
    assert paths.catalog.stat().st_size == 4096 * repo.catalog.db.get_val("PRAGMA page_count")
    assert repo.catalog.chunks.integrity_problems() == []
    assert not os.path.exists(f"{paths.catalog}-wal") or \
        os.path.getsize(f"{paths.catalog}-wal") == 0


_PEAK_GROWTH = """
import sys
from pathlib import Path
from btfs.catalog import Catalog

def kib(field):
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith(field)).split()[1])

catalog = Catalog(sys.argv[1])
store = catalog.retention
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
before = kib("VmRSS:")
if sys.argv[2] == "vacuum":
    store.vacuum()
else:  # prune's commit: retire a pack of 400,000 dead chunks
    with store.temp_on_disk(), catalog.db.transaction():
        store.retire_packs([1], 1)
print(kib("VmHWM:") - before, catalog.db.get_val("PRAGMA temp_store"))
"""


@pytest.mark.parametrize("step", ["vacuum", "retire"])
def test_big_catalog_steps_keep_their_temporary_data_out_of_memory(tmp_path, step):
    """VACUUM copies the catalog and sorts every index afresh; deleting 400,000 chunk
    rows keeps a statement journal. The catalog's temp_store=MEMORY would hold all that
    in the heap (a million-file catalog made prune's commit peak at 270 MB and its
    VACUUM at 810), so those steps have it in temporary files. Here (a 42 MB catalog)
    the heap grew by 45 MB (VACUUM) and 55 MB (retire) that way."""
    from btfs.catalog import Catalog

    path = tmp_path / "catalog.db"
    catalog = Catalog(path)
    with catalog.db.transaction():
        catalog.db.execute("INSERT INTO pack (id, name, size, chunks, created_ns) "
                           "VALUES (1, 'p', 0, 0, 0)")
        catalog.db.execute(
            "WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < 400000) "
            "INSERT INTO chunk (id, hash, size, pack_id, offset, stored_len) "
            "SELECT x, randomblob(32), 1, 1, x, 1 FROM i")
    catalog.close()
    out = subprocess.run([sys.executable, "-c", _PEAK_GROWTH, str(path), step], check=True,
                         capture_output=True, text=True).stdout.split()
    assert int(out[0]) < 20 * 1024, f"{step} grew the heap by {out[0]} KiB"
    assert out[1] == "2"  # temp_store is MEMORY again for everything after it
    catalog = Catalog(path)
    assert catalog.db.get_val("SELECT count(*) FROM chunk") == (0 if step == "retire"
                                                                else 400000)


_PRUNE = """
import os
from btfs.config import xdg_paths
from btfs.engine import prune
from btfs.repo import Repo
# A batch a pack: a kill at a step of the first batch stops prune between batches.
prune.BATCH_CHUNKS = int(os.environ.get("TEST_BATCH_CHUNKS", prune.BATCH_CHUNKS))
with Repo.open(xdg_paths()) as repo, repo.writer(wait=True):
    repo.prune()
"""


def prune_process(**env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _PRUNE], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("step, batch", [("uploaded", None), ("committed", None),
                                         ("deleting", None), ("uploaded", 1),
                                         ("committed", 1)])
def test_kill_9_at_each_step_leaves_a_sound_vault_and_the_rerun_finishes(
        repo_factory, tmp_path, paths, step, batch):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src, pack_size=MiB)
    trees = make_history(repo, src)
    with repo.writer():
        repo.forget(Policy(keep_last=1, keep_snapshots=(str(min(trees) + 1),)))
    plan = repo.prune(dry_run=True)
    assert plan.repacked and plan.dead_packs
    repo.close()
    batched = {} if batch is None else {"TEST_BATCH_CHUNKS": str(batch)}
    child = prune_process(**{KILL_AT_ENV: step}, **batched)
    assert child.wait(timeout=120) == -9, child.stderr.read()
    with Repo.open(paths) as repo:
        report = repo.check(read_data=True)
        assert report.ok, report.problems
        for snap in (s.id for s in repo.catalog.history.snapshots()):
            assert stored_tree(repo.catalog, repo.vault, src, snap) == trees[snap]
        garbage = repo.catalog.db.get_val("SELECT count(*) FROM pack_garbage")
        assert bool(garbage) == (step != "uploaded")
        if batch is not None:  # stopped between batches: packs are left to repack
            assert repo.prune(dry_run=True).repacked
    rerun = prune_process(**batched)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read()
    with Repo.open(paths) as repo:
        assert_whole(repo, src, trees)
        assert repo.prune(dry_run=True).freed_bytes == 0


def test_a_backup_waits_for_a_running_prune_and_the_reverse(repo_factory, tmp_path, paths):
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src, pack_size=MiB)
    trees = make_history(repo, src)
    with repo.writer():
        repo.forget(Policy(keep_last=1, keep_snapshots=(str(min(trees) + 1),)))
    fill(src, 99)
    # prune first, a backup started while it runs: the backup waits for the lock.
    child = prune_process(**{PAUSE_AT_ENV: "uploaded:2"})
    while not _held(paths) and child.poll() is None:
        time.sleep(0.01)
    assert child.poll() is None, child.stderr.read()
    with repo.writer(wait=True):
        # The prune had the lock: it is done (its records gone) before the backup begins.
        assert repo.catalog.db.get_val("SELECT count(*) FROM pack_garbage") == 0
        assert repo.prune(dry_run=True).dead_packs == 0
        snap = repo.backup().snapshot_id
    assert child.wait(timeout=60) == 0, child.stderr.read()
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, snap), source_tree(src))
    # a backup first, a prune started while it runs: the prune waits for the lock.
    fill(src, 100)
    backup_child = subprocess.Popen([sys.executable, "-m", "btfs", "backup"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not _held(paths) and backup_child.poll() is None:
        time.sleep(0.01)
    with repo.writer(wait=True):
        repo.prune()
    assert backup_child.wait(timeout=60) == 0, backup_child.stderr.read()
    newest = repo.catalog.history.snapshots()[-1]
    assert newest.state == "complete"
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, newest.id), source_tree(src))
    report = repo.check(read_data=True)
    assert report.ok, report.problems


def _held(paths) -> bool:
    from btfs.lock import WriterLock

    return WriterLock(paths.lock).is_held()
