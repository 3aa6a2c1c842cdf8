"""btfs, restic and borg: each tool's version of every step, behind one interface."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .common import (
    NOTES,
    ROOT,
    WORK,
    Ran,
    StepFailed,
    du_bytes,
    log,
    run,
    timed,
    timed_rss,
    tool_version,
)
from .mounts import (
    ACTIVE_MOUNTS,
    Mount,
    is_mounted,
    start_foreground_mount,
    stop_foreground_mount,
    unmount,
    wait_ready,
)

# BENCH_BTFS: another btfs executable to measure (default: the project venv's).
BTFS = Path(os.environ.get("BENCH_BTFS") or ROOT / ".venv" / "bin" / "btfs")
RESTIC_REPO_VERSION = "2"  # compressed format (the default from restic 0.16 on)


@dataclass(frozen=True)
class Dataset:
    name: str  # "src", "large" or "scale": one repository per tool and dataset
    path: Path  # the absolute directory that is backed up


class Tool:
    """One backup tool's version of each step. Every method raises StepFailed on failure."""

    name = ""

    def __init__(self, timeout: float):
        self.home = WORK / self.name
        self.timeout = timeout

    def dir(self, ds: Dataset) -> Path:
        return self.home / ds.name

    def version(self) -> str:
        raise NotImplementedError

    def env(self, ds: Dataset) -> dict:
        raise NotImplementedError

    def init(self, ds: Dataset) -> None:
        raise NotImplementedError

    def backup(self, ds: Dataset, label: str) -> tuple[float, float]:
        """Seconds and peak RSS (MB) of one backup of `ds`."""
        raise NotImplementedError

    def repo_bytes(self, ds: Dataset) -> int:
        raise NotImplementedError

    def mount(self, ds: Dataset, mnt: Path) -> Mount:
        """Mount the newest snapshot; the Mount carries its ready time."""
        raise NotImplementedError

    def unmount(self, m: Mount) -> None:
        raise NotImplementedError

    def restore(self, ds: Dataset, dest: Path) -> float:
        """Seconds to restore the newest snapshot of `ds` into `dest`; the copy of `ds.path`
        ends up at restored_path(ds, dest)."""
        raise NotImplementedError

    def restored_path(self, ds: Dataset, dest: Path) -> Path:
        return dest / str(ds.path).lstrip("/")

    def run(self, ds: Dataset, args: list[str], step: str, **kw) -> Ran:
        return run(args, name=f"{self.name}-{ds.name}-{step}", env=self.env(ds),
                   timeout=kw.pop("timeout", self.timeout), **kw)


