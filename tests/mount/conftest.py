"""Fixtures for mount tests: a repo with backups, and real mounts that never outlive a test.

Mounts run as `btfs mount` subprocesses (the way users run them) and are unmounted in
teardown even when the test failed; stale btfs mounts under the temp dir are swept first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from btfs.repo import Repo


def unmount(path: str) -> None:
    subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def sweep_stale_mounts():
    """A killed earlier run may have left btfs mounts behind; they would break listings."""
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "fuse.btfs" and "pytest" in fields[1]:
                unmount(fields[1])
    yield


@pytest.fixture
def mounter(tmp_path):
    """mount() -> a mounted Path (via `btfs mount`); all are unmounted at teardown."""
    mounted: list[Path] = []

    def mount(name: str = "mnt") -> Path:
        mnt = tmp_path / name
        mnt.mkdir(exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "btfs", "mount", str(mnt)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        unmount(str(mnt))
        for _ in range(100):  # the serving process exits once unmounted
            if not os.path.ismount(mnt):
                break
            time.sleep(0.05)


@pytest.fixture
def backed_up(repo_factory):
    """backed_up(src) -> the open Repo after one more backup of `src`."""
    repos: dict[Path, Repo] = {}

    def run(src: Path) -> Repo:
        repo = repos.get(src) or repo_factory(src)
        repos[src] = repo
        with repo.writer():
            stats = repo.backup()
        assert stats.state == "complete", stats.warnings
        return repo

    return run
