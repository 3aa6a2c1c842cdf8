"""Which entries of a tracked directory are backed up.

Patterns are gitignore-style (pathspec's GitIgnoreSpec), matched against the path relative
to the tracked directory; a trailing '/' on a pattern matches directories only. Include
patterns, when given, restrict which *files* are stored; directories are always descended.
Names are bytes; patterns see them decoded with surrogateescape so any name can match.
"""

from __future__ import annotations

import os
import re

_NAMED_GROUP = re.compile(r"\(\?P<[^>]+>")
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


class Matcher:
    def __init__(self, excludes: tuple[str, ...] | list[str], includes=()):
        self._excludes = _Patterns(excludes)
        self._includes = _Patterns(includes)

    def excluded(self, rel: bytes, is_dir: bool) -> bool:
        """True when the entry at `rel` (relative to the tracked dir) is not backed up,
        itself or because a directory above it is excluded."""
        parts = rel.split(b"/")
        for depth in range(1, len(parts)):
            if self._excludes.match(b"/".join(parts[:depth]), parts[depth - 1], True):
                return True
        return self.entry_excluded(rel, parts[-1], is_dir)

    def entry_excluded(self, rel: bytes, name: bytes, is_dir: bool) -> bool:
        """`excluded` for the scanner, which never descends into an excluded directory:
        only the entry itself is checked. `name` is the last part of `rel`."""
        if self._excludes.match(rel, name, is_dir):
            return True
        if self._includes.active and not is_dir:
            return not self._includes.match(rel, name, False)
        return False


class _Patterns:
    """Gitignore-style patterns as predicates that run for every entry of every backup.

    Without negations (the common case) the patterns that can match at any depth (no '/'
    but a trailing one) are matched against the entry's name alone, which is several times
    faster than a search of the whole path: a plain name (`.cache/`) by set membership, a
    `*` and a plain suffix (`*.tmp`) by `endswith`, both on the undecoded bytes; other
    globs as one regex. The rest are one regex against the relative path. With a
    negation, order matters and pathspec decides on the whole path."""

    def __init__(self, patterns):
        self.active = bool(patterns)
        self._name = self._path = None
        self._spec = None
        # Plain names and '*'+suffix patterns, for any entry / for directories only.
        self._names: frozenset[bytes] = frozenset()
        self._dir_names: frozenset[bytes] = frozenset()
        self._suffixes: tuple[bytes, ...] = ()
        self._dir_suffixes: tuple[bytes, ...] = ()
        self._others = True  # patterns left for the regexes or pathspec
        if not patterns:
            return
        # Imported here: it costs ~10 ms of every backup's start, and the default
        # configuration has no patterns.
        import pathspec

        spec = pathspec.GitIgnoreSpec.from_lines(patterns)
        rules = [p for p in spec.patterns if p.include is not None]  # not comments
        if not (all(p.include for p in rules)
                and all(isinstance(p.regex, re.Pattern) for p in rules)):
            self._spec = spec
            return
        names, paths = [], []
        plain: dict[str, set[bytes]] = {}
        for p in rules:
            kind = _plain_kind(p.pattern)
            if kind is not None:
                plain.setdefault(kind, set()).add(os.fsencode(p.pattern.rstrip("/").lstrip("*")))
                continue
            # pathspec names its groups; names may not repeat in one regex, so unname them.
            body = _NAMED_GROUP.sub("(?:", p.regex.pattern)
            tail = body[len(_ANY_DEPTH):] if body.startswith(_ANY_DEPTH) else None
            if tail is not None and "/" not in _DIR_SUFFIX.sub("", tail).replace("[^/]", ""):
                names.append(tail)
            else:
                paths.append(body)
        self._names = frozenset(plain.get("name", ()))
        self._dir_names = frozenset(plain.get("dir_name", ()))
        self._suffixes = tuple(plain.get("suffix", ()))
        self._dir_suffixes = tuple(plain.get("dir_suffix", ()))
        if names:
            self._name = re.compile("^(?:" + "|".join(names) + ")").match
        if paths:
            self._path = re.compile("|".join("(?:" + p + ")" for p in paths)).search
        self._others = bool(names or paths)

    def match(self, rel: bytes, name: bytes, is_dir: bool) -> bool:
        if name in self._names or name.endswith(self._suffixes):
            return True
        if is_dir and (name in self._dir_names or name.endswith(self._dir_suffixes)):
            return True
        if not self._others:
            return False
        suffix = "/" if is_dir else ""
        if self._name is not None and self._name(os.fsdecode(name) + suffix):
            return True
        if self._path is not None and self._path(os.fsdecode(rel) + suffix):
            return True
        if self._spec is not None:
            return self._spec.match_file(os.fsdecode(rel) + suffix)
        return False


# A pattern without an inner '/' matches at any depth: pathspec starts its regex with this.
_ANY_DEPTH = "^(?:.+/)?"
# ... and ends it with "this entry, or a directory of that name" (unnamed groups here).
_DIR_SUFFIX = re.compile(r"\(\?:\(\?:/\)\|\$\)$|\(\?:/\)$")


_GLOB_CHARS = frozenset("*?[]\\!# ")


def _plain_kind(pattern: str) -> str | None:
    """'name' / 'suffix' (with 'dir_' when it has a trailing '/') for a pattern that is a
    plain name or '*' and a plain suffix, matching at any depth; None for anything else
    (globs, anchors, escapes, negations, comments, spaces, '**')."""
    body = pattern[:-1] if pattern.endswith("/") else pattern
    kind = "name"
    if body.startswith("*"):
        body, kind = body[1:], "suffix"
    if not body and kind == "name" or "/" in body or not _GLOB_CHARS.isdisjoint(body):
        return None
    return ("dir_" if pattern.endswith("/") else "") + kind


def is_cache_dir(path: bytes) -> bool:
    """A directory marked with a CACHEDIR.TAG (bford.info/cachedir) holding the signature."""
    try:
        with open(os.path.join(path, b"CACHEDIR.TAG"), "rb") as f:
            return f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False
