"""The retention policy: given snapshot times, exactly which `btfs forget` keeps and why.

The tables in RESTIC_CASES are restic's own (restic/restic, BSD-2-Clause):
internal/data/snapshot_policy_test.go's 103 snapshot times and the golden results in
internal/data/testdata/policy_keep_snapshots_N for every case whose rules btfs has, with
restic's reasons renamed after the rule ("daily snapshot" under --keep-daily 5 is "daily 5").
A kept run of consecutive snapshots with the same reasons is written "newest .. oldest (n)".
"""

from __future__ import annotations

import time
import tomllib
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.engine.retention import (
    PRESETS,
    TIME_MACHINE,
    UNLIMITED,
    Duration,
    Policy,
    Snapshot,
    apply,
    parse_count,
    parse_duration,
    policy_from_dict,
)
from btfs.errors import ConfigError, UsageError

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def snaps(*times: str) -> list[Snapshot]:
    """Snapshots named after their time, ids in input order."""
    return [Snapshot(i, t, utc(t)) for i, t in enumerate(times, 1)]


def kept(policy: Policy, snapshots, now=NOW, tz=UTC) -> list[str]:
    return [d.name for d in apply(policy, snapshots, now, tz) if d.keep]


def why(policy: Policy, snapshots, now=NOW, tz=UTC) -> dict[str, tuple[str, ...]]:
    return {d.name: d.reasons for d in apply(policy, snapshots, now, tz) if d.keep}


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# restic's TestApplyPolicy input, in its order. restic sorts it stably, newest first, so of
# equal times the one listed first counts as newer; btfs counts the higher id as newer, so
# the ids count down.
RESTIC_TIMES = [
    "2014-09-01 10:20:30", "2014-09-02 10:20:30", "2014-09-05 10:20:30", "2014-09-06 10:20:30",
    "2014-09-08 10:20:30", "2014-09-09 10:20:30", "2014-09-10 10:20:30", "2014-09-11 10:20:30",
    "2014-09-20 10:20:30", "2014-09-22 10:20:30", "2014-08-08 10:20:30", "2014-08-10 10:20:30",
    "2014-08-12 10:20:30", "2014-08-13 10:20:30", "2014-08-13 10:20:30.1", "2014-08-15 10:20:30",
    "2014-08-18 10:20:30", "2014-08-20 10:20:30", "2014-08-21 10:20:30", "2014-08-22 10:20:30",
    "2014-10-01 10:20:30", "2014-10-02 10:20:30", "2014-10-05 10:20:30", "2014-10-06 10:20:30",
    "2014-10-08 10:20:30", "2014-10-09 10:20:30", "2014-10-10 10:20:30", "2014-10-11 10:20:30",
    "2014-10-20 10:20:30", "2014-10-22 10:20:30", "2014-11-08 10:20:30", "2014-11-10 10:20:30",
    "2014-11-12 10:20:30", "2014-11-13 10:20:30", "2014-11-13 10:20:30.1", "2014-11-15 10:20:30",
    "2014-11-18 10:20:30", "2014-11-20 10:20:30", "2014-11-21 10:20:30", "2014-11-22 10:20:30",
    "2015-09-01 10:20:30", "2015-09-02 10:20:30", "2015-09-05 10:20:30", "2015-09-06 10:20:30",
    "2015-09-08 10:20:30", "2015-09-09 10:20:30", "2015-09-10 10:20:30", "2015-09-11 10:20:30",
    "2015-09-20 10:20:30", "2015-09-22 10:20:30", "2015-08-08 10:20:30", "2015-08-10 10:20:30",
    "2015-08-12 10:20:30", "2015-08-13 10:20:30", "2015-08-13 10:20:30.1", "2015-08-15 10:20:30",
    "2015-08-18 10:20:30", "2015-08-20 10:20:30", "2015-08-21 10:20:30", "2015-08-22 10:20:30",
    "2015-10-01 10:20:30", "2015-10-02 10:20:30", "2015-10-05 10:20:30", "2015-10-06 10:20:30",
    "2015-10-08 10:20:30", "2015-10-09 10:20:30", "2015-10-10 10:20:30", "2015-10-11 10:20:30",
    "2015-10-20 10:20:30", "2015-10-22 10:20:30", "2015-10-22 10:20:30", "2015-10-22 10:20:30",
    "2015-10-22 10:20:30", "2015-10-22 10:20:30", "2015-11-08 10:20:30", "2015-11-10 10:20:30",
    "2015-11-12 10:20:30", "2015-11-13 10:20:30", "2015-11-13 10:20:30.1", "2015-11-15 10:20:30",
    "2015-11-18 10:20:30", "2015-11-20 10:20:30", "2015-11-21 10:20:30", "2015-11-22 10:20:30",
    "2016-01-01 01:02:03", "2016-01-01 01:03:03", "2016-01-01 07:08:03", "2016-01-03 07:02:03",
    "2016-01-04 10:23:03", "2016-01-04 11:23:03", "2016-01-04 12:23:03", "2016-01-04 12:24:03",
    "2016-01-04 12:28:03", "2016-01-04 12:30:03", "2016-01-04 16:23:03", "2016-01-05 09:02:03",
    "2016-01-06 08:02:03", "2016-01-07 10:02:03", "2016-01-08 20:02:03", "2016-01-09 21:02:03",
    "2016-01-12 21:02:03", "2016-01-12 21:08:03", "2016-01-18 12:02:03",
]


