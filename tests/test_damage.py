"""Damage in the vault (issue 22, items 4 and 5) with the engine called directly: damaged
chunks are remembered by check, a backup that meets their content again stores it afresh
and heals every snapshot, and a restore over damage restores everything else, names what
it could not, and never leaves a partial file under a final name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import backup, rand_bytes, source_tree, stored_tree

from btfs.repo import Repo


@pytest.fixture
def src(tmp_path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return d


def flip_chunk(repo: Repo, path: Path) -> int:
    """Flip a byte in the middle of the first chunk's stored form of the file backed up
    from `path`; returns that chunk's id."""
    catalog = repo.catalog
    head = catalog.history.head(catalog.history.node_for_path(os.fsencode(path)))
    content = catalog.chunks.content(head.meta.content_id)
    ref = catalog.chunks.chunk_refs(content.chunk_ids[:1])[0]
    pack = repo.vault._path(f"packs/{ref.pack}")
    data = bytearray(pack.read_bytes())
    data[ref.offset + ref.stored_len // 2] ^= 0xFF
    pack.chmod(0o600)
    pack.write_bytes(bytes(data))
    return content.chunk_ids[0]


@pytest.mark.parametrize("size", [300_000, 5_000], ids=["large", "small"])
def test_a_backup_that_meets_damaged_content_again_heals_every_snapshot(repo_factory, src,
                                                                        size):
    body = rand_bytes(size, 3)
    (src / "a.bin").write_bytes(body)
    (src / "other.txt").write_text("untouched\n")
    repo = repo_factory(src)
    first = backup(repo)
    before = source_tree(src)
    chunk_id = flip_chunk(repo, src / "a.bin")
    found = repo.check(read_data=True)
    assert not found.ok
    assert {p for p, _ in found.affected} == {os.fsencode(src / "a.bin")}
    assert set(repo.catalog.chunks.damaged_chunks()) == {chunk_id}
    assert not repo.check().ok  # remembered: no need to read the packs again

    old_pack = repo.catalog.chunks.chunk_refs([chunk_id])[0].pack
    (src / "copy.bin").write_bytes(body)  # the same bytes, in a file the backup reads
    second = backup(repo)
    assert second.bytes_added > size  # stored afresh, not deduplicated against the damage
    assert repo.catalog.chunks.damaged_chunks() == {}
    healed = repo.check(read_data=True)
    assert healed.ok, healed.problems
    # The same chunk row, at a new place: the first snapshot reads the right bytes too.
    assert repo.catalog.chunks.chunk_refs([chunk_id])[0].pack != old_pack
    assert stored_tree(repo.catalog, repo.vault, src, first.snapshot_id) == before


def test_check_records_a_damaged_chunk_only_where_it_read_it(repo_factory, src):
    """A chunk stored afresh between the check's read and its record stays sound."""
    from btfs.engine.check import check

    (src / "a.bin").write_bytes(rand_bytes(300_000, 4))
    repo = repo_factory(src)
    backup(repo)
    chunk_id = flip_chunk(repo, src / "a.bin")
    report = check(repo.catalog, repo.vault, repo.codec, read_data=True)
    assert [c for c, _, _ in report.damaged] == [chunk_id]
    with repo.catalog.writer.transaction():
        assert repo.catalog.chunks.record_damage([(chunk_id, "0" * 64, "elsewhere")], [], 1) == 0
        assert repo.catalog.chunks.record_damage(report.damaged, [], 1) == 1
    assert set(repo.catalog.chunks.damaged_chunks()) == {chunk_id}


def test_a_directory_restore_over_damage_restores_every_other_file(repo_factory, src,
                                                                   tmp_path):
    """The damaged file comes first in name order (today's restore stopped there); its
    hard link is not restored either, the other pair is; nothing is left half-written
    under a final name or a temporary one."""
    from btfs.engine.reader import ChunkSource
    from btfs.engine.restore import Restorer

    (src / "aaa-damaged.bin").write_bytes(rand_bytes(300_000, 8))
    os.link(src / "aaa-damaged.bin", src / "zz-link-to-damaged")
    for i in range(150):  # more files than a restore has in flight at once
        d = src / f"d{i % 7}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:03d}.txt").write_bytes(b"file %d\n" % i * (i + 1))
    (src / "big.bin").write_bytes(rand_bytes(700_000, 9))
    os.link(src / "big.bin", src / "d0" / "big-link")
    repo = repo_factory(src)
    snap = backup(repo).snapshot_id
    flip_chunk(repo, src / "aaa-damaged.bin")
    node = repo.catalog.history.node_for_path(os.fsencode(src))
    out = tmp_path / "out"
    restorer = Restorer(repo.catalog, ChunkSource(repo.vault, repo.codec))
    result = restorer.restore(node, repo.catalog.history.version_at(node, snap), snap,
                              os.fsencode(out), os.fsencode(src))
    (damaged, why), link = result.failed
    assert damaged == os.fsencode(src / "aaa-damaged.bin")
    assert why.startswith("chunk ") and why.endswith(" does not match its hash")
    assert link == (os.fsencode(src / "zz-link-to-damaged"),
                    f"a hard link of {src / 'aaa-damaged.bin'}, which could not be restored")
    assert result.files == 152
    lost = {b"aaa-damaged.bin", b"zz-link-to-damaged"}
    expected = source_tree(src, skip=lambda rel, is_dir: rel in lost)
    assert source_tree(out) == expected
    assert not [n for _, _, names in os.walk(out) for n in names if n.startswith(".btfs")]


def test_a_file_restore_never_replaces_a_name_that_appears_meanwhile(tmp_path):
    """The final rename fails if the name exists, whoever made it."""
    from btfs.engine.restore import rename_noreplace

    (tmp_path / "temp").write_text("restored")
    (tmp_path / "final").write_text("someone else's")
    with pytest.raises(FileExistsError):
        rename_noreplace(os.fsencode(tmp_path / "temp"), os.fsencode(tmp_path / "final"))
    assert (tmp_path / "final").read_text() == "someone else's"
    rename_noreplace(os.fsencode(tmp_path / "temp"), os.fsencode(tmp_path / "new"))
    assert (tmp_path / "new").read_text() == "restored"
    assert not (tmp_path / "temp").exists()
