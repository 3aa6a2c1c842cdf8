"""Helpers for real-mount tests: the `btfs` command, the mount table, waiting.

A module of its own (not conftest) so test modules can import it by a unique name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


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


def btfs_cli(*args: str, check: int | None = 0, timeout: float = 120
             ) -> subprocess.CompletedProcess:
    """The `btfs` command as a user runs it, in the test's environment."""
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def wait_until(predicate, timeout: float = 5.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(step)
    return value


def is_mounted(path: Path) -> bool:
    return os.fspath(path) in btfs_fuse_mounts()
