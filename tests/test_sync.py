"""A second vault (issue 25): `btfs mirror add|list|remove`, `btfs sync`, `btfs check
--mirror` and `btfs recover` from a mirror, with the real `btfs` command, real local
vaults, S3 on moto (tests/s3kit.py) and real SIGKILLs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clikit import one_error_line
from helpers import flip_byte, make_awkward_tree, rand_bytes, source_tree

from btfs.config import xdg_paths
from btfs.replica.objects import generations
from btfs.vault import LocalVault


def btfs(*args: str, check: int | None = 0, env: dict | None = None
         ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "btfs", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300, env=env)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def sync_json(*args: str, check: int = 0) -> dict:
    return json.loads(btfs("sync", "--json", *args, check=check).stdout)


def objects(root: Path) -> dict[str, int]:
    """key -> size of every pack and catalog object in a local vault."""
    vault = LocalVault(root)
    return {k: s for prefix in ("packs/", "hosts/") for k, s in vault.list(prefix)}


def wipe_home(tmp_path: Path) -> None:
    """What a dead laptop leaves: no config, no catalog, no cache."""
    for d in ("xdg-config", "xdg-data", "xdg-cache"):
        shutil.rmtree(tmp_path / d, ignore_errors=True)


def small_packs() -> None:
    """1 MiB packs in this HOME's config: several packs from a few MB."""
    config = xdg_paths().config_file
    config.write_text(config.read_text().replace('vault = ', 'pack_size = 1048576\nvault = '))


@pytest.fixture
def backed_up(tmp_path, vault_dir):
    """init, track an awkward tree plus some larger files (small packs: several of
    them), two backups; the source directory."""
    src = tmp_path / "src"
    make_awkward_tree(src)
    for i in range(6):
        (src / f"big{i}.bin").write_bytes(rand_bytes(700_000, i))
    btfs("init", "--vault", str(vault_dir), "--no-input")
    btfs("track", str(src))
    small_packs()
    btfs("backup")
    (src / "notes.txt").write_text("second\n")
    btfs("backup")
    return src


def test_local_sync_copies_everything_then_nothing(backed_up, tmp_path, vault_dir):
    mirror = tmp_path / "mirror"
    out = btfs("mirror", "add", "usb", str(mirror), "--no-sync-after-backup").stdout
    assert out.strip() == f"mirror usb added: {mirror} (synced by 'btfs sync')"
    source = objects(vault_dir)
    packs = [k for k in source if k.startswith("packs/")]
    assert len(packs) >= 4

    first = sync_json()["mirrors"][0]
    assert objects(mirror) == source
    assert (mirror / "btfs-vault.json").read_bytes() == (vault_dir / "btfs-vault.json").read_bytes()
    assert first["packs_copied"] == len(packs)
    assert first["catalog_copied"] == len(source) - len(packs)
    assert first["bytes_copied"] == sum(source.values())
    assert first["skipped"] == 0 and first["ok"]

    second = sync_json("usb")["mirrors"][0]
    assert (second["packs_copied"], second["catalog_copied"], second["bytes_copied"]) == (0, 0, 0)
    assert second["skipped"] == len(source)
    btfs("check", "--mirror", "usb", "--read-data")

    # A new backup adds only its own objects to what the next sync copies.
    (backed_up / "third.bin").write_bytes(rand_bytes(200_000, 99))
    btfs("backup")
    new = set(objects(vault_dir)) - set(source)
    third = sync_json()["mirrors"][0]
    assert third["packs_copied"] + third["catalog_copied"] == len(new)
    assert objects(mirror) == objects(vault_dir)