def restic_snapshots() -> list[Snapshot]:
    return [Snapshot(len(RESTIC_TIMES) - i, t, utc(t)) for i, t in enumerate(RESTIC_TIMES)]


def render(decisions) -> str:
    """Kept snapshots, newest first, consecutive ones with equal reasons as one run."""
    rows = [(d.time.strftime("%Y-%m-%d %H:%M:%S")
             + (f".{d.time.microsecond:06d}".rstrip("0") if d.time.microsecond else ""),
             d.reasons if d.keep else None) for d in decisions]
    lines, i = [], 0
    while i < len(rows):
        t, reasons = rows[i]
        if reasons is None:
            i += 1
            continue
        j = i
        while j + 1 < len(rows) and rows[j + 1][1] == reasons:
            j += 1
        head = t if j == i else f"{t} .. {rows[j][0]} ({j - i + 1})"
        lines.append(f"{head}  {', '.join(reasons)}")
        i = j + 1
    return "\n".join(lines)


RESTIC_CASES = [
    (1, Policy(keep_last=10), """
        2016-01-18 12:02:03 .. 2016-01-04 12:30:03 (10)  last 10
    """),
    (2, Policy(keep_last=15), """
        2016-01-18 12:02:03 .. 2016-01-04 10:23:03 (15)  last 15
    """),
    (3, Policy(keep_last=99), """
        2016-01-18 12:02:03 .. 2014-08-13 10:20:30.1 (99)  last 99
    """),
    (4, Policy(keep_last=200), """
        2016-01-18 12:02:03 .. 2014-08-08 10:20:30 (103)  last 200
    """),
    (5, Policy(keep_hourly=20), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  hourly 20
        2016-01-09 21:02:03 .. 2016-01-04 12:30:03 (7)  hourly 20
        2016-01-04 11:23:03 .. 2016-01-01 01:03:03 (5)  hourly 20
        2015-11-22 10:20:30 .. 2015-11-13 10:20:30.1 (6)  hourly 20
    """),
    (6, Policy(keep_daily=3), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  daily 3
        2016-01-09 21:02:03  daily 3
    """),
    (7, Policy(keep_daily=10), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  daily 10
        2016-01-09 21:02:03 .. 2016-01-04 16:23:03 (6)  daily 10
        2016-01-03 07:02:03 .. 2016-01-01 07:08:03 (2)  daily 10
    """),
    (8, Policy(keep_daily=30), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  daily 30
        2016-01-09 21:02:03 .. 2016-01-04 16:23:03 (6)  daily 30
        2016-01-03 07:02:03 .. 2016-01-01 07:08:03 (2)  daily 30
        2015-11-22 10:20:30 .. 2015-11-13 10:20:30.1 (6)  daily 30
        2015-11-12 10:20:30 .. 2015-10-22 10:20:30 (4)  daily 30
        2015-10-20 10:20:30 .. 2015-09-22 10:20:30 (10)  daily 30
    """),
    (9, Policy(keep_last=5, keep_daily=5), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  last 5, daily 5
        2016-01-12 21:02:03  last 5
        2016-01-09 21:02:03 .. 2016-01-08 20:02:03 (2)  last 5, daily 5
        2016-01-07 10:02:03  daily 5
    """),
    (10, Policy(keep_last=2, keep_daily=10), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  last 2, daily 10
        2016-01-09 21:02:03 .. 2016-01-04 16:23:03 (6)  daily 10
        2016-01-03 07:02:03 .. 2016-01-01 07:08:03 (2)  daily 10
    """),
    (11, Policy(keep_weekly=2), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  weekly 2
    """),
    (12, Policy(keep_weekly=4), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  weekly 4
        2016-01-09 21:02:03  weekly 4
        2016-01-03 07:02:03  weekly 4
    """),
    (13, Policy(keep_daily=3, keep_weekly=4), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  daily 3, weekly 4
        2016-01-09 21:02:03  daily 3, weekly 4
        2016-01-03 07:02:03  weekly 4
    """),
    (14, Policy(keep_monthly=6), """
        2016-01-18 12:02:03  monthly 6
        2015-11-22 10:20:30  monthly 6
        2015-10-22 10:20:30  monthly 6
        2015-09-22 10:20:30  monthly 6
        2015-08-22 10:20:30  monthly 6
        2014-11-22 10:20:30  monthly 6
    """),
    (15, Policy(keep_daily=2, keep_weekly=2, keep_monthly=6), """
        2016-01-18 12:02:03  daily 2, weekly 2, monthly 6
        2016-01-12 21:08:03  daily 2, weekly 2
        2015-11-22 10:20:30  monthly 6
        2015-10-22 10:20:30  monthly 6
        2015-09-22 10:20:30  monthly 6
        2015-08-22 10:20:30  monthly 6
        2014-11-22 10:20:30  monthly 6
    """),
    (16, Policy(keep_yearly=10), """
        2016-01-18 12:02:03  yearly 10
        2015-11-22 10:20:30  yearly 10
        2014-11-22 10:20:30  yearly 10
        2014-08-08 10:20:30  oldest yearly 10
    """),
    (17, Policy(keep_daily=7, keep_weekly=2, keep_monthly=3, keep_yearly=10), """
        2016-01-18 12:02:03  daily 7, weekly 2, monthly 3, yearly 10
        2016-01-12 21:08:03  daily 7, weekly 2
        2016-01-09 21:02:03 .. 2016-01-05 09:02:03 (5)  daily 7
        2015-11-22 10:20:30  monthly 3, yearly 10
        2015-10-22 10:20:30  monthly 3
        2014-11-22 10:20:30  yearly 10
        2014-08-08 10:20:30  oldest yearly 10
    """),
    (21, Policy(keep_within='1d'), """
        2016-01-18 12:02:03  within 1d
    """),
    (22, Policy(keep_within='2d'), """
        2016-01-18 12:02:03  within 2d
    """),
    (23, Policy(keep_within='7d'), """
        2016-01-18 12:02:03 .. 2016-01-12 21:02:03 (3)  within 7d
    """),
    (24, Policy(keep_within='1m'), """
        2016-01-18 12:02:03 .. 2016-01-01 01:02:03 (19)  within 1m
    """),
    (25, Policy(keep_within='1m14d'), """
        2016-01-18 12:02:03 .. 2016-01-01 01:02:03 (19)  within 1m14d
    """),
    (26, Policy(keep_within='1y1d1m'), """
        2016-01-18 12:02:03 .. 2015-08-08 10:20:30 (63)  within 1y1m1d
    """),
    (27, Policy(keep_within='13d23h'), """
        2016-01-18 12:02:03 .. 2016-01-04 16:23:03 (9)  within 13d23h
    """),
    (28, Policy(keep_within='2m2h'), """
        2016-01-18 12:02:03 .. 2015-11-18 10:20:30 (23)  within 2m2h
    """),
    (29, Policy(keep_within='1y2m3d3h'), """
        2016-01-18 12:02:03 .. 2014-11-15 10:20:30 (68)  within 1y2m3d3h
    """),
    (36, Policy(keep_last=-1), """
        2016-01-18 12:02:03 .. 2014-08-08 10:20:30 (103)  last unlimited
    """),
    (37, Policy(keep_last=-1, keep_hourly=-1), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  last unlimited, hourly unlimited
        2016-01-12 21:02:03  last unlimited
        2016-01-09 21:02:03 .. 2016-01-04 12:30:03 (7)  last unlimited, hourly unlimited
        2016-01-04 12:28:03 .. 2016-01-04 12:23:03 (3)  last unlimited
        2016-01-04 11:23:03 .. 2016-01-01 01:03:03 (5)  last unlimited, hourly unlimited
        2016-01-01 01:02:03  last unlimited
        2015-11-22 10:20:30 .. 2015-11-13 10:20:30.1 (6)  last unlimited, hourly unlimited
        2015-11-13 10:20:30  last unlimited
        2015-11-12 10:20:30 .. 2015-10-22 10:20:30 (4)  last unlimited, hourly unlimited
        2015-10-22 10:20:30 .. 2015-10-22 10:20:30 (4)  last unlimited
        2015-10-20 10:20:30 .. 2015-08-13 10:20:30.1 (25)  last unlimited, hourly unlimited
        2015-08-13 10:20:30  last unlimited
        2015-08-12 10:20:30 .. 2014-11-13 10:20:30.1 (9)  last unlimited, hourly unlimited
        2014-11-13 10:20:30  last unlimited
        2014-11-12 10:20:30 .. 2014-08-13 10:20:30.1 (29)  last unlimited, hourly unlimited
        2014-08-13 10:20:30  last unlimited
        2014-08-12 10:20:30 .. 2014-08-08 10:20:30 (3)  last unlimited, hourly unlimited
    """),
    (38, Policy(keep_hourly=-1), """
        2016-01-18 12:02:03 .. 2016-01-12 21:08:03 (2)  hourly unlimited
        2016-01-09 21:02:03 .. 2016-01-04 12:30:03 (7)  hourly unlimited
        2016-01-04 11:23:03 .. 2016-01-01 01:03:03 (5)  hourly unlimited
        2015-11-22 10:20:30 .. 2015-11-13 10:20:30.1 (6)  hourly unlimited
        2015-11-12 10:20:30 .. 2015-10-22 10:20:30 (4)  hourly unlimited
        2015-10-20 10:20:30 .. 2015-08-13 10:20:30.1 (25)  hourly unlimited
        2015-08-12 10:20:30 .. 2014-11-13 10:20:30.1 (9)  hourly unlimited
        2014-11-12 10:20:30 .. 2014-08-13 10:20:30.1 (29)  hourly unlimited
        2014-08-12 10:20:30 .. 2014-08-08 10:20:30 (3)  hourly unlimited
    """),
    (39, Policy(keep_daily=3, keep_weekly=2, keep_monthly=-1, keep_yearly=-1), """
        2016-01-18 12:02:03  daily 3, weekly 2, monthly unlimited, yearly unlimited
        2016-01-12 21:08:03  daily 3, weekly 2
        2016-01-09 21:02:03  daily 3
        2015-11-22 10:20:30  monthly unlimited, yearly unlimited
        2015-10-22 10:20:30  monthly unlimited
        2015-09-22 10:20:30  monthly unlimited
        2015-08-22 10:20:30  monthly unlimited
        2014-11-22 10:20:30  monthly unlimited, yearly unlimited
        2014-10-22 10:20:30  monthly unlimited
        2014-09-22 10:20:30  monthly unlimited
        2014-08-22 10:20:30  monthly unlimited
        2014-08-08 10:20:30  oldest monthly unlimited, oldest yearly unlimited
    """),
]


