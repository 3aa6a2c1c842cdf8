"""The extended attributes of recently seen inodes, so that asking for them costs no query.

`ls -l` asks for two or three xattrs of every file it lists (an SELinux label, ACLs), and
`cp -a` for the xattrs and ACL of every file it copies. Lookups and readdir replies carry
each snapshot entry's encoded xattrs (tree.Attr.xattrs): they are kept here, decoded only
when asked for, so getxattr right after a listing is a dictionary hit. Snapshot contents
never change, so their entries never expire; others (by-file directories) are asked again
after `live_seconds`, like their attributes. Bounded: the oldest entries go first.

Plain code over the model (no pyfuse3, no catalog): tested without a kernel. Not
thread-safe: the mount's trio thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..engine.meta import decode_xattrs
from .tree import Attr, Description, is_stable

KEPT = 1 << 17  # inodes remembered (an entry is about 100 bytes)


class XattrCache:
    def __init__(self, describe: Callable[[int], Description], *, live_seconds: float,
                 kept: int = KEPT, clock: Callable[[], float] = time.monotonic):
        """`describe(ino)`: the model's answer on a miss (tree.Tree.describe), whose
        `xattrs` are decoded."""
        self.describe = describe
        self.live_seconds = live_seconds
        self.kept = kept
        self.clock = clock
        # ino -> (expiry or None for never, xattrs encoded (bytes), decoded, or None: none)
        self._entries: dict[int, tuple[float | None, bytes | dict[bytes, bytes] | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def note(self, attr: Attr) -> None:
        """Keep the xattrs a snapshot entry's attributes carry (cheap: no decoding)."""
        if attr.stable:
            self._keep(attr.ino, None, attr.xattrs)

    def get(self, ino: int) -> dict[bytes, bytes]:
        """The decoded xattrs of `ino` (name -> value), from memory when known."""
        cached = self._entries.get(ino)
        if cached is not None and (cached[0] is None or cached[0] > self.clock()):
            value = cached[1]
            if isinstance(value, bytes):
                return dict(decode_xattrs(value))
            return value or {}
        pairs = self.describe(ino).xattrs
        expiry = None if is_stable(ino) else self.clock() + self.live_seconds
        self._keep(ino, expiry, pairs)
        return pairs

    def _keep(self, ino: int, expiry: float | None,
              value: bytes | dict[bytes, bytes] | None) -> None:
        if len(self._entries) >= self.kept:
            self._entries.pop(next(iter(self._entries)))
        self._entries[ino] = (expiry, value)
