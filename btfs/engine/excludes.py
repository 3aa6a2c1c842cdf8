"""Which entries of a tracked directory are backed up.

Patterns are gitignore-style (pathspec's GitIgnoreSpec), matched against the path relative
to the tracked directory; a trailing '/' on a pattern matches directories only. Include
patterns, when given, restrict which *files* are stored; directories are always descended.
Names are bytes; patterns see them decoded with surrogateescape so any name can match.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pathspec

_NAMED_GROUP = re.compile(r"\(\?P<[^>]+>")
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


class Matcher:
    def __init__(self, excludes: tuple[str, ...] | list[str], includes=()):
        self._excludes = _compile(excludes)
        self._includes = _compile(includes)

    def excluded(self, rel: bytes, is_dir: bool) -> bool:
        """True when the entry at `rel` (relative to the tracked dir) is not backed up."""
        text = os.fsdecode(rel) + ("/" if is_dir else "")
        if self._excludes is not None and self._excludes(text):
            return True
        if self._includes is not None and not is_dir:
            return not self._includes(text)
        return False


def _compile(patterns) -> Callable[[str], bool] | None:
    """A predicate for gitignore-style `patterns`. This runs for every entry of every
    backup, so without negations (the common case) all patterns become one regex: one
    search per path instead of one per pattern. With a negation, order matters and
    pathspec decides."""
    if not patterns:
        return None
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    regexes = [p.regex for p in spec.patterns if p.include is not None]
    if all(p.include for p in spec.patterns if p.include is not None) and all(
            isinstance(r, re.Pattern) for r in regexes):
        if not regexes:
            return None
        # pathspec names its groups; names may not repeat in one regex, so unname them.
        combined = re.compile("|".join(
            "(?:" + _NAMED_GROUP.sub("(?:", r.pattern) + ")" for r in regexes))
        return lambda text: combined.search(text) is not None
    return spec.match_file


def is_cache_dir(path: bytes) -> bool:
    """A directory marked with a CACHEDIR.TAG (bford.info/cachedir) holding the signature."""
    try:
        with open(os.path.join(path, b"CACHEDIR.TAG"), "rb") as f:
            return f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False
