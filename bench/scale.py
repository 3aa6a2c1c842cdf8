"""Scale benchmark (btfs only): many small files, many backups, then the catalog and mount."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .common import (
    MB,
    ROOT,
    WORK,
    MiB,
    StealMeter,
    StepFailed,
    count_lines,
    log,
    steal_text,
    timed,
)
from .mounts import peak_rss_of_mount, unmount, unmount_all
from .report import Goal, failed, fmt, header_lines, machine_info, md_table, versions, write_results
from .tools import Btfs, Dataset


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


# A full scale run leaves its report in the repository's directory under this name, and a
# BENCH_SCALE_REUSE=1 run takes the churn backup times from there. (Not from
# bench/results/: a result is renamed when a later run of the same day takes its name.)
BUILT_BY = "built-by-run.json"


def run_scale() -> None:
    n = int(os.environ.get("BENCH_SCALE_FILES", 1_000_000))
    backups = int(os.environ.get("BENCH_SCALE_BACKUPS", 100))
    started = dt.datetime.now()
    run_meter = StealMeter()
    btfs = Btfs(timeout=6 * 3600)
    tree = WORK / "scale" / "tree"
    ds = Dataset("scale", tree)
    res: dict[str, object] = {}
    fails: dict[str, str] = {}

    def measure(key: str, fn: Callable[[], object]) -> object | None:
        meter = StealMeter()
        try:
            v = fn()
        except (StepFailed, OSError, subprocess.SubprocessError) as e:
            fails[key] = str(e)
            log(f"  {key}: failed: {e}")
            return None
        if isinstance(v, (int, float)):
            res[key] = v
            log(f"  {key}: {fmt(v)}{steal_text(meter.share())}")
        return v

    reuse = os.environ.get("BENCH_SCALE_REUSE") == "1" and btfs.dir(ds).is_dir()
    times, rss = [], []
    earlier: dict = {}
    if reuse:
        # Remeasure with the current btfs on the repository an earlier run built (its 100
        # backups take most of an hour): its backup times are carried over and labelled;
        # the initial backup is redone into a fresh repository for its time and RSS.
        built_by = btfs.dir(ds) / BUILT_BY
        if not built_by.is_file():
            raise SystemExit(f"BENCH_SCALE_REUSE=1: {built_by} does not say which run built "
                             "the repository; run the scale benchmark without it")
        earlier = json.loads(built_by.read_text())
        log(f"reusing the repository of the run started {earlier['started']}")
        backups = 0
    else:
        log(f"generating {n:,} files in {tree.relative_to(ROOT)}")
        t0 = time.perf_counter()
        generate_scale_tree(tree, n, seed=7)
        log(f"  generated in {time.perf_counter() - t0:.0f} s")
    try:
        if reuse:
            fresh = Dataset("scale-fresh", tree)
            shutil.rmtree(btfs.dir(fresh), ignore_errors=True)
            measure("init", lambda: btfs.init(fresh))
            secs, mb = btfs.backup(fresh, "initial")
            res["backup_initial_s"], res["rss_backup_initial_mb"] = secs, mb
            rss.append(mb)
            shutil.rmtree(btfs.dir(fresh), ignore_errors=True)
            for key in ("backup_churn_median_s", "backup_churn_last_s"):
                if key in earlier["results"]:
                    res[key] = earlier["results"][key]
            times = [res["backup_initial_s"]]
        else:
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
            res.setdefault("backup_initial_s", times[0])
            res.setdefault("rss_backup_initial_mb", rss[0])
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
    done = earlier.get("backups_done", len(times)) if reuse else len(times)
    doc = write_scale_report(n, earlier.get("backups_planned", backups) if reuse else backups,
                             done, res, fails, started, btfs, earlier, run_meter.share())
    if not reuse and btfs.dir(ds).is_dir():
        (btfs.dir(ds) / BUILT_BY).write_text(json.dumps(doc, indent=2) + "\n")


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


MOUNT_KEYS = {"mount_ready_s", "ls_by_time_s", "ls_by_time_entries", "ls_by_file_s",
              "ls_by_file_entries", "rss_mount_mb"}


def write_scale_report(n: int, backups: int, done: int, res: dict, fails: dict,
                       started: dt.datetime, btfs: Btfs, earlier: dict | None = None,
                       steal: float | None = None) -> dict:
    rows_spec = [
        ("backup_initial_s", "initial backup (s)", None),
        ("rss_backup_initial_mb", "peak RSS of the initial backup (MB)", None),
        ("backup_churn_median_s", "backup at 1% churn, median (s)", None),
        ("backup_churn_last_s", "backup at 1% churn, last (s)", None),
        ("backup_nochange_s", f"no-change backup after {done} backups (s)",
         Goal(None, "<=", 10, "s")),
        ("rss_backup_max_mb", "peak RSS of a backup, max (MB)", Goal(None, "<=", 100, "MB")),
        ("catalog_mb", "catalog size (MB)", None),
        ("repo_mb", "vault + catalog (MB)", None),
        ("mount_ready_s", "mount ready (s)", Goal(None, "<=", 0.5, "s")),
        ("ls_by_time_s", "ls by-time/ (s)", None),
        ("ls_by_time_entries", "  entries in by-time/", None),
        ("ls_by_file_s", "ls by-file/<hot file>/ (s)", Goal(None, "<=", 0.01, "s")),
        ("ls_by_file_entries", "  versions listed", None),
        ("rss_mount_mb", "peak RSS of the mount (MB)", Goal(None, "<=", 100, "MB")),
    ]
    rows = []
    for key, label, goal in rows_spec:
        v = res.get(key)
        why = fails.get(key) or (fails.get("mount") if key in MOUNT_KEYS else None)
        val = fmt(v) if v is not None else (failed(why) if why else "-")
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
        *([f"- reused the repository built by the run started {earlier['started']} "
           f"(working tree {earlier['versions'].get('working tree', '?')}): the churn "
           "backup times are that run's; the initial backup was redone into a fresh "
           "repository and everything else measured now, with the btfs above"]
          if earlier else []),
        f"- total run time {elapsed / 60:.1f} min; CPU time taken by the VM's host (steal): "
        + ("?" if steal is None else f"{steal:.0%}") + " (the run's output gives it per step)",
        "", table, "",
        *(f"- failed: {k}: {v}" for k, v in fails.items()),
    ]) + "\n"
    doc = {"mode": "scale", "started": started.isoformat(), "elapsed_s": elapsed,
           "reused_run": earlier.get("started") if earlier else None,
           "files": n, "backups_planned": backups, "backups_done": done, "machine": info,
           "versions": vers, "steal": steal, "results": res, "failures": fails}
    path = write_results("scale", md, doc)
    log("\n" + table)
    log(f"\nwritten: {path.relative_to(ROOT)} and .json")
    return doc
