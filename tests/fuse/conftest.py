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

SESSION_MARK = ".btfs-test-session"  # in each session's base temp dir: the session's pid


def _session_alive(mountpoint: str) -> bool | None:
    """Whether the test session whose temp dir holds `mountpoint` is still running; None
    when no session marked that dir (runs from before the mark existed)."""
    for parent in Path(mountpoint).parents:
        try:
            pid = int((parent / SESSION_MARK).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return None


@pytest.fixture(scope="session", autouse=True)
def sweep_stale_mounts(tmp_path_factory):
    """Unmount btfs mounts that earlier, killed test runs left in pytest's temp dirs: dead
    ones (their server is gone), those of a session that is no longer running, and unmarked
    ones in a base temp dir older than the three pytest keeps. Mounts of a session running
    at the same time (another checkout's, or one with its own --basetemp) are left alone."""
    (tmp_path_factory.getbasetemp() / SESSION_MARK).write_text(str(os.getpid()))
    bases = sorted(glob.glob("/tmp/pytest-of-*/pytest-*"), key=os.path.getmtime)
    old = set(bases[:-3])
    for mp in btfs_fuse_mounts():
        try:
            os.statvfs(mp)
            dead = False
        except OSError:
            dead = True
        alive = _session_alive(mp)
        unmarked_and_old = alive is None and any(mp.startswith(b + "/") for b in old)
        if dead or alive is False or unmarked_and_old:
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
