"""The cost of learning other hosts' packs before a backup (btfs.engine.packsync, issue 25).

    python -m bench.packsync --packs 2000 --chunks 256 --work /tmp/packsync

Writes --packs synthetic packs of --chunks chunks each (small stored chunks: only the
trailer and index are read) into a local vault, then times a first sync into an empty
catalog (every pack is new: two ranged reads each, then the rows) and a second one (no new
pack: the cost every later backup pays, a listing and one indexed probe per pack). Never
part of the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from btfs import digest
from btfs.catalog import Catalog
from btfs.engine.pack import PackBuilder
from btfs.engine.packsync import sync_foreign_packs
from btfs.vault import LocalVault, pack_key


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packs", type=int, default=2000)
    ap.add_argument("--chunks", type=int, default=256)
    ap.add_argument("--work", type=Path, default=Path("/tmp/btfs-packsync"))
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    vault = LocalVault(args.work / "vault")
    vault.create()
    for p in range(args.packs):
        builder = PackBuilder()
        for c in range(args.chunks):
            raw = f"{p}/{c}".encode()
            builder.add(digest.digest(raw), len(raw), b"\0" + raw)
        sealed = builder.seal()
        vault.put(pack_key(sealed.name), bytes(sealed.data))
    catalog = Catalog(args.work / "catalog.db")
    for label in ("first sync (all new)", "second sync (none new)"):
        start = time.monotonic()
        stats = sync_foreign_packs(catalog, vault)
        took = time.monotonic() - start
        print(f"{label}: {stats.listed} packs listed, {stats.learned} learned, "
              f"{stats.chunks} chunks, {stats.bytes_read:,} bytes read, {took:.2f} s")
    catalog.close()
    print(f"catalog: {os.path.getsize(args.work / 'catalog.db'):,} bytes")


if __name__ == "__main__":
    main()
