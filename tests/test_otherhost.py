"""Another host's history on this machine (issue 25; btfs.replica.otherhost): `btfs hosts`,
and `snapshots`, `log`, `find`, `restore` with --host, from that host's catalog copy
fetched into this machine's cache. Real `btfs` processes in two HOMEs (own host ids), one
real local vault. The real mount with --host is in tests/fuse/test_host_mount.py.
"""

from __future__ import annotations

import time

import pytest
from clikit import one_error_line
from helpers import rand_bytes
from test_recover import btfs, flip_byte, host_env, xdg_paths_of

import btfs.replica.publish as publish_mod
from btfs.config import xdg_paths
from btfs.replica.fetch import fetch_catalog
from btfs.replica.objects import generations
from btfs.replica.otherhost import update_copy
from btfs.replica.pages import scan
from btfs.vault import LocalVault


def host_id(env: dict | None = None) -> str:
    config = xdg_paths_of(env) if env else xdg_paths()
    return config.config_file.read_text().split('host_id = "')[1].split('"')[0]


@pytest.fixture
def two_hosts(tmp_path, vault_dir):
    """Host A is this test's HOME (one backup); host B another machine's (two backups):
    (B's env, B's source)."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "a.txt").write_text("A\n")
    btfs("init", "--vault", str(vault_dir), "--no-input")
    btfs("track", str(own))
    btfs("-q", "backup")
    env = host_env(tmp_path, "beta")
    src = tmp_path / "beta" / "home" / "work"
    src.mkdir()
    (src / "plan.md").write_text("plan one\n")
    (src / "data.bin").write_bytes(rand_bytes(400_000, 3))
    btfs("init", "--vault", str(vault_dir), "--no-input", env=env)
    btfs("track", str(src), env=env)
    btfs("-q", "backup", env=env)
    time.sleep(1.1)
    (src / "plan.md").write_text("plan two\n")
    btfs("-q", "backup", env=env)
    return env, src


def test_hosts_lists_every_host_with_its_backups_and_marks_this_one(two_hosts, vault_dir):
    env, _ = two_hosts
    alpha, beta = host_id(), host_id(env)
    rows = btfs("hosts").stdout.splitlines()
    assert rows[0].split() == ["NAME", "ID", "LAST", "BACKUP", "SNAPSHOTS", "CATALOG"]
    by_id = {next(w for w in r.split() if w in (alpha, beta)): r for r in rows[1:]}
    assert by_id.keys() == {alpha, beta}
    assert "(this host)" in by_id[alpha] and "(this host)" not in by_id[beta]
    # Backups counted: A one, B two; the same listing from B's side marks B.
    assert by_id[alpha].split()[-3] == "1" and by_id[beta].split()[-3] == "2"
    assert "(this host)" in next(r for r in btfs("hosts", env=env).stdout.splitlines()
                                 if beta in r)


def test_snapshots_log_find_with_host_show_the_other_hosts_history(two_hosts):
    env, src = two_hosts
    beta = host_id(env)
    assert btfs("snapshots", "--host", beta).stdout == btfs("snapshots", env=env).stdout
    plan = str(src / "plan.md")
    assert btfs("log", "--host", beta[:8], plan).stdout == btfs("log", plan, env=env).stdout
    assert btfs("find", "--host", beta, "*.md").stdout == btfs("find", "*.md", env=env).stdout
    # Naming this host is this host's own catalog.
    assert btfs("snapshots", "--host", host_id()).stdout == btfs("snapshots").stdout
    assert "was never backed up" in one_error_line(btfs("log", plan, check=2))


def test_restore_with_host_needs_to_and_writes_the_other_hosts_file(two_hosts, tmp_path):
    env, src = two_hosts
    beta = host_id(env)
    plan = str(src / "plan.md")
    line = one_error_line(btfs("restore", "--host", beta, plan, check=2))
    assert line.endswith("needs --to: beside the original is a place on that machine")
    assert sorted(p.name for p in src.iterdir()) == ["data.bin", "plan.md"]
    btfs("restore", "--host", beta, plan, "--version", "1", "--to", str(tmp_path / "then"))
    assert (tmp_path / "then").read_text() == "plan one\n"
    btfs("restore", "--host", beta, str(src), "--to", str(tmp_path / "tree"))
    assert (tmp_path / "tree" / "data.bin").read_bytes() == (src / "data.bin").read_bytes()


def test_an_unknown_host_is_one_line_naming_the_vaults_hosts(two_hosts):
    env, _ = two_hosts
    line = one_error_line(btfs("snapshots", "--host", "nosuch", check=1))
    assert line.startswith("btfs: error: no host 'nosuch' in the vault (it holds: ")
    assert host_id() in line and host_id(env) in line
    assert not (xdg_paths().cache_dir / "hosts").exists()


def test_a_cached_copy_is_reused_then_brought_up_to_date_by_deltas_only(two_hosts, tmp_path,
                                                                        vault_dir):
    env, src = two_hosts
    beta = host_id(env)
    vault = LocalVault(vault_dir)
    cache = tmp_path / "copy"
    cache.mkdir()
    first, how, got = update_copy(vault, beta, cache)
    assert (how, first.number) == ("whole", 2) and got > 0
    assert update_copy(vault, beta, cache)[1:] == ("cached", 0)

    (src / "plan.md").write_text("plan three\n")
    btfs("-q", "backup", env=env)
    head = generations(vault, beta)[-1]
    assert head.kind == "delta"
    state, how, got = update_copy(vault, beta, cache)
    assert (how, state.number, got) == ("delta", 3, head.size)
    whole = fetch_catalog(vault, beta, tmp_path / "whole.db")
    assert scan(cache / "catalog.db").file_digest == whole.scan.file_digest


@pytest.mark.parametrize("damage", ["cache", "base"])
def test_a_damaged_cache_or_a_new_base_means_a_whole_fetch(two_hosts, tmp_path, vault_dir,
                                                           monkeypatch, damage):
    env, src = two_hosts
    beta = host_id(env)
    vault = LocalVault(vault_dir)
    cache = tmp_path / "copy"
    cache.mkdir()
    update_copy(vault, beta, cache)
    if damage == "cache":
        (src / "plan.md").write_text("plan three\n")
        btfs("-q", "backup", env=env)
        # A byte flipped in a page the new delta does not hold (else it would mend it).
        cached = scan(cache / "catalog.db")
        new = fetch_catalog(vault, beta, tmp_path / "head.db").scan
        same = [n for n in range(cached.page_count) if cached.page(n) == new.page(n)]
        flip_byte(cache / "catalog.db", same[-1] * cached.page_size + 100)
    else:
        # B's next generation is a base: the cached one is not in its chain.
        monkeypatch.setattr(publish_mod, "MAX_DELTAS", 0)
        _publish_a_base(vault, xdg_paths_of(env), beta)
    head = generations(vault, beta)[-1]
    state, how, _ = update_copy(vault, beta, cache)
    assert (how, state.key) == ("whole", head.key)
    whole = fetch_catalog(vault, beta, tmp_path / "whole.db")
    assert scan(cache / "catalog.db").file_digest == whole.scan.file_digest


def _publish_a_base(vault: LocalVault, paths, beta: str) -> None:
    """One more generation of B's catalog, a base (MAX_DELTAS patched to 0), published as
    a backup would, with a change in the file so there is something to publish."""
    from btfs.catalog import Catalog

    with Catalog(paths.catalog) as catalog, catalog.writer.transaction():
        catalog.writer.set_meta("test-mark", "changed")
    published = publish_mod.publish(vault, paths.data_dir, paths.catalog, beta,
                                    config_doc={}, facts={"snapshots": 2})
    assert published is not None and published.kind == "base"
