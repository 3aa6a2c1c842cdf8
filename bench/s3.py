"""The S3 rows: btfs and restic backing up to one moto server on 127.0.0.1.

Per repetition, after the local steps (bench.py), on copies of the same data:
  1. start moto's server (``python -m moto.server``) on a free port with an empty bucket;
     btfs: ``init --vault s3://bench/btfs-<dataset> --endpoint http://127.0.0.1:PORT``,
     restic: ``s3:http://127.0.0.1:PORT/bench/restic-<dataset>`` (format 2);
  2. initial, no-change and after-change (the seeded change step) backups of the source
     tree, each under ``/usr/bin/time`` for its peak RSS; an initial backup of the file the
     cold ``cat`` reads (its own repository per tool);
  3. restore of the source tree: btfs ``cp -a`` out of its mount (as the local rows do) and
     ``btfs restore``; ``restic restore``;
  4. cold ``cat`` of the large file through each tool's mount: btfs's read cache emptied
     (its cache directory removed) and the page cache dropped first.
Both tools talk to the same server and pay for its speed alike; what a real network adds
(latency, bandwidth) is not measured. Credentials are moto's dummy ones, in the
environment, as a user's would be.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from .common import LOGS, NOTES, WORK, StepFailed, log, run
from .mounts import Mount, unmount
from .tools import Btfs, Dataset, Restic

BUCKET = "bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}
S3_HOME = WORK / "s3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """moto's S3 server in a process of its own (the tools' requests must not share a
    Python process, and GIL, with the harness)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> MotoServer:
        LOGS.mkdir(parents=True, exist_ok=True)
        err = open(LOGS / f"moto-{self.port}.log", "wb")  # noqa: SIM115 (the server's life)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise StepFailed("moto server did not start (see bench/work/logs)") \
                        from None
                time.sleep(0.1)
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            config=Config(s3={"addressing_style": "path"}))

    def bytes_under(self, prefix: str) -> int:
        total = 0
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                         Prefix=prefix)
        for page in pages:
            total += sum(o["Size"] for o in page.get("Contents", ()))
        return total

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class BtfsS3(Btfs):
    """btfs with its vault in the moto server; catalog and caches in bench/work/s3/btfs."""

    def __init__(self, timeout: float, server: MotoServer):
        super().__init__(timeout)
        self.home = S3_HOME / self.name
        self.server = server

    def env(self, ds: Dataset) -> dict:
        return {**super().env(ds), **CREDENTIALS}

    def init(self, ds: Dataset) -> None:
        d = self.dir(ds)
        d.mkdir(parents=True, exist_ok=True)
        self.run(ds, self.cmd("init", "--vault", f"s3://{BUCKET}/btfs-{ds.name}",
                              "--endpoint", self.server.endpoint, "--no-input"), "init")
        self.run(ds, self.cmd("track", str(ds.path)), "track")

    def repo_bytes(self, ds: Dataset) -> int:
        return self.server.bytes_under(f"btfs-{ds.name}/") + self.catalog_bytes(ds)

    def drop_read_cache(self, ds: Dataset) -> None:
        """Remove the local read cache (and the rest of btfs's cache dir): cold."""
        shutil.rmtree(self.dir(ds) / "cache", ignore_errors=True)


class ResticS3(Restic):
    def __init__(self, timeout: float, server: MotoServer):
        super().__init__(timeout)
        self.home = S3_HOME / self.name
        self.server = server

    def env(self, ds: Dataset) -> dict:
        return {**super().env(ds), **CREDENTIALS,
                "RESTIC_REPOSITORY": f"s3:{self.server.endpoint}/{BUCKET}/restic-{ds.name}"}

    def repo_bytes(self, ds: Dataset) -> int:
        return self.server.bytes_under(f"restic-{ds.name}/")


def _copy_data(src_pristine: Path, large_file: Path) -> tuple[Dataset, Dataset]:
    data = S3_HOME / "data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    run(["cp", "-a", str(src_pristine), str(data / "src")], name="s3-copy-src")
    (data / "large").mkdir()
    run(["cp", "-a", str(large_file), str(data / "large" / large_file.name)],
        name="s3-copy-large")
    return Dataset("src", data / "src"), Dataset("large", data / "large")