@pytest.mark.parametrize("case, policy, expected", RESTIC_CASES,
                         ids=[f"restic-{c[0]}" for c in RESTIC_CASES])
def test_restic_policy_tables(case, policy, expected):
    decisions = apply(policy, restic_snapshots(), NOW, UTC)
    assert len(decisions) == len(RESTIC_TIMES)
    expected = "\n".join(line.strip() for line in expected.strip().splitlines())
    assert render(decisions) == expected


def test_restic_docs_keep_daily_example():
    """restic's docs, "Removing snapshots according to a policy": weekday backups for two
    weeks, a second one on Fridays, no backup on the last Wednesday."""
    times = ["2025-04-21 11:00", "2025-04-22 11:00", "2025-04-23 11:00", "2025-04-24 11:00",
             "2025-04-25 11:00", "2025-04-25 23:00", "2025-04-28 11:00", "2025-04-29 11:00",
             "2025-05-01 11:00", "2025-05-02 11:00", "2025-05-02 23:00"]
    assert kept(Policy(keep_daily=5), snaps(*times)) == [
        "2025-05-02 23:00", "2025-05-01 11:00", "2025-04-29 11:00", "2025-04-28 11:00",
        "2025-04-25 23:00"]


def test_restic_docs_hundred_years_of_dailies():
    """restic's docs: one backup a day for 100 years, then --keep-daily 7 --keep-weekly 5
    --keep-monthly 12 --keep-yearly 75 keeps the 7 newest days, the newest of 5 ISO weeks,
    the last day of 12 months and of 75 years, and nothing else."""
    first, last = date(1926, 1, 1), date(2025, 12, 31)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    snapshots = [Snapshot(n, d.isoformat(), datetime(d.year, d.month, d.day, 12, tzinfo=UTC))
                 for n, d in enumerate(days)]
    policy = Policy(keep_daily=7, keep_weekly=5, keep_monthly=12, keep_yearly=75)
    started = time.perf_counter()
    decisions = apply(policy, snapshots, NOW, UTC)
    elapsed = time.perf_counter() - started

    newest_per_week: dict = {}
    for d in days:
        newest_per_week[d.isocalendar()[:2]] = d
    weeks = sorted(newest_per_week.values())[-5:]
    months = [date(2025, m + 1, 1) - timedelta(days=1) for m in range(1, 12)] + [last]
    years = [date(y, 12, 31) for y in range(1951, 2026)]
    expected = set(days[-7:]) | set(weeks) | set(months) | set(years)
    assert weeks == [date(2025, 12, 7), date(2025, 12, 14), date(2025, 12, 21),
                     date(2025, 12, 28), date(2025, 12, 31)]
    assert {d.name for d in decisions if d.keep} == {d.isoformat() for d in expected}
    assert len(expected) == 7 + 3 + 11 + 74  # the overlaps the docs describe
    reasons = [r for d in decisions for r in d.reasons]
    assert [sum(r.startswith(k) for r in reasons) for k in ("daily", "weekly", "monthly",
                                                            "yearly")] == [7, 5, 12, 75]
    assert elapsed < 5, f"36,525 snapshots took {elapsed:.1f} s"


