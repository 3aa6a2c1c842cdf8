"""What a user types: times, config keys, paths through symlinks, missing paths, and the
text btfs answers with (paths as text, counts in the right number, progress that moves).

CLI tests run the real `btfs` in a subprocess, as test_cli.py does; the path rule and the
progress callback are also tested in-process.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest
from clikit import btfs, one_error_line

from btfs import config as config_mod
from btfs.cli.backup import Progress, eta_seconds
from btfs.engine import backup as backup_mod
from btfs.engine.backup import Stats
from btfs.engine.history import parse_time
from btfs.repo import expected_work
from btfs.text import display_path, plural
from btfs.userpath import is_under, to_catalog_path


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    (d / "sub").mkdir(parents=True)
    (d / "plan.md").write_text("v1\n")
    (d / "sub" / "data.bin").write_bytes(os.urandom(1000))
    return d


@pytest.fixture
def ready(env, tmp_path, src):
    btfs(env, "init", "--vault", str(tmp_path / "vault"), "--no-input", check=0)
    btfs(env, "track", str(src), check=0)
    return env


def snapshot_count(env) -> int:
    out = btfs(env, "snapshots", "--json", check=0).stdout
    return out.count('"state"')


# ---- item 7: bad input --------------------------------------------------------------------

def test_parse_time_takes_every_year_a_date_can_have():
    assert parse_time("2999-12-31") == 2**63 - 1  # after every backup: the newest
    assert parse_time("9999-12-31 23:59:59") == 2**63 - 1
    assert parse_time("0001-01-01") == -(2**63)  # before every backup
    assert parse_time("2026-11-20") % 10**9 == 999_999_000  # exact: no float rounding


def test_restore_at_absurd_years_answers_in_one_line(ready, src, tmp_path):
    btfs(ready, "backup", check=0)
    for n, when in enumerate(("2999-12-31", "9999-12-31", "9999-12-31 23:59")):
        out = tmp_path / f"out{n}"
        btfs(ready, "restore", str(src / "plan.md"), "--at", when, "--to", str(out), check=0)
        assert out.read_text() == "v1\n"
    early = btfs(ready, "restore", str(src / "plan.md"), "--at", "0001-01-01", check=2)
    assert one_error_line(early) == "btfs: error: no backup at or before 0001-01-01"
    beyond = btfs(ready, "restore", str(src / "plan.md"), "--at", "10000-01-01", check=2)
    assert one_error_line(beyond).startswith("btfs: error: cannot read time '10000-01-01'")
    assert sorted(os.listdir(src)) == ["plan.md", "sub"]


def test_an_unknown_key_in_a_track_table_is_refused(ready, src):
    config = Path(ready["BTFS_CONFIG"])
    before = config.read_text()
    config.write_text(before.replace(f'path = "{src}"',
                                     f'path = "{src}"\nexclude = ["*.md"]'))
    for args in (["backup"], ["status"], ["config", "show"]):
        proc = btfs(ready, *args, check=1)
        assert one_error_line(proc) == (
            f"btfs: error: {config}: unknown key 'exclude' in a [[track]] table "
            "(known: excludes, includes, path)")
    config.write_text(before)
    assert snapshot_count(ready) == 0


def test_config_from_dict_names_the_unknown_track_key():
    doc = {"host_id": "h", "vault": "/v", "track": [{"path": "/a", "exclude": ["x"]}]}
    with pytest.raises(config_mod.ConfigError, match=r"unknown key 'exclude' in a \[\[track\]\]"):
        config_mod.from_dict(doc)


def test_status_of_a_missing_path_says_so(ready, src, tmp_path):
    btfs(ready, "backup", check=0)
    nowhere = btfs(ready, "status", str(src / "nonexist"), check=2)
    assert one_error_line(nowhere) == (
        f"btfs: error: {src / 'nonexist'} does not exist and was never backed up")
    outside = btfs(ready, "status", str(tmp_path / "elsewhere"), check=2)
    assert one_error_line(outside) == (
        f"btfs: error: {tmp_path / 'elsewhere'} is not inside a tracked directory")
    home = btfs(ready, "status", "~/nonexist", check=2)
    assert one_error_line(home) == (
        f"btfs: error: {tmp_path / 'home' / 'nonexist'} is not inside a tracked directory")
    # Gone since the last backup: it existed in the history, so it is reported as deleted,
    # and a file under a deleted directory as that directory.
    (src / "plan.md").unlink()
    (src / "sub" / "data.bin").unlink()
    (src / "sub").rmdir()
    gone = btfs(ready, "status", str(src / "plan.md"), check=0)
    assert gone.stdout == f"deleted:  {src / 'plan.md'}\n"
    under = btfs(ready, "status", str(src / "sub" / "data.bin"), check=0)
    assert under.stdout == f"deleted:  {src / 'sub'}\n"
    # A containing directory of a tracked one is a fine scope.
    assert btfs(ready, "status", str(tmp_path), check=0).stdout.count("deleted:") == 2


def test_restore_to_a_missing_directory_names_it_as_text(ready, src, tmp_path):
    btfs(ready, "backup", check=0)
    proc = btfs(ready, "restore", str(src / "plan.md"), "--to", "/nonexistent/dir/x", check=1)
    assert one_error_line(proc) == ("btfs: error: cannot restore to /nonexistent/dir/x: "
                                    "/nonexistent/dir is not an existing directory")
    (tmp_path / "afile").write_text("")
    onto_file = btfs(ready, "restore", str(src), "--to", str(tmp_path / "afile" / "x"), check=1)
    assert "b'" not in onto_file.stderr
    assert one_error_line(onto_file).endswith(f"{tmp_path / 'afile'} is not an existing "
                                              "directory")


def test_an_os_error_shows_its_paths_as_text(monkeypatch, capsys):
    from btfs.cli import main as main_mod

    def fail(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", b"/no/\xffwhere", None, b"/b")

    monkeypatch.setattr(main_mod.cli, "main", fail)
    with pytest.raises(SystemExit) as e:
        main_mod.main(["snapshots"])
    assert e.value.code == 1
    assert capsys.readouterr().err == (
        "btfs: error: No such file or directory: /no/\\xffwhere: /b\n")


def test_plural():
    assert plural(1, "file") == "1 file"
    assert plural(0, "file") == "0 files"
    assert plural(1, "entry") == "1 entry"
    assert plural(2, "entry") == "2 entries"
    assert plural(1, "directory") == "1 directory"
    assert plural(12345, "directory") == "12,345 directories"
    assert display_path(b"/a/\xff\nb") == "/a/\\xff\\nb"


def test_counts_of_one_are_singular(env, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    btfs(env, "init", "--vault", str(tmp_path / "vault"), "--no-input", check=0)
    btfs(env, "track", str(one), check=0)
    out = btfs(env, "backup", check=0).stdout
    assert ": 1 entry, 1 new, 0 changed, 0 deleted;" in out
    (one / "f").write_text("x")
    btfs(env, "backup", check=0)
    restored = btfs(env, "restore", str(one / "f"), "--to", str(tmp_path / "f"), check=0)
    assert restored.stdout.endswith(": 1 file, 0 directories, 0 symlinks, 1 B\n")
    restored = btfs(env, "restore", str(one), "--to", str(tmp_path / "d"), check=0)
    assert restored.stdout.endswith(": 1 file, 1 directory, 0 symlinks, 1 B\n")
    assert btfs(env, "check", check=0).stdout == "ok: 1 pack\n"
    other = tmp_path / "two"
    other.mkdir()
    btfs(env, "track", str(other), check=0)
    assert btfs(env, "untrack", str(other), check=0).stdout == "1 directory tracked\n"
    no_version = btfs(env, "restore", str(one / "f"), "--version", "2", check=2)
    assert one_error_line(no_version).endswith("this path has 1 version (see 'btfs log')")


# ---- item 9: one rule for a user's path ---------------------------------------------------

@pytest.fixture
def linked(tmp_path):
    """/real with f.txt, a symlink ln -> f.txt and sub/; /link -> real."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "f.txt").write_text("one\n")
    (real / "ln").symlink_to("f.txt")
    (tmp_path / "link").symlink_to(real)
    return tmp_path


