"""After `btfs recover` on a machine with nothing, the real mount shows every backup as it
was, byte for byte and field for field (issue 25): the catalog came from the vault only.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from fusekit import btfs_cli
from helpers import make_awkward_tree, rand_bytes, source_tree

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def inside(mnt: Path, name: str, src: Path) -> Path:
    return mnt / "by-time" / name / str(src).lstrip("/")


def test_the_mount_after_recover_shows_both_backups_as_they_were(repo_dirs, mounter,
                                                                  tmp_path):
    src, _ = repo_dirs
    make_awkward_tree(src)
    (src / "edit.txt").write_bytes(b"first words\n")
    btfs_cli("-q", "backup")
    first = source_tree(src)
    time.sleep(1.1)  # the two backups get different names
    (src / "edit.txt").write_bytes(b"second words, longer\n")
    (src / "added.bin").write_bytes(rand_bytes(2_500_000, 7))
    os.chown(src / "edit.txt", 4242, 4343)
    btfs_cli("-q", "backup")
    second = source_tree(src)

    for d in ("xdg-config", "xdg-data", "xdg-cache"):
        shutil.rmtree(tmp_path / d)
    btfs_cli("recover", "--vault", str(tmp_path / "vault"))
    mnt = mounter()
    one, two = sorted(n for n in os.listdir(mnt / "by-time") if n != "latest")
    assert source_tree(inside(mnt, one, src)) == first
    assert source_tree(inside(mnt, two, src)) == second
