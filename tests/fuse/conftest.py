"""Fixtures for the mount's tests: backups made by the real engine, a hand-built history
(builder.py) for what a backup cannot easily produce, and real mounts made by `btfs mount`.

Every mount a test makes is unmounted at teardown, even when the test fails; mounts left
behind by an earlier, killed run are swept at the start of the session. The environment
(HOME, XDG dirs, BTFS_CONFIG) is the test's own, from tests/conftest.py, so the `btfs`
subprocesses see the same configuration as the test.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
from builder import History
from fusekit import btfs_cli, btfs_fuse_mounts, force_unmount
from helpers import backup

from btfs.catalog import Catalog
from btfs.vault import LocalVault


@pytest.fixture(scope="session", autouse=True)
def sweep_stale_mounts():
    """Unmount btfs mounts that earlier, killed test runs left in pytest's temp dirs: dead
    ones (their process is gone), and any in a base temp dir older than the three pytest
    keeps. Mounts of a test session running at the same time are left alone."""
    bases = sorted(glob.glob("/tmp/pytest-of-*/pytest-*"), key=os.path.getmtime)
    old = set(bases[:-3])
    for mp in btfs_fuse_mounts():
        if "/pytest-of-" not in mp:
            continue
        try:
            os.stat(mp)
            dead = False
        except OSError:
            dead = True
        if dead or any(mp.startswith(b + "/") for b in old):
            force_unmount(mp)


@pytest.fixture
def backed_up(repo_factory):
    """backed_up(src) -> Repo: track `src` (once) and run one backup of it."""
    repos = {}

    def run(src: Path):
        if src not in repos:
            repos[src] = repo_factory(src)
        backup(repos[src])
        return repos[src]

    return run


@pytest.fixture
def mounter(tmp_path):
    """mounter(*options, name='mnt') -> the mountpoint, mounted by `btfs mount` (which
    returns once the mount answers); unmounted at teardown whatever happened."""
    made: list[str] = []

    def mount(*options: str, name: str = "mnt") -> Path:
        mnt = tmp_path / name
        mnt.mkdir(exist_ok=True)
        made.append(str(mnt))
        btfs_cli("mount", str(mnt), *options)
        return mnt

    yield mount
    for mp in made:
        force_unmount(mp)


@pytest.fixture
def repo_dirs(isolated_env, tmp_path) -> tuple[Path, Path]:
    """`btfs init` and `btfs track` done with the real CLI: (tracked dir, mountpoint)."""
    src = tmp_path / "src"
    src.mkdir()
    btfs_cli("init", "--vault", str(tmp_path / "vault"), "--no-input")
    btfs_cli("track", str(src))
    (tmp_path / "mnt").mkdir()
    return src, tmp_path / "mnt"


@pytest.fixture
def hand(tmp_path) -> History:
    """An empty catalog and vault to fill by hand (see builder.py)."""
    vault = LocalVault(tmp_path / "hand-vault")
    vault.create()
    catalog = Catalog(tmp_path / "hand-catalog.db")
    yield History(catalog, vault)
    catalog.close()
    vault.close()
