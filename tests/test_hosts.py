"""Several hosts, one vault (issue 25): hosts back up into the same vault at the same time
without harm, and content present on two hosts is stored once. Real `btfs` processes in
separate HOMEs (each its own config, catalog and cache, so its own host id) and a real
local vault; a cleaner never removes another live writer's temp file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import rand_bytes
from test_recover import btfs, host_env, xdg_paths_of

from btfs.catalog import Catalog
from btfs.engine.packsync import sync_foreign_packs
from btfs.vault import LocalVault
from btfs.vault.tmpfiles import STALE_SECONDS, machine_token

MiB = 1 << 20


# ---- temp files: only the certainly dead go ----------------------------------------------

def test_clean_tmp_removes_only_dead_writers_files(tmp_path):
    vault = LocalVault(tmp_path / "vault")
    vault.create()
    tmp = tmp_path / "vault" / "tmp"
    live = vault.writer()  # this process, still writing
    live.write(b"half a pack")
    mine_dead = tmp / f"{machine_token()}-999999999-1-1.tmp"  # pid gone on this machine
    reused = tmp / f"{machine_token()}-{os.getpid()}-1-1.tmp"  # this pid, other start time
    other_live = tmp / "0123456789ab-4242-77-1.tmp"  # another machine's writer, busy
    other_stale = tmp / "0123456789ab-4242-77-2.tmp"  # another machine's, a day untouched
    old_format = tmp / "4242-123456.tmp"  # an older btfs's name, young
    for f in (mine_dead, reused, other_live, other_stale, old_format):
        f.write_bytes(b"x")
    day_ago = time.time() - STALE_SECONDS - 60
    os.utime(other_stale, (day_ago, day_ago))

    vault.clean_tmp()

    left = {p.name for p in tmp.iterdir()}
    assert left == {live._tmp.name, other_live.name, old_format.name}
    live.commit("packs/" + "ab" * 32)
    assert vault.get("packs/" + "ab" * 32) == b"half a pack"


def test_two_writers_committing_the_same_pack_both_succeed(tmp_path):
    vault = LocalVault(tmp_path / "vault")
    vault.create()
    key = "packs/" + "cd" * 32
    first, second = vault.writer(), vault.writer()
    for w in (first, second):
        w.write(b"same bytes")
    first.commit(key)
    second.commit(key)  # another host got there first: create-only, nothing replaced
    assert vault.get(key) == b"same bytes"
    assert list((tmp_path / "vault" / "tmp").iterdir()) == []


# ---- two hosts, one vault -------------------------------------------------------------------

def vault_pack_bytes(vault: Path) -> int:
    return sum(p.stat().st_size for p in (vault / "packs").rglob("*") if p.is_file())


def make_host(tmp_path: Path, name: str, vault: Path, shared: dict[str, bytes],
              dedup: bool = True) -> tuple[dict, Path]:
    env = host_env(tmp_path, name)
    src = tmp_path / name / "home" / "data"
    src.mkdir()
    for rel, data in shared.items():
        (src / rel).write_bytes(data)
    (src / f"own-{name}").write_bytes(rand_bytes(200_000, seed=hash(name) % 1000))
    out = btfs("init", "--vault", str(vault), "--no-input", env=env).stdout
    if not dedup:
        cfg = xdg_paths_of(env).config_file
        cfg.write_text("dedup_across_hosts = false\n" + cfg.read_text())
    btfs("track", str(src), env=env)
    env["INIT_OUT"] = out
    return env, src


def shared_files(seed: int, n: int = 3) -> dict[str, bytes]:
    # Random bytes do not compress: the vault grows by what is stored, plainly measured.
    return {f"shared-{seed}-{i}": rand_bytes(MiB + 4321 * i, seed=seed * 10 + i)
            for i in range(n)}


def parallel_backups(*envs: dict) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "btfs", "backup"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for env in envs]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, (out, err)


def same_files(a: Path, b: Path) -> None:
    files_a = {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b): p.read_bytes() for p in b.rglob("*") if p.is_file()}
    assert files_a == files_b


@pytest.mark.parametrize("dedup", [True, False])
def test_a_second_host_stores_only_what_the_vault_lacks(tmp_path, dedup):
    vault = tmp_path / "vault"
    shared = shared_files(1)
    alpha, _ = make_host(tmp_path, "alpha", vault, shared)
    btfs("backup", env=alpha)
    after_alpha = vault_pack_bytes(vault)
    beta, _ = make_host(tmp_path, "beta", vault, shared, dedup=dedup)
    btfs("backup", env=beta)
    growth = vault_pack_bytes(vault) - after_alpha
    shared_size = sum(map(len, shared.values()))
    if dedup:
        assert growth < 300_000  # beta's own file, not the 3 MiB both hold
    else:
        assert growth > shared_size
    assert "the vault holds backups of 1 other host: this host joins it" in beta["INIT_OUT"]


def test_two_hosts_back_up_in_parallel_store_shared_files_once_and_both_recover(tmp_path):
    vault = tmp_path / "vault"
    shared = shared_files(1)
    alpha, alpha_src = make_host(tmp_path, "alpha", vault, shared)
    beta, beta_src = make_host(tmp_path, "beta", vault, shared)
    parallel_backups(alpha, beta)  # neither knows the other yet: both may store it
    for rnd in range(2, 5):
        # New shared content lands on alpha first; both then back up at the same time
        # (beta learns alpha's packs only where they were in the vault before it started).
        new = shared_files(rnd)
        for rel, data in new.items():
            (alpha_src / rel).write_bytes(data)
        btfs("backup", env=alpha)
        before = vault_pack_bytes(vault)
        for rel, data in new.items():
            (beta_src / rel).write_bytes(data)
        (alpha_src / f"own-alpha-{rnd}").write_bytes(rand_bytes(50_000, seed=100 + rnd))
        parallel_backups(alpha, beta)
        assert vault_pack_bytes(vault) - before < 300_000, f"round {rnd}: shared stored twice"

    for env in (alpha, beta):
        assert btfs("check", "--read-data", env=env).returncode == 0
    for name, src in (("alpha", alpha_src), ("beta", beta_src)):
        host_id = xdg_paths_of(alpha if name == "alpha" else beta).config_file.read_text()
        host_id = host_id.split('host_id = "')[1].split('"')[0]
        fresh = host_env(tmp_path, f"fresh-{name}")
        btfs("recover", "--vault", str(vault), "--host", host_id, env=fresh)
        dest = tmp_path / f"restored-{name}"
        btfs("restore", str(src), "--to", str(dest), env=fresh)
        restored = dest / src.name if (dest / src.name).is_dir() else dest
        same_files(restored, src)
        assert btfs("check", "--read-data", env=fresh).returncode == 0


def test_sync_reads_only_new_packs_and_check_skips_foreign_packs_not_used(tmp_path):
    vault = tmp_path / "vault"
    alpha, _ = make_host(tmp_path, "alpha", vault, shared_files(1))
    btfs("backup", env=alpha)
    beta, _ = make_host(tmp_path, "beta", vault, {})
    btfs("backup", env=beta)  # learns alpha's packs, uses none of them
    with Catalog(Path(beta["XDG_DATA_HOME"]) / "btfs" / "catalog.db") as catalog:
        assert catalog.chunks.foreign_packs()
        again = sync_foreign_packs(catalog, LocalVault(vault))
    assert again.learned == 0 and again.bytes_read == 0  # nothing new since
    done = btfs("check", "--read-data", env=beta)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "problem" not in done.stdout.lower()


def test_two_hosts_dedup_against_an_s3_vault(s3, tmp_path):
    """The same against S3 (moto on 127.0.0.1): a pack's trailer and index are two ranged
    GETs, and two hosts putting at once both succeed."""
    shared = shared_files(1)

    def s3_host(name: str) -> tuple[dict, Path]:
        env = host_env(tmp_path, name)
        src = tmp_path / name / "home" / "data"
        src.mkdir()
        for rel, data in shared.items():
            (src / rel).write_bytes(data)
        (src / f"own-{name}").write_bytes(rand_bytes(100_000, seed=len(name)))
        btfs("init", "--vault", s3.url(), "--endpoint", s3.endpoint, "--no-input", env=env)
        btfs("track", str(src), env=env)
        return env, src

    def pack_bytes() -> int:
        return sum(s3.keys("vault/packs/").values())

    alpha, alpha_src = s3_host("alpha")
    btfs("backup", env=alpha)
    after_alpha = pack_bytes()
    beta, beta_src = s3_host("beta")
    btfs("backup", env=beta)
    assert pack_bytes() - after_alpha < 200_000  # beta's own file only

    (alpha_src / "more").write_bytes(rand_bytes(500_000, seed=7))
    (beta_src / "other").write_bytes(rand_bytes(500_000, seed=8))
    parallel_backups(alpha, beta)
    for env in (alpha, beta):
        assert btfs("check", "--read-data", env=env).returncode == 0


# Prune in a shared vault: tests/test_prune_shared.py.
