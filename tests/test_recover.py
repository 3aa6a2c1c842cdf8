"""The catalog's copy in the vault and `btfs recover` (issue 25), with real files, a real
local vault and the real `btfs` command: a machine that lost its HOME gets its history
back from the vault alone.

A generation object that is damaged, a publisher killed mid-upload, a local state that
lags the vault and two hosts in one vault are each tested; the real mount after a
recovery is in tests/fuse/test_recover_mount.py.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import backup, flip_byte, make_awkward_tree, rand_bytes, source_tree

import btfs.replica.publish as publish_mod
from btfs.config import xdg_paths
from btfs.replica.fetch import read_manifest
from btfs.replica.objects import generations
from btfs.replica.pages import STATE_FILE, load_state, scan
from btfs.vault import LocalVault


def btfs(*args: str, check: int | None = 0, env: dict | None = None,
         ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120, env=env)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def wipe_home(tmp_path: Path) -> None:
    """What a dead laptop leaves: no config, no catalog, no cache."""
    for d in ("xdg-config", "xdg-data", "xdg-cache"):
        shutil.rmtree(tmp_path / d, ignore_errors=True)


def host_env(tmp_path: Path, name: str) -> dict:
    """The environment of another machine (its own HOME and XDG directories)."""
    root = tmp_path / name
    (root / "home").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(root / "home"), XDG_CONFIG_HOME=str(root / "config"),
               XDG_DATA_HOME=str(root / "data"), XDG_CACHE_HOME=str(root / "cache"),
               BTFS_CONFIG=str(root / "config" / "btfs" / "config.toml"))
    return env


def catalog_objects(vault: Path) -> list:
    return generations(LocalVault(vault))


@pytest.fixture
def two_backups(tmp_path, vault_dir):
    """`btfs init`, `track`, two backups of an awkward tree with a change between them;
    (src, snapshots listing, log of a file) as the first machine saw them."""
    src = tmp_path / "src"
    make_awkward_tree(src)
    (src / "notes.txt").write_text("first\n")
    btfs("init", "--vault", str(vault_dir), "--no-input")
    btfs("track", str(src), "--exclude", "*.tmp")
    btfs("backup")
    (src / "notes.txt").write_text("second, longer\n")
    (src / "big.bin").write_bytes(rand_bytes(3_000_000, 7))
    btfs("backup")
    return src, btfs("snapshots").stdout, btfs("log", str(src / "notes.txt")).stdout


def test_recover_round_trip_gives_the_same_history_bytes_and_metadata(two_backups, tmp_path,
                                                                       vault_dir):
    src, snapshots, history = two_backups
    config_before = xdg_paths().config_file.read_text()
    before = source_tree(src)
    wipe_home(tmp_path)

    out = btfs("recover", "--vault", str(vault_dir)).stdout
    assert "recovered host" in out and "2 snapshots" in out, out
    assert f"tracking {src}" in out
    assert btfs("snapshots").stdout == snapshots
    assert btfs("log", str(src / "notes.txt")).stdout == history
    # The same host, the same tracked directories and patterns, the same vault.
    assert xdg_paths().config_file.read_text() == config_before

    dest = tmp_path / "restored"
    btfs("restore", str(src), "--to", str(dest))
    assert source_tree(dest) == before
    first = tmp_path / "first"
    btfs("restore", str(src / "notes.txt"), "--version", "1", "--to", str(first))
    assert first.read_text() == "first\n"

    # It continues as that host: the next backup is the third of the same history, and
    # its catalog copy the next generation, compared against the recovered one's pages
    # (the local state names it: nothing is downloaded again).
    head = catalog_objects(vault_dir)[-1]
    assert load_state(xdg_paths().data_dir).key == head.key
    (src / "notes.txt").write_text("third\n")
    btfs("backup")
    assert btfs("snapshots").stdout.count("complete") == 3
    gens = catalog_objects(vault_dir)
    assert len({g.host_id for g in gens}) == 1
    assert gens[-1].number == head.number + 1
    btfs("check")


@pytest.mark.parametrize("where", ["manifest", "pages", "last byte"])
def test_a_damaged_newest_generation_falls_back_to_the_one_before(two_backups, tmp_path,
                                                                  vault_dir, where):
    src, _, _ = two_backups
    newest = catalog_objects(vault_dir)[-1]
    assert newest.number == 2
    path = vault_dir / newest.key
    flip_byte(path, {"manifest": 40, "pages": path.stat().st_size // 2,
                     "last byte": path.stat().st_size - 1}[where])
    wipe_home(tmp_path)

    done = btfs("recover", "--vault", str(vault_dir))
    assert "from catalog generation 1:" in done.stdout, done.stdout
    assert "generation 2 of host" in done.stderr and "trying the one before" in done.stderr
    assert "skipped catalog copy generation 2:" in done.stderr
    assert btfs("snapshots").stdout.count("complete") == 1
    dest = tmp_path / "restored"
    btfs("restore", str(src / "notes.txt"), "--to", str(dest))
    assert dest.read_text() == "first\n"


def test_without_a_sound_generation_recover_fails_and_writes_nothing(two_backups, tmp_path,
                                                                     vault_dir):
    for gen in catalog_objects(vault_dir):
        flip_byte(vault_dir / gen.key, 60)
    wipe_home(tmp_path)
    done = btfs("recover", "--vault", str(vault_dir), check=1)
    assert done.stderr.strip().splitlines()[-1].startswith("btfs: error: no catalog copy")
    paths = xdg_paths()
    assert not paths.config_file.exists() and not paths.catalog.exists()


def test_recover_refuses_where_btfs_is_set_up(two_backups, vault_dir):
    paths = xdg_paths()
    catalog = paths.catalog.read_bytes()
    done = btfs("recover", "--vault", str(vault_dir), check=1)
    assert done.stderr.startswith("btfs: error: btfs is already set up here")
    assert len(done.stderr.splitlines()) == 1
    assert paths.catalog.read_bytes() == catalog


def test_recover_from_a_vault_without_copies_says_so(tmp_path, vault_dir):
    btfs("init", "--vault", str(vault_dir), "--no-input")
    wipe_home(tmp_path)
    done = btfs("recover", "--vault", str(vault_dir), check=1)
    assert "holds no catalog copy" in done.stderr


def test_read_only_recovery_browses_and_refuses_to_write(two_backups, tmp_path, vault_dir):
    src, snapshots, _ = two_backups
    wipe_home(tmp_path)
    out = btfs("recover", "--vault", str(vault_dir), "--read-only").stdout
    assert "read-only" in out
    assert btfs("snapshots").stdout == snapshots
    before = sorted(g.key for g in catalog_objects(vault_dir))
    for args in (["backup"], ["add", str(src / "notes.txt")]):
        done = btfs(*args, check=1)
        assert done.stderr.startswith("btfs: error: backup refused: this machine browses a "
                                      "read-only recovery"), done.stderr
        assert len(done.stderr.splitlines()) == 1
    assert sorted(g.key for g in catalog_objects(vault_dir)) == before


def test_a_no_change_backup_uploads_a_small_delta(tmp_path, repo_factory, vault_dir, paths):
    src = tmp_path / "src"
    for d in range(20):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (src / f"d{d}" / f"f{f}").write_bytes(b"%d %d\n" % (d, f))
    repo = repo_factory(src)
    backup(repo)
    base = catalog_objects(vault_dir)[-1]
    assert base.kind == "base"
    backup(repo)
    delta = catalog_objects(vault_dir)[-1]
    size = paths.catalog.stat().st_size
    assert delta.kind == "delta" and delta.number == base.number + 1
    # A no-change backup adds a snapshot row and touches a few B-tree pages; the file
    # itself is hundreds of KiB.
    assert size > 500_000
    assert delta.size < size / 50, (delta.size, size)
    # One percent of the files changed: still a small fraction of the catalog.
    for d in range(20):
        (src / f"d{d}" / "f0").write_bytes(b"changed\n")
    backup(repo)
    changed = catalog_objects(vault_dir)[-1]
    assert changed.kind == "delta" and changed.size < size / 10, (changed.size, size)


def test_a_state_that_lags_the_vault_is_rebuilt_from_it(tmp_path, repo_factory, vault_dir,
                                                        paths):
    """A publisher killed after its put and before saving its local state: the next one
    compares against the vault's head, not against the older pages the state holds."""
    src = tmp_path / "src"
    for d in ("a", "b"):
        (src / d).mkdir(parents=True)
        for i in range(1500):
            (src / d / f"f{i}").write_text(f"{d}{i}\n")
    repo = repo_factory(src)
    backup(repo)
    stale = (paths.data_dir / STATE_FILE).read_bytes()
    for i in range(0, 1500, 5):  # generation 2 changes many pages...
        (src / "a" / f"f{i}").write_text("changed\n")
    backup(repo)
    second = scan(paths.catalog)
    (paths.data_dir / STATE_FILE).write_bytes(stale)
    (src / "b" / "f7").write_text("changed\n")  # ...generation 3 a few others
    backup(repo)
    third = scan(paths.catalog)
    gens = catalog_objects(vault_dir)
    assert [(g.number, g.kind) for g in gens] == [(1, "base"), (2, "delta"), (3, "delta")]
    manifest = read_manifest(LocalVault(vault_dir), gens[-1])
    assert manifest["file_digest"] == third.file_digest
    assert manifest["pages"] == sum(third.page(n) != second.page(n)
                                    for n in range(third.page_count))
    repo.close()
    wipe_home(tmp_path)
    btfs("recover", "--vault", str(vault_dir))
    assert scan(xdg_paths().catalog).file_digest == third.file_digest


