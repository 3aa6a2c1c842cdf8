#!/usr/bin/env python3
"""btfs benchmark harness: btfs, restic and borg doing the same steps on the same data.

Run it with ``make bench`` / ``make bench-quick`` or directly ``bash bench/run.sh MODE``
where MODE is ``full``, ``quick`` or ``scale`` (run.sh does ``python -m bench.bench MODE``).
Benchmarks are not tests: nothing here is part of ``make test``.

Layout: bench.py runs the steps and writes the report; tools.py has each tool's version of
every step (class Btfs, Restic, Borg); mounts.py mounting/unmounting; data.py the data and
the change step; report.py steps, goals and tables; scale.py the scale benchmark;
common.py running and timing commands.

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
     and the mount process's peak RSS (VmHWM). Mounts are read through the snapshot's
     dated directory, not the ``latest`` symlink (see bench.mounts._resolve_latest);
     btfs's mount also gets ``find`` over ``by-file/`` of the tree after the ``tar``, and
     both finds are reported per entry (seconds / lines of find's output);
  5. mount the large repository, drop the page cache, ``cat`` a random large file: MB/s;
  6. restore the source tree: btfs ``cp -a`` out of its mount, ``restic restore``,
     ``borg extract`` (and, for reference, ``btfs restore PATH --to DEST``); the restored
     file count and bytes are checked against the source (a mismatch becomes a note).
  7. history search (btfs): ``btfs find`` with a file name found once in the tree and with
     ``'*.c'``, and ``btfs diff`` of the first and the last backup of the source tree, each
     as a whole command and, in one process once the repository is open, the search alone
     (bench/browse.py);
  8. the S3 rows (bench/s3.py): btfs and restic backing up copies of the same data to one
     moto server on 127.0.0.1: initial, no-change and after-change backups of the source
     tree, restore, cold ``cat`` through the mount, peak RSS.
  8. the watch rows (bench/watch.py, btfs only): the ``btfs watch`` daemon on a copy of the
     source tree with a 2 s settle: a file's save to its snapshot in a running mount, the
     daemon's idle CPU and RSS, a 1% change stored by it against a full ``btfs backup``.
Native limits: ``find``, ``tar`` and cold ``cat`` on the source itself, and the ``cp -a``;
and the floors: ``find``, ``tar`` and ``cp -a`` of the source tree through bench/floor.py,
a pyfuse3 server that answers from memory and passes reads to the disk, and ``find``
through it over a tree built on disk in the shape of by-file/ (a directory of one or two
small versions per file: bench.data.by_file_shape), per entry against the tree; and an initial
backup of each dataset by bench/backup_floor.py, which walks, reads, hashes, compresses and
writes packs with btfs's own parts but keeps no catalog.
Before each timed backup, mount and restore, the page cache is put in the same state for
every tool (untimed, see settle()): ``sync``, then what the step reads is read in (the
dataset for a backup, the tool's repository for a mount or a restore), and before a step
that writes, 1.6 GB of memory is written and freed so that every tool writes into memory
the VM's host still backs. Only the cold ``cat`` reads from disk.

Each value in the table is the median over the repetitions (full: 3, quick: 1; env
BENCH_REPS overrides). A step that fails is reported as "failed: <reason>" and does not stop
the others. Results: a table on stdout, bench/results/<date>-<mode>.md and .json (raw
numbers per repetition). Command output goes to bench/work/logs/.

Scale mode (btfs only): a tree of BENCH_SCALE_FILES small files (default 1,000,000),
BENCH_SCALE_BACKUPS backups (default 100) at 1% churn plus one file changed every time;
then catalog size, a no-change backup, mount ready time, ``ls`` of ``by-time/`` and of the
``by-file/`` directory of the file with one version per backup, RSS of backup and mount.

Env: BENCH_REPS (repetitions), BENCH_S3 (1: local and S3 rows, the default; 0: local rows
only; only: S3 rows only), BENCH_WATCH (1: the watch rows too, the default; 0: without
them; only: the watch rows only), BENCH_BTFS (btfs executable, default .venv/bin/btfs),
BENCH_SCALE_FILES, BENCH_SCALE_BACKUPS, BENCH_SCALE_REUSE=1 (remeasure on the repository
an earlier scale run left in bench/work: its churn backup times are carried over from the
report that run left beside the repository, the initial backup is redone into a fresh
repository, the rest is measured again).

Units: s = seconds, MB = 10^6 bytes. Everything runs as root (drop_caches, apt-get).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .common import (
    DATA,
    DROP_CACHES_NOTE,
    MB,
    NOTES,
    ROOT,
    WORK,
    MiB,
    StealMeter,
    StepFailed,
    count_lines,
    drop_caches,
    log,
    run,
    shell,
    steal_text,
    timed,
)
from .data import (
    CHANGE_SEED,
    MODES,
    RANDOM_SEEDS,
    Mode,
    apply_change,
    by_file_shape,
    describe_tree,
    ensure_large,
    ensure_src,
)
from .mounts import (
    Mount,
    peak_rss_of_mount,
    start_foreground_mount,
    unmount,
    unmount_all,
    unmount_everything_under,
)
from .report import (
    floors_table,
    fmt,
    header_lines,
    machine_info,
    main_steps,
    main_table,
    native_table,
    s3_steps,
    versions,
    watch_steps,
    write_results,
)
from .s3 import moto_version, run_s3_pass
from .scale import run_scale
from .tools import Borg, Btfs, Dataset, Floor, Restic, Tool
from .watch import SETTLE_S, run_watch_pass


class Recorder:
    """Values per repetition: reps[i][step][tool] = number or {"failed": reason}."""

    def __init__(self) -> None:
        self.reps: list[dict[str, dict[str, object]]] = []
        self.steal: list[float | None] = []  # host steal share over each repetition
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
        meter = StealMeter()
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
            log(f"  {tool:6} {step}: {fmt(value)}{steal_text(meter.share())}")
        return value


class MainBench:
    def __init__(self, mode: Mode):
        self.mode = mode
        self.tools: list[Tool] = [Btfs(mode.timeout), Restic(mode.timeout), Borg(mode.timeout)]
        self.floor_server = Floor(mode.timeout)
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
            meter = StealMeter()
            try:
                self.repetition(self.order(rep))
            finally:
                self.rec.steal.append(meter.share())
                log(f"== repetition {rep + 1}/{reps} done{steal_text(self.rec.steal[-1])}")
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
        # Write the 3.4 GB copy back now: otherwise the first tool's initial backup runs
        # while the kernel flushes it (restic's took 14.6 s first in its repetition,
        # 7.2 s after btfs).
        settle()

    def native(self) -> None:
        r, limit = self.rec, self.mode.timeout
        # cat drops the page cache, so it goes first; tar then reads the source tree back
        # in and the large files are read once more, untimed. Otherwise the first tool's
        # initial backups read from disk and the others from memory (the first slot took
        # 12.5-13 s, the others 8-9.6 s, whichever tool had it).
        r.measure("native_cat", "native", "-",
                  lambda: cold_cat_mbps(self.large.path / self.cat_file, limit))
        secs, self.src_entries = find_seconds(self.src.path, limit)
        r.put("native_find", "native", secs)
        r.measure("native_tar", "native", "-", lambda: tar_seconds(self.src.path, limit))
        shell(f"cat '{self.large.path}'/* > /dev/null", name="warm-large", timeout=limit)

    def repetition(self, tools: list[Tool]) -> None:
        s3, watch = os.environ.get("BENCH_S3", "1"), os.environ.get("BENCH_WATCH", "1")
        if watch != "only":
            if s3 != "only":
                self.local_steps(tools)
            if s3 != "0":
                run_s3_pass(self, len(self.rec.reps) - 1)
        if watch != "0":
            run_watch_pass(self)

    def local_steps(self, tools: list[Tool]) -> None:
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
                self.src_entries = find_seconds(self.src.path, self.mode.timeout)[1]
                log(f"  change step: {self.change}")
            for ds in datasets:
                for t in tools:
                    def do(t=t, ds=ds, label=label):
                        settle(ds.path, writes=True)
                        secs, mb = t.backup(ds, label)
                        rss.setdefault((t.name, ds.name), []).append(mb)
                        return secs
                    r.measure(f"backup_{label}_{ds.name}", t.name, ds.name, do,
                              critical=label == "initial")
                if label == "initial":
                    self.backup_floor(ds)
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
        self.floor()
        for t in tools:
            self.restore(t)
        btfs = next(t for t in tools if isinstance(t, Btfs))
        self.restore(btfs, "restore_cli", btfs.restore_cli)
        self.history_search(btfs)

    def backup_floor(self, ds: Dataset) -> None:
        """Initial backups of `ds` by bench/backup_floor.py: walk, read, hash, compress and
        write with btfs's parts and none of its catalog, then the same with the catalog
        rows any browsable backup keeps (`--catalog`), measured like the tools' initial
        backups (a process's wall time, dataset warm, after theirs)."""
        out = WORK / "floor-backup"
        for step_name, flags in (("floor_backup", []), ("floor_catalog", ["--catalog"])):
            def step(flags=flags, step_name=step_name):
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                settle(ds.path, writes=True)
                cmd = [sys.executable, "-m", "bench.backup_floor", *flags, str(ds.path), str(out)]
                return timed(cmd, name=f"{step_name}-{ds.name}", timeout=self.mode.timeout,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})[0]
            try:
                self.rec.measure(f"{step_name}_{ds.name}", "native", ds.name, step)
            finally:
                shutil.rmtree(out, ignore_errors=True)

    def mounted_src(self, t: Tool) -> None:
        r, ds = self.rec, self.src
        steps = ("mount_ready", "find_mount", "tar_mount", "rss_mount")
        mnt = WORK / "mnt" / t.name
        mnt.mkdir(parents=True, exist_ok=True)
        settle(t.dir(ds))
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
                secs, n = find_seconds(where, self.mode.timeout)
                if n != expected:
                    NOTES.append(f"{t.name}: find over the mount saw {n} entries, "
                                 f"the source has {expected}")
                r.put("find_mount_us", t.name, secs / n * 1e6)
                return secs
            r.measure("find_mount", t.name, ds.name, find_step)
            r.measure("tar_mount", t.name, ds.name, lambda: tar_seconds(where, self.mode.timeout))
            if isinstance(t, Btfs):
                # After tar: each tool's and the floor's tar follow only a find over the
                # tree, not by-file's 160,000 more entries in the kernel's caches.
                self.find_by_file(t, m)
            r.measure("rss_mount", t.name, ds.name,
                      lambda: peak_rss_of_mount(mnt, m.proc.pid if m.proc else None))
        finally:
            unmount(m)

    def find_by_file(self, t: Btfs, m: Mount) -> None:
        """`find` over by-file/ of the source tree in the same mount, after `find` and
        `tar` over its by-time/ snapshot: seconds, and the cost per entry (entries counted
        by find's output) against by-time's."""
        r = self.rec

        def step():
            secs, n = find_seconds(t.by_file(m, self.src), self.mode.timeout)
            r.put("find_byfile_us", t.name, secs / n * 1e6)
            by_time = r.reps[-1].get("find_mount_us", {}).get(t.name)
            if isinstance(by_time, float):
                r.put("find_byfile_ratio", t.name, secs / n * 1e6 / by_time)
            return secs
        r.measure("find_byfile", t.name, self.src.name, step)

    def history_search(self, t: Btfs) -> None:
        """`btfs find` with a selective and a broad pattern, and `btfs diff` between the
        first and the last backup of the source tree: the whole command and, inside one
        process, the search alone (bench/browse.py)."""
        r, ds = self.rec, self.src
        names = r.measure(None, t.name, ds.name, lambda: t.snapshot_names(ds), what="snapshots")
        searches = [("btfs_find_one", ["find", rare_name(ds.path)]),
                    ("btfs_find_many", ["find", "*.c"])]
        if names and len(names) >= 2:
            searches.append(("btfs_diff", ["diff", names[0], names[-1]]))
        else:
            r.fail("btfs_diff", t.name, f"{len(names or [])} backup(s) of the source tree")
        for key, args in searches:
            def step(key=key, args=args):
                secs, inside, n = t.search(ds, args, key)
                r.put(f"{key}_query", t.name, inside)
                r.put(f"{key}_paths", t.name, n)
                return secs
            r.measure(key, t.name, ds.name, step)

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
                      lambda: cold_cat_mbps(m.path_of(ds.path) / self.cat_file,
                                            self.mode.timeout))
        finally:
            unmount(m)

    def floor(self) -> None:
        """find and tar of the source tree through bench/floor.py, a pyfuse3 server that
        answers lookups from memory and reads from the disk, then cp -a through a fresh
        one (floor_cp): what the mount steps cost at least on btfs's stack, measured like
        them (after the change step, page cache warm)."""
        r, limit = self.rec, self.mode.timeout
        mnt = WORK / "mnt" / "floor"
        settle(self.src.path)
        m = self.floor_mount(self.src.path, mnt)
        if m is None:
            for key in ("floor_find", "floor_tar", "floor_cp"):
                r.fail(key, "native", r.last_failure.get("native", "mount failed"))
            unmount_all()
            return
        try:
            def find_step():
                secs, n = find_seconds(mnt, limit)
                r.put("floor_find_us", "native", secs / n * 1e6)
                return secs
            r.measure("floor_find", "native", "src", find_step)
            r.measure("floor_tar", "native", "src", lambda: tar_seconds(mnt, limit))
        finally:
            unmount(m)
        self.floor_cp()
        self.floor_by_file()

    def floor_cp(self) -> None:
        """cp -a through a fresh floor mount, as btfs's restore step copies out of a fresh
        mount: on the mount that `tar` just read, the kernel still holds every file's pages
        (keep_cache) and cp -a sends no read at all."""
        r, limit = self.rec, self.mode.timeout
        mnt = WORK / "mnt" / "floor"
        settle(self.src.path, writes=True)
        m = self.floor_mount(self.src.path, mnt)
        if m is None:
            r.fail("floor_cp", "native", r.last_failure.get("native", "mount failed"))
            unmount_all()
            return
        dest = WORK / "restore" / "floor"
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            r.measure("floor_cp", "native", "src",
                      lambda: timed(["cp", "-a", str(mnt), str(dest)], name="floor-cp",
                                    timeout=limit)[0])
        finally:
            unmount(m)

    def floor_mount(self, source: Path, mnt: Path) -> Mount | None:
        mnt.mkdir(parents=True, exist_ok=True)
        return self.rec.measure(None, "native", "src", lambda: start_foreground_mount(
            self.floor_server, [sys.executable, "-m", "bench.floor", str(source), str(mnt)],
            {**os.environ, "PYTHONPATH": str(ROOT)}, mnt, mnt, self.mode.timeout),
            what="floor mount")

    def floor_by_file(self) -> None:
        """`find` through bench/floor.py over a tree shaped like by-file/ of the source
        tree (bench.data.by_file_shape): what pyfuse3 costs per entry when every file is a
        directory of versions (opendir, readdir until empty, releasedir for each), against
        the same server over the tree itself."""
        r, limit = self.rec, self.mode.timeout
        shape = WORK / "byfile-shape"
        by_file_shape(self.src.path, shape)
        mnt = WORK / "mnt" / "floor-byfile"
        settle()
        m = self.floor_mount(shape, mnt)
        if m is None:
            r.fail("floor_find_byfile", "native", r.last_failure.get("native", "mount failed"))
            unmount_all()
            return

        def step():
            secs, n = find_seconds(mnt, limit)
            per = secs / n * 1e6
            r.put("floor_find_byfile_us", "native", per)
            tree = r.reps[-1].get("floor_find_us", {}).get("native")
            if isinstance(tree, float):
                r.put("floor_byfile_ratio", "native", per / tree)
            btfs = r.reps[-1].get("find_byfile_us", {}).get("btfs")
            if isinstance(btfs, float):
                r.put("btfs_over_floor_byfile", "native", btfs / per)
            return secs
        try:
            r.measure("floor_find_byfile", "native", "src", step)
        finally:
            unmount(m)

    def restore(self, t: Tool, step_key: str = "restore",
                how: Callable[[Dataset, Path], float] | None = None) -> None:
        dest = WORK / "restore" / f"{t.name}-{step_key}"
        shutil.rmtree(dest, ignore_errors=True)  # only a leftover of an interrupted run
        dest.mkdir(parents=True)

        def step():
            settle(t.dir(self.src), writes=True)
            secs = (how or t.restore)(self.src, dest)
            got = describe_tree(t.restored_path(self.src, dest))
            want = describe_tree(self.src.path)
            if (got["files"], got["bytes"]) != (want["files"], want["bytes"]):
                NOTES.append(f"{t.name} {step_key}: {got['files']} files / {got['bytes']} "
                             f"bytes, the source {want['files']} / {want['bytes']}")
            return secs
        # The restored tree stays until the repetition ends: deleting 84k files right
        # before the next tool's restore made ext4 slow to create its files (inode
        # allocation skips recently deleted inodes), 7.5 s first, 30-66 s after a delete.
        self.rec.measure(step_key, t.name, self.src.name, step)


