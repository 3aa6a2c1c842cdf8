"""How snapshots and versions are named for people: in `btfs snapshots` and in the mount.

Pure functions, no I/O. A snapshot's name is the local time it started, YYYY-MM-DD_HHMMSS,
with -1, -2, ... for snapshots starting in the same second; it is stored in the catalog when
the snapshot is made (BackupWriter.begin_snapshot), so forgetting one never renames another.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from . import digest
from .catalog.model import Snapshot


def time_name(ns: int) -> str:
    return time.strftime("%Y-%m-%d_%H%M%S", time.localtime(ns // 1_000_000_000))


def snapshot_names(snapshots: Iterable[Snapshot]) -> dict[int, str]:
    """Snapshot id -> unique name, for every snapshot given, in (time, id) order: how
    catalogs before format 7 named snapshots, which its migration stores (a test holds
    the two together)."""
    ordered = sorted(snapshots, key=lambda s: (s.started_ns, s.id))
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for snap in ordered:
        base = time_name(snap.started_ns)
        count = seen.get(base, 0)
        seen[base] = count + 1
        names[snap.id] = base if count == 0 else f"{base}-{count}"
    return names


NAME_MAX = 255  # bytes in one path component (Linux)
# The longest snapshot name a shortened version name leaves room for: YYYY-MM-DD_HHMMSS
# and a same-second count up to -999999. Reserved whatever the actual name, so a
# shortened name's stem does not depend on the snapshot and lookup can find its stamp.
STAMP_ROOM = 24
SUFFIX_MAX = 32  # a longer "extension" is not one: shortened names do not keep it
DIGEST_CHARS = 8  # hex digits of the full name's BLAKE3 in a shortened name


# Suffixes that name one format together: `archive.tar.gz` is a gzipped tar, and a
# version name that kept only `.gz` last (`archive.tar.<backup>.gz`) would tell a file
# manager it is a plain gzip file.
COMPOUND_SUFFIXES = (b".tar.gz", b".tar.xz", b".tar.zst", b".tar.bz2")


def _split(file_name: bytes) -> tuple[bytes, bytes]:
    """(stem, suffix): the suffix is a compound suffix (`.tar.gz`) the name ends with, or
    else the last dot and what follows; none when that dot leads the name (`.bashrc`)
    or there is no dot."""
    for compound in COMPOUND_SUFFIXES:
        if file_name.endswith(compound) and len(file_name) > len(compound):
            return file_name[:-len(compound)], compound
    dot = file_name.rfind(b".")
    return (file_name, b"") if dot <= 0 else (file_name[:dot], file_name[dot:])


def _shortened(file_name: bytes) -> tuple[bytes, bytes]:
    """(stem, suffix) of the version names of a file whose name is too long to take a
    snapshot name: the stem cut to fit, ending in `~` and a digest of the full name (two
    long names that share a beginning stay distinct), the suffix kept unless absurd."""
    stem, suffix = _split(file_name)
    if len(suffix) > SUFFIX_MAX:
        stem, suffix = file_name, b""
    tag = b"~" + digest.hexdigest(file_name)[:DIGEST_CHARS].encode()
    cut = NAME_MAX - 1 - STAMP_ROOM - len(suffix) - len(tag)
    if _is_utf8(file_name):  # never split a character of a name that is valid UTF-8
        while cut > 0 and stem[cut:cut + 1] and stem[cut] & 0xC0 == 0x80:
            cut -= 1
    return stem[:cut] + tag, suffix


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def version_name(file_name: bytes, snapshot_name: str) -> bytes:
    """`plan.md` at 2026-11-20_093000 -> `plan.2026-11-20_093000.md`: the extension stays
    last so a file manager opens the version with the right program, a compound one whole
    (`archive.tar.gz` -> `archive.<time>.tar.gz`). A leading dot is part of the stem
    (`.bashrc` -> `.bashrc.<time>`), as is everything when there is no dot.

    Every name fits NAME_MAX, so `cp -a` of a by-file directory can create it: when the
    file's name is too long to take the snapshot name, its stem is cut (at a character
    boundary if the name is UTF-8) and `~<digest of the full name>` added."""
    stamp = snapshot_name.encode()
    if len(file_name) + 1 + len(stamp) <= NAME_MAX:
        stem, suffix = _split(file_name)
    else:
        stem, suffix = _shortened(file_name)
    return stem + b"." + stamp + suffix


def version_stamp(file_name: bytes, name: bytes) -> str | None:
    """The snapshot name in `name`, if `name` is one of `file_name`'s version names (the
    inverse of version_name; the mount's by-file lookup)."""
    for parts in (_split, _shortened):  # a digest only when the plain form does not fit
        stem, suffix = parts(file_name)
        if name.startswith(stem + b".") and name.endswith(suffix) and \
                len(name) > len(stem) + 1 + len(suffix):
            stamp = name[len(stem) + 1:len(name) - len(suffix)].decode(errors="replace")
            if version_name(file_name, stamp) == name:
                return stamp
    return None
