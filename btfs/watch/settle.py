"""When to back up what: the daemon's pure scheduling model, driven by a clock it is given.

A changed path waits until it has been quiet for `settle` seconds (a file being written
keeps changing, so it is not taken half-done), or until it has been changing for
`settle_max`. Backups start at most once per `min_interval`; each takes every path that
has settled by then, so a burst of changes becomes one or two snapshots. Paths are kept
as given, an ancestor walked whole absorbs its descendants, and past MAX_PENDING paths
the whole set becomes one full scan (bounded memory whatever happens on disk).

No inotify, no trio, no threads: tests drive it with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.scanner import Subtree
from .settings import WatchSettings

MAX_PENDING = 20_000
# A burst of changes reaches the daemon over a moment (it reads inotify's queue in pieces),
# so its paths settle a little apart. A backup due for the first of them waits for those
# due within this much after it (at most a quarter of `settle`), so the burst makes one
# snapshot instead of two `min_interval` apart; nothing is taken before it settled.
GATHER_S = 1.0


@dataclass(slots=True)
class _Dirty:
    first: float  # when it first changed since its last backup
    last: float  # when it last changed
    deep: bool  # walk everything below it


@dataclass(frozen=True)
class Batch:
    """One backup to run: everything (`full`) or only `subtrees`."""

    full: bool
    subtrees: tuple[Subtree, ...] = ()
    # When its oldest change happened (for "changes waiting" figures).
    since: float = 0.0


class Settler:
    def __init__(self, settings: WatchSettings):
        self.settings = settings
        self._dirty: dict[bytes, _Dirty] = {}
        self._full: _Dirty | None = None  # a full scan is owed
        self.last_start: float | None = None  # when the last backup started

    # ---- what happened ------------------------------------------------------------------

    def touch(self, path: bytes, now: float, *, deep: bool = False) -> None:
        """`path` changed at `now`; with `deep`, everything below it may have."""
        if self._full is not None:
            self._full.last = now
            return
        d = self._dirty.get(path)
        if d is None:
            if len(self._dirty) >= MAX_PENDING:
                self.need_full(now)
                return
            self._dirty[path] = _Dirty(now, now, deep)
        else:
            d.last = now
            d.deep = d.deep or deep

    def need_full(self, now: float, *, at_once: bool = False) -> None:
        """Everything may have changed (overflow, start-up, the scan interval); with
        `at_once`, without waiting for it to settle."""
        first = min((d.first for d in self._dirty.values()), default=now)
        self._dirty.clear()
        start = now - self.settings.settle_max if at_once else now
        if self._full is None:
            self._full = _Dirty(min(first, start), start, True)
        else:
            self._full.first = min(self._full.first, start)
            self._full.last = start if at_once else now

    def give_back(self, batch: Batch) -> None:
        """A backup of `batch` failed: its changes are pending again, due at once."""
        quiet = batch.since - self.settings.settle  # settled already
        if batch.full:
            self._dirty.clear()
            self._full = _Dirty(batch.since, quiet, True)
            return
        for sub in batch.subtrees:
            d = self._dirty.setdefault(sub.path, _Dirty(batch.since, quiet, sub.deep))
            d.first = min(d.first, batch.since)
            d.deep = d.deep or sub.deep

    # ---- what to do ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Paths waiting (a full scan counts as one)."""
        return len(self._dirty) + (self._full is not None)

    @property
    def full_pending(self) -> bool:
        return self._full is not None

    def _settled(self, d: _Dirty, now: float) -> bool:
        return (now - d.last >= self.settings.settle
                or now - d.first >= self.settings.settle_max)

    def _ready_at(self, d: _Dirty) -> float:
        return min(d.last + self.settings.settle, d.first + self.settings.settle_max)

    def next_due(self) -> float | None:
        """The earliest time a backup could start, or None with nothing pending."""
        if self._full is not None:
            ready = self._ready_at(self._full)
        elif self._dirty:
            times = [self._ready_at(d) for d in self._dirty.values()]
            gather = min(times) + min(GATHER_S, self.settings.settle / 4)
            ready = max(t for t in times if t <= gather)
        else:
            return None
        if self.last_start is not None:
            ready = max(ready, self.last_start + self.settings.min_interval)
        return ready

    def take(self, now: float, *, force: bool = False) -> Batch | None:
        """The backup to start now, if one is due (with `force`, everything pending and
        regardless of min_interval); what it takes is no longer pending."""
        due = self.next_due()
        if due is None or (due > now and not force):
            return None
        if self._full is not None:
            full, self._full = self._full, None
            self._dirty.clear()
            self.last_start = now
            return Batch(True, (), full.first)
        taken = {p: d for p, d in self._dirty.items() if force or self._settled(d, now)}
        for path in taken:
            del self._dirty[path]
        self.last_start = now
        deep = sorted(p for p, d in taken.items() if d.deep)
        subtrees = [Subtree(p, True) for p in deep]
        subtrees += [Subtree(p, False) for p, d in taken.items()
                     if not d.deep and not _below_any(p, deep)]
        return Batch(False, tuple(sorted(subtrees, key=lambda s: s.path)),
                     min(d.first for d in taken.values()))


def _below_any(path: bytes, tops: list[bytes]) -> bool:
    return any(path.startswith(top.rstrip(b"/") + b"/") for top in tops)
