"""`btfs mount --host` (issue 25): this machine mounts another host's history from that
host's catalog copy in the shared vault, and reads its content from the vault. Two real
HOMEs with their own host ids back up into one vault (a local one, and S3 on moto); the
mount is real and read with real tools (ls, cat, cmp).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from clikit import one_error_line
from fusekit import btfs_cli, wait_until
from helpers import make_awkward_tree, rand_bytes, source_tree
from test_recover import btfs, host_env, xdg_paths_of

from btfs.config import xdg_paths
from btfs.fuse.mount import FOLLOW_SECONDS

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def inside(mnt: Path, name: str, src: Path) -> Path:
    return mnt / "by-time" / name / str(src).lstrip("/")


def host_id(config_file: Path) -> str:
    return config_file.read_text().split('host_id = "')[1].split('"')[0]


def set_up_two_hosts(tmp_path: Path, vault: str, *init_options: str):
    """This test's HOME (host A, one backup) and another machine's (host B, two backups
    with a change between): (B's env, B's source, B's host id, B's tree at each backup)."""
    own = tmp_path / "src"
    own.mkdir()
    (own / "mine").write_text("host A's file\n")
    btfs_cli("init", "--vault", vault, *init_options, "--no-input")
    btfs_cli("track", str(own))
    btfs_cli("-q", "backup")

    env = host_env(tmp_path, "beta")
    src = tmp_path / "beta" / "home" / "work"
    make_awkward_tree(src)
    (src / "notes.txt").write_text("first\n")
    (src / "big.bin").write_bytes(rand_bytes(3_000_000, 5))
    btfs("init", "--vault", vault, *init_options, "--no-input", env=env)
    btfs("track", str(src), env=env)
    btfs("-q", "backup", env=env)
    trees = [source_tree(src)]
    time.sleep(1.1)  # the backups get different names
    (src / "notes.txt").write_text("second, longer\n")
    btfs("-q", "backup", env=env)
    trees.append(source_tree(src))
    return env, src, host_id(xdg_paths_of(env).config_file), trees


def backups_in(mnt: Path) -> list[str]:
    return sorted(n for n in os.listdir(mnt / "by-time") if n != "latest")


def test_mount_host_shows_the_other_hosts_history_and_a_remount_its_newer_backup(
        tmp_path, mounter):
    env, src, beta, trees = set_up_two_hosts(tmp_path, str(tmp_path / "vault"))
    alpha = host_id(xdg_paths().config_file)

    listed = json.loads(btfs_cli("hosts", "--json").stdout)
    assert {(h["host_id"], h["snapshots"], h["this_host"]) for h in listed} == {
        (alpha, 1, True), (beta, 2, False)}
    table = btfs_cli("hosts").stdout.splitlines()
    assert [line.split()[1:3] for line in table[1:] if alpha in line] == [
        ["(this", "host)"]]

    mnt = mounter("--host", beta[:8])
    names = backups_in(mnt)
    assert names == [line.split()[1] for line in btfs_cli(
        "snapshots", "--host", beta).stdout.splitlines()[1:]]
    assert len(names) == 2
    for name, tree in zip(names, trees, strict=True):
        assert source_tree(inside(mnt, name, src)) == tree
    latest = inside(mnt, "latest", src)
    subprocess.run(["cmp", str(latest / "big.bin"), str(src / "big.bin")], check=True)
    assert subprocess.run(["cat", str(latest / "notes.txt")], check=True, capture_output=True,
                          text=True).stdout == "second, longer\n"
    versions = sorted(os.listdir(mnt / "by-file" / str(src / "notes.txt").lstrip("/")))
    assert versions == [f"notes.{n}.txt" for n in names]
    assert not (mnt / "by-file" / str(tmp_path / "src").lstrip("/")).exists()  # not A's

    time.sleep(1.1)
    (src / "notes.txt").write_text("third\n")
    (src / "added.bin").write_bytes(rand_bytes(500_000, 6))
    btfs("-q", "backup", env=env)
    # The mount follows B: its new backup appears without a remount.
    assert wait_until(lambda: len(backups_in(mnt)) == 3, timeout=FOLLOW_SECONDS + 20)
    assert source_tree(inside(mnt, "latest", src)) == source_tree(src)
    subprocess.run(["cmp", str(inside(mnt, "latest", src) / "added.bin"),
                    str(src / "added.bin")], check=True)
    mount_log = xdg_paths().cache_dir / ("mount-" + str(mnt).strip("/").replace("/", "_")
                                         + ".log")
    assert "catalog copy generation 3" in mount_log.read_text()

    # A remount after B's next backup: the cached copy brought up by the delta only.
    btfs_cli("umount", str(mnt))
    (src / "notes.txt").write_text("fourth\n")
    btfs("-q", "backup", env=env)
    mnt = mounter("--host", beta)
    assert len(backups_in(mnt)) == 4
    assert (inside(mnt, "latest", src) / "notes.txt").read_text() == "fourth\n"


def test_mount_of_an_unknown_host_fails_with_one_line_naming_the_hosts(tmp_path):
    _, _, beta, _ = set_up_two_hosts(tmp_path, str(tmp_path / "vault"))
    alpha = host_id(xdg_paths().config_file)
    target = tmp_path / "new-mnt"
    proc = btfs_cli("mount", "--host", "nosuchhost", str(target), check=1)
    line = one_error_line(proc)
    assert line.startswith("btfs: error: no host 'nosuchhost' in the vault (it holds: ")
    assert alpha in line and beta in line
    assert not target.exists()  # nothing made


def test_mount_host_on_an_s3_vault(s3, tmp_path, mounter):
    _, src, beta, trees = set_up_two_hosts(tmp_path, s3.url(), "--endpoint", s3.endpoint)
    mnt = mounter("--host", beta)
    names = backups_in(mnt)
    assert len(names) == 2
    assert source_tree(inside(mnt, names[-1], src)) == trees[-1]
    subprocess.run(["cmp", str(inside(mnt, "latest", src) / "big.bin"),
                    str(src / "big.bin")], check=True)
    versions = sorted(os.listdir(mnt / "by-file" / str(src / "notes.txt").lstrip("/")))
    assert versions == [f"notes.{n}.txt" for n in names]
