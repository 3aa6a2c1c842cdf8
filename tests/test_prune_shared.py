"""`btfs prune` in a vault shared by several hosts (issue 26, btfs.engine.prune_shared):
nothing another host uses is deleted; a pack is condemned, and deleted only after the
grace period and a later backup of every host; one found in use is given back; a backup
running meanwhile completes whole; kill -9 while marking or sweeping leaves every host's
`check` clean and a rerun finishes. Real `btfs` processes in separate HOMEs (each its own
host id) on one real vault, local or S3 (moto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import rand_bytes
from test_hosts import make_host, same_files
from test_recover import btfs

from btfs.catalog import Catalog
from btfs.config import Paths
from btfs.engine.condemned import PREFIX
from btfs.engine.prune import KILL_AT_ENV, PAUSE_AT_ENV
from btfs.repo import Repo

MiB = 1 << 20


def paths_of(env: dict) -> Paths:
    return Paths(Path(env["BTFS_CONFIG"]), Path(env["XDG_DATA_HOME"]) / "btfs",
                 Path(env["XDG_CACHE_HOME"]) / "btfs")


def configure(env: dict, grace: int | str) -> None:
    """Small packs (a file of a MiB is about a pack of its own) and the grace period."""
    cfg = paths_of(env).config_file
    cfg.write_text(f"pack_size = {MiB}\n" + cfg.read_text()
                   + f"\n[retention]\nprune_grace = {json.dumps(grace)}\n")


def host_id(env: dict) -> str:
    from btfs import config as config_mod

    return config_mod.load(paths_of(env)).host_id


def vault_packs(vault: Path) -> set[str]:
    return {p.name for p in (vault / "packs").rglob("*") if p.is_file()}


def condemned(vault: Path) -> set[str]:
    """Packs the vault's condemned records name."""
    records = vault / PREFIX
    if not records.exists():
        return set()
    return {p for f in records.rglob("*") if f.is_file()
            for p in json.loads(f.read_bytes())["packs"]}


def used_by(env: dict) -> set[str]:
    with Catalog(paths_of(env).catalog, readonly=True) as catalog:
        return catalog.chunks.packs_used()


def all_sound(vault: Path, *envs: dict) -> None:
    """Every pack any host uses is in the vault, and every host's check reads clean."""
    for env in envs:
        assert used_by(env) <= vault_packs(vault)
        done = btfs("check", "--read-data", env=env)
        assert "problem" not in done.stdout.lower(), done.stdout


def restores(env: dict, src: Path, dest: Path) -> None:
    btfs("restore", str(src), "--to", str(dest), env=env)
    same_files(dest / src.name if (dest / src.name).is_dir() else dest, src)


def two_hosts(tmp_path: Path, grace: int | str = 0):
    """alpha and beta share three files; alpha also has one only it ever had, deleted and
    forgotten, and deletes a shared one: beta still uses that one's pack, nobody the
    other's. Returns (vault, alpha, beta, beta's source, the pack only alpha had)."""
    vault = tmp_path / "vault"
    shared = {f"shared-{i}": rand_bytes(MiB + 999 * i, seed=40 + i) for i in range(3)}
    alpha, alpha_src = make_host(tmp_path, "alpha", vault, shared)
    beta, beta_src = make_host(tmp_path, "beta", vault, shared)
    for env in (alpha, beta):
        configure(env, grace)
    btfs("backup", env=alpha)
    before = vault_packs(vault)
    (alpha_src / "only-alpha").write_bytes(rand_bytes(MiB, seed=77))
    btfs("backup", env=alpha)
    only_alpha = vault_packs(vault) - before
    assert only_alpha
    btfs("backup", env=beta)  # stores its own file, dedups the shared ones against alpha's
    (alpha_src / "only-alpha").unlink()
    (alpha_src / "shared-0").unlink()
    btfs("backup", env=alpha)
    btfs("forget", "--keep-last", "1", env=alpha)
    return vault, alpha, beta, beta_src, only_alpha