# --- durations ---

@pytest.mark.parametrize("text, duration, canonical", [
    ("2w3d", Duration(weeks=2, days=3), "2w3d"),
    ("9h", Duration(hours=9), "9h"),
    ("7m5d", Duration(months=7, days=5), "7m5d"),
    ("5d7m", Duration(months=7, days=5), "7m5d"),  # any order, as restic
    ("1y1d1m", Duration(years=1, months=1, days=1), "1y1m1d"),
    ("4h3d9m", Duration(months=9, days=3, hours=4), "9m3d4h"),
    ("  1y2m3w4d5h ", Duration(1, 2, 3, 4, 5), "1y2m3w4d5h"),
    ("0y7d", Duration(days=7), "7d"),
])
def test_parse_duration(text, duration, canonical):
    assert parse_duration(text) == duration
    assert str(duration) == canonical


@pytest.mark.parametrize("text, problem", [
    ("", "empty duration"),
    ("   ", "empty duration"),
    ("5", "no unit after 5"),
    ("5 d", "unknown unit ' ' after 5"),
    ("2s", "unknown unit 's'"),
    ("3M", "unknown unit 'M'"),
    ("d", "expected a number"),
    ("1d2d", "unit 'd' given twice"),
    ("-7m5d", "expected a number"),  # restic's parser takes negatives; its forget refuses
    ("1.5d", "unknown unit '.' after 1"),
    ("0d", "is zero"),
    ("0y0h", "is zero"),
    ("\u07c0d", "expected a number"),  # NKO DIGIT ZERO: ASCII digits only, as restic
])
def test_parse_duration_refuses(text, problem):
    with pytest.raises(UsageError) as excinfo:
        parse_duration(text)
    assert problem in one_line(excinfo)
    assert excinfo.value.exit_code == 2


