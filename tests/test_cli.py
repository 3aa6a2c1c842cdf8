"""The `btfs` command as a user runs it: real subprocesses, exit codes, exact messages.

Every failure must be one line on stderr starting with 'btfs: error:' (or click's usage
text), no traceback, and leave nothing changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from blake3 import blake3
from clikit import btfs, one_error_line


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    (d / "sub").mkdir(parents=True)
    (d / "plan.md").write_text("v1\n")
    (d / "sub" / "data.bin").write_bytes(os.urandom(300_000))
    return d


@pytest.fixture
def ready(env, tmp_path, src):
    btfs(env, "init", "--vault", str(tmp_path / "vault"), "--no-input", check=0)
    btfs(env, "track", str(src), check=0)
    return env


def test_init_is_idempotent_and_refuses_another_vault(env, tmp_path):
    out = btfs(env, "init", "--vault", str(tmp_path / "vault"), "--no-input", check=0)
    assert out.stdout.startswith("initialized btfs: vault ")
    config = Path(env["BTFS_CONFIG"]).read_text()
    again = btfs(env, "init", "--vault", str(tmp_path / "vault"), "--no-input", check=0)
    assert "nothing changed" in again.stdout
    other = btfs(env, "init", "--vault", str(tmp_path / "other"), "--no-input", check=1)
    assert one_error_line(other).startswith("btfs: error: already initialized with vault ")
    assert Path(env["BTFS_CONFIG"]).read_text() == config
    assert not (tmp_path / "other").exists()


def test_init_without_vault_and_no_terminal_is_a_usage_error(env):
    proc = btfs(env, "init", "--no-input", check=2)
    assert one_error_line(proc) == (
        "btfs: error: --vault is required with --no-input or without a terminal")
    assert not Path(env["BTFS_CONFIG"]).exists()


def test_commands_before_init_say_so(env):
    for args in (["backup"], ["snapshots"], ["status"], ["config", "show"]):
        proc = btfs(env, *args, check=1)
        assert one_error_line(proc).endswith("run 'btfs init' first"), args


def test_nothing_tracked(env, tmp_path):
    btfs(env, "init", "--vault", str(tmp_path / "vault"), "--no-input", check=0)
    proc = btfs(env, "backup", check=1)
    assert one_error_line(proc) == (
        "btfs: error: nothing to back up: add a directory with 'btfs track DIR'")


def test_track_rejects_missing_and_nested_directories(ready, src, tmp_path):
    config = Path(ready["BTFS_CONFIG"]).read_text()
    missing = btfs(ready, "track", str(tmp_path / "nope"), check=2)
    assert one_error_line(missing) == f"btfs: error: not a directory: {tmp_path / 'nope'}"
    nested = btfs(ready, "track", str(src / "sub"), check=2)
    assert "overlaps tracked directory" in one_error_line(nested)
    assert Path(ready["BTFS_CONFIG"]).read_text() == config


def test_track_refuses_system_dirs_and_the_vault_in_one_line(ready, tmp_path):
    config = Path(ready["BTFS_CONFIG"]).read_text()
    (tmp_path / "vault" / "inner").mkdir()
    for target, what in (("/proc", "it is the system's live state"),
                         ("/sys/kernel", "it is inside the system's live state (/sys)"),
                         ("/dev", "it is the system's live state"),
                         ("/run", "it is the system's live state"),
                         (str(tmp_path / "vault"), "it is the vault"),
                         (str(tmp_path / "vault" / "inner"),
                          f"it is inside the vault ({tmp_path / 'vault'})")):
        if not os.path.isdir(target):
            continue
        proc = btfs(ready, "track", target, check=2)
        assert one_error_line(proc) == (
            f"btfs: error: cannot track {target}: {what}, which is never backed up")
    assert Path(ready["BTFS_CONFIG"]).read_text() == config


def test_init_and_track_say_once_what_inside_is_never_backed_up(tmp_path):
    """The Quick start's layout: ~ tracked, the vault, catalog and cache inside it."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("XDG_") and k != "BTFS_CONFIG"}
    env["HOME"] = str(home)
    out = btfs(env, "init", "--vault", "~/btfs-vault", "--track", "~", check=0).stdout
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: never backed up: {home}/btfs-vault (the vault), "
        f"{home}/.local/share/btfs (btfs's catalog directory), "
        f"{home}/.cache/btfs (btfs's cache directory)"], out
    again = btfs(env, "track", str(home), check=0).stdout
    assert [line for line in again.splitlines() if line.startswith("note:")] == notes
    btfs(env, "untrack", str(home), check=0)
    (home / "notes").mkdir()
    plain = btfs(env, "track", str(home / "notes"), check=0).stdout
    assert "note:" not in plain