def test_a_pack_goes_only_after_the_grace_and_a_later_backup_of_every_host(tmp_path):
    vault, alpha, beta, beta_src, only_alpha = two_hosts(tmp_path, grace=4)
    beta_needs = used_by(beta)
    packs = vault_packs(vault)
    first = btfs("prune", env=alpha)
    doomed = condemned(vault)
    assert doomed and doomed.isdisjoint(beta_needs)
    assert doomed & only_alpha
    assert vault_packs(vault) == packs  # nothing deleted yet
    assert "left whole: other hosts use them" in first.stdout
    assert "condemned" in first.stdout
    checked = btfs("check", env=alpha).stdout
    assert "condemned by a prune of this shared vault" in checked
    assert "not referenced" not in checked
    # Before the grace is over: waits, whatever else.
    assert "condemned less than prune_grace ago" in btfs("prune", env=alpha).stdout
    assert vault_packs(vault) >= doomed
    time.sleep(4)
    # The grace is over, but beta has not backed up since: its catalog may be using them.
    waits = btfs("prune", env=alpha).stdout
    assert f"({host_id(beta)}) has not backed up since it was condemned" in waits
    assert vault_packs(vault) >= doomed
    all_sound(vault, alpha, beta)
    btfs("backup", env=beta)
    done = btfs("prune", env=alpha)
    assert "waiting" not in done.stdout
    assert not (vault_packs(vault) & doomed)
    assert condemned(vault) == set()
    assert beta_needs <= vault_packs(vault)
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored-beta")
    # beta's backups after the pack went stay whole too.
    (beta_src / "later").write_bytes(rand_bytes(300_000, seed=5))
    btfs("backup", env=beta)
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored-beta-2")


def test_beta_stores_afresh_what_lies_in_a_condemned_pack(tmp_path):
    """A file beta meets whose content lies only in a condemned pack is stored anew by
    beta's next backup (as a damaged chunk is), so the pack can go."""
    vault, alpha, beta, beta_src, only_alpha = two_hosts(tmp_path)
    btfs("prune", env=alpha)
    doomed = condemned(vault)
    assert doomed & only_alpha
    (beta_src / "copy-of-only-alpha").write_bytes(rand_bytes(MiB, seed=77))
    btfs("backup", env=beta)
    assert used_by(beta).isdisjoint(doomed)
    btfs("prune", env=alpha)
    assert not (vault_packs(vault) & doomed)
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored")


def test_a_condemned_pack_beta_used_before_it_knew_is_given_back(tmp_path, monkeypatch):
    vault, alpha, beta, beta_src, only_alpha = two_hosts(tmp_path)
    # beta's backup starts (it reads the records and learns alpha's packs) ...
    (beta_src / "copy-of-only-alpha").write_bytes(rand_bytes(MiB, seed=77))
    with Repo.open(paths_of(beta)) as repo, repo.writer():
        from btfs.engine.packsync import sync_condemned, sync_foreign_packs

        sync_condemned(repo.catalog, repo.vault)
        sync_foreign_packs(repo.catalog, repo.vault)
    # ... alpha's prune condemns the pack only alpha had ...
    btfs("prune", env=alpha)
    doomed = condemned(vault) & only_alpha
    assert doomed
    # ... and beta's backup, which read the records before, dedups against it.
    monkeypatch.setattr("btfs.engine.packsync.sync_condemned", lambda *a: (0, 0))
    monkeypatch.setattr("btfs.engine.packsync.sync_foreign_packs", lambda *a: None)
    with Repo.open(paths_of(beta)) as repo, repo.writer():
        repo.backup()
    monkeypatch.undo()
    assert used_by(beta) & doomed
    given = btfs("prune", env=alpha)
    assert "given back" in given.stdout
    assert condemned(vault).isdisjoint(doomed)
    assert vault_packs(vault) >= doomed
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored")
    # alpha owns it again: once beta no longer uses it, alpha condemns it anew.
    (beta_src / "copy-of-only-alpha").unlink()
    btfs("backup", env=beta)
    btfs("forget", "--keep-last", "1", env=beta)
    btfs("prune", env=alpha)
    assert condemned(vault) >= doomed
    btfs("backup", env=beta)
    btfs("prune", env=alpha)
    assert not (vault_packs(vault) & doomed)
    all_sound(vault, alpha, beta)


def _held(env: dict) -> bool:
    from btfs.lock import WriterLock

    return WriterLock(paths_of(env).lock).is_held()