# --- keep_within ---

def test_within_is_relative_to_the_newest_snapshot_not_now():
    s = snaps("2020-01-10 12:00", "2020-01-09 12:00:01", "2020-01-09 12:00", "2020-01-01 00:00")
    assert why(Policy(keep_within="1d"), s) == {
        "2020-01-10 12:00": ("within 1d",), "2020-01-09 12:00:01": ("within 1d",)}


def test_within_weeks_are_seven_days():
    s = snaps("2020-01-18 00:00", "2020-01-01 00:00:01", "2020-01-01 00:00")
    assert kept(Policy(keep_within="2w3d"), s) == ["2020-01-18 00:00", "2020-01-01 00:00:01"]


def test_within_months_normalise_as_go_adddate():
    # 31 March - 1m = 31 February = 3 March (2026 is not a leap year), not 28 February.
    s = snaps("2026-03-31 10:00", "2026-03-03 10:00:01", "2026-03-03 10:00", "2026-03-01 10:00")
    assert kept(Policy(keep_within="1m"), s) == ["2026-03-31 10:00", "2026-03-03 10:00:01"]
    # 29 February 2028 - 1y = 29 February 2027 = 1 March 2027.
    s = snaps("2028-02-29 10:00", "2027-03-01 10:00:01", "2027-03-01 10:00")
    assert kept(Policy(keep_within="1y"), s, now=utc("2030-01-01 00:00")) == [
        "2028-02-29 10:00", "2027-03-01 10:00:01"]


def test_within_ignores_future_snapshots_for_the_newest_but_keeps_them():
    now = utc("2020-06-01 00:00")
    s = snaps("2030-01-01 00:00", "2020-05-31 00:00", "2020-05-30 12:00", "2020-05-29 00:00")
    assert kept(Policy(keep_within="1d"), s, now=now) == [
        "2030-01-01 00:00", "2020-05-31 00:00", "2020-05-30 12:00"]
    # Every snapshot in the future: there is no newest, so every one is within (restic).
    assert kept(Policy(keep_within="1d"), s, now=utc("2000-01-01 00:00")) == [
        "2030-01-01 00:00", "2020-05-31 00:00", "2020-05-30 12:00", "2020-05-29 00:00"]


def test_within_reaching_before_year_one_keeps_everything():
    s = snaps("2020-01-01 00:00", "0001-01-02 00:00")
    assert kept(Policy(keep_within="5000y"), s) == ["2020-01-01 00:00", "0001-01-02 00:00"]


# --- pins, ties, counts ---