def test_old_generations_go_only_after_newer_bases_landed(tmp_path, repo_factory, vault_dir,
                                                          paths, monkeypatch):
    monkeypatch.setattr(publish_mod, "MAX_DELTAS", 2)
    monkeypatch.setattr(publish_mod, "REBASE_FRACTION", 1000)  # tiny bases: count only
    src = tmp_path / "src"
    src.mkdir()
    repo = repo_factory(src)
    seen = []
    for i in range(14):
        (src / f"f{i}").write_text(f"{i}\n")
        backup(repo)
        gens = catalog_objects(vault_dir)
        seen.append([(g.number, g.kind) for g in gens])
        bases = [g.number for g in gens if g.kind == "base"]
        # KEEP_BASES bases once that many were written (none deleted before), and the
        # oldest object left is a base: no chain is cut.
        assert len(bases) == publish_mod.KEEP_BASES or gens[0].number == 1
        assert len(bases) <= publish_mod.KEEP_BASES
        assert gens[0].kind == "base" and gens[-1].number == i + 1
    # A base after every two deltas; the chains of the three newest bases kept.
    assert seen[-1] == [(7, "base"), (8, "delta"), (9, "delta"), (10, "base"), (11, "delta"),
                        (12, "delta"), (13, "base"), (14, "delta")]
    repo.close()
    wipe_home(tmp_path)
    assert "from catalog generation 14:" in btfs("recover", "--vault", str(vault_dir)).stdout


