"""An S3 vault end to end, with the real CLI and a real mount: init against moto on
127.0.0.1, backup, mount, `cp -a` out of the mount, restore, check --read-data; a second
backup after a change uploads only new packs; a vault that goes away mid-run fails the
backup with one line, and the next run completes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from fusekit import btfs_cli, wait_until
from helpers import MiB, assert_same_tree, make_awkward_tree, rand_bytes, source_tree
from s3kit import MotoServer, S3Kit, set_credentials

from btfs import config as config_mod
from btfs.config import xdg_paths


def _packs(s3: S3Kit, prefix: str) -> dict[str, int]:
    return s3.keys(f"{prefix}/packs/")


def test_s3_backup_mount_cp_restore_check(s3, tmp_path, mounter):
    src = tmp_path / "src"
    make_awkward_tree(src)
    (src / "big.bin").write_bytes(rand_bytes(6 * MiB, seed=11))
    out = btfs_cli("init", "--vault", s3.url("home/laptop"), "--endpoint", s3.endpoint,
                   "--no-input")
    assert f"vault s3://{s3.bucket}/home/laptop" in out.stdout
    btfs_cli("track", str(src))
    btfs_cli("backup")
    first = _packs(s3, "home/laptop")
    assert first

    mnt = mounter()
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(mnt / "by-time" / "latest" / str(src).lstrip("/")),
                    str(copy)], check=True)
    assert_same_tree(source_tree(copy), source_tree(src))
    # A second read of the same file comes from the local read cache.
    assert (copy / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert any((xdg_paths().cache_dir / "read-cache").rglob("*-*-*"))

    btfs_cli("restore", str(src), "--to", str(tmp_path / "restored"))
    assert_same_tree(source_tree(tmp_path / "restored"), source_tree(src),
                     ignore_mtime={b""})
    assert btfs_cli("check", "--read-data").stdout.startswith("ok: ")

    (src / "new.bin").write_bytes(rand_bytes(2 * MiB, seed=12))
    btfs_cli("backup")
    second = _packs(s3, "home/laptop")
    assert {k: second[k] for k in first} == first  # nothing rewritten
    new = second.keys() - first.keys()
    assert new and sum(second[k] for k in new) < 3 * MiB
    assert btfs_cli("check", "--read-data").stdout.startswith("ok: ")


def _start_backup(request, *options: str) -> subprocess.Popen:
    """`btfs backup` in the background; killed at teardown if the test left it running."""
    proc = subprocess.Popen([sys.executable, "-m", "btfs", "backup", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)

    def reap() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    request.addfinalizer(reap)
    return proc


@pytest.fixture
def own_server(monkeypatch):
    """A moto server of this test's own, which the test may stop and start again."""
    set_credentials(monkeypatch)
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.mark.timeout(180)
def test_a_vault_that_goes_away_mid_backup_fails_in_one_line_and_the_rerun_completes(
        own_server, tmp_path, paths, request):
    kit = S3Kit(own_server.endpoint, "outage")
    kit.client().create_bucket(Bucket=kit.bucket)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(rand_bytes(2 * MiB, seed=1))
    btfs_cli("init", "--vault", kit.url("v"), "--endpoint", kit.endpoint, "--no-input")
    btfs_cli("track", str(src))
    # Small packs, and a short retry budget that the outage outlasts.
    cfg = config_mod.load(paths)
    config_mod.save(paths, config_mod.with_changes(
        cfg, pack_size=MiB, s3=config_mod.with_changes(cfg.s3, retry_seconds=2)))
    btfs_cli("backup")
    before = _packs(kit, "v")

    for i in range(12):
        (src / f"new{i}.bin").write_bytes(rand_bytes(MiB, seed=10 + i))
    # Slowed to 2 MiB/s, the backup is still uploading when the server goes away: some
    # of its packs have landed, the others fail.
    running = _start_backup(request, "--limit-upload", "2M")
    assert wait_until(lambda: len(_packs(kit, "v")) > len(before), 60, 0.02)
    own_server.stop()
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 1, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("btfs: error: upload packs/"), stderr

    own_server.start()
    landed = _packs(kit, "v")
    assert btfs_cli("check").stdout.startswith("ok: ")  # the catalog names only landed packs
    btfs_cli("backup")
    after = _packs(kit, "v")
    assert {k: after[k] for k in landed} == landed  # what landed is not uploaded again
    assert btfs_cli("check", "--read-data").stdout.startswith("ok: ")
    restored = tmp_path / "restored"
    btfs_cli("restore", str(src), "--to", str(restored))
    assert_same_tree(source_tree(restored), source_tree(src), ignore_mtime={b""})


@pytest.mark.timeout(180)
def test_ctrl_c_during_an_outage_does_not_wait_out_the_retry_budget(own_server, tmp_path,
                                                                     paths, request):
    kit = S3Kit(own_server.endpoint, "patience")
    kit.client().create_bucket(Bucket=kit.bucket)
    src = tmp_path / "src"
    src.mkdir()
    btfs_cli("init", "--vault", kit.url("v"), "--endpoint", kit.endpoint, "--no-input")
    btfs_cli("track", str(src))
    cfg = config_mod.load(paths)
    config_mod.save(paths, config_mod.with_changes(cfg, pack_size=MiB))  # 15 min budget
    for i in range(12):
        (src / f"f{i}.bin").write_bytes(rand_bytes(MiB, seed=20 + i))
    running = _start_backup(request, "--limit-upload", "2M")
    assert wait_until(lambda: len(_packs(kit, "v")) > 0, 60, 0.02)
    own_server.stop()
    time.sleep(1)  # the uploads in flight fail and wait to retry
    start = time.monotonic()
    running.send_signal(signal.SIGTERM)  # what systemd sends; Ctrl-C unwinds the same way
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 130 and stderr.strip() == "btfs: interrupted", stderr
    assert time.monotonic() - start < 20
    own_server.start()
    assert btfs_cli("check").stdout.startswith("ok: ")
