"""Exclude/include patterns (gitignore semantics, relative to the tracked directory) and
CACHEDIR.TAG detection. The backup-level effect of both is in test_backup.py."""

from __future__ import annotations

import pathspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.config import DEFAULT_EXCLUDES
from btfs.engine.excludes import CACHEDIR_SIGNATURE, Matcher, is_cache_dir

FILE, DIR = False, True


def excluded(patterns, rel, is_dir=FILE, includes=()) -> bool:
    return Matcher(patterns, includes).excluded(rel if isinstance(rel, bytes) else
                                                rel.encode(), is_dir)


@pytest.mark.parametrize("rel, is_dir, expected", [
    ("x.tmp", FILE, True),
    ("deep/er/x.tmp", FILE, True),  # no slash in the pattern: any depth
    ("x.tmpl", FILE, False),
    ("x.tmp", DIR, True),  # no trailing slash: directories too
    ("a\nb.tmp", FILE, True),  # a newline in a name is just a character
])
def test_unanchored_glob_matches_at_any_depth(rel, is_dir, expected):
    assert excluded(["*.tmp"], rel, is_dir) is expected


@pytest.mark.parametrize("rel, expected", [
    ("top.txt", True), ("sub/top.txt", False),  # leading slash: the tracked dir only
])
def test_leading_slash_anchors(rel, expected):
    assert excluded(["/top.txt"], rel) is expected


def test_slash_in_the_middle_anchors_too():
    assert excluded(["d/sub/"], "d/sub", DIR)
    assert not excluded(["d/sub/"], "x/d/sub", DIR)


def test_trailing_slash_matches_directories_only():
    assert excluded(["build/"], "build", DIR)
    assert excluded(["build/"], "src/build", DIR)
    assert not excluded(["build/"], "build", FILE)
    assert excluded(["build/"], "build/out.o", FILE)  # what is inside it, if asked


def test_negation_re_includes():
    patterns = ["*.log", "!keep.log"]
    assert excluded(patterns, "app.log")
    assert not excluded(patterns, "keep.log")
    assert not excluded(patterns, "sub/keep.log")
    # Order matters: the last matching pattern wins.
    assert excluded(["!keep.log", "*.log"], "keep.log")


@pytest.mark.parametrize("pattern, rel, expected", [
    ("a/**/z", "a/z", True),
    ("a/**/z", "a/b/c/z", True),
    ("a/**/z", "x/a/b/z", False),
    ("**/logs/*.log", "logs/x.log", True),
    ("**/logs/*.log", "q/r/logs/x.log", True),
    ("**/logs/*.log", "logs/y/x.log", False),  # one * does not cross a slash
    ("cache/**", "cache/a/b", True),
    ("cache/**", "cache", False),
])
def test_double_star(pattern, rel, expected):
    assert excluded([pattern], rel) is expected


def test_non_utf8_names_match():
    assert excluded(["*.pyc"], b"caf\xe9.pyc")
    assert excluded(["caf*"], b"caf\xe9")
    assert not excluded(["*.pyc"], b"caf\xe9.py")


def test_default_excludes():
    junk = [("__pycache__", DIR), ("pkg/__pycache__", DIR), ("m.pyc", FILE),
            ("a/b.tmp", FILE), (".x.swp", FILE), (".cache", DIR), ("home/.cache", DIR)]
    kept = [("__pycache__", FILE), (".cache", FILE), ("cache", DIR), ("x.py", FILE),
            ("tmp", DIR), ("swp", FILE)]
    for rel, is_dir in junk:
        assert excluded(DEFAULT_EXCLUDES, rel, is_dir), rel
    for rel, is_dir in kept:
        assert not excluded(DEFAULT_EXCLUDES, rel, is_dir), rel


def test_includes_restrict_files_but_never_directories():
    m = Matcher([], ["*.md", "/src/*.py"])
    assert not m.excluded(b"README.md", FILE)
    assert not m.excluded(b"docs/x/guide.md", FILE)
    assert not m.excluded(b"src/main.py", FILE)
    assert m.excluded(b"src/sub/main.py", FILE)
    assert m.excluded(b"photo.jpg", FILE)
    assert not m.excluded(b"photos", DIR)  # descended, so included files below are found
    assert not m.excluded(b"anything/at/all", DIR)


def test_excludes_win_over_includes():
    m = Matcher(["drafts/"], ["*.md"])
    assert m.excluded(b"drafts", DIR)
    assert m.excluded(b"drafts/a.md", FILE)
    assert not m.excluded(b"a.md", FILE)


def test_no_patterns_exclude_nothing():
    m = Matcher([], [])
    assert not m.excluded(b"x", FILE) and not m.excluded(b"x", DIR)


@pytest.mark.parametrize("content, expected", [
    (CACHEDIR_SIGNATURE, True),
    (CACHEDIR_SIGNATURE + b"\n# This file is a cache directory tag.\n", True),
    (CACHEDIR_SIGNATURE[:-1], False),
    (b"signature: 8a477f597d28d172789f06886806bc55", False),  # case matters
    (b"", False),
    (b"\n" + CACHEDIR_SIGNATURE, False),  # it must be at the start
])
def test_is_cache_dir(tmp_path, content, expected):
    (tmp_path / "CACHEDIR.TAG").write_bytes(content)
    assert is_cache_dir(bytes(tmp_path)) is expected


def test_is_cache_dir_without_a_readable_tag(tmp_path):
    assert not is_cache_dir(bytes(tmp_path))
    (tmp_path / "CACHEDIR.TAG").mkdir()
    assert not is_cache_dir(bytes(tmp_path))
    assert not is_cache_dir(bytes(tmp_path / "missing"))


# Names and patterns from a small alphabet so that patterns often match.
_part = st.text(alphabet="ab.*/?", min_size=1, max_size=4)
_name = st.text(alphabet="ab.x_", min_size=1, max_size=4).filter(lambda n: n not in (".", ".."))


@settings(max_examples=300, deadline=None)
@given(patterns=st.lists(_part.filter(lambda p: p.strip("/")), min_size=1, max_size=4),
       parts=st.lists(_name, min_size=1, max_size=4), is_dir=st.booleans())
def test_split_regexes_agree_with_pathspec(patterns, parts, is_dir):
    """Name-only and whole-path regexes together decide exactly as gitignore (pathspec)
    does on the whole path, for the entry and every directory above it."""
    rel = "/".join(parts)
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    ancestors = ["/".join(parts[:i]) + "/" for i in range(1, len(parts))]
    expected = any(spec.match_file(a) for a in ancestors) or \
        spec.match_file(rel + ("/" if is_dir else ""))
    assert Matcher(patterns).excluded(rel.encode(), is_dir) is expected
