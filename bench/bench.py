#!/usr/bin/env python3
"""btfs benchmark harness: btfs, restic and borg doing the same steps on the same data.

Run it with ``make bench`` / ``make bench-quick`` or directly ``bash bench/run.sh MODE``
where MODE is ``full``, ``quick`` or ``scale``. Benchmarks are not tests: nothing here is
part of ``make test``.

Data (built once, reproducibly, under bench/data/):
  * the Debian ``linux-source-6.1`` tree unpacked from /usr/src/linux-source-6.1.tar.xz
    (quick mode: 5,000 files picked evenly from it in sorted order);
  * large files: ``random-N`` from ``random.Random(seed)``, ``tar-N`` consecutive slices of
    a reproducible tar (``--sort=name --mtime=@0``) of the source tree (compressible).
    full: 4 x 512 MiB (2 random, 2 tar); quick: 1 x 128 MiB random.
Each repetition copies the data to bench/work/data/ (that copy's ``cp -a`` time is the
native restore limit) and every tool backs up that copy, in two datasets with a repository
each: ``src`` (the source tree) and ``large`` (the large files).

Steps, per repetition, tools interleaved (the order rotates from one repetition to the next):
  1. init one repository per tool and dataset (btfs: ``init`` + ``track``, restic: local
     repo, format 2 so it compresses like current restic, borg: ``init -e none``);
  2. initial backup of each dataset, then a no-change backup, then the change step
     (seeded: append to 1% of the source files, delete 100, add 100, overwrite 1 MiB in the
     middle of one large file), then an after-change backup. Each backup runs under
     ``/usr/bin/time -f %M`` for its peak RSS;
  3. repository size: ``du`` of the repository (btfs: vault plus catalog directory);
  4. mount the src repository: mount ready time = launching the mount command until ``ls``
     of the snapshot root lists something; then ``find`` and ``tar -cf - | wc -c`` over the
     snapshot (a pipe, because GNU tar skips reading file data when writing to /dev/null),
     and the mount process's peak RSS (VmHWM);
  5. mount the large repository, drop the page cache, ``cat`` a random large file: MB/s;
  6. restore the source tree: btfs ``cp -a`` out of its mount, ``restic restore``,
     ``borg extract``.
Native limits: ``find``, ``tar`` and cold ``cat`` on the source itself, and the ``cp -a``.

Each value in the table is the median over the repetitions (full: 3, quick: 1; env
BENCH_REPS overrides). A step that fails is reported as "failed: <reason>" and does not stop
the others. Results: a table on stdout, bench/results/<date>-<mode>.md and .json (raw
numbers per repetition). Command output goes to bench/work/logs/.

Scale mode (btfs only): a tree of BENCH_SCALE_FILES small files (default 1,000,000),
BENCH_SCALE_BACKUPS backups (default 100) at 1% churn plus one file changed every time;
then catalog size, a no-change backup, mount ready time, ``ls`` of ``by-time/`` and of the
``by-file/`` directory of the file with one version per backup, RSS of backup and mount.

Env: BENCH_REPS (repetitions), BENCH_BTFS (btfs executable, default .venv/bin/btfs),
BENCH_SCALE_FILES, BENCH_SCALE_BACKUPS.

Units: s = seconds, MB = 10^6 bytes. Everything runs as root (drop_caches, apt-get).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
WORK = BENCH / "work"
LOGS = WORK / "logs"
RESULTS = BENCH / "results"
# BENCH_BTFS: another btfs executable to measure (default: the project venv's).
BTFS = Path(os.environ.get("BENCH_BTFS") or ROOT / ".venv" / "bin" / "btfs")
LINUX_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
LINUX_TREE = DATA / "linux-source-6.1"

MB = 1_000_000
MiB = 1 << 20
CHANGE_SEED = 61
RANDOM_SEEDS = {"random-0": 1000, "random-1": 1001}
RESTIC_REPO_VERSION = "2"  # compressed format (the default from restic 0.16 on)


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- commands


class StepFailed(Exception):
    """A step did not complete; its message goes into the table as "failed: <message>"."""


_cmd_counter = 0


@dataclass
class Ran:
    returncode: int
    out: Path
    err: Path


def _last_line(*paths: Path) -> str:
    for p in paths:
        try:
            lines = [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        if lines:
            return lines[-1][:200]
    return "(no output)"


def run(cmd: list[str], *, name: str, env: dict | None = None, cwd: Path | None = None,
        timeout: float | None = None, ok: tuple[int, ...] = (0,)) -> Ran:
    """Run a command with its output in bench/work/logs/; raise StepFailed unless it ends
    with an accepted exit code. Output goes to files, never pipes, so a command that leaves
    a daemon behind (``btfs mount``) cannot keep us waiting for EOF."""
    global _cmd_counter
    _cmd_counter += 1
    LOGS.mkdir(parents=True, exist_ok=True)
    base = LOGS / f"{_cmd_counter:04d}-{name}"
    out, err = base.with_suffix(".out"), base.with_suffix(".err")
    with open(out, "wb") as fo, open(err, "wb") as fe:
        fe.write(("$ " + " ".join(cmd) + "\n").encode())
        fe.flush()
        try:
            p = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=fo,
                               stderr=fe, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"timed out after {timeout:.0f}s: {' '.join(cmd[:3])}") from None
        except FileNotFoundError:
            raise StepFailed(f"command not found: {cmd[0]}") from None
    if p.returncode not in ok:
        raise StepFailed(f"{Path(cmd[0]).name} exit {p.returncode}: {_last_line(err, out)}")
    return Ran(p.returncode, out, err)


def timed(cmd: list[str], **kw) -> tuple[float, Ran]:
    t0 = time.perf_counter()
    r = run(cmd, **kw)
    return time.perf_counter() - t0, r


def timed_rss(cmd: list[str], **kw) -> tuple[float, float, Ran]:
    """Seconds, peak RSS in MB (from /usr/bin/time -f %M, in KiB), result."""
    rss_file = LOGS / f"rss-{_cmd_counter + 1:04d}"
    secs, r = timed(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], **kw)
    try:
        kib = int(rss_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        raise StepFailed("no RSS from /usr/bin/time") from None
    return secs, kib * 1024 / MB, r


def shell(script: str, **kw) -> tuple[float, Ran]:
    return timed(["bash", "-o", "pipefail", "-c", script], **kw)


def du_bytes(*paths: Path) -> int:
    total = 0
    for p in paths:
        if p.exists():
            out = subprocess.run(["du", "-s", "--block-size=1", str(p)], capture_output=True,
                                 text=True, check=True).stdout
            total += int(out.split()[0])
    return total


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def tool_version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (p.stdout or p.stderr).strip().splitlines()[0] if p.returncode == 0 \
            else f"unavailable ({_first(p.stderr)})"
    except (OSError, subprocess.TimeoutExpired, IndexError) as e:
        return f"unavailable ({e})"


def _first(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:120] if lines else "no output"


# ------------------------------------------------------------------------- page cache

DROP_CACHES_NOTE: list[str] = []


def drop_caches() -> bool:
    """sync; echo 3 > drop_caches. Tolerates failure (then the 'cold' reads are warm) and
    records that once for the report."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        if not DROP_CACHES_NOTE:
            DROP_CACHES_NOTE.append(f"could not drop the page cache ({e.strerror}): "
                                    "the 'cold' cat figures are warm-cache reads")
            log("  warning: " + DROP_CACHES_NOTE[0])
        return False


