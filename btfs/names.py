"""How snapshots and versions are named for people: in `btfs snapshots` and in the mount.

Pure functions, no I/O. A snapshot's name is the local time it started, YYYY-MM-DD_HHMMSS;
snapshots starting in the same second get -1, -2, ... in (time, id) order, so every name is
unique and stable as long as history only grows at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from .catalog.model import Snapshot


def time_name(ns: int) -> str:
    return time.strftime("%Y-%m-%d_%H%M%S", time.localtime(ns // 1_000_000_000))


def snapshot_names(snapshots: Iterable[Snapshot]) -> dict[int, str]:
    """Snapshot id -> unique name, for every snapshot given."""
    ordered = sorted(snapshots, key=lambda s: (s.started_ns, s.id))
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for snap in ordered:
        base = time_name(snap.started_ns)
        count = seen.get(base, 0)
        seen[base] = count + 1
        names[snap.id] = base if count == 0 else f"{base}-{count}"
    return names


def version_name(file_name: bytes, snapshot_name: str) -> bytes:
    """`plan.md` at 2026-11-20_093000 -> `plan.2026-11-20_093000.md`: the extension stays
    last so a file manager opens the version with the right program. A leading dot is part
    of the stem (`.bashrc` -> `.bashrc.<time>`), as is everything when there is no dot."""
    stamp = snapshot_name.encode()
    dot = file_name.rfind(b".")
    if dot <= 0:
        return file_name + b"." + stamp
    return file_name[:dot] + b"." + stamp + file_name[dot:]
