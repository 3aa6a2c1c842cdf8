"""kill -9 during a backup: what was committed stays valid, and the next backup finishes.

A real child process runs the backup of a tree of a few thousand files and some multi-MB
random files, with 1 MiB packs so that many packs are written, and is killed with SIGKILL
at several points. Then, as the next writer would: the catalog opens and is consistent;
every pack it names is in the vault with its recorded size and every chunk verifies; the
killed snapshot becomes 'interrupted' when a writer takes the lock; a new backup completes
and holds the source byte for byte; `btfs check --read-data` agrees.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from blake3 import blake3
from helpers import (
    MiB,
    StoredReader,
    assert_same_tree,
    backup,
    rand_bytes,
    source_tree,
    stored_tree,
)

from btfs.engine import codec
from btfs.errors import VaultError
from btfs.repo import Repo
from btfs.vault import pack_key

N_FILES = 3000
BIG_FILES = 4
BIG_SIZE = 3 * MiB

_BACKUP = textwrap.dedent("""
    from btfs.config import xdg_paths
    from btfs.repo import Repo
    with Repo.open(xdg_paths()) as repo, repo.writer():
        print("go", flush=True)
        repo.backup()
    print("done", flush=True)
""")


@pytest.fixture(scope="module")
def crash_src(tmp_path_factory):
    """Built once per module and never modified: every test backs up the same tree."""
    root = tmp_path_factory.mktemp("crash") / "src"
    rng = random.Random(42)
    for i in range(N_FILES):
        d = root / f"d{i % 40:02d}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        # Random bytes so packs fill up; every tenth file repeats another's content.
        size = rng.randrange(0, 12_000)
        data = rng.randbytes(size) if i % 10 else f"dup {i % 50}\n".encode() * 100
        (d / f"f{i:05d}.bin").write_bytes(data)
    for i in range(BIG_FILES):
        (root / f"big{i}.bin").write_bytes(rand_bytes(BIG_SIZE, seed=100 + i))
    return root


@pytest.fixture
def crash_repo(repo_factory, crash_src):
    # Two hashing threads and zstd level 9 make the run last about 0.5 s on a two-core
    # machine, long enough to be killed in the middle at the delays below (a slower or
    # busier machine only moves the kills earlier).
    return repo_factory(crash_src, pack_size=MiB, threads=2, compression_level=9)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _pack_count(vault_dir) -> int:
    packs = vault_dir / "packs"
    return sum(len(files) for _, _, files in os.walk(packs)) if packs.exists() else 0


def kill_backup(vault_dir, *, delay: float | None = None, packs: int | None = None) -> bool:
    """Start a backup in a child and SIGKILL it `delay` seconds after it holds the lock,
    or once `packs` packs are in the vault. True if it was killed before finishing."""
    child = subprocess.Popen([sys.executable, "-c", _BACKUP], stdout=subprocess.PIPE,
                             text=True, env=_env())
    try:
        assert child.stdout.readline().strip() == "go"
        if delay is not None:
            time.sleep(delay)
        else:
            deadline = time.monotonic() + 60
            while _pack_count(vault_dir) < packs and child.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
        killed = child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    return killed


def assert_consistent(repo: Repo) -> None:
    """What must hold after any crash, before anyone repairs anything."""
    cat = repo.catalog
    assert cat.chunks.integrity_problems() == []
    for name, size in cat.chunks.packs():
        assert repo.vault.size(pack_key(name)) == size, f"pack {name} missing or wrong size"
        data = repo.vault.get(pack_key(name))
        assert blake3(data).hexdigest() == name
        for _, chunk_hash, raw_size, offset, stored_len in cat.chunks.pack_chunks(name):
            codec.Codec.decode(data[offset:offset + stored_len], chunk_hash, raw_size)
    # Every content a committed version uses reads back whole and matches its SHA-256.
    reader = StoredReader(cat, repo.vault)
    for (content_id,) in cat.db.query(
            "SELECT DISTINCT content_id FROM version "
            "WHERE snapshot_id IS NOT NULL AND content_id IS NOT NULL"):
        reader.content(content_id)


def recover_and_finish(paths, crash_src):
    with Repo.open(paths) as repo:
        assert_consistent(repo)
        states = {s.id: s.state for s in repo.catalog.history.snapshots()}
        assert set(states.values()) <= {"running", "complete", "interrupted"}, states
        killed = [i for i, state in states.items() if state == "running"]
        with repo.writer():
            pass
        after = {s.id: s.state for s in repo.catalog.history.snapshots()}
        assert all(after[i] == "interrupted" for i in killed)
        assert "running" not in after.values()
        assert os.listdir(repo.vault.root / "tmp") == []  # a killed put's temp file is gone

        stats = backup(repo)
        assert stats.state == "complete" and stats.errors == 0
        assert_consistent(repo)
        assert_same_tree(stored_tree(repo.catalog, repo.vault, crash_src, stats.snapshot_id),
                         source_tree(crash_src))
    proc = subprocess.run([sys.executable, "-m", "btfs", "check", "--read-data"],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok:"), proc.stdout
    return stats


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3])
def test_kill_after_delay(crash_repo, crash_src, paths, vault_dir, delay):
    assert kill_backup(vault_dir, delay=delay), "the backup finished before the kill"
    crash_repo.close()
    recover_and_finish(paths, crash_src)


@pytest.mark.timeout(120)
def test_kill_when_packs_exist_then_again_and_again(crash_repo, crash_src, paths, vault_dir):
    """Killed three times, each later than the last: every run keeps what it committed
    and the next one continues from there."""
    crash_repo.close()
    for packs in (3, 10, 18):
        assert kill_backup(vault_dir, packs=packs), "the backup finished before the kill"
        with Repo.open(paths) as repo:
            assert_consistent(repo)
    with Repo.open(paths) as repo:
        snapshots = repo.catalog.history.snapshots()
        assert [s.state for s in snapshots] == ["interrupted", "interrupted", "running"]
        committed = repo.catalog.db.get_val("SELECT count(*) FROM version WHERE type='file'")
    assert committed > 0
    final = recover_and_finish(paths, crash_src)
    # What the killed runs committed is not read again.
    total = sum(f.stat().st_size for f in crash_src.rglob("*") if f.is_file())
    assert final.bytes_read < total
    assert final.files_new + committed >= N_FILES + BIG_FILES


@pytest.fixture
def immutable(tmp_path):
    """chattr +i on a directory (root only; ext4, xfs, btrfs...), undone at teardown."""
    marked = []

    def mark(path):
        proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"chattr +i unavailable here: {proc.stderr.strip()}")
        marked.append(path)

    yield mark
    for path in marked:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_failing_vault_write_aborts_cleanly(repo_factory, tmp_path, paths, vault_dir,
                                              immutable):
    """Pack uploads fail half way (new pack directories cannot be created): the backup
    raises, nothing refers to a pack that is not there, and the next backup recovers."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"first{i}").write_bytes(rand_bytes(400_000, seed=i))
    repo = repo_factory(src, pack_size=MiB)
    backup(repo)
    for i in range(40):
        (src / f"second{i}").write_bytes(rand_bytes(300_000, seed=1000 + i))
    immutable(vault_dir / "packs")
    with pytest.raises(VaultError, match="cannot write"):
        backup(repo)
    assert [s.state for s in repo.catalog.history.snapshots()] == ["complete", "interrupted"]
    assert_consistent(repo)
    subprocess.run(["chattr", "-i", str(vault_dir / "packs")], check=True)
    stats = backup(repo)
    assert stats.state == "complete"
    assert_consistent(repo)
    assert_same_tree(stored_tree(repo.catalog, repo.vault, src, stats.snapshot_id),
                     source_tree(src))