# ----------------------------------------------------------------------------- mounts


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
            raise StepFailed(f"mount exited {m.proc.returncode}: {_last_line(m.err)}")
        if is_mounted(m.mnt):
            try:
                r = subprocess.run(["ls", "-A", str(m.root) + "/"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, timeout=max(1.0, deadline - time.perf_counter()))
                if r.returncode == 0 and r.stdout.strip():
                    return time.perf_counter() - start
            except subprocess.TimeoutExpired:
                pass
        if time.perf_counter() > deadline:
            raise StepFailed(f"snapshot root not listable after {timeout:.0f}s")
        time.sleep(0.005)


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


# ------------------------------------------------------------------------------ tools


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
        return tool_version([str(BTFS), "--version"]) if BTFS.exists() \
            else f"not installed ({BTFS} missing)"

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


# ------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Mode:
    name: str
    reps: int
    src_files: int | None  # None: the whole tree
    large: tuple[str, ...]  # names; random-N are seeded random, tar-N tar slices
    large_size: int
    timeout: float  # per command


MODES = {
    "full": Mode("full", 3, None, ("random-0", "random-1", "tar-0", "tar-1"), 512 * MiB,
                 3 * 3600),
    "quick": Mode("quick", 1, 5000, ("random-0",), 128 * MiB, 900),
}


def ensure_linux_tree() -> Path:
    """Unpack the Debian kernel source once (xz, ~1 min)."""
    done = DATA / ".linux-source-6.1.done"
    if done.exists():
        return LINUX_TREE
    if not LINUX_TARBALL.exists():
        sys.exit(f"{LINUX_TARBALL} missing: apt-get install -y linux-source-6.1")
    log(f"unpacking {LINUX_TARBALL} into {DATA} (once)")
    tmp = DATA / ".unpack"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(LINUX_TARBALL), "-C", str(tmp)], check=True)
    shutil.rmtree(LINUX_TREE, ignore_errors=True)
    (tmp / "linux-source-6.1").rename(LINUX_TREE)
    tmp.rmdir()
    done.touch()
    return LINUX_TREE


