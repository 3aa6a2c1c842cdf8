"""Choosing what to restore: parse a user's time and pick a path's version by time, number
or snapshot name. Pure catalog reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from ..catalog import DELETED, Catalog, Snapshot, Version
from ..errors import UsageError
from ..text import plural

_FORMATS = ("%Y-%m-%d_%H%M%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M")
# The catalog stores times as SQLite's signed 64-bit integers.
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1


def parse_time(text: str) -> int:
    """A local time as ns since the epoch. A bare date means the end of that day, so
    `--at 2026-11-20` is "as it was on the 20th". Every year from 1 to 9999 is accepted:
    a time the catalog's 64-bit nanoseconds cannot hold is clamped to their range (2262
    means "after every backup", 1677 "before every backup")."""
    text = text.strip()
    when = None
    try:
        day = dt.datetime.strptime(text, "%Y-%m-%d")
        when = day.replace(hour=23, minute=59, second=59, microsecond=999_999)
    except ValueError:
        for fmt in _FORMATS:
            try:
                when = dt.datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if when is not None:
        try:
            # Whole seconds through the float, the rest as an int: a float has no room
            # for nanoseconds since 1970.
            ns = int(when.replace(microsecond=0).timestamp()) * 10**9 + when.microsecond * 1000
        except (OverflowError, OSError, ValueError):  # before or past what mktime takes
            ns = _NS_MIN if when.year < 1970 else _NS_MAX
        return min(max(ns, _NS_MIN), _NS_MAX)
    raise UsageError(f"cannot read time '{text}': use YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' "
                     "or a snapshot name like 2026-11-20_093000")


def numbered(versions: Iterable[Version]) -> Iterator[tuple[int | None, Version]]:
    """The one numbering of a path's versions (oldest first), shown by `btfs log` and
    taken by `btfs restore --version N`: 1, 2, ... for the versions a user can restore;
    a deletion gets no number (None) and does not advance the count."""
    number = 0
    for version in versions:
        if version.type == DELETED:
            yield None, version
        else:
            number += 1
            yield number, version


def committed_versions(catalog: Catalog, node_id: int) -> list[Version]:
    """The versions a user can restore, version N at index N - 1 (see `numbered`)."""
    return [v for n, v in numbered(catalog.history.versions_of(node_id)) if n is not None]


def find_snapshot(catalog: Catalog, name_or_id: str) -> Snapshot:
    for snap in catalog.history.snapshots():
        if snap.name == name_or_id or str(snap.id) == name_or_id:
            return snap
    raise UsageError(f"no snapshot named '{name_or_id}' (see 'btfs snapshots')")


def pick_version(catalog: Catalog, node_id: int, *, at: str | None = None,
                 number: int | None = None, snapshot: str | None = None
                 ) -> tuple[Version, int]:
    """(version, snapshot id to read the tree at). Default: the newest version."""
    if number is not None:
        versions = committed_versions(catalog, node_id)
        if not 1 <= number <= len(versions):
            raise UsageError(f"no version {number}: this path has "
                             f"{plural(len(versions), 'version')} (see 'btfs log')")
        version = versions[number - 1]
        return version, catalog.history.shown_snapshot(version.snapshot_id)
    if at is not None:
        snap = catalog.history.snapshot_at(parse_time(at))
        if snap is None:
            raise UsageError(f"no backup at or before {at}")
        snapshot_id = snap.id
    elif snapshot is not None:
        snapshot_id = find_snapshot(catalog, snapshot).id
    else:
        versions = committed_versions(catalog, node_id)
        if not versions:
            raise UsageError("this path was never backed up")
        head = catalog.history.head(node_id)
        if head is not None and head.type != DELETED:
            return head, catalog.history.latest_snapshot_id()
        return versions[-1], versions[-1].snapshot_id
    version = catalog.history.version_at(node_id, snapshot_id)
    if version is None:
        raise UsageError("this path did not exist at that backup")
    return version, snapshot_id