SLOW_PUBLISH = textwrap.dedent("""
    import time
    import btfs.replica.publish as publish_mod
    from btfs.config import xdg_paths
    from btfs.repo import Repo
    from btfs.vault import local

    class Slow(local._TempFileWriter):
        def write(self, data):
            super().write(data)
            self._flush()
            time.sleep(0.3)  # a slow link: the kill lands inside the catalog's upload

    real_publish = publish_mod.publish

    def slow_publish(*args, **kwargs):
        local.LocalVault.writer = lambda self: Slow(self)
        print("publishing", flush=True)
        return real_publish(*args, **kwargs)

    publish_mod.publish = slow_publish
    with Repo.open(xdg_paths()) as repo, repo.writer():
        repo.backup()
""")


@pytest.mark.timeout(200)
def test_kill_9_during_the_catalog_upload_then_backup_and_recover_work(tmp_path, vault_dir):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3000):
        (src / f"f{i}").write_text(f"{i}\n")
    btfs("init", "--vault", str(vault_dir), "--no-input")
    btfs("track", str(src))
    rng = random.Random(25)
    killed = mid_upload = 0
    for round_ in range(4):
        (src / f"new{round_}").write_bytes(rand_bytes(1000, round_))
        # A backup whose catalog upload is slow, killed at a random moment in it.
        child = subprocess.Popen([sys.executable, "-c", SLOW_PUBLISH], stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout.readline() == "publishing\n"
        deadline = time.monotonic() + 10
        while not any((vault_dir / "tmp").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.4))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            killed += 1
        child.wait()
        child.stdout.close()
        # A generation object half-written: only the vault's temp file holds it.
        mid_upload += any((vault_dir / "tmp").iterdir())
    assert killed >= 2 and mid_upload >= 1, (killed, mid_upload)
    (src / "last").write_text("last\n")
    btfs("backup")
    btfs("check")
    snapshots = btfs("snapshots").stdout
    # Another machine recovers from the vault as it is.
    env = host_env(tmp_path, "other")
    btfs("recover", "--vault", str(vault_dir), env=env)
    assert btfs("snapshots", env=env).stdout == snapshots
    dest = tmp_path / "restored"
    btfs("restore", str(src / "last"), "--to", str(dest), env=env)
    assert dest.read_text() == "last\n"


