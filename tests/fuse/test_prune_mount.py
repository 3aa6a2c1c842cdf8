"""A mount reading while prune deletes under it: a file opened before its pack was
deleted fails its reads with EIO, it never returns other bytes (issue 26). The shared
vault's grace period (btfs.engine.prune_shared) is what spares such readers there; a
vault of one host deletes at once, which is what this shows."""

from __future__ import annotations

import errno
import os

import pytest
from fusekit import btfs_cli, wait_until
from helpers import rand_bytes

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def test_a_file_open_while_its_pack_is_deleted_reads_eio_not_other_bytes(repo_dirs,
                                                                          mounter):
    src, _ = repo_dirs
    data = rand_bytes(3 << 20, seed=26)
    (src / "doomed.bin").write_bytes(data)
    (src / "kept.bin").write_bytes(rand_bytes(100_000, seed=27))
    btfs_cli("-q", "backup")
    (src / "doomed.bin").unlink()
    btfs_cli("-q", "backup")
    mnt = mounter()
    first = sorted(n for n in os.listdir(mnt / "by-time") if n != "latest")[0]
    path = mnt / "by-time" / first / str(src).lstrip("/") / "doomed.bin"
    fd = os.open(path, os.O_RDONLY)
    try:
        btfs_cli("forget", "--keep-last", "1")
        btfs_cli("prune")
        assert wait_until(lambda: not path.exists(), timeout=2)
        got = b""
        with pytest.raises(OSError) as failed:
            while chunk := os.pread(fd, 1 << 20, len(got)):
                assert chunk == data[len(got):len(got) + len(chunk)]
                got += chunk
        assert failed.value.errno == errno.EIO
    finally:
        os.close(fd)
    # A file whose chunks a repack moved is read from their new place once the mount
    # sees the prune's commit (it follows the catalog within a second).
    latest = mnt / "by-time" / "latest" / str(src).lstrip("/") / "kept.bin"
    assert wait_until(lambda: _reads(latest) == (src / "kept.bin").read_bytes(), timeout=3)


def _reads(path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as e:
        assert e.errno == errno.EIO
        return None