def test_pins_by_name_or_id_keep_exactly_those():
    s = snaps("2020-01-03 00:00", "2020-01-02 00:00", "2020-01-01 00:00")
    assert why(Policy(keep_snapshots=("2020-01-02 00:00",)), s) == {
        "2020-01-02 00:00": ("pinned",)}
    assert why(Policy(keep_last=1, keep_snapshots=("3", "2020-01-03 00:00")), s) == {
        "2020-01-03 00:00": ("pinned", "last 1"), "2020-01-01 00:00": ("pinned",)}


def test_a_pin_naming_no_snapshot_is_refused():
    s = snaps("2020-01-03 00:00")
    with pytest.raises(UsageError) as excinfo:
        apply(Policy(keep_last=3, keep_snapshots=("2020-01-03 00:01",)), s, NOW, UTC)
    assert one_line(excinfo) == "keep_snapshots: no snapshot named '2020-01-03 00:01'"


def test_equal_times_count_the_higher_id_as_newer_whatever_the_input_order():
    t = utc("2020-01-01 10:00")
    s = [Snapshot(7, "b", t), Snapshot(9, "c", t), Snapshot(3, "a", t)]
    for order in (s, s[::-1], s[1:] + s[:1]):
        decisions = apply(Policy(keep_last=1, keep_hourly=1), order, NOW, UTC)
        assert [(d.name, d.reasons) for d in decisions] == [
            ("c", ("last 1", "hourly 1")), ("b", ()), ("a", ())]


def test_a_bucket_keeps_its_newest_snapshot_once():
    s = snaps("2020-01-02 23:59:59", "2020-01-02 00:00", "2020-01-01 23:59:59",
              "2020-01-01 00:00:00", "2019-12-31 12:00")
    assert why(Policy(keep_daily=2), s) == {
        "2020-01-02 23:59:59": ("daily 2",), "2020-01-01 23:59:59": ("daily 2",)}
    # With count left at the oldest snapshot, restic keeps it too, as "oldest".
    assert why(Policy(keep_daily=10), s)["2019-12-31 12:00"] == ("daily 10",)
    assert why(Policy(keep_monthly=10), s) == {
        "2020-01-02 23:59:59": ("monthly 10",), "2019-12-31 12:00": ("monthly 10",)}
    assert why(Policy(keep_yearly=10), s[:4]) == {
        "2020-01-02 23:59:59": ("yearly 10",), "2020-01-01 00:00:00": ("oldest yearly 10",)}


def test_iso_weeks_span_the_new_year():
    # Thursday 31 December 2026 and Sunday 3 January 2027 are both in ISO week 2026-W53.
    s = snaps("2027-01-04 09:00", "2027-01-03 09:00", "2026-12-31 09:00", "2026-12-27 09:00")
    assert kept(Policy(keep_weekly=3), s) == [
        "2027-01-04 09:00", "2027-01-03 09:00", "2026-12-27 09:00"]
    assert kept(Policy(keep_yearly=2), s) == ["2027-01-04 09:00", "2026-12-31 09:00"]


def test_unlimited_keeps_every_bucket():
    s = snaps(*(f"2020-01-{d:02d} {h:02d}:00" for d in range(9, 0, -1) for h in (18, 6)))
    assert why(Policy(keep_daily=UNLIMITED), s) == {
        **{f"2020-01-{d:02d} 18:00": ("daily unlimited",) for d in range(9, 0, -1)},
        # An unlimited count always has count left, so the oldest is kept too (restic).
        "2020-01-01 06:00": ("oldest daily unlimited",)}
    assert Policy(keep_daily="unlimited") == Policy(keep_daily=-1)


def test_int_nanoseconds_and_naive_local_times_are_accepted():
    t = utc("2020-01-01 10:00:00.5")
    ns = 1577872800_500_000_000
    a = apply(Policy(keep_last=1), [Snapshot(1, "a", ns)], NOW, UTC)
    b = apply(Policy(keep_last=1), [Snapshot(1, "a", t)], NOW, UTC)
    c = apply(Policy(keep_last=1), [Snapshot(1, "a", t.replace(tzinfo=None))], NOW, UTC)
    assert a == b == c and a[0].time == t


# --- local time and DST (Europe/Berlin: CET +1, CEST +2) ---

def test_days_are_local_days():
    # 22:30 UTC on 1 July is 00:30 on 2 July in Berlin: the same day as 06:00 UTC on 2 July.
    s = snaps("2026-07-02 06:00", "2026-07-01 22:30", "2026-07-01 10:00")
    assert kept(Policy(keep_daily=2), s, tz=BERLIN) == ["2026-07-02 06:00", "2026-07-01 10:00"]
    assert kept(Policy(keep_daily=2), s, tz=UTC) == ["2026-07-02 06:00", "2026-07-01 22:30"]


