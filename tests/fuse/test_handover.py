"""A small file whose chunks the mount already holds, verified, is handed to the kernel's
page cache when it is opened (btfs.fuse.ops HAND_OVER_BYTES), so reading it sends no
READ to the mount. Seen with `fincore` (util-linux), which opens a file and asks the
kernel which of its pages are in memory without reading any: a file the mount has not
handed over has none until it is read.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fusekit import btfs_cli, wait_until
from helpers import flip_byte, rand_bytes

from btfs.catalog import Catalog

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

FILES = 20
FILE_BYTES = 40_000  # 20 of them fill about two groups of small files in one pack


def resident_pages(path: Path) -> int:
    """Pages of `path` in the kernel's page cache; opening it is all fincore does."""
    out = subprocess.run(["fincore", "--noheadings", "--raw", "--output", "PAGES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


@pytest.fixture
def small_files(repo_dirs, tmp_path):
    """FILES small files in one backup, stored in two groups: (source, where each file's
    chunk is stored, files stored with f00.bin's, files stored after its group)."""
    src, _ = repo_dirs
    for i in range(FILES):
        # Hex text: compressible, so the backup stores these files in groups.
        (src / f"f{i:02}.bin").write_bytes(rand_bytes(FILE_BYTES // 2, 300 + i).hex().encode())
    btfs_cli("-q", "backup")
    catalog = Catalog(tmp_path / "xdg-data" / "btfs" / "catalog.db", readonly=True)
    places = {}
    for i in range(FILES):
        meta = catalog.history.head(catalog.history.node_for_path(
            os.fsencode(src / f"f{i:02}.bin"))).meta
        ref, = catalog.chunks.content_refs(meta.content_id)
        places[f"f{i:02}.bin"] = ref
    catalog.close()
    first = places["f00.bin"]
    same_group = [n for n, r in places.items() if n != "f00.bin"
                  and (r.pack, r.offset) == (first.pack, first.offset)]
    other_group = [n for n, r in places.items() if r.pack == first.pack
                   and r.offset >= first.offset + first.stored_len]
    assert same_group and other_group, places  # the layout this test is about
    return src, places, same_group, other_group


def in_snapshot(mnt: Path, src: Path) -> Path:
    return mnt / "by-time" / "latest" / str(src).lstrip("/")


def test_files_the_mount_holds_reach_the_kernel_at_open(small_files, mounter):
    src, _, same_group, other_group = small_files
    snapshot = in_snapshot(mounter(), src)
    # A fresh mount holds nothing: opening a file hands nothing over.
    assert resident_pages(snapshot / "f00.bin") == 0
    # Reading one fetches what follows it in its pack, verified: files of its group and
    # of the next, never read, are in the page cache as soon as they are opened.
    assert (snapshot / "f00.bin").read_bytes() == (src / "f00.bin").read_bytes()
    for name in (same_group[-1], other_group[-1]):
        assert wait_until(lambda n=name: resident_pages(snapshot / n) > 0, timeout=10), name
        assert (snapshot / name).read_bytes() == (src / name).read_bytes()
    # Every file reads back exact, handed over or not.
    for name in sorted(os.listdir(src)):
        assert (snapshot / name).read_bytes() == (src / name).read_bytes(), name


def test_a_damaged_chunk_is_never_handed_over(small_files, mounter, tmp_path):
    """A flipped bit in a group's stored bytes spoils the members whose bytes it lands in
    (each member is verified on its own); those read as EIO and are never handed over,
    the others of the group are, exact."""
    src, places, same_group, other_group = small_files
    damaged = places[other_group[0]]
    pack, = (tmp_path / "vault").rglob(damaged.pack)
    flip_byte(pack, damaged.offset + damaged.stored_len // 2)
    snapshot = in_snapshot(mounter(), src)
    assert (snapshot / "f00.bin").read_bytes() == (src / "f00.bin").read_bytes()
    # The read-ahead fetched both groups, and handed over what passed its check.
    assert wait_until(lambda: resident_pages(snapshot / same_group[-1]) > 0, timeout=10)
    assert wait_until(lambda: any(resident_pages(snapshot / n) for n in other_group),
                      timeout=10)
    spoiled = []
    for name in other_group:
        try:
            data = (snapshot / name).read_bytes()
        except OSError as e:
            assert e.errno == errno.EIO, name
            assert resident_pages(snapshot / name) == 0, name
            spoiled.append(name)
        else:
            assert data == (src / name).read_bytes(), name
    assert spoiled and len(spoiled) < len(other_group), spoiled


def test_readers_racing_for_the_same_files_never_hang_the_mount(repo_dirs, mounter):
    """Eight readers open and read the same small files at the same moments. Handing a
    file over while another reader's READ of it waits would lock a page that only the
    mount's own thread can unlock: the mount would hang, and these reads time out."""
    src, _ = repo_dirs
    names = [f"d{i // 50}/f{i:03}.txt" for i in range(300)]
    for i, name in enumerate(names):
        (src / name).parent.mkdir(exist_ok=True)
        (src / name).write_bytes(rand_bytes(2000 + 37 * i, 900 + i).hex().encode())
    btfs_cli("-q", "backup")
    for round_ in range(5):
        snapshot = in_snapshot(mounter(name=f"mnt{round_}"), src)
        script = ("import sys\nfor p in sys.argv[1:]:\n"
                  "    sys.stdout.buffer.write(open(p, 'rb').read()[:1])\n")
        readers = [subprocess.Popen([sys.executable, "-c", script,
                                     *[str(snapshot / n) for n in names]],
                                    stdout=subprocess.PIPE) for _ in range(8)]
        for reader in readers:
            out, _ = reader.communicate(timeout=60)
            assert reader.returncode == 0 and len(out) == len(names)
        for name in names:
            assert (snapshot / name).read_bytes() == (src / name).read_bytes(), name
