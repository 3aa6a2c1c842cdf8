"""Retention policy: which snapshots `btfs forget` keeps, decided as plain code.

`apply(policy, snapshots, now)` returns, for every snapshot, keep or remove and the rules that
kept it; `parse_duration` reads `keep_within` durations; `policy_from_dict` reads the config's
`[retention]` table. No I/O, no catalog, no clock: the caller passes the snapshots and `now`,
so a test, a dry run and the real forget get the same answer from the same input. It must
never decide to remove every snapshot: an empty policy is refused, a pin that names no
snapshot is refused, and any other rule keeps at least the newest snapshot.

The semantics are restic's (`ApplyPolicy` in internal/data/snapshot_policy.go), so that a
restic user's `--keep-*` flags mean the same here:

- snapshots are walked newest first; equal times count the higher id as newer, the order
  btfs.names gives them;
- keep_last N keeps the N newest; keep_hourly/daily/weekly/monthly/yearly N keeps the newest
  snapshot of each of the N newest hours, days, ISO weeks (Monday to Sunday), months or years
  that hold a snapshot, on calendar boundaries in LOCAL time (an hour is :00 to :59 of the
  wall clock, so the repeated hour when DST ends is one bucket); -1 means unlimited;
- when the oldest snapshot is reached and a bucket rule still has count left, the oldest is
  kept too (reason "oldest daily 7"): restic's way to keep the longest history the counts
  allow;
- keep_within D keeps every snapshot strictly newer than (newest - D), where the newest is
  the newest snapshot not in the future of `now` (every snapshot is within if there is
  none). D's years, months, weeks and days are calendar arithmetic on the local wall clock,
  normalised as Go's time.AddDate does (31 March - 1m is 31 February, that is 3 March), so
  "1d" across a DST change is 23 or 25 hours; D's hours are elapsed hours;
- the rules are ORed; a kept snapshot's reasons name every rule that kept it.

Deliberate differences from restic:

- durations accept w (weeks of 7 days: "2w3d" is 17 days), which restic rejects; they
  refuse a unit given twice, a sign, zero and an empty string, where restic takes the last
  value of a repeated unit, accepts negatives in the parser and treats zero as "no rule";
- keep_snapshots pins snapshots by name or id where restic has --keep-tag; a pin that
  matches no snapshot is refused, because a typo would otherwise forget the very snapshot
  the user meant to keep;
- there are no keep_within_hourly/daily/... rules and no grouping by host or paths: the
  caller passes one group of snapshots;
- reasons are named after the rule and its count ("daily 7", "last unlimited") where restic
  prints "daily snapshot".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import NamedTuple

from ..errors import ConfigError, UsageError

UNLIMITED = -1  # a count of -1 keeps every bucket, as restic's "unlimited"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS = "ymwdh"
_DURATION_PART = re.compile(r"([0-9]+)(.?)", re.DOTALL)  # ASCII digits only, as restic


@dataclass(frozen=True)
class Duration:
    """A keep_within duration: calendar years, months, weeks, days, then elapsed hours."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0

    def __str__(self) -> str:
        return "".join(f"{getattr(self, f.name)}{f.name[0]}"
                       for f in dataclasses.fields(self) if getattr(self, f.name))

    def before(self, t: datetime, tz: tzinfo | None = None) -> datetime | None:
        """`t` minus this duration, in UTC; None when that is before year 1 (all is within).

        The calendar part moves the wall clock in `tz` (None: the system's local zone) and
        normalises day and month overflow as Go's AddDate; the hours are elapsed time.
        """
        wall = _local(t, tz).replace(tzinfo=None)
        months = wall.year * 12 + wall.month - 1 - self.years * 12 - self.months
        year, month0 = divmod(months, 12)
        try:
            day = date(year, month0 + 1, 1) + timedelta(days=wall.day - 1
                                                        - 7 * self.weeks - self.days)
            moved = _from_wall(datetime.combine(day, wall.time()), tz)
            return moved - timedelta(hours=self.hours)
        except (ValueError, OverflowError):
            return None