def test_the_repeated_hour_when_dst_ends_is_one_bucket():
    # 25 October 2026: 03:00 CEST becomes 02:00 CET, so 02:30 happens at 00:30 and 01:30 UTC.
    s = snaps("2026-10-25 02:30", "2026-10-25 01:30", "2026-10-25 00:30", "2026-10-24 23:30")
    decisions = apply(Policy(keep_hourly=3), s, NOW, BERLIN)
    assert [(d.time.strftime("%H:%M%z"), d.keep) for d in decisions] == [
        ("03:30+0100", True), ("02:30+0100", True), ("02:30+0200", False),
        ("01:30+0200", True)]
    assert kept(Policy(keep_hourly=3), s, tz=UTC) == [
        "2026-10-25 02:30", "2026-10-25 01:30", "2026-10-25 00:30"]


def test_within_days_are_wall_clock_days_across_dst():
    # 29 March 2026: 02:00 CET becomes 03:00 CEST. A day back from 12:00 CEST on the 29th is
    # 12:00 CET on the 28th, 23 hours earlier; "24h" is 24 elapsed hours.
    s = snaps("2026-03-29 10:00", "2026-03-28 11:30", "2026-03-28 10:30")
    assert kept(Policy(keep_within="1d"), s, tz=BERLIN) == [
        "2026-03-29 10:00", "2026-03-28 11:30"]
    assert kept(Policy(keep_within="24h"), s, tz=BERLIN) == [
        "2026-03-29 10:00", "2026-03-28 11:30", "2026-03-28 10:30"]
    assert kept(Policy(keep_within="1d"), s, tz=UTC) == kept(Policy(keep_within="24h"), s)