def test_the_path_rule(linked, monkeypatch):
    real, link = linked / "real", linked / "link"
    tracked = [str(real)]
    b = os.fsencode
    assert to_catalog_path(str(link / "f.txt"), tracked) == b(real / "f.txt")
    assert to_catalog_path(str(link), tracked) == b(real)
    assert to_catalog_path(str(link) + "/", tracked) == b(real)
    assert to_catalog_path(str(link / "ln"), tracked) == b(real / "ln")  # still itself
    assert to_catalog_path(str(link / "gone" / "x"), tracked) == b(real / "gone" / "x")
    assert to_catalog_path(str(link / "sub" / ".." / "f.txt"), tracked) == b(real / "f.txt")
    # Not tracked: a symlink to a directory stays itself, except for track/untrack.
    assert to_catalog_path(str(link), []) == b(link)
    assert to_catalog_path(str(link), [], directory=True) == b(real)
    # A symlink inside a tracked directory is an entry of its own, even to a directory.
    (real / "tosub").symlink_to("sub")
    assert to_catalog_path(str(real / "tosub"), tracked) == b(real / "tosub")
    # Relative paths and ~.
    monkeypatch.chdir(link)
    assert to_catalog_path("f.txt", tracked) == b(real / "f.txt")
    monkeypatch.setenv("HOME", str(link))
    assert to_catalog_path("~/sub", tracked) == b(real / "sub")
    assert to_catalog_path(b"~/sub", tracked) == b(real / "sub")


