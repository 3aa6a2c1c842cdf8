"""The status page's search at scale: a synthetic catalog of 1M files x 100 backups (every
file in the first backup, 1% of them changed in each later one: 2M versions), then the
time of /api/search's work (btfs.web.search over btfs find's index) for a few
queries, each the best of 3.

    python -m bench.web_search [DIR]   (default: a temporary directory; about 1 GB)
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

from btfs.catalog import Catalog
from btfs.web.search import search

FILES = 1_000_000
PER_DIR = 1000
BACKUPS = 100
CHANGED = FILES // 100
EXTS = ("txt", "odt", "jpg", "py", "md", "pdf", "csv", "json")
QUERIES = ("notes-0777777", "report-0777", "*.odt", "photo-09*.jpg", "no-such-name",
           "notes")


def build(path: Path) -> None:
    rng = random.Random(1)
    catalog = Catalog(path)
    conn = catalog.db.conn
    conn.execute("BEGIN")
    t0 = 1_700_000_000 * 10**9
    conn.executemany("INSERT INTO snapshot (id, host_id, started_ns, finished_ns, state) "
                     "VALUES (?, 'h', ?, ?, 'complete')",
                     [(s, t0 + s * 3600 * 10**9, t0 + s * 3600 * 10**9 + 1) for s in
                      range(1, BACKUPS + 1)])
    conn.executemany("INSERT INTO node (id, parent, name) VALUES (?, ?, ?)",
                     [(2, 1, b"home"), (3, 2, b"me")])
    dirs = FILES // PER_DIR
    conn.executemany("INSERT INTO node (id, parent, name) VALUES (?, 3, ?)",
                     [(10 + d, f"dir{d:04}".encode()) for d in range(dirs)])
    first_file = 10 + dirs
    prefixes = ("report", "photo", "notes", "draft", "invoice")

    def name(i: int) -> bytes:
        return f"{prefixes[i % 5]}-{i:07d}.{EXTS[i % len(EXTS)]}".encode()

    conn.executemany("INSERT INTO node (id, parent, name) VALUES (?, ?, ?)",
                     ((first_file + i, 10 + i // PER_DIR, name(i)) for i in range(FILES)))
    version = content = 0

    def versions(snapshot: int, files):
        nonlocal version, content
        for i in files:
            version += 1
            content += 1
            yield (version, first_file + i, snapshot, rng.randrange(1 << 20), content)

    rows = []
    for snapshot in range(1, BACKUPS + 1):
        files = range(FILES) if snapshot == 1 else rng.sample(range(FILES), CHANGED)
        rows = list(versions(snapshot, files))
        conn.executemany("INSERT INTO content (id, digest, size, chunks) VALUES (?, ?, ?, x'')",
                         ((r[4], os.urandom(32), r[3]) for r in rows))
        conn.executemany(
            "INSERT INTO version (id, node_id, snapshot_id, type, size, mode, uid, gid, "
            "atime_ns, mtime_ns, ctime_ns, ino, nlink, content_id) "
            "VALUES (?, ?, ?, 'file', ?, 33188, 0, 0, 0, 0, 0, 0, 1, ?)", rows)
    conn.execute("COMMIT")
    catalog.close()


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    path = base / "catalog.db"
    if not path.exists():
        start = time.perf_counter()
        build(path)
        print(f"built {path} ({path.stat().st_size >> 20} MiB) in "
              f"{time.perf_counter() - start:.0f} s")
    catalog = Catalog(path, readonly=True)
    print(f"{FILES:,} files x {BACKUPS} backups; search answers (best of 3, up to 200 paths)")
    for query in QUERIES:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            hits = search(catalog, query, 200)
            best = min(best, time.perf_counter() - t)
        versions = sum(len(h.versions) for h in hits)
        print(f"  {query!r:>18}: {best * 1000:7.1f} ms, {len(hits)} paths, {versions} versions")


if __name__ == "__main__":
    main()