def test_two_hosts_in_one_vault_recover_lists_both_and_takes_the_chosen_one(tmp_path,
                                                                            vault_dir):
    made = {}
    for name in ("alpha", "beta"):
        env = host_env(tmp_path, name)
        src = tmp_path / name / "home" / "docs"
        src.mkdir()
        (src / "who").write_text(f"I am {name}\n")
        btfs("init", "--vault", str(vault_dir), "--no-input", env=env)
        btfs("track", str(src), env=env)
        btfs("backup", env=env)
        host_id = xdg_paths_of(env).config_file.read_text().split('"')[1]
        made[name] = (host_id, src)
    assert made["alpha"][0] != made["beta"][0]

    fresh = host_env(tmp_path, "fresh")
    listing = btfs("recover", "--vault", str(vault_dir), check=2, env=fresh)
    assert listing.stderr.strip() == ("btfs: error: the vault holds 2 hosts: choose one with "
                                      "--host NAME|ID")
    rows = listing.stdout.splitlines()
    assert rows[0].split() == ["NAME", "ID", "LAST", "BACKUP", "SNAPSHOTS", "CATALOG"]
    assert {made["alpha"][0], made["beta"][0]} <= set(listing.stdout.split())
    assert not xdg_paths_of(fresh).config_file.exists()

    # Both machines have the same host name here, so the name is ambiguous: the id is not.
    ambiguous = btfs("recover", "--vault", str(vault_dir), "--host", os.uname().nodename,
                     check=1, env=fresh)
    assert "2 hosts match" in ambiguous.stderr
    beta_id, beta_src = made["beta"]
    btfs("recover", "--vault", str(vault_dir), "--host", beta_id[:8], env=fresh)
    dest = tmp_path / "restored"
    btfs("restore", str(beta_src / "who"), "--to", str(dest), env=fresh)
    assert dest.read_text() == "I am beta\n"
    assert beta_id in xdg_paths_of(fresh).config_file.read_text()


def xdg_paths_of(env: dict):
    return xdg_paths(env["BTFS_CONFIG"])


def test_recover_round_trip_on_an_s3_vault(s3, tmp_path):
    """The same round trip against S3 (moto on 127.0.0.1): the copy's objects are S3
    objects, and recover reaches the bucket with --endpoint."""
    src = tmp_path / "src"
    make_awkward_tree(src)
    btfs("init", "--vault", s3.url(), "--endpoint", s3.endpoint, "--no-input")
    btfs("track", str(src))
    btfs("backup")
    (src / "more.bin").write_bytes(rand_bytes(300_000, 3))
    btfs("backup")
    snapshots = btfs("snapshots").stdout
    before = source_tree(src)
    kinds = [k.rsplit("-", 2)[1] for k in s3.keys("vault/hosts/") if "/catalog/" in k]
    assert kinds == ["base", "delta"]
    config_before = xdg_paths().config_file.read_text()
    wipe_home(tmp_path)

    btfs("recover", "--vault", s3.url(), "--endpoint", s3.endpoint)
    assert xdg_paths().config_file.read_text() == config_before
    assert btfs("snapshots").stdout == snapshots
    dest = tmp_path / "restored"
    btfs("restore", str(src), "--to", str(dest))
    assert source_tree(dest) == before


@pytest.mark.expect_warnings(r"the catalog's copy in the vault was not updated")
def test_a_failed_publish_warns_keeps_the_backup_and_the_next_one_publishes(
        tmp_path, repo_factory, vault_dir, paths):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a\n")
    repo = repo_factory(src)
    backup(repo)
    catalog_dir = vault_dir / catalog_objects(vault_dir)[0].key.rpartition("/")[0]
    if subprocess.run(["chattr", "+i", str(catalog_dir)], capture_output=True).returncode:
        pytest.skip("chattr +i unavailable here")
    try:
        (src / "b").write_text("b\n")
        stats = backup(repo)
    finally:
        subprocess.run(["chattr", "-i", str(catalog_dir)], check=True)
    assert stats.state == "complete"
    assert [g.number for g in catalog_objects(vault_dir)] == [1]
    backup(repo)
    assert [g.number for g in catalog_objects(vault_dir)] == [1, 2]
    repo.close()
    wipe_home(tmp_path)
    btfs("recover", "--vault", str(vault_dir))
    assert btfs("snapshots").stdout.count("complete") == 3


def test_forget_and_prune_publish_so_a_recovered_catalog_names_no_deleted_pack(
        two_backups, tmp_path, vault_dir):
    """Prune deletes packs the last backup's copy of the catalog still names: it
    publishes the catalog once it no longer refers to them, before deleting any, so a
    machine recovered afterwards sees the pruned history and a vault that checks clean."""
    src, _, _ = two_backups
    btfs("forget", "--keep-last", "1")
    btfs("prune", "--max-unused", "0%")  # repacks the first backup's small files' pack
    snapshots = btfs("snapshots").stdout
    wipe_home(tmp_path)
    btfs("recover", "--vault", str(vault_dir))
    assert btfs("snapshots").stdout == snapshots
    btfs("check", "--read-data")
    dest = tmp_path / "restored"
    btfs("restore", str(src / "notes.txt"), "--to", str(dest))
    assert dest.read_text() == "second, longer\n"