def parse_duration(text: str) -> Duration:
    """Read a duration such as "2w3d" or "1y6m": numbers followed by y m w d h, each once.

    m is months (not minutes). Raises UsageError with one line naming the problem.
    """
    s = text.strip()
    if not s:
        raise UsageError("empty duration: give numbers with units y, m, w, d, h, e.g. 2w3d")
    parts: dict[str, int] = {}
    pos = 0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if match is None:
            raise UsageError(f"duration {text!r}: expected a number at {s[pos:]!r} "
                             "(units y, m, w, d, h, e.g. 2w3d)")
        number, unit = match.groups()
        if not unit:
            raise UsageError(f"duration {text!r}: no unit after {number} (use y, m, w, d, h)")
        if unit not in _UNITS:
            raise UsageError(f"duration {text!r}: unknown unit {unit!r} after {number} "
                             "(use y, m, w, d, h)")
        if unit in parts:
            raise UsageError(f"duration {text!r}: unit {unit!r} given twice")
        parts[unit] = int(number)
        pos = match.end()
    duration = Duration(**{f.name: parts.get(f.name[0], 0) for f in dataclasses.fields(Duration)})
    if not any(parts.values()):
        raise UsageError(f"duration {text!r} is zero")
    return duration


def parse_count(value: str | int, what: str = "count") -> int:
    """A keep_* count: a whole number >= 0, or -1 / "unlimited" for every bucket."""
    if isinstance(value, str):
        text = value.strip()
        if text == "unlimited":
            return UNLIMITED
        if not re.fullmatch(r"-?[0-9]+", text):
            raise UsageError(f"{what} must be a whole number or 'unlimited', not {value!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < UNLIMITED:
        raise UsageError(f"{what} must be a whole number >= 0 or 'unlimited', not {value!r}")
    return value


_COUNTS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
           "keep_yearly")