def test_sync_to_s3_then_recover_from_the_s3_copy_alone(backed_up, s3, tmp_path, vault_dir):
    before = source_tree(backed_up)
    snapshots = btfs("snapshots").stdout
    btfs("mirror", "add", "cloud", s3.url("mirror"), "--endpoint", s3.endpoint)
    report = sync_json("cloud")["mirrors"][0]
    assert report["ok"] and report["packs_copied"] >= 4
    keys = {k.removeprefix("mirror/"): size for k, size in s3.keys("mirror/").items()}
    assert {k: s for k, s in keys.items() if k != "btfs-vault.json"} == objects(vault_dir)
    again = sync_json("cloud")["mirrors"][0]
    assert again["bytes_copied"] == 0 and again["skipped"] == len(objects(vault_dir))
    btfs("check", "--mirror", "cloud", "--read-data")

    wipe_home(tmp_path)
    shutil.rmtree(vault_dir)
    out = btfs("recover", "--vault", s3.url("mirror"), "--endpoint", s3.endpoint).stdout
    assert "recovered host" in out
    assert btfs("snapshots").stdout == snapshots
    assert "[[mirror]]" not in xdg_paths().config_file.read_text()  # it is the vault now
    dest = tmp_path / "restored"
    btfs("restore", str(backed_up), "--to", str(dest))
    assert source_tree(dest) == before
    btfs("check", "--read-data")


def test_a_damaged_pack_in_the_source_is_named_and_left_out(backed_up, tmp_path, vault_dir):
    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror), "--no-sync-after-backup")
    packs = sorted((vault_dir / "packs").glob("*/*"))
    bad, trailer = packs[1], packs[2]
    flip_byte(bad, 100)  # inside the first stored chunk
    flip_byte(trailer, trailer.stat().st_size - 1)  # the pack's own index, not a chunk
    proc = btfs("sync", check=5)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    for damaged in (bad, trailer):
        assert any(line.startswith(f"mirror usb: not copied: pack {damaged.name} is damaged "
                                   "in the source") for line in lines), proc.stderr
    assert lines[-1] == "btfs: error: 2 damaged objects not copied (see above)"
    copied = {p.name for p in (mirror / "packs").glob("*/*")}
    assert copied == {p.name for p in packs} - {bad.name, trailer.name}
    # The catalog copies went too: the mirror is the source minus what is damaged there.
    assert [g.key for g in generations(LocalVault(mirror))] == [
        g.key for g in generations(LocalVault(vault_dir))]
    # A rerun tries the damaged ones again, and only those.
    again = sync_json(check=5)["mirrors"][0]
    assert (again["packs_copied"], again["catalog_copied"], len(again["damaged"])) == (0, 0, 2)


def test_check_mirror_finds_what_the_mirror_lacks_and_damage_in_it(backed_up, tmp_path):
    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror), "--no-sync-after-backup")
    btfs("sync")
    (backed_up / "new.bin").write_bytes(rand_bytes(300_000, 5))
    btfs("backup")
    behind = btfs("check", "--mirror", "usb", check=5)
    assert "is missing from the vault" in behind.stdout
    btfs("sync")
    btfs("check", "--mirror", "usb", "--read-data")
    pack = max((mirror / "packs").glob("*/*"), key=lambda p: p.stat().st_size)
    flip_byte(pack, 100)
    damaged = btfs("check", "--mirror", "usb", "--read-data", check=5)
    assert f"pack {pack.name}" in damaged.stdout
    # The main vault is sound, and the mirror's damage is not recorded as its own.
    btfs("check")
    btfs("check", "--read-data")


def test_sync_after_backup_copies_and_a_failure_only_warns(backed_up, tmp_path, vault_dir):
    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror))
    (backed_up / "after.txt").write_text("after\n")
    btfs("backup")
    assert objects(mirror) == objects(vault_dir)

    # The disk is unplugged: the backup stands, with a warning; the next sync catches up.
    mirror.rename(tmp_path / "unplugged")
    (backed_up / "after.txt").write_text("later\n")
    proc = btfs("backup")
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "backup done, but mirror usb is not complete" in warnings[0]
    assert not mirror.exists()  # never created on the disk below
    (tmp_path / "unplugged").rename(mirror)
    assert objects(mirror) != objects(vault_dir)
    btfs("sync")
    assert objects(mirror) == objects(vault_dir)