def find_seconds(top: Path, timeout: float) -> tuple[float, int]:
    secs, res = timed(["find", str(top)], name="find", timeout=timeout)
    return secs, count_lines(res.out)


def rare_name(top: Path) -> str:
    """A file name that occurs once in the tree (the first in sorted order past its
    middle): what a user hunting for one lost file would type."""
    counts: Counter[str] = Counter()
    for _dirpath, _dirs, files in os.walk(top):
        counts.update(files)
    once = sorted(n for n, c in counts.items() if c == 1)
    if not once:
        raise StepFailed(f"no file name occurs once under {top}")
    return once[len(once) // 2]


def tar_seconds(top: Path, timeout: float) -> float:
    # Through a pipe: GNU tar does not read file contents when its archive is /dev/null.
    secs, _ = shell(f"tar -cf - -C '{top.parent}' '{top.name}' | wc -c", name="tar",
                    timeout=timeout)
    return secs


# More than any timed step writes (a restore of the source tree: 1.3 GB).
FRESH_MEMORY_BYTES = 1600 * MB


def settle(*warm_paths: Path, writes: bool = False) -> None:
    """Put the page cache in the same state for every tool before a timed step (untimed).

    sync: a backup or restore leaves up to 1.3 GB of dirty pages for the kernel to write.
    Then read `warm_paths` back in, because two things empty the cache between steps:
    borg drops the files it reads and writes from the cache (posix_fadvise DONTNEED), so
    whichever tool came after it read the source tree from disk (btfs: 1,419 MB read,
    10.6 s, against 28 MB and 8.0 s after restic); and a kernel with proactive reclaim
    (DAMON pageout, on this benchmark's VM) evicts file pages unused for about a minute.

    Before a step that `writes` (a backup, a restore), memory is also touched and freed
    again: on a VM whose balloon driver reports free pages to the host, memory that has
    been free for a while is no longer backed by the host, and the first write into it
    faults there. On the benchmark's VM (virtio-balloon with free page reporting) the
    backup floor over the large files took 4.99 and 5.03 s when its page cache came from
    memory left free for 30 s, and 3.49 and 3.93 s after 1.6 GB had just been written to
    a file and deleted. Without this, the tool that ran after an idle pause or a delete
    was the fast one."""
    run(["sync"], name="sync")
    for p in warm_paths:
        if p.exists():
            shell(f"find '{p}' -type f -print0 | xargs -0 -r cat > /dev/null", name="warm")
    if writes:
        scratch = WORK / "fresh-memory"
        block = bytes(16 * MiB)
        with open(scratch, "wb") as f:  # never synced: the delete frees it without I/O
            for _ in range(FRESH_MEMORY_BYTES // len(block)):
                f.write(block)
        scratch.unlink()


def cold_cat_mbps(path: Path, timeout: float) -> float:
    size = path.stat().st_size
    drop_caches()
    secs, _ = shell(f"cat '{path}' > /dev/null", name="cat", timeout=timeout)
    return size / MB / secs


def run_main(mode: Mode) -> None:
    started = dt.datetime.now()
    bench = MainBench(mode)
    info, vers = machine_info(), versions(bench.tools)
    vers["moto"] = moto_version()
    src_desc = describe_tree(bench.src_pristine)
    try:
        bench.run()
    finally:
        unmount_all()
    reps = bench.rec.reps
    steps = main_steps(mode)
    table, medians = main_table(steps, reps)
    s3_table, s3_medians = main_table(s3_steps(mode), reps, others=("restic",))
    watch_table, watch_medians = main_table(watch_steps(SETTLE_S), reps, others=("full backup",))
    ntable, nmedians = native_table(reps)
    ftable = floors_table(steps, medians, nmedians)
    elapsed = (dt.datetime.now() - started).total_seconds()
    data_lines = [
        f"- source tree: {bench.src_pristine.relative_to(ROOT)}: "
        f"{src_desc['files']:,} files and symlinks, "
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
        "- CPU time taken by the VM's host (steal) per repetition: "
        + ", ".join("?" if s is None else f"{s:.0%}" for s in bench.rec.steal)
        + " (bench/work/logs/ and the run's output give it per step)",
    ]
    notes = DROP_CACHES_NOTE + sorted(set(NOTES))
    only, watch = os.environ.get("BENCH_S3", "1"), os.environ.get("BENCH_WATCH", "1")
    if watch == "only":
        only = "none"  # neither the local nor the S3 rows ran
    local = [] if only in ("only", "none") else ["", table]
    s3 = [] if only in ("0", "none") else ["", "S3 vault, moto's server on 127.0.0.1 "
                                           "(bench/s3.py; both tools write to the same "
                                           "server):", "", s3_table]
    floors = [] if only in ("only", "none") else ["", ntable, "", "The goals against the "
                                                  "floors measured in this run:", "", ftable]
    watched = [] if watch == "0" else [
        "", f"btfs watch on a copy of the source tree (bench/watch.py; [watch] settle = "
        f"{SETTLE_S:g}, min_interval = 2; full backup: `btfs backup` after the same kind of "
        "change):", "", watch_table]
    md = "\n".join(
        header_lines(f"btfs benchmark, {mode.name} mode, {started:%Y-%m-%d %H:%M}", info, vers)
        + data_lines + method + local + s3 + watched + floors + [""]
        + (["Notes:", *(f"- {n}" for n in notes), ""] if notes else [])
    )
    doc = {"mode": mode.name, "started": started.isoformat(), "elapsed_s": elapsed,
           "machine": info, "versions": vers, "units": {s.key: s.unit for s in steps},
           "data": {"source": str(bench.src_pristine), **src_desc,
                    "large": list(mode.large), "large_size": mode.large_size,
                    "change": bench.change},
           "medians": medians, "s3_medians": s3_medians, "watch_medians": watch_medians,
           "native": nmedians, "repetitions": reps,
           "steal_per_repetition": bench.rec.steal, "notes": notes}
    suffix = {"only": "-s3", "none": "-watch"}.get(only, "")
    path = write_results(mode.name + suffix, md, doc)
    for part in (local, s3, watched, floors):
        for line in part:
            log(line)
    for n in notes:
        log(f"note: {n}")
    log(f"\nwritten: {path.relative_to(ROOT)} and .json")


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
    if not (argv[0] == "scale" and os.environ.get("BENCH_SCALE_REUSE") == "1"):
        clean_work()  # (a reused scale run needs the repository an earlier run left)
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