def test_commands_take_paths_through_a_tracked_symlink(env, linked):
    """The issue's scenario: `btfs track /tmp/link` (-> real), then every command given
    /tmp/link/f.txt means real/f.txt."""
    real, link = linked / "real", linked / "link"
    btfs(env, "init", "--vault", str(linked / "vault"), "--no-input", check=0)
    assert btfs(env, "track", str(link), check=0).stdout == f"tracking {real}\n"
    btfs(env, "backup", check=0)
    log = btfs(env, "log", str(link / "f.txt"), "--json", check=0)
    assert '"type": "file"' in log.stdout
    # The tracked symlink file is logged as itself, through the link or not.
    for path in (link / "ln", real / "ln"):
        assert '"target": "f.txt"' in btfs(env, "log", str(path), "--json", check=0).stdout
    (real / "f.txt").write_text("two\n")
    status = btfs(env, "status", str(link / "f.txt"), check=0)
    assert status.stdout == f"modified: {real / 'f.txt'}\n"
    assert btfs(env, "status", str(link), check=0).stdout == f"modified: {real / 'f.txt'}\n"
    assert btfs(env, "add", str(link / "f.txt"), check=0).stdout == (
        f"staged {real / 'f.txt'}\n")
    assert f"staged:   {real / 'f.txt'}\n" in btfs(env, "status", str(link / "f.txt"),
                                                  check=0).stdout
    btfs(env, "backup", check=0)
    out = linked / "out.txt"
    btfs(env, "restore", str(link / "f.txt"), "--version", "1", "--to", str(out), check=0)
    assert out.read_text() == "one\n"
    assert btfs(env, "untrack", str(link), check=0).stdout == "0 directories tracked\n"


# ---- item 10: progress within a large file -------------------------------------------------