def test_a_mirror_without_sync_after_backup_is_left_alone(backed_up, tmp_path):
    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror), "--no-sync-after-backup")
    btfs("backup")
    assert not (mirror / "packs").exists() or not any((mirror / "packs").iterdir())
    listing = btfs("mirror", "list").stdout.splitlines()
    assert listing[1].split() == ["usb", str(mirror), "no"]


def test_bad_input_is_one_line_and_changes_nothing(backed_up, tmp_path, vault_dir, s3):
    config = xdg_paths().config_file
    btfs("mirror", "add", "usb", str(tmp_path / "mirror"))
    before = config.read_text()
    other = tmp_path / "other-vault"
    btfs("init", "--vault", str(other), "--no-input",
         env={**os.environ, "BTFS_CONFIG": str(tmp_path / "o.toml"),
              "XDG_DATA_HOME": str(tmp_path / "o-data")})
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    cases = [
        (["sync", "nope"], 2, "no mirror named 'nope' (mirrors: usb)"),
        (["check", "--mirror", "nope"], 2, "no mirror named 'nope' (mirrors: usb)"),
        (["mirror", "remove", "nope"], 2, "no mirror named 'nope' (mirrors: usb)"),
        (["mirror", "add", "usb", str(tmp_path / "m2")], 2, "a mirror named 'usb' exists"),
        (["mirror", "add", "x", str(vault_dir)], 2, "is the main vault"),
        (["mirror", "add", "x", str(tmp_path / "mirror")], 2, "is mirror 'usb' already"),
        (["mirror", "add", "x", str(vault_dir / "inside")], 2, "overlaps the vault"),
        (["mirror", "add", "x", "/nonexistent-disk/btfs"], 2, "is the disk mounted?"),
        (["mirror", "add", "bad name", str(tmp_path / "m3")], 2, "mirror name 'bad name'"),
        (["mirror", "add", "x", str(tmp_path / "m4"), "--region", "eu"], 2,
         "for s3:// mirrors only"),
        (["mirror", "add", "x", str(other)], 1, "is another btfs vault"),
        (["mirror", "add", "x", str(tmp_path / "junk")], 1, "is not empty and is not a btfs"),
        (["mirror", "add", "x", "s3://no-such-bucket-here/m", "--endpoint", s3.endpoint], 1,
         "no such bucket"),
        (["mirror", "add", "x", "ftp://host/x"], 1, "unknown scheme 'ftp'"),
        (["mirror", "add", "x", "s3://b/m", "--endpoint", "ftp://h"], 2,
         "--endpoint must be an http:// or https:// URL"),
        (["mirror", "add", "x", "s3://b/m", "--endpoint", "http://127.0.0.1:1"], 1,
         "bad endpoint: cannot connect to http://127.0.0.1:1"),
    ]
    for args, code, words in cases:
        proc = btfs(*args, check=code)
        assert words in one_error_line(proc), (args, proc.stderr)
        assert config.read_text() == before, args
    assert not (tmp_path / "m4").exists()


def test_an_unknown_key_in_a_mirror_table_is_refused_naming_it(backed_up):
    config = xdg_paths().config_file
    config.write_text(config.read_text() + '\n[[mirror]]\nname = "usb"\nurl = "/tmp/x"\n'
                                           'endpint = "http://x"\n')
    proc = btfs("mirror", "list", check=1)
    assert "unknown key 'endpint' in a [[mirror]] table" in one_error_line(proc)


def test_remove_forgets_the_mirror_and_keeps_its_data(backed_up, tmp_path):
    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror))
    btfs("sync")
    out = btfs("mirror", "remove", "usb").stdout
    assert out.strip() == f"mirror usb removed from the config; {mirror} is left as it is"
    assert any((mirror / "packs").iterdir())
    assert "no mirrors" in btfs("mirror", "list").stdout
    assert "no mirror configured" in one_error_line(btfs("sync", check=2))