@pytest.fixture
def system_zone_berlin(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_default_zone_is_the_systems(system_zone_berlin):
    s = snaps("2026-07-02 06:00", "2026-07-01 22:30", "2026-07-01 10:00")
    assert kept(Policy(keep_daily=2), s, tz=None) == ["2026-07-02 06:00", "2026-07-01 10:00"]
    s = snaps("2026-03-29 10:00", "2026-03-28 11:30", "2026-03-28 10:30")
    assert kept(Policy(keep_within="1d"), s, tz=None) == ["2026-03-29 10:00", "2026-03-28 11:30"]
    # Naive times are the system's wall clock: 02:30 CEST on 25 October is 00:30 UTC.
    d = apply(Policy(keep_last=1), [Snapshot(1, "a", datetime(2026, 10, 25, 2, 30))], NOW)
    assert d[0].time == utc("2026-10-25 00:30")


# --- refusals and the policy's own checks ---

@pytest.mark.parametrize("policy", [
    Policy(), Policy(keep_last=0, keep_daily=0), Policy(keep_versions=5, forget_after_backup=True)])
def test_an_empty_policy_is_refused(policy):
    assert policy.empty
    with pytest.raises(UsageError) as excinfo:
        apply(policy, restic_snapshots(), NOW, UTC)
    assert "refusing to forget every snapshot" in one_line(excinfo)


@pytest.mark.parametrize("kwargs, problem", [
    ({"keep_daily": -2}, "keep_daily must be a whole number >= 0 or 'unlimited', not -2"),
    ({"keep_last": True}, "keep_last must be a whole number"),
    ({"keep_hourly": "lots"}, "keep_hourly must be a whole number or 'unlimited', not 'lots'"),
    ({"keep_versions": 2.5}, "keep_versions must be a whole number"),
    ({"keep_within": "0d"}, "keep_within: duration '0d' is zero"),
    ({"keep_within": Duration()}, "keep_within must be a duration"),
    ({"keep_within": Duration(days=-1)}, "keep_within must be a duration"),
    ({"keep_snapshots": "2020-01-01_000000"}, "keep_snapshots must be a list"),
    ({"keep_snapshots": ("",)}, "keep_snapshots must be a list"),
    ({"forget_after_backup": 1}, "forget_after_backup must be true or false"),
])
def test_policy_refuses_bad_values(kwargs, problem):
    with pytest.raises(UsageError) as excinfo:
        Policy(**kwargs)
    assert problem in one_line(excinfo)


def test_parse_count():
    assert [parse_count(v) for v in ("0", " 7 ", "unlimited", "-1", 3, -1)] == [
        0, 7, -1, -1, 3, -1]
    with pytest.raises(UsageError):
        parse_count("-5")


# --- [retention] in the config ---

WHERE = "config.toml [retention]"


def test_policy_from_dict():
    doc = tomllib.loads("""
        keep_hourly = 24
        keep_daily = 31
        keep_weekly = "unlimited"
        keep_within = "2w3d"
        keep_snapshots = ["2026-01-01_120000"]
        keep_versions = 5
        forget_after_backup = true
    """)
    assert policy_from_dict(doc, WHERE) == Policy(
        keep_hourly=24, keep_daily=31, keep_weekly=-1, keep_within=Duration(weeks=2, days=3),
        keep_snapshots=("2026-01-01_120000",), keep_versions=5, forget_after_backup=True)
    assert policy_from_dict({}, WHERE) == Policy()


@pytest.mark.parametrize("toml, problem", [
    ("keep_dayly = 7", "unknown key 'keep_dayly' (known: keep_last, "),
    ("keep_daily = 1.5", "keep_daily must be a whole number >= 0 or 'unlimited', not 1.5"),
    ("keep_daily = -3", "keep_daily must be a whole number >= 0"),
    ("keep_within = 14", "keep_within must be a duration such as 2w3d, not 14"),
    ("keep_within = '2 weeks'", "keep_within: duration '2 weeks': unknown unit ' ' after 2"),
    ("keep_snapshots = 'x'", "keep_snapshots must be a list"),
    ("keep_snapshots = [42]", "keep_snapshots must be a list of snapshot names or ids"),
    ("forget_after_backup = 'yes'", "forget_after_backup must be true or false"),
    ("keep_versions = 'all'", "keep_versions must be a whole number or 'unlimited'"),
])
def test_policy_from_dict_refuses(toml, problem):
    with pytest.raises(ConfigError) as excinfo:
        policy_from_dict(tomllib.loads(toml), WHERE)
    message = one_line(excinfo)
    assert message.startswith(WHERE + ": ") and problem in message


def test_policy_from_dict_refuses_a_non_table():
    with pytest.raises(ConfigError) as excinfo:
        policy_from_dict(["keep_daily"], WHERE)
    assert one_line(excinfo).startswith(WHERE + ": must be a table")


# --- the Time Machine preset ---

def test_time_machine_preset():
    """Hourly backups for 90 days: every hour of the last day, the newest of each of the last
    31 days, the newest of every ISO week and, as restic does for an unlimited count, the
    oldest snapshot; nothing else."""
    assert TIME_MACHINE == PRESETS["time-machine"] == Policy(
        keep_hourly=24, keep_daily=31, keep_weekly=UNLIMITED)
    assert TIME_MACHINE.describe() == "keep 24 hourly, 31 daily, unlimited weekly"
    start = datetime(2026, 9, 1, tzinfo=UTC)
    hours = [start + timedelta(hours=n) for n in range(90 * 24)]
    snapshots = [Snapshot(n, t.isoformat(), t) for n, t in enumerate(hours)]
    day_ends = [t for t in hours if t.hour == 23]
    week_ends = {}
    for t in hours:
        week_ends[t.isocalendar()[:2]] = t
    expected = (set(hours[-24:]) | set(day_ends[-31:]) | set(week_ends.values())
                | {hours[0]})
    got = {d.time for d in apply(TIME_MACHINE, snapshots, NOW, UTC) if d.keep}
    assert got == expected
    # 1 September to 29 November 2026 (a Sunday) is 13 ISO weeks; the ends of the last 5
    # are among the 31 days' ends, and the newest day's end is among the 24 hours.
    assert len(got) == 24 + 30 + 8 + 1


# --- properties for any input ---

policies = st.builds(
    Policy,
    keep_last=st.sampled_from([0, 0, 1, 3, -1]), keep_hourly=st.sampled_from([0, 0, 2, -1]),
    keep_daily=st.sampled_from([0, 0, 1, 7, -1]), keep_weekly=st.sampled_from([0, 0, 2]),
    keep_monthly=st.sampled_from([0, 0, 3]), keep_yearly=st.sampled_from([0, 0, 2]),
    keep_within=st.sampled_from([None, None, "1d", "2w", "1m3h"]),
).filter(lambda p: not p.empty)
instants = st.integers(0, 3 * 365 * 24).map(lambda h: utc("2024-01-01 00:00")
                                            + timedelta(hours=h, minutes=h % 7))


@settings(max_examples=200, deadline=None)
@given(policies, st.lists(instants, min_size=1, max_size=40), st.randoms())
def test_every_snapshot_decided_once_never_all_removed_order_free(policy, times, rnd):
    snapshots = [Snapshot(i, str(i), t) for i, t in enumerate(times)]
    decisions = apply(policy, snapshots, NOW, BERLIN)
    assert sorted(d.id for d in decisions) == list(range(len(times)))
    assert [(d.time, d.id) for d in decisions] == sorted(((d.time, d.id) for d in decisions),
                                                         reverse=True)
    assert decisions[0].keep and all(d.keep == bool(d.reasons) for d in decisions)
    if policy.keep_last > 0:
        assert sum("last" in " ".join(d.reasons) for d in decisions) == min(policy.keep_last,
                                                                          len(times))
    shuffled = snapshots[:]
    rnd.shuffle(shuffled)
    assert apply(policy, shuffled, NOW, BERLIN) == decisions
