"""History search at scale: `btfs find`, `btfs diff` and the folder `btfs log` on a catalog
of BENCH_HISTORY_FILES files (default 1,000,000, 1,000 to a directory) and
BENCH_HISTORY_BACKUPS backups (default 100), each changing 10,000 files and deleting 500.

    python -m bench.history            # prints a markdown table of best-of-3 times

The catalog is written with SQL straight into a new catalog's tables (a real backup of
a million files a hundred times takes hours; the queries only read the tables, which hold
what a backup would write: nodes, versions, contents, heads). Times are of the Repo-level
calls without process start-up, best of three, on a warm page cache.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

from btfs.catalog import Catalog
from btfs.engine.browse import diff, find, folder_log

from .common import WORK, log

NS = 1_000_000_000
START = 1_795_000_000 * NS
EXTENSIONS = (".txt", ".c", ".h", ".py", ".md", ".tar.gz", ".jpg", "")


def build(path: Path, files: int, backups: int) -> None:
    """The synthetic history described in the module docstring."""
    catalog = Catalog(path)
    db = catalog.db
    dirs = files // 1000
    first_file = 10 + dirs
    with db.transaction():
        db.run_rows("INSERT INTO snapshot (id, host_id, started_ns, finished_ns, state) "
                    "VALUES {rows}", [(s, "h", START + s * 3600 * NS, START + s * 3600 * NS
                                       + NS, "complete") for s in range(1, backups + 1)])
        db.execute("INSERT INTO node (id, parent, name) VALUES (2, 1, CAST('home' AS BLOB)), "
                   "(3, 2, CAST('me' AS BLOB))")
        db.execute("WITH RECURSIVE i(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM i WHERE "
                   "x + 1 < ?) INSERT INTO node (id, parent, name) "
                   "SELECT 10 + x, 3, CAST(printf('d%04d', x) AS BLOB) FROM i", (dirs,))
        names = " ".join(f"WHEN {i} THEN '{e}'" for i, e in enumerate(EXTENSIONS))
        db.execute("WITH RECURSIVE i(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM i WHERE "
                   "x + 1 < ?) INSERT INTO node (id, parent, name) SELECT ? + x, 10 + x / 1000, "
                   f"CAST(printf('f%07d', x) || CASE x % 8 {names} END AS BLOB) FROM i",
                   (files, first_file))
        db.execute("INSERT INTO content (id, digest, size, chunks) "
                   "SELECT id, randomblob(32), 100, x'' FROM node WHERE id >= ?", (first_file,))
        db.execute("INSERT INTO version (node_id, snapshot_id, type, size, mode, uid, gid, "
                   "atime_ns, mtime_ns, ctime_ns, ino, nlink, content_id) SELECT id, 1, "
                   "CASE WHEN id < ? THEN 'dir' ELSE 'file' END, 100, CASE WHEN id < ? "
                   "THEN 16877 ELSE 33188 END, 1000, 1000, 1, 1, 1, id, 1, "
                   "CASE WHEN id < ? THEN NULL ELSE id END FROM node WHERE id > 1",
                   (first_file, first_file, first_file))
        rng = random.Random(1)
        content = first_file + files
        for s in range(2, backups + 1):
            rows, contents = [], []
            for k, x in enumerate(rng.sample(range(files), 10_500)):
                if k < 500:
                    rows.append((first_file + x, s, "deleted", 0, 0, None))
                else:
                    content += 1
                    contents.append((content,))
                    rows.append((first_file + x, s, "file", 100 + s, 33188, content))
            db.run_rows("INSERT INTO content (id, digest, size, chunks) "
                        "SELECT column1, randomblob(32), 100, x'' FROM (VALUES {rows})",
                        contents)
            db.run_rows("INSERT INTO version (node_id, snapshot_id, type, size, mode, uid, "
                        "gid, atime_ns, mtime_ns, ctime_ns, ino, nlink, content_id) SELECT "
                        "column1, column2, column3, column4, column5, 1000, 1000, 1, 2, 2, 1, "
                        "1, column6 FROM (VALUES {rows})", rows)
        db.execute("UPDATE node SET head = (SELECT id FROM version WHERE node_id = node.id "
                   "ORDER BY snapshot_id DESC LIMIT 1)")
    catalog.close()


def best(fn, reps: int = 3) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(reps):
        started = time.perf_counter()
        count = len(list(fn()))
        times.append(time.perf_counter() - started)
    return min(times), count


def history_catalog(files: int, backups: int) -> Path:
    """The synthetic catalog of `files` x `backups`, built once into WORK/history."""
    path = WORK / "history" / f"catalog-{files}-{backups}.db"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"building {path} ({files:,} files, {backups} backups)")
        build(path.with_suffix(".tmp"), files, backups)
        path.with_suffix(".tmp").rename(path)
    return path


def main() -> None:
    files = int(os.environ.get("BENCH_HISTORY_FILES", 1_000_000))
    backups = int(os.environ.get("BENCH_HISTORY_BACKUPS", 100))
    path = history_catalog(files, backups)
    catalog = Catalog(path, readonly=True)
    names = catalog.history.snapshot_names()
    middle = backups // 2
    rows = [
        ("btfs find 'f000012*'", lambda: find(catalog, names, "f000012*")),
        ("btfs find '*12345*'", lambda: find(catalog, names, "*12345*")),
        ("btfs find 'd0001/f00017*.c'", lambda: find(catalog, names, "d0001/f00017*.c")),
        ("btfs find 'f0001*' --deleted",
         lambda: find(catalog, names, "f0001*", deleted_only=True)),
        (f"btfs diff {middle} {middle + 1}", lambda: diff(catalog, middle, middle + 1)),
        ("btfs log DIR (1,000 files)", lambda: folder_log(
            catalog, catalog.history.node_for_path(b"/home/me/d0005"), names)),
    ]
    print(f"| {files:,} files x {backups} backups | best of 3 | results |")
    print("|---|---|---|")
    for label, fn in rows:
        seconds, count = best(fn)
        print(f"| {label} | {seconds * 1000:.0f} ms | {count:,} |")
    catalog.close()


if __name__ == "__main__":
    sys.exit(main())