def many_packs(tmp_path: Path, vault_dir: Path) -> Path:
    """init and one backup of 60 MB in 1 MiB packs: a sync long enough to kill."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}.bin").write_bytes(rand_bytes(1_500_000, i))
    btfs("init", "--vault", str(vault_dir), "--no-input")
    btfs("track", str(src))
    small_packs()
    btfs("backup")
    return src


def kill_syncs(rounds: int, started, have, total: int, start_over, max_wait: float) -> int:
    """Start `btfs sync` and SIGKILL it at a random moment once `started()` says it is
    writing, `rounds` times; how many kills left the mirror with some packs but not all
    (a kill that came after the last pack starts the mirror's packs over)."""
    rng = random.Random(25)
    partial = 0
    for _ in range(rounds):
        child = subprocess.Popen([sys.executable, "-m", "btfs", "sync"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not started() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, max_wait))
        child.send_signal(signal.SIGKILL)
        child.wait()
        partial += 0 < have() < total
        if have() == total:
            start_over()
    return partial


def recover_and_restore_elsewhere(tmp_path: Path, src: Path, *recover_args: str) -> None:
    """On another machine: recover from the mirror, restore `src`, compare."""
    env = {**os.environ, "BTFS_CONFIG": str(tmp_path / "new" / "config.toml"),
           "XDG_DATA_HOME": str(tmp_path / "new-data"),
           "XDG_CACHE_HOME": str(tmp_path / "new-cache")}
    btfs("recover", *recover_args, env=env)
    dest = tmp_path / "restored"
    btfs("restore", str(src), "--to", str(dest), env=env)
    assert source_tree(dest) == source_tree(src)


def test_kill_9_during_sync_then_the_rerun_completes(tmp_path, vault_dir):
    src = many_packs(tmp_path, vault_dir)
    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror), "--no-sync-after-backup")
    total = len([k for k in objects(vault_dir) if k.startswith("packs/")])

    def start_over() -> None:
        shutil.rmtree(mirror / "packs")
        (mirror / "packs").mkdir()

    partial = kill_syncs(5, lambda: any((mirror / "tmp").iterdir()),
                         lambda: len(list((mirror / "packs").glob("*/*"))), total,
                         start_over, 0.05)
    assert partial >= 2, partial
    report = sync_json()["mirrors"][0]
    assert report["ok"]
    assert objects(mirror) == objects(vault_dir)
    assert not list((mirror / "tmp").iterdir())  # the dead writers' temp files are gone
    btfs("check", "--mirror", "usb", "--read-data")
    recover_and_restore_elsewhere(tmp_path, src, "--vault", str(mirror))


def test_kill_9_during_a_sync_to_s3_then_the_rerun_completes(tmp_path, vault_dir, s3):
    src = many_packs(tmp_path, vault_dir)
    btfs("mirror", "add", "cloud", s3.url("m"), "--endpoint", s3.endpoint,
         "--no-sync-after-backup")
    total = len([k for k in objects(vault_dir) if k.startswith("packs/")])
    spool = xdg_paths().cache_dir / "spool"

    def start_over() -> None:
        for key in s3.keys("m/packs/"):
            s3.client().delete_object(Bucket=s3.bucket, Key=key)

    partial = kill_syncs(4, lambda: spool.exists() and any(spool.iterdir()),
                         lambda: len(s3.keys("m/packs/")), total, start_over, 0.3)
    assert partial >= 2, partial
    assert sync_json()["mirrors"][0]["ok"]
    assert not list(spool.iterdir())
    mirrored = {k.removeprefix("m/"): v for k, v in s3.keys("m/").items()}
    assert {k: v for k, v in mirrored.items() if k != "btfs-vault.json"} == objects(vault_dir)
    btfs("check", "--mirror", "cloud", "--read-data")
    recover_and_restore_elsewhere(tmp_path, src, "--vault", s3.url("m"),
                                  "--endpoint", s3.endpoint)