@dataclass(frozen=True)
class Policy:
    """Which snapshots forget keeps; a zero count or None is "no such rule"."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: Duration | None = None  # a str is parsed with parse_duration
    keep_snapshots: tuple[str, ...] = ()  # pins: snapshot names or ids
    # The per-file safety net (keep the last N distinct versions of every file even when
    # the snapshots holding them are forgotten): carried here for the catalog, unused by
    # apply because it decides about versions, not snapshots.
    keep_versions: int = 0
    forget_after_backup: bool = False  # run forget with this policy after each backup

    def __post_init__(self) -> None:
        for name in (*_COUNTS, "keep_versions"):
            object.__setattr__(self, name, parse_count(getattr(self, name), name))
        within = self.keep_within
        if isinstance(within, str):
            try:
                object.__setattr__(self, "keep_within", parse_duration(within))
            except UsageError as e:
                raise UsageError(f"keep_within: {e}") from None
        elif within is not None and (
                not isinstance(within, Duration)
                or not any(dataclasses.astuple(within)) or min(dataclasses.astuple(within)) < 0):
            # A zero duration would keep nothing: refuse it rather than forget everything.
            raise UsageError(f"keep_within must be a duration such as 2w3d, not {within!r}")
        pins = self.keep_snapshots
        if (not isinstance(pins, tuple | list)
                or not all(isinstance(p, str) and p for p in pins)):
            raise UsageError("keep_snapshots must be a list of snapshot names or ids "
                             f"(as strings), not {pins!r}")
        object.__setattr__(self, "keep_snapshots", tuple(pins))
        if not isinstance(self.forget_after_backup, bool):
            raise UsageError(f"forget_after_backup must be true or false, "
                             f"not {self.forget_after_backup!r}")

    @property
    def empty(self) -> bool:
        """No rule keeps any snapshot (keep_versions and forget_after_backup do not count)."""
        return (not any(getattr(self, name) for name in _COUNTS)
                and self.keep_within is None and not self.keep_snapshots)

    def describe(self) -> str:
        """One line for people, e.g. "keep 7 daily, unlimited weekly, within 2w3d"."""
        rules = [f"{_count_text(getattr(self, name))} {name[5:]}"
                 for name in _COUNTS if getattr(self, name)]
        if self.keep_within is not None:
            rules.append(f"within {self.keep_within}")
        rules += [f"pinned {pin}" for pin in self.keep_snapshots]
        return "keep " + ", ".join(rules) if rules else "no retention rule"


# Time Machine keeps hourly backups for a day, daily ones for a month and weekly ones
# after that. restic-style counts say it with buckets that hold a snapshot rather than
# calendar spans: 24 hours, 31 days and every ISO week that have one. With hourly backups
# on a machine that is always on this is Time Machine's schedule; on a laptop that sleeps,
# the counts reach further back, so it keeps more, never less. As in restic, an unlimited
# count always has count left at the oldest snapshot, so the first backup is kept too.
TIME_MACHINE = Policy(keep_hourly=24, keep_daily=31, keep_weekly=UNLIMITED)
PRESETS = {"time-machine": TIME_MACHINE}


def _count_text(count: int) -> str:
    return "unlimited" if count == UNLIMITED else str(count)


def policy_from_dict(doc: dict, where: str) -> Policy:
    """The config's `[retention]` table as a Policy; ConfigError (one line) when invalid.

    `where` names the table in messages, e.g. "~/.config/btfs/config.toml [retention]".
    """
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: must be a table, not {doc!r}")
    known = [f.name for f in dataclasses.fields(Policy)]
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' "
                          f"(known: {', '.join(known)})")
    try:
        return Policy(**doc)
    except UsageError as e:
        raise ConfigError(f"{where}: {e}") from None


class Snapshot(NamedTuple):
    """One input of `apply`. time: an aware datetime, a naive one in local time, or int ns
    since the epoch (the catalog's started_ns)."""

    id: int
    name: str
    time: datetime | int


@dataclass(frozen=True)
class Decision:
    id: int
    name: str
    time: datetime  # the snapshot's local time (in apply's tz)
    keep: bool
    reasons: tuple[str, ...]  # the rules that kept it, e.g. ("last 3", "daily 7"); () if not


def apply(policy: Policy, snapshots: Iterable[Snapshot | tuple], now: datetime | int,
          tz: tzinfo | None = None) -> list[Decision]:
    """Decide keep or remove for every snapshot, newest first.

    snapshots: (id, name, time) tuples, in any order; now: when forget runs (only
    keep_within looks at it, to ignore snapshots in the future); tz: the zone whose wall
    clock defines hours, days and weeks (None: the system's local zone, as snapshot names).
    Raises UsageError for an empty policy or a pin that names no snapshot.
    """
    if policy.empty:
        raise UsageError("no retention rule given (keep_last, keep_hourly, keep_daily, "
                         "keep_weekly, keep_monthly, keep_yearly, keep_within or "
                         "keep_snapshots): refusing to forget every snapshot")
    items = sorted(((_ns(t, tz), sid, name) for sid, name, t in snapshots),
                   key=lambda item: (item[0], item[1]), reverse=True)
    pins = set(policy.keep_snapshots)
    for pin in policy.keep_snapshots:
        if not any(pin in (name, str(sid)) for _, sid, name in items):
            raise UsageError(f"keep_snapshots: no snapshot named {pin!r}")

    cutoff_ns = None
    if policy.keep_within is not None:
        now_ns = _ns(now, tz)
        past = [ns for ns, *_ in items if ns < now_ns]
        if past:
            cutoff = policy.keep_within.before(_utc(max(past)), tz)
            cutoff_ns = None if cutoff is None else _ns(cutoff, tz)

    # One bucket rule per count: [count left, bucket key of the last kept, reason].
    rules = [[getattr(policy, name), None, f"{name[5:]} {_count_text(getattr(policy, name))}"]
             for name in _COUNTS]
    decisions = []
    for nr, (ns, sid, name) in enumerate(items):
        local = _local(_utc(ns), tz)
        keys = (nr, (local.year, local.month, local.day, local.hour),
                (local.year, local.month, local.day), local.isocalendar()[:2],
                (local.year, local.month), local.year)
        reasons = []
        if pins & {name, str(sid)}:
            reasons.append("pinned")
        if policy.keep_within is not None and (cutoff_ns is None or ns > cutoff_ns):
            reasons.append(f"within {policy.keep_within}")
        oldest = nr == len(items) - 1
        for rule, key in zip(rules, keys, strict=True):
            count, last, reason = rule
            if count == 0 or (key == last and not oldest):
                continue
            reasons.append(f"oldest {reason}" if key == last else reason)
            rule[0] = count - 1 if count > 0 else count
            rule[1] = key
        decisions.append(Decision(sid, name, local, bool(reasons), tuple(reasons)))
    return decisions


def _ns(t: datetime | int, tz: tzinfo | None) -> int:
    """Nanoseconds since the epoch; a naive datetime is wall-clock time in tz."""
    if isinstance(t, int):
        return t
    if t.tzinfo is None:
        t = _from_wall(t, tz)
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000


def _utc(ns: int) -> datetime:
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)


def _local(t: datetime, tz: tzinfo | None) -> datetime:
    return t.astimezone(tz) if tz is not None else t.astimezone()


def _from_wall(wall: datetime, tz: tzinfo | None) -> datetime:
    """A naive wall-clock time in tz as an aware UTC datetime. Python reads a naive
    datetime as the system's local time, which is what tz None means; a wall time that
    occurs twice (DST ending) is taken at its first occurrence (fold=0)."""
    return (wall if tz is None else wall.replace(tzinfo=tz)).astimezone(UTC)