def test_backup_status_log_snapshots_json(ready, src):
    first = json.loads(btfs(ready, "backup", "--json", check=0).stdout)
    assert first["state"] == "complete" and first["errors"] == 0
    assert first["files_new"] == 4  # src, plan.md, sub, sub/data.bin
    (src / "plan.md").write_text("v2 longer\n")
    (src / "new.txt").write_text("n")
    status = json.loads(btfs(ready, "status", "--json", check=0).stdout)
    assert status["new"] == [str(src / "new.txt")]
    assert str(src / "plan.md") in status["modified"]
    time.sleep(1.1)  # a distinct by-time name
    second = json.loads(btfs(ready, "backup", "--json", check=0).stdout)
    assert second["files_new"] == 1 and second["bytes_read"] == len("v2 longer\n") + 1
    nothing = btfs(ready, "status", check=0)
    assert nothing.stdout == "nothing changed since the last backup\n"
    snaps = json.loads(btfs(ready, "snapshots", "--json", check=0).stdout)
    assert [s["id"] for s in snaps] == [1, 2]
    assert all(s["state"] == "complete" for s in snaps)
    assert snaps[0]["name"] != snaps[1]["name"]
    log = json.loads(btfs(ready, "log", str(src / "plan.md"), "--json", check=0).stdout)
    assert [v["version"] for v in log] == [1, 2]
    assert [v["size"] for v in log] == [3, 10]
    assert log[1]["blake3"] == blake3(b"v2 longer\n").hexdigest()


def test_restore_beside_never_overwrites(ready, src):
    btfs(ready, "backup", check=0)
    (src / "plan.md").write_text("changed\n")
    out = btfs(ready, "restore", str(src / "plan.md"), check=0)
    tag = blake3(b"v1\n").hexdigest()[:8]
    restored = src / f"plan.md.{tag}"
    assert restored.read_text() == "v1\n"
    assert out.stdout.startswith(f"restored {restored}: 1 file, 0 directories")
    again = btfs(ready, "restore", str(src / "plan.md"), check=1)
    assert one_error_line(again) == f"btfs: error: {restored} exists; btfs restore never overwrites"
    assert (src / "plan.md").read_text() == "changed\n"


def test_restore_directory_with_metadata(ready, src, tmp_path):
    os.chmod(src / "plan.md", 0o640)
    os.utime(src / "plan.md", ns=(1_600_000_000_123_456_789, 1_600_000_000_987_654_321))
    btfs(ready, "backup", check=0)
    dest = tmp_path / "out"
    btfs(ready, "restore", str(src), "--to", str(dest), check=0)
    st = os.lstat(dest / "plan.md")
    assert st.st_mode & 0o777 == 0o640
    assert st.st_mtime_ns == 1_600_000_000_987_654_321
    assert (dest / "sub" / "data.bin").read_bytes() == (src / "sub" / "data.bin").read_bytes()


def test_restore_bad_arguments(ready, src):
    btfs(ready, "backup", check=0)
    never = btfs(ready, "restore", str(src / "nothing"), check=2)
    assert one_error_line(never) == f"btfs: error: {src / 'nothing'} was never backed up"
    bad_time = btfs(ready, "restore", str(src / "plan.md"), "--at", "yesterday-ish", check=2)
    assert one_error_line(bad_time).startswith("btfs: error: cannot read time 'yesterday-ish'")
    too_early = btfs(ready, "restore", str(src / "plan.md"), "--at", "2001-01-01", check=2)
    assert one_error_line(too_early) == "btfs: error: no backup at or before 2001-01-01"
    no_version = btfs(ready, "restore", str(src / "plan.md"), "--version", "9", check=2)
    assert one_error_line(no_version) == (
        "btfs: error: no version 9: this path has 1 version (see 'btfs log')")
    both = btfs(ready, "restore", str(src / "plan.md"), "--version", "1", "--at", "2030-01-01",
                check=2)
    assert one_error_line(both) == "btfs: error: give only one of --at, --version, --snapshot"
    assert sorted(os.listdir(src)) == ["plan.md", "sub"]


