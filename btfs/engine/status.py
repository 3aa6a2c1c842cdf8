"""`btfs status`: what the next backup would record, without reading any file content."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..catalog import Catalog
from ..config import Config
from ..errors import UsageError
from ..text import display_path
from ..userpath import is_under
from .scanner import Changed, Deleted, Scanner

log = logging.getLogger(__name__)


@dataclass
class Status:
    new: list[bytes] = field(default_factory=list)
    modified: list[bytes] = field(default_factory=list)
    deleted: list[bytes] = field(default_factory=list)
    staged: list[bytes] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def status(catalog: Catalog, config: Config, under: bytes | None = None, *,
           never: frozenset[bytes] = frozenset()) -> Status:
    """Changes since the last backup, for every tracked directory or only at `under` (a
    catalog path, see btfs.userpath) and below; `never`: the paths a backup leaves out
    (btfs/own.py).

    `under` must lie inside a tracked directory or contain one, and exist now or in the
    history (a path that existed and is gone now is reported as deleted, or under its
    deleted ancestor); anything else is a UsageError rather than "nothing changed"."""
    result = Status()
    if under is not None:
        _check_under(catalog, config, under)

    def lookup(parent: int | None, name: bytes, is_dir: bool) -> int | None:
        return catalog.history.child_node(parent, name) if parent is not None else None

    def inside(path: bytes) -> bool:
        return under is None or is_under(path, under)

    def warn(message: str) -> None:
        log.warning("%s", message)
        result.warnings.append(message)

    scanner = Scanner(catalog.history, config, lookup, warn, never=never)
    for tracked in config.tracked:
        root = os.fsencode(tracked.path)
        if under is not None and not (inside(root) or is_under(under, root)):
            continue
        for event in scanner.scan(tracked):
            if not event.counted:
                continue
            if not inside(event.path):
                # `under` is gone with a deleted directory above it: report that one.
                if isinstance(event, Deleted) and is_under(under, event.path):
                    result.deleted.append(event.path)
                continue
            if isinstance(event, Deleted):
                result.deleted.append(event.path)
            elif isinstance(event, Changed):
                (result.new if event.is_new else result.modified).append(event.path)
    for version in catalog.history.all_staged():
        path = catalog.history.node_path(version.node_id)
        if inside(path):
            result.staged.append(path)
    return result


def _check_under(catalog: Catalog, config: Config, under: bytes) -> None:
    roots = [os.fsencode(t.path) for t in config.tracked]
    if not any(is_under(under, r) or is_under(r, under) for r in roots):
        raise UsageError(f"{display_path(under)} is not inside a tracked directory")
    if not os.path.lexists(under) and catalog.history.node_for_path(under) is None:
        raise UsageError(f"{display_path(under)} does not exist and was never backed up")
