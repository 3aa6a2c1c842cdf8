"""Which entries of a tracked directory are backed up.

Patterns are gitignore-style (pathspec's GitIgnoreSpec), matched against the path relative
to the tracked directory; a trailing '/' on a pattern matches directories only. Include
patterns, when given, restrict which *files* are stored; directories are always descended.
Names are bytes; patterns see them decoded with surrogateescape so any name can match.
"""

from __future__ import annotations

import os

import pathspec

CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


class Matcher:
    def __init__(self, excludes: tuple[str, ...] | list[str], includes=()):
        self._excludes = pathspec.GitIgnoreSpec.from_lines(excludes) if excludes else None
        self._includes = pathspec.GitIgnoreSpec.from_lines(includes) if includes else None

    def excluded(self, rel: bytes, is_dir: bool) -> bool:
        """True when the entry at `rel` (relative to the tracked dir) is not backed up."""
        text = os.fsdecode(rel) + ("/" if is_dir else "")
        if self._excludes is not None and self._excludes.match_file(text):
            return True
        if self._includes is not None and not is_dir:
            return not self._includes.match_file(text)
        return False


def is_cache_dir(path: bytes) -> bool:
    """A directory marked with a CACHEDIR.TAG (bford.info/cachedir) holding the signature."""
    try:
        with open(os.path.join(path, b"CACHEDIR.TAG"), "rb") as f:
            return f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False
