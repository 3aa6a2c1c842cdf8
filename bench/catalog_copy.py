"""Catalog bytes uploaded per backup, and the time to recover (issue 25).

    python -m bench.catalog_copy --files 20000          # a synthetic tree
    python -m bench.catalog_copy --tree /path/to/linux  # a real tree (1% of it is changed)
    python -m bench.catalog_copy --s3 ...               # the vault on S3 (moto, 127.0.0.1)

Runs the real `btfs` in a scratch HOME under --work: an initial backup, a no-change
backup, a backup after appending a line to 1% of the files, then `btfs recover` in a
second scratch HOME. Prints, per backup, the catalog's size and the bytes of the catalog
copy objects it put in the vault. Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path


def env_for(root: Path) -> dict:
    (root / "home").mkdir(parents=True, exist_ok=True)
    return dict(os.environ, HOME=str(root / "home"), XDG_CONFIG_HOME=str(root / "config"),
                XDG_DATA_HOME=str(root / "data"), XDG_CACHE_HOME=str(root / "cache"),
                BTFS_CONFIG=str(root / "config" / "btfs" / "config.toml"))


def btfs(env: dict, *args: str) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "btfs", "-q", *args], env=env, check=True,
                   stdin=subprocess.DEVNULL)
    return time.monotonic() - start


def copies(vault: str) -> dict[str, int]:
    from btfs.config import S3Settings
    from btfs.vault import open_vault

    settings = S3Settings(endpoint=os.environ.get("BENCH_S3_ENDPOINT", ""))
    v = open_vault(vault, settings, Path("/tmp/btfs-bench-catalog-copy-cache"))
    try:
        return dict(v.list("hosts/"))
    finally:
        v.close()


def moto() -> tuple[str, list[str]]:
    """A moto S3 server on 127.0.0.1 in this process: (vault URL, options to reach it)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                      BENCH_S3_ENDPOINT=endpoint)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return "s3://bench/vault", ["--endpoint", endpoint]


def synthetic(root: Path, files: int) -> None:
    rng = random.Random(25)
    for i in range(files):
        d = root / f"d{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_bytes(rng.randbytes(rng.randint(100, 20_000)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--tree", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/btfs-bench-catalog-copy"))
    parser.add_argument("--s3", action="store_true", help="the vault on moto, 127.0.0.1")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    src = args.tree or args.work / "src"
    if args.tree is None:
        synthetic(src, args.files)
    vault, reach = moto() if args.s3 else (str(args.work / "vault"), [])
    env = env_for(args.work / "host")
    btfs(env, "init", "--vault", vault, *reach, "--no-input")
    btfs(env, "track", str(src))
    catalog = args.work / "host" / "data" / "btfs" / "catalog.db"
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    rng = random.Random(61)
    print(f"{len(files):,} files in {src}")
    print(f"{'backup':28} {'seconds':>8} {'catalog':>12} {'uploaded':>12} {'objects':>8}")
    for step in ("initial", "no change", "1% of files changed", "no change"):
        if step.startswith("1%"):
            for p in rng.sample(files, len(files) // 100):
                with open(p, "ab") as f:
                    f.write(b"\nchanged\n")
        before = copies(vault)
        took = btfs(env, "backup")
        new = {k: v for k, v in copies(vault).items() if k not in before}
        print(f"{step:28} {took:8.1f} {catalog.stat().st_size:12,} "
              f"{sum(new.values()):12,} {len(new):8}")
    fresh = env_for(args.work / "fresh")
    took = btfs(fresh, "recover", "--vault", vault, *reach)
    print(f"btfs recover (the whole command): {took:.1f} s")


if __name__ == "__main__":
    main()