def test_a_damaged_catalog_copy_is_left_out_and_recover_takes_the_one_before(
        backed_up, tmp_path, vault_dir):
    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror), "--no-sync-after-backup")
    newest = generations(LocalVault(vault_dir))[-1]
    flip_byte(vault_dir / newest.key, newest.size - 3)
    report = sync_json(check=5)["mirrors"][0]
    assert report["damaged"] == [f"catalog copy {newest.key} is damaged in the source: its "
                                 "bytes do not match its name"]
    assert not (mirror / newest.key).exists()
    assert generations(LocalVault(mirror))[-1].number == newest.number - 1
    # The mirror's newest copy is the first backup's: recover from it has that one.
    env = {**os.environ, "BTFS_CONFIG": str(tmp_path / "new.toml"),
           "XDG_DATA_HOME": str(tmp_path / "new-data")}
    out = btfs("recover", "--vault", str(mirror), env=env).stdout
    assert f"from catalog generation {newest.number - 1}: 1 snapshots" in out


def test_every_host_of_a_shared_vault_is_mirrored_and_recoverable(tmp_path, vault_dir):
    hosts = {}
    for name in ("alpha", "beta"):
        root = tmp_path / name
        env = {**os.environ, "HOME": str(root / "home"),
               "BTFS_CONFIG": str(root / "config.toml"), "XDG_DATA_HOME": str(root / "data"),
               "XDG_CACHE_HOME": str(root / "cache")}
        src = root / "docs"
        src.mkdir(parents=True)
        (src / "who").write_text(f"I am {name}\n")
        btfs("init", "--vault", str(vault_dir), "--no-input", env=env)
        btfs("track", str(src), env=env)
        btfs("backup", env=env)
        hosts[name] = (env, src, (root / "config.toml").read_text().split('"')[1])
    mirror = tmp_path / "mirror"
    alpha_env = hosts["alpha"][0]
    btfs("mirror", "add", "usb", str(mirror), env=alpha_env)
    btfs("sync", env=alpha_env)
    assert objects(mirror) == objects(vault_dir)
    assert {g.host_id for g in generations(LocalVault(mirror))} == {
        h[2] for h in hosts.values()}
    _, beta_src, beta_id = hosts["beta"]
    fresh = {**os.environ, "BTFS_CONFIG": str(tmp_path / "fresh.toml"),
             "XDG_DATA_HOME": str(tmp_path / "fresh-data")}
    btfs("recover", "--vault", str(mirror), "--host", beta_id, env=fresh)
    dest = tmp_path / "restored"
    btfs("restore", str(beta_src / "who"), "--to", str(dest), env=fresh)
    assert dest.read_text() == "I am beta\n"


def test_progress_on_request_and_quiet_otherwise(backed_up, tmp_path):
    btfs("mirror", "add", "usb", str(tmp_path / "mirror"), "--no-sync-after-backup")
    shown = btfs("sync", "--progress")
    assert "\x1b[Ksync usb: 1/" in shown.stderr  # text mode reads \r as \n
    (backed_up / "more.bin").write_bytes(rand_bytes(100_000, 8))
    btfs("backup")
    quiet = btfs("sync")  # stderr is not a terminal here
    assert quiet.stderr == ""
    assert quiet.stdout.startswith("mirror usb: copied 1 pack and 1 catalog object")


def test_a_local_mirror_inside_a_tracked_directory_is_never_backed_up(backed_up):
    mirror = backed_up / "mirror"
    btfs("mirror", "add", "usb", str(mirror))
    btfs("backup")
    assert any((mirror / "packs").iterdir())
    assert "mirror" not in btfs("find", "*", "--path", str(mirror), check=1).stdout
    btfs("check", "--mirror", "usb", "--read-data")


