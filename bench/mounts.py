"""Mounts: the mount table, waiting until a snapshot answers, unmounting whatever happens."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .common import LOGS, MB, StepFailed, last_line, log

if TYPE_CHECKING:
    from .tools import Tool


def mounted_points() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4].replace("\\040", " ") for line in f}


def is_mounted(p: Path) -> bool:
    return str(p) in mounted_points()


def force_unmount(mnt: Path) -> None:
    """fusermount3 -u, then lazily, then umount -l: whatever gets it off."""
    for cmd in (["fusermount3", "-u", str(mnt)], ["fusermount3", "-u", "-z", str(mnt)],
                ["umount", "-l", str(mnt)]):
        if not is_mounted(mnt):
            return
        try:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.2)


def unmount_everything_under(top: Path) -> None:
    for mp in sorted(mounted_points(), key=len, reverse=True):
        if mp == str(top) or mp.startswith(str(top) + "/"):
            log(f"unmounting leftover {mp}")
            force_unmount(Path(mp))


def peak_rss_of_mount(mnt: Path, pid: int | None) -> float:
    """VmHWM (MB) of the process serving `mnt`: the given pid, or every process whose
    command line names the mount point (btfs detaches, so we look it up)."""
    pids = [pid] if pid else []
    if not pids:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            cmdline = b" ".join(argv)
            if str(mnt).encode() in cmdline and (b"mount" in cmdline or b"fuse" in cmdline):
                pids.append(int(d.name))
    best = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            continue
    if not best:
        raise StepFailed("mount process not found")
    return best * 1024 / MB


@dataclass
class Mount:
    tool: Tool
    mnt: Path
    root: Path  # the snapshot root inside the mount
    env: dict | None = None
    proc: subprocess.Popen | None = None
    err: Path | None = None
    ready_s: float = 0.0

    def path_of(self, source: Path) -> Path:
        """Where the absolute source path `source` appears in this snapshot."""
        return self.root / str(source).lstrip("/")


ACTIVE_MOUNTS: list[Mount] = []


def wait_ready(m: Mount, start: float, timeout: float) -> float:
    """Poll until the mount is in the mount table and `ls` of the snapshot root lists
    something; return the seconds since `start` (the launch of the mount command)."""
    deadline = start + timeout
    while True:
        if m.proc is not None and m.proc.poll() is not None:
            raise StepFailed(f"mount exited {m.proc.returncode}: {last_line(m.err)}")
        if is_mounted(m.mnt):
            try:
                left = max(1.0, deadline - time.perf_counter())
                r = subprocess.run(["ls", "-A", str(m.root) + "/"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, timeout=left)
                if r.returncode == 0 and r.stdout.strip():
                    ready = time.perf_counter() - start
                    _resolve_latest(m)
                    return ready
            except subprocess.TimeoutExpired:
                pass
        if time.perf_counter() > deadline:
            raise StepFailed(f"snapshot root not listable after {timeout:.0f}s")
        time.sleep(0.005)


def _resolve_latest(m: Mount) -> None:
    """Read the snapshots through their dated name, as `ls` would show it, not through the
    `latest` symlink (btfs's and restic's mounts have one). pyfuse3 cannot let the kernel
    cache a symlink (no FUSE_CACHE_SYMLINKS), so every path resolved through it costs a
    readlink round trip; `cp -a` resolves each file's full path, 2.5 readlinks per file.
    The same rule for every tool."""
    if m.root.is_symlink():
        m.root = m.root.parent / os.readlink(m.root)


def start_foreground_mount(tool: Tool, cmd: list[str], env: dict, mnt: Path, root: Path,
                           timeout: float) -> Mount:
    """restic mount / borg mount -f: the process serves until unmounted; we poll."""
    LOGS.mkdir(parents=True, exist_ok=True)
    err = LOGS / f"mount-{tool.name}-{time.time_ns()}.err"
    m = Mount(tool, mnt, root, env=env, err=err)
    ACTIVE_MOUNTS.append(m)
    t0 = time.perf_counter()
    with open(err, "wb") as fe:
        m.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=fe)
    m.ready_s = wait_ready(m, t0, timeout)
    return m


def stop_foreground_mount(m: Mount) -> None:
    force_unmount(m.mnt)
    if m.proc is not None and m.proc.poll() is None:
        try:
            m.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            m.proc.terminate()
            try:
                m.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()


def unmount(m: Mount) -> None:
    try:
        m.tool.unmount(m)
    finally:
        force_unmount(m.mnt)
        if m in ACTIVE_MOUNTS:
            ACTIVE_MOUNTS.remove(m)


def unmount_all() -> None:
    for m in list(ACTIVE_MOUNTS):
        try:
            unmount(m)
        except Exception as e:  # cleanup must go on
            log(f"warning: unmounting {m.mnt}: {e}")