def run_s3_pass(bench, rep: int) -> None:
    """The S3 steps of one repetition (bench is the MainBench: recorder, mode, helpers)."""
    from .bench import cold_cat_mbps, settle
    from .data import apply_change, describe_tree

    r, mode = bench.rec, bench.mode
    log("  -- S3 (moto on 127.0.0.1)")
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as e:
        for key in S3_KEYS:
            for tool in ("btfs", "restic"):
                r.fail(key, tool, f"{e.name} missing (make install)")
        return
    src, large = _copy_data(bench.src_pristine, bench.large_pristine / bench.cat_file)
    with MotoServer() as server:
        tools = [BtfsS3(mode.timeout, server), ResticS3(mode.timeout, server)]
        if rep % 2:
            tools.reverse()
        for ds in (src, large):
            for t in tools:
                r.measure(None, t.name, f"s3-{ds.name}", lambda t=t, ds=ds: t.init(ds),
                          critical=True)
        rss: dict[str, list[float]] = {}
        for label in ("initial", "nochange", "change"):
            if label == "change":
                apply_change(src.path, large.path, (bench.cat_file,))
            for t in tools:
                def do(t=t, label=label):
                    settle(src.path, writes=True)
                    secs, mb = t.backup(src, label)
                    rss.setdefault(t.name, []).append(mb)
                    return secs
                r.measure(f"s3_backup_{label}_src", t.name, "s3-src", do,
                          critical=label == "initial")
        for t in tools:
            if t.name in rss:
                r.put("s3_rss_backup_src", t.name, max(rss[t.name]))
            else:
                r.fail("s3_rss_backup_src", t.name, "no backup completed")
            r.measure("s3_repo_src", t.name, "s3-src", lambda t=t: t.repo_bytes(src) / 1e6)
        for t in tools:
            def initial_large(t=t):
                settle(large.path, writes=True)
                return t.backup(large, "initial")[0]
            r.measure("s3_backup_initial_large", t.name, "s3-large", initial_large, critical=True)
        want = describe_tree(src.path)
        for t in tools:
            ways = [("s3_restore", t.restore)]
            if isinstance(t, BtfsS3):
                ways.append(("s3_restore_cli", t.restore_cli))
            for key, how in ways:
                def restore(t=t, key=key, how=how):
                    dest = S3_HOME / "restore" / f"{t.name}-{key}"
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir(parents=True)
                    settle(writes=True)
                    secs = how(src, dest)
                    got = describe_tree(t.restored_path(src, dest))
                    if (got["files"], got["bytes"]) != (want["files"], want["bytes"]):
                        NOTES.append(f"{t.name} {key}: {got['files']} files / {got['bytes']} "
                                     f"bytes, the source {want['files']} / {want['bytes']}")
                    shutil.rmtree(dest, ignore_errors=True)
                    return secs
                r.measure(key, t.name, "s3-src", restore)
        for t in tools:
            r.measure("s3_cat_mount", t.name, "s3-large",
                      lambda t=t: _cold_cat(t, large, bench.cat_file, mode.timeout,
                                            cold_cat_mbps))
    shutil.rmtree(S3_HOME, ignore_errors=True)


def _cold_cat(t, ds: Dataset, name: str, timeout: float, cold_cat_mbps) -> float:
    mnt = S3_HOME / "mnt" / t.name
    mnt.mkdir(parents=True, exist_ok=True)
    if isinstance(t, BtfsS3):
        t.drop_read_cache(ds)
    m: Mount = t.mount(ds, mnt)
    try:
        return cold_cat_mbps(m.path_of(ds.path) / name, timeout)
    finally:
        unmount(m)


S3_KEYS = ("s3_backup_initial_src", "s3_backup_nochange_src", "s3_backup_change_src",
           "s3_rss_backup_src", "s3_repo_src", "s3_backup_initial_large", "s3_restore",
           "s3_restore_cli", "s3_cat_mount")


def moto_version() -> str:
    try:
        import moto
        return f"moto {moto.__version__}"
    except ImportError:
        return "moto not installed"