def test_progress_moves_within_one_large_file(repo_factory, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    size = 64 << 20
    with open(src / "big.bin", "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    repo = repo_factory(src, chunk_min=64 * 1024, chunk_avg=64 * 1024, chunk_max=256 * 1024)
    monkeypatch.setattr(backup_mod, "PROGRESS_EVERY_S", 0.0)  # every chance to report
    calls: list[tuple[int, int, bytes]] = []
    with repo.writer():
        repo.backup(progress=lambda s, p: calls.append((s.entries, s.bytes_read, p)))
    during = [c for c in calls if c[2] == os.fsencode(src / "big.bin")]
    read = [b for _, b, _ in during]
    assert len(set(read)) >= 10, read  # many distinct steps, not one jump at the end
    assert read == sorted(read)
    assert read[0] < read[-1] < size  # moving while the file is read, not after it


def test_eta_counts_bytes_as_well_as_entries():
    # The last backup went through 10 entries and read 1 GiB (one large file that changes
    # every time): with every entry seen and half the bytes read, half the work is left.
    left = eta_seconds(10.0, 10, 1 << 29, 10, 1 << 30)
    assert left == pytest.approx(10.0, rel=0.01)
    assert eta_seconds(20.0, 10, 3 << 28, 10, 1 << 30) == pytest.approx(20 / 3, rel=0.01)
    assert eta_seconds(10.0, 5, 0, 10, 0) == pytest.approx(10.0)  # entries alone
    assert eta_seconds(0.5, 5, 0, 10, 0) is None  # too early to tell
    assert eta_seconds(10.0, 5, 0, 0, 0) is None  # no earlier backup


def test_expected_work_skips_the_reads_of_an_initial_backup():
    from btfs.catalog import Snapshot

    def snap(state, entries, new, read):
        return Snapshot(1, "h", 0, 1, state, new, 0, 0, entries, read, read, 0)

    assert expected_work([]) == (0, 0)
    assert expected_work([snap("complete", 100, 100, 5 << 30)]) == (100, 0)
    assert expected_work([snap("complete", 100, 1, 5 << 30)]) == (100, 5 << 30)
    assert expected_work([snap("complete", 100, 1, 7), snap("interrupted", 3, 3, 0)]) == (
        100, 7)


def test_progress_line_fits_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    meter = Progress(1000, 1 << 30)
    stats = Stats(entries=123_456, bytes_read=5 << 30, bytes_added=3 << 30)
    line = meter.line(stats, b"/very/long/" + b"x" * 200, 3000.0)
    assert len(line) <= 59
    assert line.startswith("123,456 entries  5.0 GiB read")


def test_cli_progress_shows_bytes_moving(env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # Compressible but never repeating (base64 of random bytes): random data would be
    # stored raw at disk speed, over before a second progress update.
    with open(src / "big.bin", "wb") as f:
        for _ in range(16):
            f.write(base64.b64encode(os.urandom(3 << 18)))
    btfs(env, "init", "--vault", str(tmp_path / "vault"), "--no-input", check=0)
    btfs(env, "track", str(src), check=0)
    config = Path(env["BTFS_CONFIG"])
    # Small chunks, one thread and a slow compression level: the one file takes long
    # enough for the 0.2 s progress updates to show it being read.
    config.write_text(config.read_text().replace(
        "\n[[track]]", "chunk_min = 65536\nchunk_avg = 65536\nchunk_max = 262144\n"
                       "threads = 1\ncompression_level = 19\n\n[[track]]"))
    proc = btfs(env, "backup", "--progress", check=0)
    shown = re.findall(r"\x1b\[K[\d,]+ \w+  ([\d.]+ [KMG]?i?B) read", proc.stderr)
    moving = [s for s in shown if not s.startswith("0 B")]
    assert len(set(moving)) >= 2, proc.stderr[:2000]


@pytest.mark.parametrize(("path", "root", "under"), [
    ("/a/b", "/a/b", True), ("/a/b/c", "/a/b", True), ("/a/b/c", "/a/b/", True),
    ("/a/bc", "/a/b", False), ("/a", "/a/b", False), ("/anything", "/", True),
    ("/", "/", True),
])
def test_is_under_goes_by_whole_components_in_bytes_and_text(path, root, under):
    assert is_under(path, root) is under
    assert is_under(os.fsencode(path), os.fsencode(root)) is under
