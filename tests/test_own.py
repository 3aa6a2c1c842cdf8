"""btfs never backs up itself: the vault, its catalog and cache directories (and its mounts,
tests/fuse/test_mountpoint.py) are left out whatever is tracked, and `track` refuses what
can never be backed up. Real backups into a real catalog and vault (btfs/own.py)."""

from __future__ import annotations

import dataclasses
import os

import pytest
from helpers import backup, recorded

from btfs import config as config_mod
from btfs.catalog import DELETED
from btfs.config import Paths
from btfs.engine import scanner as scanner_mod
from btfs.errors import UsageError
from btfs.repo import track_dirs


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    return d


def pack_files(vault_dir) -> list[str]:
    return sorted(str(p) for p in (vault_dir / "packs").rglob("*") if p.is_file())


def test_a_tracked_directory_holding_vault_catalog_and_cache_stores_none_of_them(
        repo_factory, tmp_path, paths: Paths, vault_dir):
    # tmp_path holds the vault, the XDG data and cache dirs (catalog, lock, mount logs)
    # and the user's files, as ~ does in the README's Quick start.
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "plan.md").write_text("plan\n")
    (home / ".bashrc").write_text("alias ll='ls -l'\n")
    (paths.cache_dir / "mount-x.log").parent.mkdir(parents=True, exist_ok=True)
    (paths.cache_dir / "mount-x.log").write_text("a mount's log\n")
    repo = repo_factory(tmp_path)
    first = backup(repo)
    assert first.state == "complete" and first.files_new > 0
    packs = pack_files(vault_dir)
    assert packs
    for _ in range(2):
        again = backup(repo)
        assert again.state == "complete"
        assert (again.files_new, again.files_changed, again.bytes_added) == (0, 0, 0)
        assert pack_files(vault_dir) == packs
    assert os.fsencode(home / ".bashrc") in recorded(repo.catalog, first.snapshot_id, home)
    for snap in (first.snapshot_id, again.snapshot_id):
        stored = recorded(repo.catalog, snap, tmp_path)
        for own in (vault_dir, paths.data_dir, paths.cache_dir):
            inside = [p for p in stored if p == os.fsencode(own)
                      or p.startswith(os.fsencode(own) + b"/")]
            assert not inside, (own, inside[:5])
    assert repo.status().new == repo.status().modified == []


def test_what_an_earlier_backup_stored_of_them_is_deleted_from_then_on(
        repo_factory, src, paths: Paths):
    """A btfs that backed itself up (an older release, or a cache moved into a tracked
    directory) stored these paths: the next backup ends them like excluded entries; the
    earlier snapshot keeps them."""
    (src / "keep.txt").write_text("k")
    (src / "cache" / "btfs").mkdir(parents=True)
    (src / "cache" / "btfs" / "mount.log").write_text("log")
    repo = repo_factory(src)
    first = backup(repo)
    assert os.fsencode(src / "cache" / "btfs" / "mount.log") in recorded(
        repo.catalog, first.snapshot_id, src)
    repo.paths = dataclasses.replace(paths, cache_dir=src / "cache" / "btfs")
    status = repo.status()
    assert sorted(status.deleted) == [os.fsencode(src / "cache" / "btfs")]
    assert status.new == status.modified == []
    second = backup(repo)
    assert recorded(repo.catalog, second.snapshot_id, src) == {
        os.fsencode(src / "cache" / "btfs"): DELETED,
        os.fsencode(src / "cache" / "btfs" / "mount.log"): DELETED}
    third = backup(repo)
    assert recorded(repo.catalog, third.snapshot_id, src) == {}


def test_the_check_costs_one_lookup_per_directory_never_one_per_file(
        repo_factory, src, paths: Paths, monkeypatch):
    """Only a listing whose directory holds a never-backed-up path is filtered."""
    for i in range(50):
        (src / f"f{i}").write_text(str(i))
    (src / "d").mkdir()
    repo = repo_factory(src)
    looked_up = []

    class Spy(dict):
        def get(self, key, default=None):
            looked_up.append(key)
            return super().get(key, default)

    made = scanner_mod.Scanner.__init__

    def init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        self._hidden = Spy(self._hidden)

    monkeypatch.setattr(scanner_mod.Scanner, "__init__", init)
    backup(repo)
    assert sorted(looked_up) == [os.fsencode(src), os.fsencode(src / "d")]


@pytest.mark.parametrize("where", ["/proc", "/proc/self", "/sys/kernel", "/dev", "/run",
                                   "vault", "vault/packs", "data", "cache"])
def test_track_refuses_what_is_never_backed_up(initialized, paths: Paths, vault_dir, where):
    target = {"vault": str(vault_dir), "vault/packs": str(vault_dir / "packs"),
              "data": str(paths.data_dir), "cache": str(paths.cache_dir)}.get(where, where)
    if not where.startswith("/"):
        os.makedirs(target, exist_ok=True)
    if not os.path.isdir(target):
        pytest.skip(f"{target} is not a directory here")
    before = paths.config_file.read_bytes()
    with pytest.raises(UsageError, match=r"^cannot track .*, which is never backed up$"):
        track_dirs(paths, [target])
    assert paths.config_file.read_bytes() == before


def test_a_vault_inside_a_tracked_directory_is_excluded_not_refused(initialized, paths,
                                                                     tmp_path):
    cfg = track_dirs(paths, [str(tmp_path)])
    assert [t.path for t in cfg.tracked] == [str(tmp_path)]


@pytest.mark.expect_warnings("is never backed up")
def test_a_tracked_directory_inside_the_vault_from_a_hand_edited_config_is_skipped(
        repo_factory, paths: Paths, vault_dir):
    repo = repo_factory()
    cfg = config_mod.with_changes(repo.config, tracked=(
        config_mod.TrackedDir(str(vault_dir / "packs")),))
    config_mod.save(paths, cfg)
    repo = repo_factory()
    stats = backup(repo)
    assert stats.state == "partial" and stats.files_new == 0
    assert stats.warnings == [f"tracked directory {vault_dir / 'packs'} is never backed up "
                              "(btfs's own files or mount, or /proc, /sys, /dev, /run); "
                              "skipped"]


def test_the_mount_table_is_read_with_its_escapes(tmp_path, monkeypatch):
    from btfs import mounts

    table = tmp_path / "mountinfo"
    table.write_bytes(
        b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        b"45 22 0:40 / /home/me/my\\040backups ro,nosuid - fuse.btfs btfs ro,user_id=0\n"
        b"46 22 0:41 / /home/me/caf\\303\\251 ro master:3 shared:9 - fuse.btfs btfs ro\n"
        b"47 22 0:42 / /home/me/other rw - fuse.sshfs me@host: rw\n")
    monkeypatch.setattr(mounts, "MOUNTINFO", str(table))
    assert mounts.btfs_mounts() == ["/home/me/my backups", "/home/me/café"]
    assert not mounts.is_dead("/home/me/other")