def test_a_vault_of_another_format_is_refused_and_left_alone(ready, src, tmp_path):
    """A format-1 vault (SHA-256 names) cannot be read by this btfs: every command says
    so in one line, and neither the vault nor the catalog is touched."""
    btfs(ready, "backup", check=0)
    identity = tmp_path / "vault" / "btfs-vault.json"
    doc = json.loads(identity.read_text())
    assert doc["format"] == 2
    identity.chmod(0o600)
    identity.write_text(json.dumps({**doc, "format": 1}))
    catalog = Path(ready["XDG_DATA_HOME"]) / "btfs" / "catalog.db"
    before = catalog.read_bytes()
    vault = tmp_path / "vault"
    for args in (["backup"], ["snapshots"], ["log", str(src / "plan.md")], ["check"],
                 ["init", "--vault", str(vault), "--no-input"]):
        proc = btfs(ready, *args, check=1)
        assert one_error_line(proc) == (f"btfs: error: vault {vault} has format 1; this btfs "
                                        "reads format 2 only (back up into a new vault)")
    assert catalog.read_bytes() == before


def test_second_writer_is_refused_with_the_holders_pid(ready):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from btfs.config import xdg_paths\n"
         "from btfs.lock import WriterLock\n"
         "lock = WriterLock(xdg_paths().lock); lock.acquire()\n"
         "print('locked', flush=True); time.sleep(60)\n"],
        env=ready, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = btfs(ready, "backup", check=4)
        assert one_error_line(proc) == (f"btfs: error: backup already running (pid {holder.pid}); "
                                        "use --wait to wait for it")
    finally:
        holder.kill()
        holder.wait()
    btfs(ready, "backup", check=0)  # the dead holder's lock is gone


def test_check_finds_a_damaged_pack_and_names_the_file(ready, src, tmp_path):
    btfs(ready, "backup", check=0)
    assert btfs(ready, "check", "--read-data", check=0).stdout.startswith("ok: 1 pack,")
    pack = next((tmp_path / "vault" / "packs").rglob("*"))
    while pack.is_dir():
        pack = next(pack.iterdir())
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the random file's chunk
    pack.write_bytes(bytes(data))
    proc = btfs(ready, "check", "--read-data", check=5)
    assert "does not match" in proc.stdout
    assert f"affected: {src / 'sub' / 'data.bin'}" in proc.stdout
    assert one_error_line(proc) == "btfs: error: 2 problems found; run 'btfs repair'"
    report = json.loads(btfs(ready, "check", "--read-data", "--json", check=5).stdout)
    assert report["ok"] is False
    assert [a["path"] for a in report["affected"]] == [str(src / "sub" / "data.bin")]
    # The file is named, and nothing is left under the final name or a temporary one.
    restore = btfs(ready, "restore", str(src / "sub" / "data.bin"), "--to",
                   str(tmp_path / "x"), check=3)
    line = one_error_line(restore)
    assert line.startswith(f"btfs: error: cannot restore {src / 'sub' / 'data.bin'}: chunk ")
    assert "does not match its hash" in line
    assert not (tmp_path / "x").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".btfs-restore-")]


def test_restore_of_a_directory_over_damage_restores_the_rest_and_lists_the_lost(
        ready, src, tmp_path):
    btfs(ready, "backup", check=0)
    pack = next(p for p in (tmp_path / "vault" / "packs").rglob("*") if p.is_file())
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the random file's chunk
    pack.chmod(0o600)
    pack.write_bytes(bytes(data))
    dest = tmp_path / "out"
    proc = btfs(ready, "restore", str(src), "--to", str(dest), check=3)
    assert proc.stdout.startswith(f"restored {dest}: 1 file, 2 directories")
    lost, summary = proc.stderr.strip().splitlines()
    assert lost.startswith(f"btfs: not restored: {src / 'sub' / 'data.bin'}: chunk ")
    assert summary == ("btfs: error: 1 of 2 files could not be restored (damaged in the "
                       "vault? see 'btfs check --read-data' and 'btfs repair')")
    assert (dest / "plan.md").read_text() == "v1\n"
    assert os.listdir(dest / "sub") == []


def test_add_stages_the_state_at_add_time(ready, src):
    btfs(ready, "backup", check=0)
    (src / "plan.md").write_text("staged state\n")
    assert btfs(ready, "add", str(src / "plan.md"), check=0).stdout == (
        f"staged {src / 'plan.md'}\n")
    status = json.loads(btfs(ready, "status", "--json", check=0).stdout)
    assert status["staged"] == [str(src / "plan.md")]
    (src / "plan.md").write_text("later edit\n")
    btfs(ready, "backup", check=0)
    log = json.loads(btfs(ready, "log", str(src / "plan.md"), "--json", check=0).stdout)
    assert [v["size"] for v in log] == [3, len("staged state\n")]
    outside = btfs(ready, "add", "/etc/hostname", check=2)
    assert one_error_line(outside) == (
        "btfs: error: /etc/hostname is not inside a tracked directory")


