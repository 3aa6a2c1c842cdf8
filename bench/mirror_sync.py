"""The cost of `btfs sync` (btfs.replica.sync, issue 25): a first sync of a fresh backup
into an empty mirror, then a no-change sync, local -> local and local -> S3 (moto on
127.0.0.1, in this process).

    python -m bench.mirror_sync --src /usr/lib/python3.11 --src /usr/share/doc

Runs the real `btfs` command in an environment of its own under --work (config, catalog,
cache, vault, mirror); wall times include the process start. Never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def btfs(env: dict, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"btfs {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def timed_sync(env: dict, name: str) -> tuple[float, dict]:
    start = time.monotonic()
    report = json.loads(btfs(env, "sync", "--json", name))["mirrors"][0]
    return time.monotonic() - start, report


def moto_endpoint() -> tuple[str, object]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="k", aws_secret_access_key="s").create_bucket(Bucket="bench")
    return endpoint, server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, action="append", required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/btfs-mirror-bench"))
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    tree = args.work / "tree"
    for i, src in enumerate(args.src):
        shutil.copytree(src, tree / f"{i}-{src.name}", symlinks=True)
    files = sum(len(f) for _, _, f in os.walk(tree))
    env = {**os.environ, "HOME": str(args.work), "BTFS_CONFIG": str(args.work / "config.toml"),
           "XDG_DATA_HOME": str(args.work / "data"), "XDG_CACHE_HOME": str(args.work / "cache"),
           "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    btfs(env, "init", "--vault", str(args.work / "vault"), "--track", str(tree), "--no-input")
    btfs(env, "backup")
    print(f"tree: {files} files; vault: "
          f"{sum(f.stat().st_size for f in (args.work / 'vault').rglob('*') if f.is_file()):,}"
          " bytes")
    endpoint, server = moto_endpoint()
    try:
        btfs(env, "mirror", "add", "disk", str(args.work / "mirror"), "--no-sync-after-backup")
        btfs(env, "mirror", "add", "s3", "s3://bench/m", "--endpoint", endpoint,
             "--no-sync-after-backup")
        for name in ("disk", "s3"):
            for label in ("first", "no-change"):
                took, r = timed_sync(env, name)
                print(f"{name:5} {label:9} sync: {took:6.2f} s, {r['packs_copied']} packs + "
                      f"{r['catalog_copied']} catalog objects copied, {r['bytes_copied']:,} "
                      f"bytes; {r['skipped']} objects already there")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