def sorted_files(top: Path) -> list[Path]:
    """Regular files under `top`, in a stable order (sorted relative paths)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return out


def ensure_src(mode: Mode) -> Path:
    tree = ensure_linux_tree()
    if mode.src_files is None:
        return tree
    dest = DATA / f"linux-slice-{mode.src_files}"
    done = DATA / f".linux-slice-{mode.src_files}.done"
    if done.exists():
        return dest
    log(f"building {dest.name}: {mode.src_files} files picked evenly from the tree")
    shutil.rmtree(dest, ignore_errors=True)
    files = sorted_files(tree)
    n = min(mode.src_files, len(files))
    for i in range(n):
        f = files[i * len(files) // n]
        target = dest / f.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    done.touch()
    return dest


def write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def write_tar_slices(paths: list[Path], size: int) -> None:
    """Consecutive `size`-byte slices of a reproducible tar of the source tree."""
    cmd = ["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
           "--format=gnu", "-cf", "-", "-C", str(DATA), LINUX_TREE.name]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        for p in paths:
            with open(p, "wb") as f:
                left = size
                while left:
                    chunk = proc.stdout.read(min(left, 4 * MiB))
                    if not chunk:
                        raise RuntimeError("the source tree's tar is too short")
                    f.write(chunk)
                    left -= len(chunk)
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def ensure_large(mode: Mode) -> Path:
    dest = DATA / f"large-{mode.large_size // MiB}M-{len(mode.large)}"
    done = dest / ".done"
    if done.exists():
        return dest
    ensure_linux_tree()
    log(f"building large files in {dest.name}")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in mode.large:
        if name.startswith("random"):
            write_random(dest / name, mode.large_size, RANDOM_SEEDS[name])
    tars = sorted(n for n in mode.large if n.startswith("tar"))
    if tars:
        write_tar_slices([dest / n for n in tars], mode.large_size)
    done.touch()
    return dest


def describe_tree(top: Path) -> dict:
    files = 0
    size = 0
    dirs = 0
    for dirpath, dirnames, filenames in os.walk(top):
        dirs += len(dirnames)
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            files += 1
            size += st.st_size
    return {"files": files, "dirs": dirs, "bytes": size}


def apply_change(src: Path, large: Path, large_names: tuple[str, ...]) -> dict:
    """The seeded change step: append to 1% of the source files, delete 100 others, add 100
    new ones, overwrite 1 MiB in the middle of the first large file."""
    rng = random.Random(CHANGE_SEED)
    files = sorted_files(src)
    n_append = max(1, len(files) // 100)
    picked = rng.sample(files, n_append + 100)
    appended, deleted = picked[:n_append], picked[n_append:]
    for i, f in enumerate(appended):
        with open(f, "ab") as fh:
            fh.write(f"\n/* btfs bench change {i} */\n".encode())
    for f in deleted:
        f.unlink()
    gone = set(deleted)
    dirs = sorted({f.parent for f in files if f not in gone})
    for i in range(100):
        d = rng.choice(dirs)
        body = rng.randbytes(rng.randint(1024, 16384)).hex().encode()
        (d / f"bench-added-{i:03d}.txt").write_bytes(body)
    big = large / large_names[0]
    size = big.stat().st_size
    with open(big, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(rng.randbytes(MiB))
    return {"appended": n_append, "deleted": 100, "added": 100,
            "overwritten": f"1 MiB at offset {size // 2} of {big.name}"}


# ---------------------------------------------------------------------- steps, goals


@dataclass(frozen=True)
class Goal:
    ref: str | None  # "restic"/"borg", or None for an absolute limit
    op: str  # "<=" or ">="
    value: float
    unit: str = ""

    def text(self) -> str:
        sym = "≤" if self.op == "<=" else "≥"
        return f"{sym}{self.value:g}× {self.ref}" if self.ref else f"{sym}{self.value:g} {self.unit}"

    def met(self, btfs: float, ref: float | None) -> bool | None:
        if self.ref:
            if ref is None or ref == 0:
                return None
            x = btfs / ref
        else:
            x = btfs
        return x <= self.value if self.op == "<=" else x >= self.value


@dataclass(frozen=True)
class Step:
    key: str
    label: str
    unit: str
    goal: Goal | None = None
    ref_step: str | None = None  # compare btfs with restic/borg on another step


def main_steps(mode: Mode) -> list[Step]:
    large = f"{len(mode.large)} x {mode.large_size // MiB} MiB"
    return [
        Step("backup_initial_src", "initial backup, source tree", "s", Goal("restic", "<=", 0.5)),
        Step("backup_nochange_src", "no-change backup, source tree", "s",
             Goal("restic", "<=", 0.25)),
        Step("backup_change_src", "after-change backup, source tree", "s",
             Goal("restic", "<=", 0.3)),
        Step("backup_initial_large", f"initial backup, large files ({large})", "s",
             Goal("restic", "<=", 0.5)),
        Step("backup_nochange_large", "no-change backup, large files", "s"),
        Step("backup_change_large", "after-change backup, large files", "s"),
        Step("repo_src", "repository size, source tree", "MB", Goal("restic", "<=", 1.0)),
        Step("repo_large", "repository size, large files", "MB", Goal("restic", "<=", 1.0)),
        Step("rss_backup_src", "peak RSS of a backup, source tree (max of 3)", "MB",
             Goal(None, "<=", 100, "MB")),
        Step("rss_backup_large", "peak RSS of a backup, large files (max of 3)", "MB",
             Goal(None, "<=", 100, "MB")),
        Step("mount_ready", "mount ready (launch to ls of snapshot root)", "s",
             Goal(None, "<=", 0.5, "s")),
        Step("find_mount", "find over mounted snapshot", "s", Goal("restic", "<=", 0.4)),
        Step("tar_mount", "tar of mounted snapshot", "s", Goal("borg", "<=", 0.33)),
        Step("cat_mount", f"cold cat of a {mode.large_size // MiB} MiB file through mount",
             "MB/s", Goal("borg", ">=", 1.4)),
        Step("rss_mount", "peak RSS of the mount (after find, tar)", "MB"),
        Step("restore", "restore source tree (btfs: cp -a from mount)", "s",
             Goal("restic", "<=", 1.0)),
        Step("restore_cli", "restore source tree with btfs restore (vs restore above)", "s",
             ref_step="restore"),
    ]


NATIVE_STEPS = [
    Step("native_cp", "cp -a of the source tree", "s"),
    Step("native_find", "find over the source tree", "s"),
    Step("native_tar", "tar of the source tree", "s"),
    Step("native_cat", "cold cat of the large file", "MB/s"),
]

NOTES: list[str] = []


class Recorder:
    """Values per repetition: reps[i][step][tool] = number or {"failed": reason}."""

    def __init__(self) -> None:
        self.reps: list[dict[str, dict[str, object]]] = []
        self.broken: dict[tuple[str, str], str] = {}  # (tool, dataset) -> reason
        self.last_failure: dict[str, str] = {}  # tool -> reason of its latest failure

    def new_rep(self) -> None:
        self.reps.append({})
        self.broken.clear()

    def put(self, step: str, tool: str, value: object) -> None:
        self.reps[-1].setdefault(step, {})[tool] = value

    def fail(self, step: str, tool: str, reason: str) -> None:
        self.put(step, tool, {"failed": reason})

    def measure(self, step: str | None, tool: str, dataset: str, fn: Callable[[], object],
                critical: bool = False, what: str = "init") -> object | None:
        """Run fn; record its value under `step` (if any) or its failure. A failed critical
        step (init, initial backup) makes the later steps of that repository fail with it."""
        key = (tool, dataset)
        if key in self.broken:
            self.last_failure[tool] = self.broken[key]
            if step:
                self.fail(step, tool, self.broken[key])
            return None
        try:
            value = fn()
        except (StepFailed, OSError, subprocess.SubprocessError) as e:
            reason = str(e) or type(e).__name__
            self.last_failure[tool] = reason
            log(f"  {tool:6} {step or what + ' ' + dataset}: failed: {reason}")
            if step:
                self.fail(step, tool, reason)
            if critical:
                self.broken[key] = f"{step or 'init'}: {reason}"
            return None
        if step is not None and value is not None:
            self.put(step, tool, value)
            log(f"  {tool:6} {step}: {fmt(value)}")
        return value


# ------------------------------------------------------------------- one repetition


class MainBench:
    def __init__(self, mode: Mode):
        self.mode = mode
        self.tools: list[Tool] = [Btfs(mode.timeout), Restic(mode.timeout), Borg(mode.timeout)]
        self.rec = Recorder()
        self.src_pristine = ensure_src(mode)
        self.large_pristine = ensure_large(mode)
        self.src = Dataset("src", WORK / "data" / "src")
        self.large = Dataset("large", WORK / "data" / "large")
        self.cat_file = next(n for n in mode.large if n.startswith("random"))
        self.change: dict = {}
        self.src_entries = 0  # lines of `find` over the source after the change step

    def order(self, rep: int) -> list[Tool]:
        k = rep % len(self.tools)
        return self.tools[k:] + self.tools[:k]

    def run(self) -> None:
        reps = int(os.environ.get("BENCH_REPS", self.mode.reps))
        for rep in range(reps):
            log(f"== repetition {rep + 1}/{reps}, order "
                f"{', '.join(t.name for t in self.order(rep))}")
            self.rec.new_rep()
            try:
                self.repetition(self.order(rep))
            finally:
                unmount_all()
                for t in self.tools:
                    shutil.rmtree(t.home, ignore_errors=True)
                shutil.rmtree(WORK / "restore", ignore_errors=True)

    def reset_data(self) -> None:
        data = WORK / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        secs, _ = timed(["cp", "-a", str(self.src_pristine), str(self.src.path)], name="copy-src")
        self.rec.put("native_cp", "native", secs)
        run(["cp", "-a", str(self.large_pristine), str(self.large.path)], name="copy-large")

    def native(self) -> None:
        r = self.rec
        secs, self.src_entries = find_seconds(self.src.path)
        r.put("native_find", "native", secs)
        r.measure("native_tar", "native", "-", lambda: tar_seconds(self.src.path))
        r.measure("native_cat", "native", "-",
                  lambda: cold_cat_mbps(self.large.path / self.cat_file))

    def repetition(self, tools: list[Tool]) -> None:
        r = self.rec
        self.reset_data()
        self.native()
        datasets = (self.src, self.large)
        for ds in datasets:
            for t in tools:
                r.measure(None, t.name, ds.name, lambda t=t, ds=ds: t.init(ds), critical=True)
        rss: dict[tuple[str, str], list[float]] = {}
        for label in ("initial", "nochange", "change"):
            if label == "change":
                self.change = apply_change(self.src.path, self.large.path, self.mode.large)
                self.src_entries = find_seconds(self.src.path)[1]
                log(f"  change step: {self.change}")
            for ds in datasets:
                for t in tools:
                    def do(t=t, ds=ds, label=label):
                        secs, mb = t.backup(ds, label)
                        rss.setdefault((t.name, ds.name), []).append(mb)
                        return secs
                    r.measure(f"backup_{label}_{ds.name}", t.name, ds.name, do,
                              critical=label == "initial")
        for ds in datasets:
            for t in tools:
                if (t.name, ds.name) in rss:
                    r.put(f"rss_backup_{ds.name}", t.name, max(rss[(t.name, ds.name)]))
                else:
                    r.fail(f"rss_backup_{ds.name}", t.name, "no backup completed")
                r.measure(f"repo_{ds.name}", t.name, ds.name,
                          lambda t=t, ds=ds: t.repo_bytes(ds) / MB)
        for t in tools:
            self.mounted_src(t)
        for t in tools:
            self.mounted_large(t)
        for t in tools:
            self.restore(t)
        btfs = next(t for t in tools if isinstance(t, Btfs))
        self.restore(btfs, "restore_cli", btfs.restore_cli)

    def mounted_src(self, t: Tool) -> None:
        r, ds = self.rec, self.src
        steps = ("mount_ready", "find_mount", "tar_mount", "rss_mount")
        mnt = WORK / "mnt" / t.name
        mnt.mkdir(parents=True, exist_ok=True)
        m = r.measure(None, t.name, ds.name, lambda: t.mount(ds, mnt), what="mount")
        if m is None:
            for s in steps:
                r.fail(s, t.name, r.last_failure.get(t.name, "mount failed"))
            unmount_all()
            return
        try:
            r.measure("mount_ready", t.name, ds.name, lambda: m.ready_s)
            where = m.path_of(ds.path)
            expected = self.src_entries

            def find_step():
                secs, n = find_seconds(where)
                if n != expected:
                    NOTES.append(f"{t.name}: find over the mount saw {n} entries, "
                                 f"the source has {expected}")
                return secs
            r.measure("find_mount", t.name, ds.name, find_step)
            r.measure("tar_mount", t.name, ds.name, lambda: tar_seconds(where))
            r.measure("rss_mount", t.name, ds.name,
                      lambda: peak_rss_of_mount(mnt, m.proc.pid if m.proc else None))
        finally:
            unmount(m)

    def mounted_large(self, t: Tool) -> None:
        r, ds = self.rec, self.large
        mnt = WORK / "mnt" / t.name
        mnt.mkdir(parents=True, exist_ok=True)
        m = r.measure(None, t.name, ds.name, lambda: t.mount(ds, mnt), what="mount")
        if m is None:
            r.fail("cat_mount", t.name, r.last_failure.get(t.name, "mount failed"))
            unmount_all()
            return
        try:
            r.measure("cat_mount", t.name, ds.name,
                      lambda: cold_cat_mbps(m.path_of(ds.path) / self.cat_file))
        finally:
            unmount(m)

    def restore(self, t: Tool, step_key: str = "restore",
                how: Callable[[Dataset, Path], float] | None = None) -> None:
        dest = WORK / "restore" / t.name
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)

        def step():
            secs = (how or t.restore)(self.src, dest)
            got = describe_tree(t.restored_path(self.src, dest))
            want = describe_tree(self.src.path)
            if (got["files"], got["bytes"]) != (want["files"], want["bytes"]):
                NOTES.append(f"{t.name} {step_key}: {got['files']} files / {got['bytes']} "
                             f"bytes, the source {want['files']} / {want['bytes']}")
            return secs
        self.rec.measure(step_key, t.name, self.src.name, step)
        shutil.rmtree(dest, ignore_errors=True)


def find_seconds(top: Path) -> tuple[float, int]:
    secs, res = timed(["find", str(top)], name="find", timeout=3600)
    return secs, count_lines(res.out)


def tar_seconds(top: Path) -> float:
    # Through a pipe: GNU tar does not read file contents when its archive is /dev/null.
    secs, _ = shell(f"tar -cf - -C '{top.parent}' '{top.name}' | wc -c", name="tar",
                    timeout=3600)
    return secs


def cold_cat_mbps(path: Path) -> float:
    size = path.stat().st_size
    drop_caches()
    secs, _ = shell(f"cat '{path}' > /dev/null", name="cat", timeout=3600)
    return size / MB / secs


# --------------------------------------------------------------------------- report


def fmt(v: object) -> str:
    if isinstance(v, dict):
        return "failed: " + str(v.get("failed"))
    if isinstance(v, int):
        return f"{v:,}"
    if not isinstance(v, float):
        return str(v)
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def summarize(reps: list[dict], step: str, tool: str) -> dict:
    vals = [rep.get(step, {}).get(tool) for rep in reps]
    nums = [v for v in vals if isinstance(v, (int, float))]
    fails = [v["failed"] for v in vals if isinstance(v, dict)]
    out: dict = {"values": vals}
    if nums:
        out["median"] = statistics.median(nums)
        out["n"] = len(nums)
    elif fails:
        out["failed"] = fails[0]
    return out


def cell(s: dict, reps: int) -> str:
    if "median" in s:
        extra = f" ({s['n']}/{reps} ok)" if s["n"] < reps else ""
        return fmt(s["median"]) + extra
    if "failed" in s:
        reason = s["failed"]
        return "failed: " + (reason if len(reason) <= 70 else reason[:67] + "...")
    return "-"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    rows = [[c.replace("|", "\\|") for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def main_table(steps: list[Step], reps: list[dict]) -> tuple[str, dict]:
    n = len(reps)
    rows, medians = [], {}
    for st in steps:
        s = {t: summarize(reps, st.key, t) for t in ("btfs", "restic", "borg")}
        medians[st.key] = {t: v.get("median", {"failed": v.get("failed")}) for t, v in s.items()}
        b = s["btfs"].get("median")
        refs = {t: summarize(reps, st.ref_step or st.key, t) for t in ("restic", "borg")}

        def ratio(ref: str) -> str:
            o = refs[ref].get("median")
            return f"{b / o:.2f}×" if b is not None and o else "-"
        goal = ""
        if st.goal:
            ref = refs[st.goal.ref].get("median") if st.goal.ref else None
            ok = st.goal.met(b, ref) if b is not None else None
            goal = st.goal.text() + {True: " ✓", False: " ✗", None: ""}[ok]
        rows.append([f"{st.label} ({st.unit})", cell(s["btfs"], n), cell(s["restic"], n),
                     cell(s["borg"], n), ratio("restic"), ratio("borg"), goal])
    table = md_table(["step", "btfs", "restic", "borg", "btfs/restic", "btfs/borg", "goal"],
                     rows)
    return table, medians


def native_table(reps: list[dict]) -> tuple[str, dict]:
    rows, medians = [], {}
    for st in NATIVE_STEPS:
        s = summarize(reps, st.key, "native")
        medians[st.key] = s.get("median")
        rows.append([f"{st.label} ({st.unit})", cell(s, len(reps))])
    return md_table(["native limit", "value"], rows), medians


def machine_info() -> dict:
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal:")), "0")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    fs = subprocess.run(["df", "-T", str(BENCH)], capture_output=True, text=True).stdout
    fstype = fs.splitlines()[-1].split()[1] if fs.strip() else "?"
    return {"nproc": os.cpu_count(), "memory_gib": round(int(mem) / 1024 / 1024, 1),
            "kernel": platform.release(), "cpu": cpu, "filesystem": fstype,
            "python": platform.python_version()}


def versions(tools: list[Tool]) -> dict:
    v = {t.name: t.version() for t in tools}
    v["tar"] = tool_version(["tar", "--version"])
    return v


def header_lines(title: str, info: dict, vers: dict) -> list[str]:
    return [
        f"# {title}", "",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM, "
        f"kernel {info['kernel']}, {info['filesystem']} under bench/, Python {info['python']}",
        "- versions: " + "; ".join(f"{k}: {v}" for k, v in vers.items()),
    ]


def write_results(mode_name: str, md: str, doc: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{dt.date.today().isoformat()}-{mode_name}"
    stem.with_suffix(".md").write_text(md)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return stem.with_suffix(".md")


def run_main(mode: Mode) -> None:
    started = dt.datetime.now()
    bench = MainBench(mode)
    info, vers = machine_info(), versions(bench.tools)
    src_desc = describe_tree(bench.src_pristine)
    try:
        bench.run()
    finally:
        unmount_all()
    reps = bench.rec.reps
    steps = main_steps(mode)
    table, medians = main_table(steps, reps)
    ntable, nmedians = native_table(reps)
    elapsed = (dt.datetime.now() - started).total_seconds()
    data_lines = [
        f"- source tree: {bench.src_pristine.relative_to(ROOT)}: {src_desc['files']:,} files, "
        f"{src_desc['dirs']:,} directories, {src_desc['bytes'] / MB:,.0f} MB",
        f"- large files: {', '.join(mode.large)}, {mode.large_size // MiB} MiB each "
        f"(random-N: random.Random({RANDOM_SEEDS['random-0']}+N); tar-N: slices of a "
        "sorted tar of the tree)",
        f"- change step (seed {CHANGE_SEED}): {bench.change}",
    ]
    method = [
        f"- {len(reps)} repetition(s), medians; tool order rotates per repetition; "
        "each backs up bench/work/data (a cp -a of bench/data)",
        "- restic: local repo, format 2 (compressed); borg: init -e none, default lz4; "
        "btfs: defaults; btfs repository size = vault + catalog directory",
        "- find/tar through mounts run right after mounting (repository in page cache); "
        "cat drops the page cache first; tar is piped to wc -c so data is read",
        f"- total run time {elapsed / 60:.1f} min; command logs in bench/work/logs/",
    ]
    notes = DROP_CACHES_NOTE + sorted(set(NOTES))
    md = "\n".join(
        header_lines(f"btfs benchmark, {mode.name} mode, {started:%Y-%m-%d %H:%M}", info, vers)
        + data_lines + method + ["", table, "", ntable, ""]
        + (["Notes:", *(f"- {n}" for n in notes), ""] if notes else [])
    )
    doc = {"mode": mode.name, "started": started.isoformat(), "elapsed_s": elapsed,
           "machine": info, "versions": vers, "units": {s.key: s.unit for s in steps},
           "data": {"source": str(bench.src_pristine), **src_desc,
                    "large": list(mode.large), "large_size": mode.large_size,
                    "change": bench.change},
           "medians": medians, "native": nmedians, "repetitions": reps, "notes": notes}
    path = write_results(mode.name, md, doc)
    log("")
    log(table)
    log("")
    log(ntable)
    for n in notes:
        log(f"note: {n}")
    log(f"\nwritten: {path.relative_to(ROOT)} and .json")


# ---------------------------------------------------------------------------- scale


def scale_path(tree: Path, i: int) -> Path:
    return tree / f"d{i // 1000:04d}" / f"f{i:07d}.txt"


def generate_scale_tree(tree: Path, n: int, seed: int) -> None:
    """n small files (0-4 KiB of text), 1,000 to a directory, plus hot.txt."""
    rng = random.Random(seed)
    pool = rng.randbytes(MiB).hex().encode()
    for i in range(n):
        p = scale_path(tree, i)
        if i % 1000 == 0:
            p.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(0, 4096)
        off = rng.randrange(len(pool) - 4096)
        with open(p, "wb") as f:
            f.write(b"file %d\n" % i + pool[off:off + size])
    (tree / "hot.txt").write_bytes(b"version 0\n")


def churn(tree: Path, n: int, rng: random.Random, k: int, version: int) -> None:
    for i in rng.sample(range(n), k):
        with open(scale_path(tree, i), "ab") as f:
            f.write(b"churn %d\n" % version)
    with open(tree / "hot.txt", "ab") as f:
        f.write(b"version %d\n" % version)


def run_scale() -> None:
    n = int(os.environ.get("BENCH_SCALE_FILES", 1_000_000))
    backups = int(os.environ.get("BENCH_SCALE_BACKUPS", 100))
    started = dt.datetime.now()
    btfs = Btfs(timeout=6 * 3600)
    tree = WORK / "scale" / "tree"
    ds = Dataset("scale", tree)
    res: dict[str, object] = {}
    fails: dict[str, str] = {}

    def measure(key: str, fn: Callable[[], object]) -> object | None:
        try:
            v = fn()
        except (StepFailed, OSError, subprocess.SubprocessError) as e:
            fails[key] = str(e)
            log(f"  {key}: failed: {e}")
            return None
        if isinstance(v, (int, float)):
            res[key] = v
            log(f"  {key}: {fmt(v)}")
        return v

    log(f"generating {n:,} files in {tree.relative_to(ROOT)}")
    t0 = time.perf_counter()
    generate_scale_tree(tree, n, seed=7)
    log(f"  generated in {time.perf_counter() - t0:.0f} s")
    times, rss = [], []
    try:
        measure("init", lambda: btfs.init(ds))
        rng = random.Random(8)
        for b in range(backups if "init" not in fails else 0):
            if b:
                churn(tree, n, rng, max(1, n // 100), b)
            try:
                secs, mb = btfs.backup(ds, f"b{b:03d}")
            except StepFailed as e:
                fails[f"backup {b + 1}"] = str(e)
                log(f"  backup {b + 1}: failed: {e}")
                break
            times.append(secs)
            rss.append(mb)
            log(f"  backup {b + 1}/{backups}: {secs:.2f} s, {mb:.0f} MB")
        if times:
            res["backup_initial_s"] = times[0]
            if len(times) > 1:
                res["backup_churn_median_s"] = statistics.median(times[1:])
                res["backup_churn_last_s"] = times[-1]
            measure("backup_nochange_s", lambda: record_rss(btfs.backup(ds, "nochange"), rss))
            res["rss_backup_max_mb"] = max(rss)
            measure("catalog_mb", lambda: btfs.catalog_bytes(ds) / MB)
            measure("repo_mb", lambda: btfs.repo_bytes(ds) / MB)
            scale_mount(btfs, ds, tree, measure)
    finally:
        unmount_all()
    write_scale_report(n, backups, len(times), res, fails, started, btfs)


def record_rss(secs_mb: tuple[float, float], rss: list[float]) -> float:
    rss.append(secs_mb[1])
    return secs_mb[0]


def scale_mount(btfs: Btfs, ds: Dataset, tree: Path, measure) -> None:
    mnt = WORK / "mnt" / "btfs-scale"
    mnt.mkdir(parents=True, exist_ok=True)
    m = measure("mount", lambda: btfs.mount(ds, mnt))
    if m is None:
        return
    try:
        measure("mount_ready_s", lambda: m.ready_s)

        def ls(path: Path, key: str):
            secs, r = timed(["ls", str(path) + "/"], name="ls", timeout=3600)
            measure(key + "_entries", lambda: count_lines(r.out))
            return secs
        measure("ls_by_time_s", lambda: ls(mnt / "by-time", "ls_by_time"))
        hot = mnt / "by-file" / str(tree / "hot.txt").lstrip("/")
        measure("ls_by_file_s", lambda: ls(hot, "ls_by_file"))
        measure("rss_mount_mb", lambda: peak_rss_of_mount(mnt, None))
    finally:
        unmount(m)


def write_scale_report(n: int, backups: int, done: int, res: dict, fails: dict,
                       started: dt.datetime, btfs: Btfs) -> None:
    rows_spec = [
        ("backup_initial_s", "initial backup (s)", None),
        ("backup_churn_median_s", "backup at 1% churn, median (s)", None),
        ("backup_churn_last_s", "backup at 1% churn, last (s)", None),
        ("backup_nochange_s", f"no-change backup after {done} backups (s)", None),
        ("rss_backup_max_mb", "peak RSS of a backup, max (MB)", Goal(None, "<=", 100, "MB")),
        ("catalog_mb", "catalog size (MB)", None),
        ("repo_mb", "vault + catalog (MB)", None),
        ("mount_ready_s", "mount ready (s)", Goal(None, "<=", 0.5, "s")),
        ("ls_by_time_s", "ls by-time/ (s)", None),
        ("ls_by_time_entries", "  entries in by-time/", None),
        ("ls_by_file_s", "ls by-file/<hot file>/ (s)", None),
        ("ls_by_file_entries", "  versions listed", None),
        ("rss_mount_mb", "peak RSS of the mount (MB)", Goal(None, "<=", 100, "MB")),
    ]
    rows = []
    for key, label, goal in rows_spec:
        v = res.get(key)
        val = fmt(v) if v is not None else ("failed: " + fails[key] if key in fails else "-")
        g = ""
        if goal:
            ok = goal.met(v, None) if v is not None else None
            g = goal.text() + {True: " ✓", False: " ✗", None: ""}[ok]
        rows.append([label, val, g])
    table = md_table(["scale step (btfs)", "value", "goal"], rows)
    elapsed = (dt.datetime.now() - started).total_seconds()
    info, vers = machine_info(), versions([btfs])
    md = "\n".join(header_lines(f"btfs scale benchmark, {started:%Y-%m-%d %H:%M}", info, vers) + [
        f"- data: {n:,} files of 0-4 KiB in directories of 1,000 (seed 7) plus hot.txt; "
        f"{backups} backups planned, {done} done, 1% of the files appended to before each "
        "backup after the first and hot.txt every time (seed 8)",
        f"- total run time {elapsed / 60:.1f} min", "", table, "",
        *(f"- failed: {k}: {v}" for k, v in fails.items()),
    ]) + "\n"
    doc = {"mode": "scale", "started": started.isoformat(), "elapsed_s": elapsed,
           "files": n, "backups_planned": backups, "backups_done": done, "machine": info,
           "versions": vers, "results": res, "failures": fails}
    path = write_results("scale", md, doc)
    log("\n" + table)
    log(f"\nwritten: {path.relative_to(ROOT)} and .json")


# ----------------------------------------------------------------------------- main


def clean_work() -> None:
    """Unmount anything left under bench/work/ by an earlier run, then empty it."""
    unmount_everything_under(WORK)
    if WORK.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(WORK)], check=True)
    WORK.mkdir(parents=True)


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("full", "quick", "scale"):
        print("usage: bench.py full|quick|scale", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    DATA.mkdir(parents=True, exist_ok=True)
    clean_work()
    try:
        if argv[0] == "scale":
            run_scale()
        else:
            run_main(MODES[argv[0]])
    finally:
        unmount_all()
        unmount_everything_under(WORK)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