@pytest.mark.parametrize("step", ["uploaded", "condemned"])
def test_a_backup_of_beta_during_alphas_prune_completes_whole(tmp_path, step):
    vault, alpha, beta, beta_src, _ = two_hosts(tmp_path)
    (beta_src / "new-during-prune").write_bytes(rand_bytes(MiB, seed=9))
    (beta_src / "copy-of-only-alpha").write_bytes(rand_bytes(MiB, seed=77))
    prune = subprocess.Popen([sys.executable, "-m", "btfs", "prune"],
                             env={**alpha, PAUSE_AT_ENV: f"{step}:4"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not _held(alpha) and prune.poll() is None:
        time.sleep(0.01)
    btfs("backup", env=beta)  # no lock on the vault: it runs while alpha prunes
    out, err = prune.communicate(timeout=120)
    assert prune.returncode == 0, err
    btfs("backup", env=beta)
    btfs("prune", env=alpha)
    assert condemned(vault) == set()
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored")


@pytest.mark.parametrize("step", ["committed", "condemned", "sweeping"])
def test_kill_9_while_marking_or_sweeping_leaves_every_host_sound(tmp_path, step):
    vault, alpha, beta, beta_src, only_alpha = two_hosts(tmp_path)
    if step == "sweeping":
        btfs("prune", env=alpha)  # condemns; beta's backup below lets the sweep delete
        btfs("backup", env=beta)
    killed = btfs("prune", env={**alpha, KILL_AT_ENV: step}, check=None)
    assert killed.returncode == -9, killed.stderr
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored-1")
    btfs("prune", env=alpha)  # the rerun finishes what it can
    btfs("backup", env=beta)
    btfs("prune", env=alpha)
    assert condemned(vault) == set()
    assert not (vault_packs(vault) & only_alpha)
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored-2")


def test_prune_grace_is_read_from_the_config(tmp_path):
    from btfs.config import DEFAULT_PRUNE_GRACE, from_dict, prune_grace
    from btfs.errors import ConfigError

    base = {"host_id": "h", "vault": "/v"}
    assert from_dict(base).prune_grace == DEFAULT_PRUNE_GRACE == 24 * 3600
    assert from_dict({**base, "retention": {"prune_grace": "2h"}}).prune_grace == 7200
    assert from_dict({**base, "retention": {"prune_grace": "1d12h"}}).prune_grace == 129600
    assert prune_grace(0, "x") == 0
    cfg = from_dict({**base, "retention": {"prune_grace": 5, "keep_last": 3}})
    assert (cfg.prune_grace, cfg.retention.keep_last) == (5, 3)
    for bad in ("soon", -1, True, "2x"):
        with pytest.raises(ConfigError, match="prune_grace"):
            from_dict({**base, "retention": {"prune_grace": bad}})


def test_a_bad_prune_grace_is_one_line_and_nothing_changes(tmp_path):
    vault, alpha, beta, _, _ = two_hosts(tmp_path)
    cfg = paths_of(alpha).config_file
    cfg.write_text(cfg.read_text().replace("prune_grace = 0", 'prune_grace = "soon"'))
    packs = vault_packs(vault)
    proc = btfs("prune", env=alpha, check=None)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "prune_grace" in lines[0] and "Traceback" not in proc.stderr
    assert vault_packs(vault) == packs and condemned(vault) == set()


def test_a_reader_of_a_deleted_pack_gets_an_error_never_other_bytes(tmp_path):
    """What a mount or a restore that read from an older catalog meets once a pack is
    deleted under it: the read fails (the mount's EIO), it never returns other bytes."""
    from btfs.engine.reader import ChunkSource
    from btfs.errors import BtfsError

    vault, alpha, beta, beta_src, only_alpha = two_hosts(tmp_path)
    with Repo.open(paths_of(alpha), readonly=True) as repo:
        refs = [r for r in _all_refs(repo) if r.pack in only_alpha]
    assert refs
    btfs("prune", env=alpha)
    btfs("backup", env=beta)
    btfs("prune", env=alpha)
    assert not (vault_packs(vault) & only_alpha)
    with Repo.open(paths_of(alpha), readonly=True) as repo:
        source = ChunkSource(repo.vault, repo.codec, cache_bytes=0)
        with pytest.raises(BtfsError):
            source.chunk(refs[0])


def _all_refs(repo: Repo) -> list:
    """Where each chunk of every content this catalog holds lives (forgotten ones are
    gone from the catalog, so this is read before the forget: see the caller)."""
    ids = [r[0] for r in repo.catalog.db.query("SELECT id FROM chunk")]
    return repo.catalog.chunks.chunk_refs(ids)


def test_the_core_flow_on_an_s3_vault(s3, tmp_path):
    """The same rules against S3 (moto on 127.0.0.1)."""
    from test_recover import host_env

    shared = {f"shared-{i}": rand_bytes(MiB + 999 * i, seed=40 + i) for i in range(2)}

    def s3_host(name: str) -> tuple[dict, Path]:
        env = host_env(tmp_path, name)
        src = tmp_path / name / "home" / "data"
        src.mkdir()
        for rel, data in shared.items():
            (src / rel).write_bytes(data)
        btfs("init", "--vault", s3.url(), "--endpoint", s3.endpoint, "--no-input", env=env)
        btfs("track", str(src), env=env)
        configure(env, 0)
        return env, src

    def packs() -> set[str]:
        return {k.rsplit("/", 1)[1] for k in s3.keys("vault/packs/")}

    alpha, alpha_src = s3_host("alpha")
    beta, beta_src = s3_host("beta")
    btfs("backup", env=alpha)
    before = packs()
    (alpha_src / "only-alpha").write_bytes(rand_bytes(MiB, seed=77))
    btfs("backup", env=alpha)
    only_alpha = packs() - before
    btfs("backup", env=beta)
    (alpha_src / "only-alpha").unlink()
    (alpha_src / "shared-0").unlink()
    btfs("backup", env=alpha)
    btfs("forget", "--keep-last", "1", env=alpha)
    btfs("prune", env=alpha)
    assert s3.keys("vault/" + PREFIX)
    assert packs() >= only_alpha  # beta has not backed up since
    btfs("backup", env=beta)
    btfs("prune", env=alpha)
    assert not (packs() & only_alpha) and not s3.keys("vault/" + PREFIX)
    for env in (alpha, beta):
        assert "problem" not in btfs("check", "--read-data", env=env).stdout.lower()
    restores(beta, beta_src, tmp_path / "restored")
    assert os.listdir(tmp_path / "restored")


def test_a_pack_is_never_sealed_under_a_condemned_name():
    """The same chunks in the same order make the same pack, so the same name: a backup
    storing afresh what a condemned pack held would otherwise "write" that very pack,
    which the sweep then deletes. Sealed with `avoid`, it gets other bytes (a few no
    index entry points at) and another name, and holds the same chunks."""
    from btfs.engine.pack import PackBuilder, parse_index

    def build(avoid=None):
        builder = PackBuilder()
        for i in range(3):
            raw = rand_bytes(1000, seed=i)
            builder.add(bytes([i]) * 32, len(raw), b"\x00" + raw)
        return builder.seal(avoid)

    plain = build()
    assert build().name == plain.name
    other = build({plain.name}.__contains__)
    assert other.name != plain.name
    from btfs import digest

    assert digest.hexdigest(bytes(other.data)) == other.name
    assert parse_index(bytes(other.data)) == parse_index(bytes(plain.data))
    assert build(set().__contains__).name == plain.name


def test_a_host_whose_first_backup_has_not_finished_holds_the_sweep(tmp_path):
    """From `btfs init` on the vault knows a host: its first backup may be deduplicating
    against any pack, so a sweep waits for its catalog copy."""
    vault, alpha, beta, _, only_alpha = two_hosts(tmp_path)
    btfs("prune", env=alpha)
    assert condemned(vault) & only_alpha
    btfs("backup", env=beta)
    gamma, _ = make_host(tmp_path, "gamma", vault, {})
    configure(gamma, 0)
    waits = btfs("prune", env=alpha).stdout
    assert f"({host_id(gamma)}) has no catalog copy yet" in waits
    assert vault_packs(vault) >= only_alpha
    btfs("backup", env=gamma)
    btfs("prune", env=alpha)
    assert not (vault_packs(vault) & only_alpha) and condemned(vault) == set()
    all_sound(vault, alpha, beta, gamma)


def test_any_host_sweeps_a_pack_another_host_condemned_under_the_same_rules(tmp_path):
    vault, alpha, beta, beta_src, only_alpha = two_hosts(tmp_path)
    btfs("prune", env=alpha)
    doomed = condemned(vault)
    assert doomed & only_alpha
    btfs("backup", env=beta)
    # alpha itself has not backed up since it condemned them: its catalog does not say
    # it knows, so beta's sweep waits for it as alpha's waits for beta.
    waits = btfs("prune", env=beta).stdout
    assert f"({host_id(alpha)}) has not backed up since it was condemned" in waits
    assert vault_packs(vault) >= doomed
    btfs("backup", env=alpha)
    btfs("prune", env=beta)
    assert not (vault_packs(vault) & doomed) and condemned(vault) == set()
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored")


def mostly_dead_pack(tmp_path: Path):
    """alpha and beta on one vault; alpha backs up `keep` (300 KB) and `drop` (900 KB) into
    one pack, beta backs up (learning alpha's packs, using none), alpha deletes `drop` and
    backs up again: the pack is mostly dead once the first backup is forgotten.
    (vault, alpha's env, beta's env, beta's source, keep's bytes)."""
    vault = tmp_path / "vault"
    alpha, alpha_src = make_host(tmp_path, "alpha", vault, {})
    beta, beta_src = make_host(tmp_path, "beta", vault, {})
    for env in (alpha, beta):
        configure(env, 0)
    keep = rand_bytes(300_000, seed=61)
    (alpha_src / "keep").write_bytes(keep)
    (alpha_src / "drop").write_bytes(rand_bytes(900_000, seed=62))
    btfs("backup", env=alpha)
    btfs("backup", env=beta)
    (alpha_src / "drop").unlink()
    btfs("backup", env=alpha)
    return vault, alpha, beta, beta_src, keep


def pack_bytes(vault: Path) -> int:
    return sum(p.stat().st_size for p in (vault / "packs").rglob("*") if p.is_file())


def test_a_repacks_copy_serves_beta_which_stores_nothing_again(tmp_path):
    """alpha repacks a mostly dead pack: the live chunk is copied into a new pack and the
    old one condemned. beta, which knew the old pack, learns the new one and points its
    row there (ChunkIndex.add_foreign_pack), so a file of beta's with that content is
    not stored again."""
    vault, alpha, beta, beta_src, keep = mostly_dead_pack(tmp_path)
    btfs("forget", "--keep-last", "1", env=alpha)
    pruned = btfs("prune", env=alpha).stdout
    assert " 1 repacked" in pruned, pruned
    doomed = condemned(vault)
    assert doomed
    before = pack_bytes(vault)
    (beta_src / "same-as-keep").write_bytes(keep)
    btfs("backup", env=beta)
    after = pack_bytes(vault)
    assert after - before < 100_000  # not the 300 KB again
    assert used_by(beta).isdisjoint(doomed)
    btfs("prune", env=alpha)
    assert not (vault_packs(vault) & doomed)
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored")


def test_beta_that_learned_the_repacks_copy_before_the_record_finds_its_chunks_there(
        tmp_path):
    """The race the record's moved_to closes: beta learns alpha's repacked pack between
    alpha's commit and its condemned record, so its rows stay in the old pack; reading
    the record, beta points them at the copy instead of storing the chunks again."""
    vault, alpha, beta, beta_src, keep = mostly_dead_pack(tmp_path)
    btfs("forget", "--keep-last", "1", env=alpha)
    prune = subprocess.Popen([sys.executable, "-m", "btfs", "prune"],
                             env={**alpha, PAUSE_AT_ENV: "committed:3"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def committed() -> bool:
        with Catalog(paths_of(alpha).catalog, readonly=True) as catalog:
            return bool(catalog.condemned.garbage_names())

    while not committed() and prune.poll() is None:
        time.sleep(0.02)
    assert condemned(vault) == set()  # alpha pauses before its record
    with Repo.open(paths_of(beta)) as repo, repo.writer():
        from btfs.engine.packsync import sync_condemned, sync_foreign_packs

        sync_condemned(repo.catalog, repo.vault)
        assert sync_foreign_packs(repo.catalog, repo.vault).learned  # the copy
    assert prune.wait(timeout=60) == 0, prune.stderr.read()
    doomed = condemned(vault)
    assert doomed
    before = pack_bytes(vault)
    (beta_src / "same-as-keep").write_bytes(keep)
    btfs("backup", env=beta)
    after = pack_bytes(vault)
    assert after - before < 100_000  # not the 300 KB again
    btfs("prune", env=alpha)
    assert not (vault_packs(vault) & doomed)
    all_sound(vault, alpha, beta)
    restores(beta, beta_src, tmp_path / "restored")
