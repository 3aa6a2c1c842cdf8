"""One rule for turning a path a user typed into the path the catalog knows it by.

Every command that takes a path (track, untrack, status, add, log, restore) goes through
`to_catalog_path`, so a path names the same entry whichever command it is given to. Pure
path arithmetic plus lstat/readlink: never reads file content, never writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import AnyStr


def is_under(path: AnyStr, root: AnyStr) -> bool:
    """Whether `path` is `root` or lies below it, by whole components: /a/bc is not
    under /a/b. Both absolute and normalized (as `to_catalog_path` returns them), both
    bytes or both str; a trailing slash on `root` is allowed."""
    if path == root:
        return True
    sep = b"/" if isinstance(root, bytes) else "/"
    return path.startswith(root.rstrip(sep) + sep)


def to_catalog_path(path: str | bytes, tracked: Iterable[str | bytes] = (), *,
                    directory: bool = False) -> bytes:
    """The absolute path the catalog records `path` under.

    The rule:

    1. `~` is expanded and a relative path is taken from the current directory.
    2. Symlinks in every component but the last are resolved (as `realpath` does), so
       a path reached through a symlinked directory names what the backup walked.
    3. The last component is kept as it is, so a symlink that a backup recorded as a
       symlink is still itself — except when it is a symlink to a directory that is, is
       inside, or contains a tracked directory and the symlink itself lies outside every
       tracked directory (the backup never saw it): then it is resolved too, as `btfs
       track` resolved it. With `directory` (track, untrack: they name directories), a
       symlink in the last component is always resolved.
    4. A path that does not exist (any more) still resolves: the longest existing prefix is
       resolved and the rest kept, so deleted files and directories keep their names.

    Examples, with /tmp/link -> /tmp/real and /tmp/real tracked:

        /tmp/link/f.txt     -> /tmp/real/f.txt     (step 2)
        /tmp/link           -> /tmp/real           (step 3: points at a tracked directory)
        /tmp/real/ln        -> /tmp/real/ln        (a symlink inside the tree is itself)
        /tmp/link/gone/x    -> /tmp/real/gone/x    (step 4: deleted since)
        ~/notes/../plan.md  -> /home/me/plan.md    (`..` after resolving ~/notes)

    `tracked` is the tracked directories as `btfs track` recorded them (real paths).
    """
    raw = os.path.expanduser(os.fsencode(path))
    raw = os.path.join(os.getcwdb(), raw) if not raw.startswith(b"/") else raw
    head, last = os.path.split(raw)
    if not last or last in (b".", b".."):
        # "dir/", "dir/." and "dir/..": the user means the directory, as the shell does.
        return os.path.realpath(raw)
    parent = os.path.realpath(head)
    candidate = os.path.join(parent, last)
    if not os.path.islink(candidate):
        return candidate
    target = os.path.realpath(candidate)
    if directory:
        return target
    roots = [os.fsencode(t) for t in tracked]
    if not os.path.isdir(target) or any(is_under(candidate, r) for r in roots):
        return candidate
    if any(is_under(target, r) or is_under(r, target) for r in roots):
        return target
    return candidate