class BackupWhileListing(LocalVault):
    """The main vault, where a backup lands (publishing a new catalog generation) right
    as the sync starts listing packs: after it listed the generations."""

    def __init__(self, root: Path, src: Path):
        super().__init__(root)
        self.src = src
        self.backups = 0

    def list(self, prefix: str = ""):
        if prefix == "packs/" and not self.backups:
            self.backups += 1
            (self.src / "during.bin").write_bytes(rand_bytes(50_000, 77))
            btfs("backup")
        return super().list(prefix)


def test_a_generation_published_during_the_sync_is_copied_by_another_pass(
        backed_up, tmp_path, vault_dir):
    from btfs.replica.sync import SyncReport, sync_vault

    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror), "--no-sync-after-backup")
    source = BackupWhileListing(vault_dir, backed_up)
    report = sync_vault(source, LocalVault(mirror), SyncReport("usb", str(mirror)))
    assert source.backups == 1 and report.ok
    assert objects(mirror) == objects(vault_dir)
    assert report.skipped == 0  # a second pass does not count the first one's copies
    btfs("check", "--mirror", "usb", "--read-data")


def test_a_stop_ends_the_sync_between_packs_before_any_catalog_copy(backed_up, tmp_path,
                                                                     vault_dir):
    import threading

    from btfs.repo import Repo

    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror), "--no-sync-after-backup")
    stop = threading.Event()
    with Repo.open(xdg_paths()) as repo:
        (report,) = repo.sync(progress=lambda r: stop.set(), stop=stop)
    assert report.error.startswith("stopped before it finished")
    packs = len(list((vault_dir / "packs").glob("*/*")))
    assert 1 <= report.packs_copied < packs
    assert generations(LocalVault(mirror)) == []
    assert sync_json()["mirrors"][0]["packs_copied"] == packs - report.packs_copied


def test_mirror_tables_round_trip_through_the_config_file(paths, initialized):
    from btfs import config as config_mod
    from btfs.config import Mirror

    mirrors = (Mirror("usb", "/media/usb/btfs"),
               Mirror("cloud", "s3://b/laptop", endpoint="https://s3.example", region="r1",
                      profile="p", sync_after_backup=False))
    config_mod.save(paths, config_mod.with_changes(initialized, mirrors=mirrors))
    text = paths.config_file.read_text()
    assert '[[mirror]]\nname = "usb"\nurl = "/media/usb/btfs"\n' in text
    assert "sync_after_backup = false" in text and text.count("sync_after_backup") == 1
    loaded = config_mod.load(paths)
    assert loaded.mirrors == mirrors
    assert loaded.mirrors[1].s3_settings(loaded.s3).endpoint == "https://s3.example"
    assert config_mod.to_dict(loaded, full=True)["mirror"][0]["sync_after_backup"] is True
    for bad, words in [({"name": "usb"}, "needs 'name' and 'url'"),
                       ({"name": "a", "url": initialized.vault}, "is the main vault"),
                       ({"name": "a", "url": "/x", "sync_after_backup": "yes"}, "must be bool")]:
        doc = {**config_mod.to_dict(initialized), "mirror": [bad]}
        with pytest.raises(config_mod.ConfigError, match=words):
            config_mod.from_dict(doc)


def test_an_object_of_another_size_on_the_mirror_is_named_and_never_overwritten(
        backed_up, tmp_path):
    mirror = tmp_path / "mirror"
    btfs("mirror", "add", "usb", str(mirror), "--no-sync-after-backup")
    btfs("sync")
    pack = next((mirror / "packs").glob("*/*"))
    os.chmod(pack, 0o600)
    os.truncate(pack, 1000)
    report = sync_json(check=5)["mirrors"][0]
    assert report["damaged"] == [
        f"pack packs/{pack.name} has 1,000 bytes on the mirror, "
        f"{(tmp_path / 'vault' / 'packs' / pack.name[:2] / pack.name).stat().st_size:,} in "
        "the source: damaged on the mirror (remove it there and sync again)"]
    assert pack.stat().st_size == 1000
    pack.unlink()
    assert sync_json()["mirrors"][0]["packs_copied"] == 1
    btfs("check", "--mirror", "usb", "--read-data")
