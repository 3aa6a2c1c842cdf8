"""`btfs recover` at scale (issue 25: a host of 1,000,000 files and 100 backups recovered
in at most 60 s), and the first fetch of that host's copy for `btfs mount --host`.

    python -m bench.recover_scale               # local vault
    python -m bench.recover_scale --s3          # the vault on moto, 127.0.0.1, in-process

The catalog is bench/history.py's synthetic one (built once into bench/work/history/,
BENCH_HISTORY_FILES x BENCH_HISTORY_BACKUPS): a real backup of a million files a hundred
times takes hours, and a copy is the file's pages whatever they hold. It is published as
a base generation into a new vault, as `btfs backup` would, then recovered by the real
`btfs recover` in a fresh HOME (the whole command, Python's start included), its peak RSS
from /usr/bin/time. Then a small change is published (one delta) and a cached copy is
brought up to date as `btfs mount --host` does (btfs.replica.otherhost), against a whole
fetch of the same generation. Prints a markdown table. Never part of the tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from btfs import config as config_mod
from btfs.catalog import Catalog
from btfs.config import Config
from btfs.replica.otherhost import update_copy
from btfs.replica.publish import LOCAL_KEYS, publish
from btfs.vault import S3Settings, open_vault

from .catalog_copy import env_for, moto
from .common import WORK
from .history import history_catalog

HOST_ID = "00000000-0000-4000-8000-00000000beef"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def recover_command(env: dict, vault: str, reach: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in KiB) of the whole `btfs recover` command."""
    rss = env["HOME"] + "/rss"
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss, sys.executable, "-m", "btfs",
                    "-q", "recover", "--vault", vault, *reach, "--host", HOST_ID,
                    "--read-only"], env=env, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, int(Path(rss).read_text().split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--s3", action="store_true", help="the vault on moto, 127.0.0.1")
    parser.add_argument("--work", type=Path, default=WORK / "recover-scale")
    args = parser.parse_args()
    files = int(os.environ.get("BENCH_HISTORY_FILES", 1_000_000))
    backups = int(os.environ.get("BENCH_HISTORY_BACKUPS", 100))
    source = history_catalog(files, backups)
    shutil.rmtree(args.work, ignore_errors=True)
    host = args.work / "host"
    host.mkdir(parents=True)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    url, reach = moto() if args.s3 else (str(args.work / "vault"), [])
    vault = open_vault(url, S3Settings(endpoint=os.environ.get("BENCH_S3_ENDPOINT", "")),
                       args.work / "cache")
    vault.create()
    ident = vault.create_identity()
    catalog = host / "catalog.db"
    shutil.copyfile(source, catalog)
    with Catalog(catalog) as c, c.writer.transaction():
        c.writer.set_meta("vault_id", ident.vault_id)
    doc = {k: v for k, v in config_mod.to_dict(Config(HOST_ID, url)).items()
           if k not in LOCAL_KEYS}

    def put(snapshots: int):
        return publish(vault, host, catalog, HOST_ID, config_doc=doc, host_name="bench",
                       facts={"snapshots": snapshots, "last_backup_ns": time.time_ns()})

    base, publish_s = timed(lambda: put(backups))
    took, rss = recover_command(env_for(args.work / "fresh"), url, reach)
    cache = args.work / "mount-cache"
    cache.mkdir()
    (_, _, whole_bytes), whole_s = timed(lambda: update_copy(vault, HOST_ID, cache))
    with Catalog(catalog) as c, c.writer.transaction():
        c.writer.set_meta("bench-change", str(time.time_ns()))  # a backup's worth: 1 page+
    delta, _ = timed(lambda: put(backups + 1))
    (_, how, delta_bytes), delta_s = timed(lambda: update_copy(vault, HOST_ID, cache))
    vault.close()
    where = "moto S3, 127.0.0.1" if args.s3 else "local vault"
    print(f"| {files:,} files x {backups} backups ({where}) | |")
    print("|---|---|")
    print(f"| catalog | {base.catalog_size / 1e6:,.0f} MB, {base.pages:,} pages |")
    print(f"| published (base) | {base.uploaded / 1e6:,.0f} MB in {publish_s:.1f} s |")
    print(f"| `btfs recover` (whole command) | {took:.1f} s, peak RSS {rss / 1024:.0f} MiB |")
    print(f"| first fetch for `mount --host` | {whole_s:.1f} s, {whole_bytes / 1e6:,.0f} MB |")
    print(f"| next fetch after one delta ({how}) | {delta_s:.1f} s, "
          f"{delta_bytes / 1e3:,.0f} kB (delta of {delta.pages} pages) |")


if __name__ == "__main__":
    main()
