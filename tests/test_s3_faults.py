"""An S3 vault behind a flaky network: btfs talks to moto's server through the fault relay
(tests/faultrelay.py), which injects 503 SlowDown, connection resets, truncated bodies,
stalls and outages into real HTTP exchanges. Every scenario ends the same way: the right
bytes come back, `btfs check --read-data` is clean, and what failed failed in one line.

The `btfs` commands run as a user runs them, in a child process with the test's environment
(tests/conftest.py and s3kit's credentials); the test reads the catalog and the bucket behind
btfs's back to see what landed. Retry budgets and timeouts are set short in the config so
that giving up takes seconds, not the default quarter of an hour.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultrelay import FaultRelay
from helpers import MiB, assert_same_tree, rand_bytes, source_tree

from btfs import config as config_mod
from btfs.config import S3Settings
from btfs.errors import BtfsError
from btfs.repo import Repo, init_repo, track_dirs

PACKS = r"/packs/"  # the relay's path filter for pack objects
RETRY = 30  # seconds: the budget for faults a backup must survive
SHORT_RETRY = 3  # seconds: the budget for an outage the backup must give up on
TIMEOUT = 2  # seconds: s3.timeout, so that a stall costs little


def btfs(*args: str, check: int | None = 0, timeout: float = 180
         ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def relay(s3):
    with FaultRelay(s3.endpoint) as r:
        yield r


@pytest.fixture
def src(tmp_path) -> Path:
    """About 9 MiB in 1 MiB packs: enough packs that faults land in the middle."""
    root = tmp_path / "src"
    (root / "big").mkdir(parents=True)
    (root / "small").mkdir()
    for i in range(5):
        (root / "big" / f"b{i}").write_bytes(rand_bytes(3 * MiB // 2, seed=i))
    for i in range(40):
        (root / "small" / f"s{i:02d}.txt").write_bytes(f"small file {i}\n".encode() * (i + 1))
    (root / "small" / "z").write_bytes(rand_bytes(MiB, seed=99))
    return root


def configure(paths, s3, relay: FaultRelay, src: Path, **s3_settings) -> None:
    """init (through the relay), track `src`, 1 MiB packs, short retries and timeouts."""
    settings = {"retry_seconds": RETRY, "timeout": TIMEOUT, **s3_settings}
    init_repo(paths, s3.url(), S3Settings(endpoint=relay.endpoint, **settings))
    track_dirs(paths, [str(src)])
    cfg = config_mod.load(paths)
    config_mod.save(paths, config_mod.with_changes(cfg, pack_size=MiB))


def set_s3(paths, **changes) -> None:
    cfg = config_mod.load(paths)
    s3_settings = dataclasses.replace(cfg.s3, **changes)
    config_mod.save(paths, config_mod.with_changes(cfg, s3=s3_settings))


def catalog_packs(paths) -> set[str]:
    with Repo.open(paths, readonly=True) as repo:
        return {name for name, _size in repo.catalog.chunks.packs()}


def bucket_packs(s3) -> dict[str, int]:
    return {key.rsplit("/", 1)[1]: size for key, size in s3.keys("vault/packs/").items()}


def pack_puts(relay: FaultRelay) -> list[str]:
    """Pack names of every PUT the server answered (any status), in order."""
    return [e.target.split("?")[0].rsplit("/", 1)[1] for e in relay.exchanges()
            if e.method == "PUT" and "/packs/" in e.target and e.upstream
            and e.status is not None]


def assert_clean(paths, s3) -> None:
    """check --read-data passes, and every pack the catalog names is in the bucket."""
    out = btfs("check", "--read-data").stdout
    assert out.startswith("ok: "), out
    assert catalog_packs(paths) <= set(bucket_packs(s3))


def restored_matches(src: Path, dest: Path) -> None:
    btfs("restore", str(src), "--to", str(dest))
    assert_same_tree(source_tree(dest), source_tree(src))


# ---- writes --------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_slowdown_bursts_during_a_backup(paths, s3, relay, src, tmp_path):
    configure(paths, s3, relay, src)
    relay.slowdown(4, method="PUT", path=PACKS, after=1)  # a burst after the first pack
    relay.slowdown(3, method="PUT", path=PACKS, after=4)  # and another later
    btfs("backup")
    assert relay.injected()["slowdown"] == 7
    assert relay.pending() == 0
    assert_clean(paths, s3)
    restored_matches(src, tmp_path / "restored")


@pytest.mark.timeout(240)
def test_resets_and_truncated_uploads_are_retried(paths, s3, relay, src, tmp_path):
    configure(paths, s3, relay, src)
    relay.reset(2, when="before", method="PUT", path=PACKS)
    # The server stores the pack, the client never hears so: the retry finds it there
    # (If-None-Match: 412) and must take that as done.
    relay.reset(2, when="after", method="PUT", path=PACKS, after=1)
    relay.truncate(2, side="request", method="PUT", path=PACKS, after=2)
    btfs("backup")
    assert relay.injected() == {"reset_before": 2, "reset_after": 2, "truncate_request": 2}
    assert_clean(paths, s3)
    # No half object: every object in the bucket has a name that is the hash of its bytes
    # (check --read-data read those the catalog names; the others must be whole too).
    assert set(bucket_packs(s3)) == catalog_packs(paths)
    restored_matches(src, tmp_path / "restored")


@pytest.mark.timeout(240)
def test_a_stalled_upload_times_out_and_is_retried(paths, s3, relay, src):
    configure(paths, s3, relay, src)
    relay.stall(30, method="PUT", path=PACKS, after=1)
    t0 = time.monotonic()
    btfs("backup")
    assert time.monotonic() - t0 < 25  # the read timeout fired, not the stall's end
    assert relay.injected()["stall"] == 1
    assert_clean(paths, s3)


# ---- reads ---------------------------------------------------------------------------------


def get_faults(relay: FaultRelay) -> None:
    relay.reset(2, when="before", method="GET", path=PACKS)
    relay.reset(2, when="after", method="GET", path=PACKS, after=1)
    relay.truncate(2, keep=0.3, method="GET", path=PACKS, after=2)
    relay.slowdown(2, method="GET", path=PACKS, after=3)
    relay.error(500, "InternalError", "We encountered an internal error.", method="GET",
                path=PACKS, after=4)


GET_FAULTS = {"reset_before": 2, "reset_after": 2, "truncate_response": 2, "slowdown": 2,
              "error_500": 1}


@pytest.mark.timeout(240)
def test_restore_and_check_through_failing_reads(paths, s3, relay, src, tmp_path):
    configure(paths, s3, relay, src, read_cache=0)
    btfs("backup")
    get_faults(relay)
    restored_matches(src, tmp_path / "restored")
    assert relay.injected() == GET_FAULTS
    get_faults(relay)
    assert_clean(paths, s3)
    assert relay.injected() == {k: 2 * v for k, v in GET_FAULTS.items()}


@pytest.mark.timeout(240)
def test_a_stalled_read_times_out_and_is_retried(paths, s3, relay, src, tmp_path):
    configure(paths, s3, relay, src, read_cache=0)
    btfs("backup")
    relay.stall(30, method="GET", path=PACKS, after=2)
    t0 = time.monotonic()
    restored_matches(src, tmp_path / "restored")
    assert time.monotonic() - t0 < 25
    assert relay.injected()["stall"] == 1


@pytest.mark.timeout(240)
def test_check_through_failing_lists_and_lookups(paths, s3, relay, src):
    """Opening the vault (HEAD and GET of its identity) and check's listing of the packs
    go through the same retries as the packs themselves."""
    configure(paths, s3, relay, src)
    btfs("backup")
    listing = r"list-type=2"
    relay.truncate(keep=0.5, method="GET", path=listing)
    relay.slowdown(method="GET", path=listing)
    relay.reset(when="after", method="GET", path=listing)
    relay.reset(method="HEAD", path=r"btfs-vault\.json")
    relay.error(500, "InternalError", "We encountered an internal error.", method="HEAD")
    relay.truncate(keep=10, method="GET", path=r"btfs-vault\.json")
    assert_clean(paths, s3)
    assert relay.pending() == 0
    assert relay.injected() == {"truncate_response": 2, "slowdown": 1, "reset_after": 1,
                                "reset_before": 1, "error_500": 1}


@pytest.mark.timeout(240)
def test_a_store_without_conditional_writes(paths, s3, relay, src, tmp_path):
    """A server that answers If-None-Match with 501 NotImplemented (some S3-compatible
    stores): the vault looks before each write instead, and the backup completes."""
    configure(paths, s3, relay, src)
    relay.error(501, "NotImplemented", "A header you provided implies functionality that is "
                "not implemented", method="PUT", path=PACKS)
    btfs("backup")
    assert relay.injected() == {"error_501": 1}
    # Uploads already under way keep their If-None-Match; every later one is a plain PUT
    # that a HEAD of the same key found missing first.
    looked = set()
    plain = 0
    for e in relay.exchanges():
        if e.method == "HEAD" and "/packs/" in e.target:
            looked.add(e.target)
        elif (e.method == "PUT" and "/packs/" in e.target and e.status == 200
              and e.header("If-None-Match") is None):
            plain += 1
            assert e.target in looked, e.target
    assert plain > 0
    assert_clean(paths, s3)
    restored_matches(src, tmp_path / "restored")


@pytest.fixture
def mountpoint(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    yield mnt
    for cmd in (["fusermount3", "-u", str(mnt)], ["fusermount3", "-u", "-z", str(mnt)]):
        if os.path.ismount(mnt):
            subprocess.run(cmd, capture_output=True, timeout=30)


@pytest.mark.timeout(240)
def test_cat_through_the_mount_with_failing_reads(paths, s3, relay, src, mountpoint):
    configure(paths, s3, relay, src)  # with the read cache: the first reads miss it
    btfs("backup")
    get_faults(relay)
    btfs("mount", str(mountpoint))
    latest = mountpoint / "by-time" / "latest" / str(src).lstrip("/")
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        got = subprocess.run(["cat", str(latest / f.relative_to(src))], capture_output=True,
                             timeout=120)
        assert got.returncode == 0, got.stderr
        assert got.stdout == f.read_bytes(), f
    assert relay.injected() == GET_FAULTS
    btfs("umount", str(mountpoint))


@pytest.mark.timeout(240)
def test_the_mount_outlives_an_outage(paths, s3, relay, src, mountpoint):
    """During an outage a read through the mount fails with EIO once the budget is spent
    (the mount stays up); after it, the same file reads back whole."""
    configure(paths, s3, relay, src, read_cache=0)
    btfs("backup")
    set_s3(paths, retry_seconds=SHORT_RETRY)
    btfs("mount", str(mountpoint))
    latest = mountpoint / "by-time" / "latest" / str(src).lstrip("/")
    relay.outage()
    t0 = time.monotonic()
    got = subprocess.run(["cat", str(latest / "big" / "b3")], capture_output=True, timeout=120)
    assert got.returncode != 0 and b"Input/output error" in got.stderr, got.stderr
    assert time.monotonic() - t0 < SHORT_RETRY + 30
    relay.restore()
    assert (latest / "big" / "b3").read_bytes() == (src / "big" / "b3").read_bytes()
    btfs("umount", str(mountpoint))


# ---- giving up -----------------------------------------------------------------------------


def failed_backup_in_one_line() -> float:
    """Run a backup that must fail: exit 1, one line on stderr; its duration."""
    t0 = time.monotonic()
    failed = btfs("backup", check=1)
    took = time.monotonic() - t0
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("btfs: error: "), failed.stderr
    return took


def rerun_uploads_only_what_is_missing(paths, s3, relay, src, dest: Path) -> None:
    kept = catalog_packs(paths)
    assert kept, "the packs that landed before the failure are kept"
    assert kept <= set(bucket_packs(s3)), "the catalog names only packs that landed"
    assert_clean(paths, s3)
    before = len(pack_puts(relay))
    btfs("backup")
    rerun = pack_puts(relay)[before:]
    final = catalog_packs(paths)
    assert not set(rerun) & kept, "a pack already recorded was uploaded again"
    assert len(rerun) == len(set(rerun)) == len(final - kept), (rerun, final - kept)
    assert_clean(paths, s3)
    restored_matches(src, dest)


@pytest.mark.timeout(240)
def test_an_outage_mid_backup_fails_in_one_line_and_the_rerun_uploads_what_is_missing(
        paths, s3, relay, src, tmp_path):
    # One upload at a time, so that the packs before the outage have surely landed.
    configure(paths, s3, relay, src, retry_seconds=SHORT_RETRY, uploads=1)
    relay.outage(after=4, method="PUT", path=PACKS)
    took = failed_backup_in_one_line()
    assert took < SHORT_RETRY + 30, took
    assert relay.outage_active()
    relay.restore()
    rerun_uploads_only_what_is_missing(paths, s3, relay, src, tmp_path / "restored")


@pytest.mark.timeout(240)
def test_a_backup_failing_while_it_waits_for_its_uploads_keeps_what_landed(
        paths, s3, relay, src, tmp_path):
    # More uploads at once than the backup has packs, the first four slow to land and every
    # later one refused: the backup has read everything and waits for its uploads when
    # the failure comes, so what landed is only kept if a failed backup records it.
    configure(paths, s3, relay, src, retry_seconds=SHORT_RETRY, uploads=16)
    relay.reset(10_000, method="PUT", path=PACKS, after=4)
    relay.stall(1, 4, method="PUT", path=PACKS)
    failed_backup_in_one_line()
    relay.clear()
    rerun_uploads_only_what_is_missing(paths, s3, relay, src, tmp_path / "restored")


@pytest.mark.timeout(120)
def test_access_denied_fails_at_once(paths, s3, relay, src):
    configure(paths, s3, relay, src)  # with the default-length budget: no retry must start
    relay.error(403, "AccessDenied", "Access Denied", 100, method="PUT", path=PACKS)
    t0 = time.monotonic()
    failed = btfs("backup", check=1)
    assert time.monotonic() - t0 < 15
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "access denied" in lines[0].lower(), failed.stderr
    assert relay.injected()["error_403"] <= 8  # one per upload in flight, no retries
    relay.clear()
    assert_clean(paths, s3)


@pytest.mark.timeout(120)
def test_an_outage_fails_a_restore_in_one_line(paths, s3, relay, src, tmp_path):
    configure(paths, s3, relay, src, read_cache=0)
    btfs("backup")
    set_s3(paths, retry_seconds=SHORT_RETRY)
    relay.outage("refuse")
    t0 = time.monotonic()
    failed = btfs("restore", str(src), "--to", str(tmp_path / "r"), check=1)
    assert time.monotonic() - t0 < SHORT_RETRY + 30
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("btfs: error: "), failed.stderr



def test_the_timeout_setting_is_validated():
    base = {"host_id": "h", "vault": "s3://b/p"}
    assert config_mod.from_dict({**base, "s3": {"timeout": 5}}).s3.timeout == 5
    assert config_mod.from_dict(base).s3.timeout == 60
    for bad in (0, 3601):
        with pytest.raises(BtfsError, match=r"s3\.timeout must be 1\.\.3600"):
            config_mod.from_dict({**base, "s3": {"timeout": bad}})
