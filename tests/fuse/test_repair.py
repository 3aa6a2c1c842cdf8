"""Damage that heals (issue 22, item 4), as a user meets it: a flipped byte in a pack,
`btfs check` naming the file, a backup that cannot heal an unchanged file, `btfs repair`
that can, and every snapshot (the old one too) reading the right bytes through restore
and a real mount afterwards."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from fusekit import btfs_cli
from helpers import rand_bytes

from btfs.catalog import Catalog
from btfs.config import xdg_paths

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def flip_byte_in(vault: Path, path: Path) -> None:
    """Flip one byte in the middle of the stored form of the first chunk of the file
    backed up from `path` (its newest version), in its pack in the vault."""
    with Catalog(xdg_paths().catalog, readonly=True) as catalog:
        node = catalog.history.node_for_path(os.fsencode(path))
        ref = catalog.chunks.content_refs(catalog.history.head(node).meta.content_id)[0]
    pack = next(vault.rglob(ref.pack))
    data = bytearray(pack.read_bytes())
    data[ref.offset + ref.stored_len // 2] ^= 0xFF
    pack.chmod(0o600)
    pack.write_bytes(bytes(data))


def snapshot_names() -> list[str]:
    return [s["name"] for s in json.loads(btfs_cli("snapshots", "--json").stdout)]


@pytest.fixture
def damaged(repo_dirs, tmp_path):
    """A backup of two files, then a byte flipped in the chunk of one of them."""
    src, _ = repo_dirs
    body = rand_bytes(300_000, 11)  # over chunk_min: a chunk of its own, stored raw
    (src / "sub").mkdir()
    (src / "sub" / "data.bin").write_bytes(body)
    (src / "plan.md").write_text("the plan\n")
    btfs_cli("-q", "backup")
    btfs_cli("check", "--read-data")
    flip_byte_in(tmp_path / "vault", src / "sub" / "data.bin")
    return src, body


def test_repair_heals_every_snapshot_and_check_is_clean(damaged, mounter, tmp_path):
    src, body = damaged
    first = snapshot_names()[0]
    found = btfs_cli("check", "--read-data", check=5)
    assert f"affected: {src / 'sub' / 'data.bin'} (backup {first})" in found.stdout
    # Remembered: a check that reads nothing still reports it.
    known = btfs_cli("check", check=5)
    assert "known damaged" in known.stdout
    assert f"affected: {src / 'sub' / 'data.bin'}" in known.stdout

    # The source is unchanged, so the backup does not read it and cannot heal it.
    time.sleep(1.1)  # a second backup with a name of its own
    btfs_cli("-q", "backup")
    second = snapshot_names()[1]
    still = btfs_cli("check", "--read-data", check=5)
    assert f"affected: {src / 'sub' / 'data.bin'} (backup {first})" in still.stdout

    repaired = btfs_cli("repair", "--json")
    report = json.loads(repaired.stdout)
    assert report["ok"] is True and report["still_damaged"] == []
    assert report["damaged_chunks"] == report["healed_chunks"] == 1
    clean = btfs_cli("check", "--read-data")
    assert clean.stdout.startswith("ok: ")
    assert "affected" not in clean.stdout
    assert btfs_cli("check").stdout.startswith("ok: ")
    assert btfs_cli("repair").stdout.startswith("ok: no damaged chunks known")

    # The old snapshot reads the right bytes: the chunk's row points at the new copy.
    out = tmp_path / "restored.bin"
    btfs_cli("restore", str(src / "sub" / "data.bin"), "--snapshot", first, "--to", str(out))
    assert out.read_bytes() == body
    mnt = mounter()
    for name in (first, second):
        inside = mnt / "by-time" / name / str(src).lstrip("/")
        assert (inside / "sub" / "data.bin").read_bytes() == body
        assert (inside / "plan.md").read_text() == "the plan\n"


def test_repair_lists_what_no_file_on_disk_holds_any_more(damaged):
    src, _ = damaged
    first = snapshot_names()[0]
    btfs_cli("check", "--read-data", check=5)
    (src / "sub" / "data.bin").unlink()
    proc = btfs_cli("repair", check=5)
    assert proc.stdout.splitlines() == [
        "healed 0 of 1 damaged chunk from 0 files",
        f"still damaged: {src / 'sub' / 'data.bin'} (backup {first})"]
    assert proc.stderr.strip() == ("btfs: error: 1 damaged chunk found in no file on "
                                   "disk; still damaged: 1 file version")
    report = json.loads(btfs_cli("repair", "--json", check=5).stdout)
    assert report["still_damaged"] == [{"path": str(src / "sub" / "data.bin"),
                                        "snapshot": first}]
    assert btfs_cli("check", check=5)
