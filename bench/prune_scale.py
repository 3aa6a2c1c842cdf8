"""`btfs prune` planning at scale: a catalog of BENCH_HISTORY_FILES files (default
1,000,000) and BENCH_HISTORY_BACKUPS backups (default 100), forget the older half, then
`btfs prune --dry-run` (the planning alone: the packs it would delete and repack).

    python -m bench.prune_scale            (or python -m bench.prune_bench --scale)

The history is bench/history.py's (written with SQL, 10,000 files changed and 500
deleted per backup), made a real btfs setup's catalog (`btfs init` with a local vault)
and given what a backup of it would have stored: one chunk per content (a tenth of them
with 8 chunks more, as large files), small chunks in codec groups of 40 sharing one stored
form, 4,000 chunks to a pack, the pack rows. The vault holds no packs: planning reads only
the catalog, and a dry run touches nothing else. `btfs forget --keep-last N/2` and
`btfs prune --dry-run --json` run as processes under GNU time: seconds, peak RSS and
prune's own planning time are reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from btfs.catalog import Catalog

from .common import WORK, log
from .history import build as build_history

BTFS = [sys.executable, "-m", "btfs"]
GROUP = 40  # chunks sharing one stored form
PACK = 4000  # chunks to a pack
EXTRA = 8  # more chunks of every tenth content


def add_chunks(path: Path) -> None:
    """Chunks, content_chunk rows and packs for every content of the history."""
    catalog = Catalog(path)
    db = catalog.db
    with db.transaction():
        # Chunk ids 10*c, 10*c + 1 ... for content c: one, or 1 + EXTRA for every tenth.
        db.execute("CREATE TEMP TABLE cc (chunk_id INTEGER PRIMARY KEY, content_id INTEGER)")
        db.execute("INSERT INTO cc SELECT id * 10, id FROM content")
        for k in range(1, EXTRA + 1):
            db.execute("INSERT INTO cc SELECT id * 10 + ?, id FROM content WHERE id % 10 = 0",
                       (k,))
        # Packs and groups in chunk order (what backups in that order would have written).
        db.execute("CREATE TEMP TABLE placed AS SELECT chunk_id, content_id, "
                   "row_number() OVER (ORDER BY chunk_id) - 1 AS n FROM cc")
        db.execute("INSERT INTO pack (id, name, size, chunks, created_ns) "
                   "SELECT n / ? + 1, lower(hex(randomblob(32))), 16000000, count(*), 1 "
                   "FROM placed GROUP BY n / ?", (PACK, PACK))
        # Large-file chunks (k > 0) are stored alone; the others in groups of GROUP.
        db.execute("INSERT INTO chunk (id, hash, size, pack_id, offset, stored_len) "
                   "SELECT chunk_id, randomblob(32), CASE WHEN chunk_id % 10 THEN 1048576 "
                   "ELSE 10000 END, n / ? + 1, "
                   "CASE WHEN chunk_id % 10 THEN 8 + (n % ?) * 4000 "
                   "ELSE 9 + (n % ?) / ? * ? * 4000 END, "
                   "CASE WHEN chunk_id % 10 THEN 4000 ELSE 3000 * ? END FROM placed",
                   (PACK, PACK, PACK, GROUP, GROUP, GROUP // 10))
        db.execute("INSERT INTO content_chunk (chunk_id, content_id) "
                   "SELECT chunk_id, content_id FROM cc")
        db.execute("UPDATE snapshot SET name = printf('b%03d', id)")
        db.execute("DROP TABLE cc")
        db.execute("DROP TABLE placed")
    catalog.close()


def timed(cmd: list[str], env: dict, work: Path) -> tuple[float, float, float, str]:
    """(seconds, CPU seconds, peak RSS MB, stdout) of a command under GNU time."""
    rss = work / "rss"
    started = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", str(rss), *cmd], env=env,
                       capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if p.returncode:
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr[-2000:]}")
    user, system, kb = rss.read_text().split()[-3:]
    return seconds, float(user) + float(system), int(kb) / 1024, p.stdout


def main() -> None:
    files = int(os.environ.get("BENCH_HISTORY_FILES", 1_000_000))
    backups = int(os.environ.get("BENCH_HISTORY_BACKUPS", 100))
    work = WORK / "prune-scale" / f"{files}-{backups}"
    env = {**os.environ, "BTFS_CONFIG": str(work / "config.toml"),
           "XDG_DATA_HOME": str(work / "data"), "XDG_CACHE_HOME": str(work / "cache")}
    template = work / "template.db"
    catalog = work / "data" / "btfs" / "catalog.db"
    if not template.exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        subprocess.run([*BTFS, "init", "--vault", str(work / "vault"), "--no-input"],
                       env=env, check=True, capture_output=True)
        log(f"building {template} ({files:,} files, {backups} backups)")
        shutil.copy(catalog, work / "building.db")
        build_history(work / "building.db", files, backups)
        add_chunks(work / "building.db")
        (work / "building.db").rename(template)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{catalog}{suffix}").unlink(missing_ok=True)
    shutil.copy(template, catalog)
    keep = backups // 2
    s_f, c_f, r_f, _ = timed([*BTFS, "forget", "--keep-last", str(keep)], env, work)
    s_p, c_p, r_p, out = timed([*BTFS, "prune", "--dry-run", "--json"], env, work)
    report = json.loads(out)
    print(f"| {files:,} files x {backups} backups, forget {backups - keep} | seconds "
          "| CPU seconds | peak RSS MB |")
    print("|---|---|---|---|")
    print(f"| btfs forget --keep-last {keep} | {s_f:.1f} | {c_f:.1f} | {r_f:.0f} |")
    print(f"| btfs prune --dry-run (process) | {s_p:.1f} | {c_p:.1f} | {r_p:.0f} |")
    print(f"| prune planning (its --json) | {report['planning_seconds']:.1f} | | |")
    print(f"\n{report['packs']} packs, {report['dead_packs']} dead, {report['repacked']} to "
          f"repack, {report['dead_chunks']:,} dead chunks, "
          f"{report['freed_bytes'] / 1e9:.1f} GB to free")


if __name__ == "__main__":
    sys.exit(main())
