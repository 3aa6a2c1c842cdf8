"""Browsing history (issue 29): `btfs find`, `btfs diff` and the folder `btfs log`, on
hand-built histories (builder.py) that hold what a test must control: renames, type
changes, paths deleted and recreated, directories whose own versions only move mtimes.
The engine answers are checked exactly; the CLI's output and exit codes once each.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from builder import NS, T0, History, local_ns
from fusekit import btfs_cli

from btfs.catalog import Catalog
from btfs.engine.browse import glob_regex
from btfs.repo import Repo
from btfs.vault import LocalVault

MON = local_ns("2026-11-23 09:30:00")
ONE, TWO, THREE, FOUR = ("2026-11-23_093000", "2026-11-23_093100", "2026-11-23_093200",
                         "2026-11-23_093300")


@pytest.fixture
def history(initialized, paths, vault_dir):
    """The initialized repo's own catalog and vault, filled by hand:

    ONE:   /h/docs/{plan.md, old.txt, mode.txt}, /h/docs/sub/, /h/thing (a file)
    TWO:   plan.md edited, old.txt renamed to new.txt, mode.txt chmod, /h/thing a
           directory holding x, /h/docs's and sub's own versions (mtime only)
    THREE: old.txt back (same bytes, newer mtime), plan.md deleted
    FOUR:  only /h/other added
    """
    catalog = Catalog(paths.catalog)
    vault = LocalVault(vault_dir)
    hand = History(catalog, vault)
    hand.begin(MON)
    hand.dirs(b"/h/docs/sub")
    hand.file(b"/h/docs/plan.md", b"v1")
    hand.file(b"/h/docs/old.txt", b"old")
    hand.file(b"/h/docs/mode.txt", b"m")
    hand.file(b"/h/thing", b"a file")
    hand.begin(MON + 60 * NS)
    hand.dir(b"/h/docs", mtime_ns=T0 + 60)
    hand.dir(b"/h/docs/sub", mtime_ns=T0 + 60)
    hand.file(b"/h/docs/plan.md", b"v2")
    hand.delete(b"/h/docs/old.txt")
    hand.file(b"/h/docs/new.txt", b"old")
    hand.file(b"/h/docs/mode.txt", b"m", mode=0o600)
    hand.dir(b"/h/thing")
    hand.file(b"/h/thing/x", b"x")
    hand.begin(MON + 120 * NS)
    hand.file(b"/h/docs/old.txt", b"old", mtime_ns=T0 + 120)
    hand.delete(b"/h/docs/plan.md")
    hand.begin(MON + 180 * NS)
    hand.file(b"/h/other", b"o")
    yield hand
    catalog.close()
    vault.close()


@pytest.fixture
def repo(history, paths):
    with Repo.open(paths, readonly=True) as opened:
        yield opened


def _versions(found):
    return {f.path: [(v.snapshot, v.type) for v in f.versions] for f in found}


def test_find_lists_every_path_ever_matching_a_name_with_its_versions(repo):
    found = repo.find("*.txt")
    assert _versions(found) == {
        b"/h/docs/old.txt": [(ONE, "file"), (TWO, "deleted"), (THREE, "file")],
        b"/h/docs/mode.txt": [(ONE, "file"), (TWO, "file")],
        b"/h/docs/new.txt": [(TWO, "file")],
    }
    old = next(f for f in found if f.path == b"/h/docs/old.txt")
    assert not old.deleted
    assert old.versions[0].size == 3
    assert old.versions[0].blake3 == old.versions[2].blake3 and len(old.versions[0].blake3) == 64
    assert old.versions[1].blake3 is None and old.versions[1].deleted
    # A type change: both kinds, one path.
    assert _versions(repo.find("thing")) == {b"/h/thing": [(ONE, "file"), (TWO, "dir")]}


def test_find_filters_deleted_time_and_directory(repo):
    assert _versions(repo.find("*", deleted=True)) == {
        b"/h/docs/plan.md": [(ONE, "file"), (TWO, "file"), (THREE, "deleted")]}
    assert _versions(repo.find("*.txt", since=TWO, until=TWO)) == {
        b"/h/docs/old.txt": [(TWO, "deleted")],
        b"/h/docs/mode.txt": [(TWO, "file")],
        b"/h/docs/new.txt": [(TWO, "file")],
    }
    assert set(_versions(repo.find("*", under="/h/thing"))) == {b"/h/thing/x"}
    assert set(_versions(repo.find("*", under="/h/docs/sub"))) == set()


@pytest.mark.parametrize("pattern, expected", [
    ("docs/*.md", {b"/h/docs/plan.md"}),
    ("/h/*.md", set()),  # anchored at the root: plan.md is one level deeper
    ("/h/**.md", {b"/h/docs/plan.md"}),
    ("h/*", {b"/h/docs", b"/h/thing", b"/h/other"}),
    ("[mn]*.txt", {b"/h/docs/mode.txt", b"/h/docs/new.txt"}),
    ("[!mn]*.txt", {b"/h/docs/old.txt"}),
    ("?ld.txt", {b"/h/docs/old.txt"}),
])
def test_find_patterns(repo, pattern, expected):
    assert {f.path for f in repo.find(pattern)} == expected


def test_glob_regex_keeps_stars_within_a_component():
    assert glob_regex("docs/*.md").search(b"/a/docs/x.md")
    assert not glob_regex("docs/*.md").search(b"/a/docs/deeper/x.md")
    assert glob_regex("docs/**.md").search(b"/a/docs/deeper/x.md")
    assert not glob_regex("ocs/*.md").search(b"/a/docs/x.md")  # whole components


def _diff(repo, a, b, path=None):
    return {(c.path, c.change, c.content, c.metadata, c.before_type)
            for c in repo.diff(a, b, path)}


def test_diff_says_what_changed_between_two_backups(repo):
    assert _diff(repo, ONE, TWO) == {
        (b"/h/docs/plan.md", "modified", True, (), None),
        (b"/h/docs/old.txt", "removed", False, (), None),  # renamed: removed ...
        (b"/h/docs/new.txt", "added", False, (), None),  # ... and added
        (b"/h/docs/mode.txt", "modified", False, ("mode",), None),
        (b"/h/thing", "type", False, (), "file"),
        (b"/h/thing/x", "added", False, (), None),
    }
    # Deleted and recreated with the same bytes: only its mtime differs from ONE.
    assert (b"/h/docs/old.txt", "modified", False, ("mtime",), None) in _diff(repo, ONE, THREE)
    assert _diff(repo, TWO, THREE) == {(b"/h/docs/old.txt", "added", False, (), None),
                                       (b"/h/docs/plan.md", "removed", False, (), None)}
    assert _diff(repo, THREE, "latest") == {(b"/h/other", "added", False, (), None)}
    assert _diff(repo, FOUR, FOUR) == set()


def test_diff_backwards_and_below_a_path(repo):
    assert _diff(repo, THREE, TWO) == {(b"/h/docs/old.txt", "removed", False, (), None),
                                       (b"/h/docs/plan.md", "added", False, (), None)}
    assert _diff(repo, ONE, TWO, "/h/thing") == {(b"/h/thing/x", "added", False, (), None)}
    assert {c[0] for c in _diff(repo, "1", "4", "/h/docs")} == {
        b"/h/docs/plan.md", b"/h/docs/new.txt", b"/h/docs/mode.txt", b"/h/docs/old.txt"}


def test_folder_log_lists_exactly_the_backups_that_changed_something_below(repo):
    steps = repo.folder_log("/h/docs", files=True)
    assert [(s.snapshot, s.added, s.modified, s.deleted) for s in steps] == [
        (ONE, 4, 0, 0),  # plan.md, old.txt, mode.txt and sub/
        (TWO, 1, 2, 1),  # sub's own new version (mtime) is not a change
        (THREE, 1, 0, 1),
    ]  # FOUR changed nothing below /h/docs
    assert steps[1].paths == (("modified", b"/h/docs/mode.txt"), ("added", b"/h/docs/new.txt"),
                              ("deleted", b"/h/docs/old.txt"),
                              ("modified", b"/h/docs/plan.md"))
    assert [s.snapshot for s in repo.folder_log("/h")] == [ONE, TWO, THREE, FOUR]
    assert repo.folder_log("/h/docs/plan.md") is None  # a file: its own log


def test_the_commands(history):
    out = btfs_cli("find", "*.md").stdout
    assert out.splitlines()[0] == "/h/docs/plan.md  (deleted)"
    assert out.splitlines()[3].split() == [THREE, "deleted"]
    missing = btfs_cli("find", "*.nothing", check=1)
    assert missing.stdout == "" and missing.stderr == (
        "btfs: no path in the history matches '*.nothing'\n")
    assert json.loads(btfs_cli("find", "x", "--json").stdout)[0]["path"] == "/h/thing/x"
    diff = btfs_cli("diff", ONE, TWO).stdout.splitlines()
    assert diff == ["M  /h/docs/mode.txt  (mode)", "+  /h/docs/new.txt", "-  /h/docs/old.txt",
                    "M  /h/docs/plan.md  (content)",
                    "T  /h/thing/  (file -> dir)", "+  /h/thing/x",
                    "2 paths added, 1 removed, 2 modified, 1 changed type"]
    bad = btfs_cli("diff", ONE, "nope", check=2)
    assert bad.stderr.startswith("btfs: error: no snapshot named 'nope'")
    log = btfs_cli("log", "/h/docs").stdout.splitlines()
    assert log[0].split() == ["BACKUP", "ADDED", "MODIFIED", "DELETED"]
    assert [row.split() for row in log[1:]] == [[ONE, "4", "0", "0"], [TWO, "1", "2", "1"],
                                                [THREE, "1", "0", "1"]]
    files = btfs_cli("log", "/h/docs", "--files").stdout.splitlines()
    assert files[:2] == [f"{ONE}  4 added, 0 modified, 0 deleted", "  +  /h/docs/mode.txt"]
    assert "deleted" in btfs_cli("log", "/h/docs/plan.md").stdout  # a file: as before


COMPLETIONS = Path(__file__).resolve().parents[2] / "contrib" / "completions"


def complete(*words: str) -> list[str]:
    """What bash offers for the last of `words` (after `btfs`), through the installed
    completion script asking `btfs` itself, as bash's completion would call it; the
    script's `compopt` requests are listed too ("-o default": the shell's own files)."""
    line = " ".join(shlex.quote(w) if w else "''" for w in ("btfs", *words))
    script = (f"source {shlex.quote(str(COMPLETIONS / 'btfs.bash'))}\n"
              "complete -p btfs >/dev/null || exit 9\n"  # the script registered itself
              # compopt works only while bash itself completes: record what is asked.
              "compopt() { printf compopt; printf ' %s' \"$@\"; echo; }\n"
              f"COMP_WORDS=({line}); COMP_CWORD={len(words)}\n"
              "_btfs_completion btfs\n"
              "compgen -W '${COMPREPLY[*]}' -- \"${COMP_WORDS[COMP_CWORD]}\" || true\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return [line for line in proc.stdout.splitlines() if not line.startswith("compopt -o nospace")]


def test_completion_offers_backup_names_and_paths_from_the_history(history):
    assert complete("restore", "x", "--snapshot", "") == [ONE, TWO, THREE, FOUR, "latest"]
    assert complete("restore", "x", "--snapshot", "2026-11-23_0932") == [THREE]
    assert complete("diff", ONE, "la") == ["latest"]
    assert complete("log", "/h/") == ["/h/docs/", "/h/other", "/h/thing/"]
    # plan.md is deleted: still offered, as history holds it.
    assert complete("restore", "/h/docs/p") == ["/h/docs/plan.md"]
    assert complete("log", "/h/docs/") == ["/h/docs/mode.txt", "/h/docs/new.txt",
                                           "/h/docs/old.txt", "/h/docs/plan.md",
                                           "/h/docs/sub/"]
    assert complete("log", "/nowhere/x") == ["compopt -o default"]  # the shell's files


# ---- the mount: by-file against by-time, deleted paths marked -------------------------


def _files_below(root: Path) -> dict[str, Path]:
    """relative path -> path of every file and symlink below `root` (as find lists)."""
    out = subprocess.run(["find", str(root), "(", "-type", "f", "-o", "-type", "l", ")",
                          "-printf", "%P\\0"], check=True, capture_output=True).stdout
    return {rel: root / rel for rel in os.fsdecode(out).split("\0")[:-1]}


def test_find_over_by_file_and_by_time_list_the_same_files(repo_dirs, mounter):
    """Every file any backup holds (by-time: one path per backup) is in by-file as the
    version of the backup that recorded it, with the same bytes, and by-file holds
    nothing else but the marks of deleted paths."""
    from btfs.names import version_name

    src, _ = repo_dirs
    (src / "docs" / "deep").mkdir(parents=True)
    (src / "docs" / "plan.md").write_text("one")
    (src / "docs" / "deep" / "a.tar.gz").write_bytes(b"gz")
    (src / "keep").write_text("same")
    (src / "link").symlink_to("keep")
    btfs_cli("-q", "backup")
    (src / "docs" / "plan.md").write_text("two")
    (src / "new").write_text("new")
    btfs_cli("-q", "backup")
    (src / "docs" / "deep" / "a.tar.gz").unlink()
    (src / "docs" / "plan.md").write_text("three")
    btfs_cli("-q", "backup")
    mnt = mounter()
    snaps = sorted(n for n in os.listdir(mnt / "by-time") if n != "latest")
    by_file = mnt / "by-file" / str(src).lstrip("/")
    listed = _files_below(by_file)
    expected = {}
    for snap in snaps:
        for rel, path in _files_below(mnt / "by-time" / snap / str(src).lstrip("/")).items():
            # The version shown at `snap` is the newest one recorded at or before it.
            recorded = [s for s in snaps[:snaps.index(snap) + 1]
                        if os.fsdecode(version_name(os.fsencode(Path(rel).name), s)) in
                        os.listdir(by_file / rel)][-1]
            name = os.fsdecode(version_name(os.fsencode(Path(rel).name), recorded))
            version = f"{rel}/{name}"
            assert version in listed, version
            if path.is_symlink():
                assert os.readlink(listed[version]) == os.readlink(path)
            else:
                assert listed[version].read_bytes() == path.read_bytes()
            expected[version] = True
    marks = {rel for rel in listed if Path(rel).name.startswith("(deleted in ")}
    assert marks == {f"docs/deep/a.tar.gz/(deleted in {snaps[2]})"}
    assert set(listed) - marks == set(expected)
    assert len([v for v in expected if v.startswith("docs/plan.md/")]) == 3


def test_a_deleted_file_is_marked_in_the_mount_and_its_versions_copy_out(repo_dirs, mounter,
                                                                         tmp_path):
    src, _ = repo_dirs
    (src / "report.txt").write_text("draft")
    btfs_cli("-q", "backup")
    (src / "report.txt").write_text("final")
    btfs_cli("-q", "backup")
    (src / "report.txt").unlink()
    btfs_cli("-q", "backup")
    mnt = mounter()
    one, two, three = sorted(n for n in os.listdir(mnt / "by-time") if n != "latest")
    gone = mnt / "by-file" / str(src).lstrip("/") / "report.txt"
    mark = f"(deleted in {three})"
    assert sorted(os.listdir(gone)) == sorted([mark, f"report.{one}.txt", f"report.{two}.txt"])
    st = os.stat(gone / mark)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0 and not os.access(gone / mark, os.W_OK)
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(gone), str(out)], check=True)
    assert (out / f"report.{one}.txt").read_text() == "draft"
    assert (out / f"report.{two}.txt").read_text() == "final"
    assert (out / mark).read_bytes() == b""
    # Not in the newest backup; the CLI agrees.
    assert "report.txt" not in os.listdir(mnt / "by-time" / three / str(src).lstrip("/"))
    found = json.loads(btfs_cli("find", "report.txt", "--deleted", "--json").stdout)
    assert [v["snapshot"] for v in found[0]["versions"]] == [one, two, three]