class Btfs(Tool):
    """btfs through its CLI, isolated from the user's config by BTFS_CONFIG/XDG_*."""

    name = "btfs"

    def version(self) -> str:
        if not BTFS.exists():
            return f"not installed ({BTFS} missing)"
        return f"{tool_version([str(BTFS), '--version'])} ({BTFS})"

    def env(self, ds: Dataset) -> dict:
        d = self.dir(ds)
        return {**os.environ, "BTFS_CONFIG": str(d / "config.toml"),
                "XDG_CONFIG_HOME": str(d / "config"), "XDG_DATA_HOME": str(d / "data"),
                "XDG_CACHE_HOME": str(d / "cache")}

    def cmd(self, *args: str) -> list[str]:
        if not BTFS.exists():
            raise StepFailed(f"{BTFS} missing (make install)")
        return [str(BTFS), *args]

    def init(self, ds: Dataset) -> None:
        d = self.dir(ds)
        d.mkdir(parents=True, exist_ok=True)
        self.run(ds, self.cmd("init", "--vault", str(d / "vault"), "--no-input"), "init")
        self.run(ds, self.cmd("track", str(ds.path)), "track")

    def backup(self, ds: Dataset, label: str) -> tuple[float, float]:
        secs, rss, r = timed_rss(self.cmd("backup", "--json"), name=f"btfs-{ds.name}-{label}",
                                 env=self.env(ds), timeout=self.timeout, ok=(0, 3))
        if r.returncode == 3:
            NOTES.append(f"btfs backup {ds.name}/{label} was partial (exit 3), see {r.err}")
        return secs, rss

    def repo_bytes(self, ds: Dataset) -> int:
        # The catalog is part of what btfs needs to restore, so it counts.
        return du_bytes(self.dir(ds) / "vault", self.dir(ds) / "data")

    def catalog_bytes(self, ds: Dataset) -> int:
        return du_bytes(self.dir(ds) / "data")

    def mount(self, ds: Dataset, mnt: Path) -> Mount:
        mnt.mkdir(parents=True, exist_ok=True)
        m = Mount(self, mnt, mnt / "by-time" / "latest", env=self.env(ds))
        ACTIVE_MOUNTS.append(m)
        t0 = time.perf_counter()
        self.run(ds, self.cmd("mount", str(mnt)), "mount", timeout=300)
        m.ready_s = wait_ready(m, t0, 300)
        return m

    def unmount(self, m: Mount) -> None:
        if not is_mounted(m.mnt):
            return
        try:
            run(self.cmd("umount", str(m.mnt)), name="btfs-umount", env=m.env, timeout=60)
        except StepFailed as e:
            log(f"  btfs umount failed ({e}); falling back to fusermount3")

    def restore(self, ds: Dataset, dest: Path) -> float:
        m = self.mount(ds, WORK / "mnt" / "btfs-restore")
        try:
            dest_dir = self.restored_path(ds, dest).parent
            dest_dir.mkdir(parents=True, exist_ok=True)
            secs, _ = timed(["cp", "-a", str(m.path_of(ds.path)), str(dest_dir) + "/"],
                            name="btfs-restore-cp", timeout=self.timeout)
            return secs
        finally:
            unmount(m)

    def by_file(self, m: Mount, ds: Dataset) -> Path:
        """Where `ds` appears in the mount's by-file/ (its paths as directories of
        versions)."""
        return m.mnt / "by-file" / str(ds.path).lstrip("/")

    def search(self, ds: Dataset, args: list[str], step: str) -> tuple[float, float, int]:
        """`btfs find|diff ...` as a user runs it (seconds of the whole command), then the
        same search inside one process once the repository is open (bench/browse.py):
        (command seconds, search seconds, paths found)."""
        secs, _ = timed(self.cmd(*args), name=f"btfs-{ds.name}-{step}", env=self.env(ds),
                        timeout=self.timeout, ok=(0, 1))
        r = run([sys.executable, "-m", "bench.browse", *args], name=f"btfs-{ds.name}-{step}-in",
                env={**self.env(ds), "PYTHONPATH": str(ROOT)}, timeout=self.timeout)
        got = json.loads(r.out.read_text())
        return secs, got["seconds"], got["results"]

    def snapshot_names(self, ds: Dataset) -> list[str]:
        r = self.run(ds, self.cmd("snapshots", "--json"), "snapshots")
        return [s["name"] for s in json.loads(r.out.read_text())]

    def restore_cli(self, ds: Dataset, dest: Path) -> float:
        """`btfs restore PATH --to NEW`: the CLI's own restore, for comparison."""
        target = self.restored_path(ds, dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        secs, _ = timed(self.cmd("restore", str(ds.path), "--to", str(target)),
                        name="btfs-restore-cli", env=self.env(ds), timeout=self.timeout)
        return secs


class Restic(Tool):
    name = "restic"

    def version(self) -> str:
        return tool_version(["restic", "version"])

    def env(self, ds: Dataset) -> dict:
        d = self.dir(ds)
        return {**os.environ, "RESTIC_REPOSITORY": str(d / "repo"),
                "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(d / "cache")}

    def init(self, ds: Dataset) -> None:
        self.dir(ds).mkdir(parents=True, exist_ok=True)
        self.run(ds, ["restic", "init", "--repository-version", RESTIC_REPO_VERSION], "init")

    def backup(self, ds: Dataset, label: str) -> tuple[float, float]:
        secs, rss, _ = timed_rss(["restic", "backup", "--quiet", str(ds.path)],
                                 name=f"restic-{ds.name}-{label}", env=self.env(ds),
                                 timeout=self.timeout)
        return secs, rss

    def repo_bytes(self, ds: Dataset) -> int:
        return du_bytes(self.dir(ds) / "repo")

    def mount(self, ds: Dataset, mnt: Path) -> Mount:
        return start_foreground_mount(self, ["restic", "mount", str(mnt)], self.env(ds), mnt,
                                      mnt / "snapshots" / "latest", 300)

    def unmount(self, m: Mount) -> None:
        stop_foreground_mount(m)

    def restore(self, ds: Dataset, dest: Path) -> float:
        secs, _ = timed(["restic", "restore", "latest", "--target", str(dest)],
                        name="restic-restore", env=self.env(ds), timeout=self.timeout)
        return secs


class Borg(Tool):
    name = "borg"

    def __init__(self, timeout: float):
        super().__init__(timeout)
        self.last: dict[str, str] = {}  # dataset -> newest archive name

    def version(self) -> str:
        return tool_version(["borg", "--version"])

    def env(self, ds: Dataset) -> dict:
        d = self.dir(ds)
        return {**os.environ, "BORG_REPO": str(d / "repo"), "BORG_BASE_DIR": str(d / "base"),
                "BORG_PASSPHRASE": "", "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes", "BORG_DISPLAY_PASSPHRASE": "no"}

    def repo(self, ds: Dataset) -> str:
        return str(self.dir(ds) / "repo")

    def init(self, ds: Dataset) -> None:
        self.dir(ds).mkdir(parents=True, exist_ok=True)
        self.run(ds, ["borg", "init", "-e", "none", self.repo(ds)], "init")

    def backup(self, ds: Dataset, label: str) -> tuple[float, float]:
        secs, rss, _ = timed_rss(["borg", "create", f"{self.repo(ds)}::{label}", str(ds.path)],
                                 name=f"borg-{ds.name}-{label}", env=self.env(ds),
                                 timeout=self.timeout)
        self.last[ds.name] = label
        return secs, rss

    def archive(self, ds: Dataset) -> str:
        if ds.name not in self.last:
            raise StepFailed("no archive")
        return f"{self.repo(ds)}::{self.last[ds.name]}"

    def repo_bytes(self, ds: Dataset) -> int:
        return du_bytes(self.dir(ds) / "repo")

    def mount(self, ds: Dataset, mnt: Path) -> Mount:
        # -f keeps borg in the foreground like restic; borg stores paths without the "/".
        return start_foreground_mount(self, ["borg", "mount", "-f", self.archive(ds), str(mnt)],
                                      self.env(ds), mnt, mnt, 300)

    def unmount(self, m: Mount) -> None:
        stop_foreground_mount(m)

    def restore(self, ds: Dataset, dest: Path) -> float:
        dest.mkdir(parents=True, exist_ok=True)
        secs, _ = timed(["borg", "extract", self.archive(ds)], name="borg-extract",
                        env=self.env(ds), cwd=dest, timeout=self.timeout)
        return secs


class Floor(Tool):
    """bench/floor.py, the pass-through pyfuse3 server: only mounted, never backs up."""

    name = "floor"

    def unmount(self, m: Mount) -> None:
        stop_foreground_mount(m)