def test_every_command_has_help_with_an_example(env):
    top = btfs(env, "--help", check=0).stdout
    commands = ["init", "track", "untrack", "backup", "add", "status", "snapshots", "log",
                "restore", "check", "repair", "mount", "umount", "config"]
    for name in commands:
        assert name in top
        text = btfs(env, name, "--help", check=0).stdout
        assert "Example" in text, name


def test_command_table_names_every_command_under_its_own_name():
    import importlib

    import click

    from btfs.cli.main import COMMANDS, cli

    defined = set()
    for module_name in {module for module, _ in COMMANDS.values()}:
        module = importlib.import_module(f"btfs.cli.{module_name}")
        commands = {attr: value for attr, value in vars(module).items()
                    if isinstance(value, click.Command)}
        subcommands = {id(sub) for value in commands.values()
                       if isinstance(value, click.Group) for sub in value.commands.values()}
        defined |= {(module_name, attr) for attr, value in commands.items()
                    if id(value) not in subcommands}
    assert defined == set(COMMANDS.values())
    for name in COMMANDS:
        assert cli.get_command(None, name).name == name


def test_mount_command_does_not_load_the_backup_engine():
    code = ("import sys; from btfs.cli.main import cli; cli.get_command(None, 'mount'); "
            "print(sorted(m for m in sys.modules if m.startswith('btfs.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "btfs.engine.stage" not in out and "btfs.engine.store" not in out, out


def test_unknown_option_is_exit_2(env):
    proc = btfs(env, "backup", "--bogus", check=2)
    assert "No such option '--bogus'" in proc.stderr


def test_restore_keeps_hard_links_together(ready, src, tmp_path):
    os.link(src / "plan.md", src / "sub" / "plan-link.md")
    btfs(ready, "backup", check=0)
    dest = tmp_path / "out"
    btfs(ready, "restore", str(src), "--to", str(dest), check=0)
    a, b = os.lstat(dest / "plan.md"), os.lstat(dest / "sub" / "plan-link.md")
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert (dest / "sub" / "plan-link.md").read_text() == "v1\n"


def test_sigterm_during_backup_leaves_an_interrupted_snapshot(ready, src):
    # Compressible data (16 letters, no repeats) at zstd level 19: the backup takes far
    # longer than the sleep (over 20 s, against ~1.2 s at the default level), so SIGTERM
    # surely comes while it runs. Random data would not do: the codec stores chunks
    # whose samples do not compress without compressing them, at any level, and a
    # SIGTERM during interpreter shutdown kills with the default action.
    letters = bytes(b"abcdefghijklmnop"[i % 16] for i in range(256))
    for i in range(300):
        (src / f"f{i}").write_bytes(os.urandom(1_000_000).translate(letters))
    config = Path(ready["BTFS_CONFIG"])
    normal = config.read_text()
    config.write_text("compression_level = 19\n" + normal)
    proc = subprocess.Popen([sys.executable, "-m", "btfs", "backup"], env=ready,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.6)
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    config.write_text(normal)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "btfs: interrupted"
    assert "Traceback" not in err
    snaps = json.loads(btfs(ready, "snapshots", "--json", check=0).stdout)
    assert snaps[-1]["state"] == "interrupted"
    btfs(ready, "check", "--read-data", check=0)
    btfs(ready, "backup", check=0)


def test_log_and_restore_number_versions_alike_across_a_deletion(ready, src, tmp_path):
    btfs(ready, "backup", check=0)
    (src / "plan.md").unlink()
    time.sleep(1.1)  # distinct by-time names
    btfs(ready, "backup", check=0)
    (src / "plan.md").write_text("back again\n")
    time.sleep(1.1)
    btfs(ready, "backup", check=0)
    log = json.loads(btfs(ready, "log", str(src / "plan.md"), "--json", check=0).stdout)
    assert [(v["version"], v["type"]) for v in log] == [(1, "file"), (None, "deleted"),
                                                        (2, "file")]
    table = btfs(ready, "log", str(src / "plan.md"), check=0).stdout.splitlines()
    assert [row.split()[0] for row in table[1:]] == ["1", "-", "2"]
    for number, content in (("1", "v1\n"), ("2", "back again\n")):
        dest = tmp_path / f"v{number}"
        btfs(ready, "restore", str(src / "plan.md"), "--version", number, "--to", str(dest),
             check=0)
        assert dest.read_text() == content
