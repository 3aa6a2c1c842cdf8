"""Fixtures for the mount's tests: backups made by the real engine, a hand-built history
(builder.py) for what a backup cannot easily produce, and real mounts made by `btfs mount`.

Every mount a test makes is unmounted at teardown, even when the test fails; mounts left
behind by an earlier, killed run are swept at the start of the session. The environment
(HOME, XDG dirs, BTFS_CONFIG) is the test's own, from tests/conftest.py, so the `btfs`
subprocesses see the same configuration as the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builder import History
from helpers import backup

from btfs.catalog import Catalog
from btfs.vault import LocalVault


def btfs_fuse_mounts() -> list[str]:
    """Mountpoints of every btfs FUSE mount on this machine."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] == "fuse.btfs":
                points.append(fields[4].replace("\\040", " "))
    return points


def force_unmount(mountpoint: str) -> None:
    for cmd in (["fusermount3", "-u", mountpoint], ["fusermount3", "-u", "-z", mountpoint]):
        if mountpoint not in btfs_fuse_mounts():
            return
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


@pytest.fixture(scope="session", autouse=True)
def sweep_stale_mounts():
    """Unmount btfs mounts that earlier (killed) test runs left in pytest's temp dirs."""
    for mp in btfs_fuse_mounts():
        if "/pytest-of-" in mp:
            force_unmount(mp)


def btfs_cli(*args: str, check: int | None = 0, timeout: float = 120
             ) -> subprocess.CompletedProcess:
    """The `btfs` command as a user runs it, in the test's environment."""
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


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


def wait_until(predicate, timeout: float = 5.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(step)
    return value


def is_mounted(path: Path) -> bool:
    return os.fspath(path) in btfs_fuse_mounts()
