"""The daemon's scheduling model (btfs.watch.settle) and its [watch] settings, with a fake
clock: no inotify, no threads."""

from __future__ import annotations

import pytest

from btfs.engine.scanner import Subtree
from btfs.errors import ConfigError
from btfs.watch import settle as settle_mod
from btfs.watch.settings import DEFAULT_SKIP, WatchSettings, watch_settings_from_dict
from btfs.watch.settle import Settler

S = WatchSettings(settle=10, settle_max=60, min_interval=60, scan_interval=7200)


def test_a_path_waits_until_it_has_been_quiet_for_settle():
    s = Settler(S)
    s.touch(b"/t/f", 0)
    s.touch(b"/t/f", 5)
    assert s.take(14) is None
    assert s.next_due() == 15
    batch = s.take(15)
    assert batch == settle_mod.Batch(False, (Subtree(b"/t/f", False),), 0)
    assert s.pending == 0 and s.take(100) is None


def test_a_path_changing_all_the_time_is_taken_after_settle_max():
    s = Settler(S)
    for t in range(0, 60, 2):
        s.touch(b"/t/log", t)
        assert s.take(t) is None
    s.touch(b"/t/log", 60)
    assert s.take(60).subtrees == (Subtree(b"/t/log", False),)


def test_backups_start_at_most_once_per_min_interval_and_take_all_settled():
    s = Settler(S)
    s.touch(b"/t/a", 0)
    assert s.take(10).subtrees == (Subtree(b"/t/a", False),)
    for i in range(5000):  # a burst right after
        s.touch(b"/t/burst/%d" % i, 11 + i / 1000)
    s.touch(b"/t/late", 40)
    assert s.take(59) is None  # settled, but the last backup started at 10
    assert s.next_due() == 70
    batch = s.take(70)
    assert len(batch.subtrees) == 5001 and batch.since == 11
    assert s.pending == 0


def test_unsettled_paths_stay_pending():
    s = Settler(S)
    s.touch(b"/t/done", 0)
    s.touch(b"/t/writing", 8)
    assert s.take(10).subtrees == (Subtree(b"/t/done", False),)
    assert s.pending == 1
    s.touch(b"/t/writing", 20)
    assert s.take(75).subtrees == (Subtree(b"/t/writing", False),)


def test_a_deep_path_absorbs_what_lies_below_it():
    s = Settler(S)
    s.touch(b"/t/new/x", 0)
    s.touch(b"/t/new", 0, deep=True)
    s.touch(b"/t/newer", 0)
    assert s.take(10).subtrees == (Subtree(b"/t/new", True), Subtree(b"/t/newer", False))


def test_a_full_scan_replaces_paths_and_waits_to_settle_unless_at_once():
    s = Settler(S)
    s.touch(b"/t/a", 0)
    s.need_full(5)  # an overflow: let the burst finish first
    s.touch(b"/t/b", 8)
    assert s.pending == 1 and s.take(17) is None
    assert s.take(18) == settle_mod.Batch(True, (), 0)
    s2 = Settler(S)
    s2.need_full(100, at_once=True)  # start-up, the scan interval
    assert s2.take(100).full


def test_too_many_paths_become_one_full_scan(monkeypatch):
    monkeypatch.setattr(settle_mod, "MAX_PENDING", 10)
    s = Settler(S)
    for i in range(11):
        s.touch(b"/t/%d" % i, 0)
    assert s.full_pending and s.pending == 1
    assert s.take(10).full


def test_a_failed_batch_is_pending_again_and_due_at_once():
    s = Settler(S)
    s.touch(b"/t/a", 0)
    batch = s.take(10)
    s.give_back(batch)
    s.last_start = None  # the daemon's backoff decides when to retry, not min_interval
    assert s.take(11) == batch
    s.need_full(20, at_once=True)
    s.last_start = None
    full = s.take(20)
    s.give_back(full)
    s.last_start = None
    assert s.take(21).full


def test_force_takes_everything_now():
    s = Settler(S)
    s.touch(b"/t/a", 0)
    s.touch(b"/t/b", 1)
    assert len(s.take(2, force=True).subtrees) == 2


def test_settings_from_the_watch_table():
    assert watch_settings_from_dict(None) == WatchSettings()
    assert WatchSettings().skip == DEFAULT_SKIP
    got = watch_settings_from_dict({"settle": 1, "settle_max": 2.5, "skip": ["*.tmp"]})
    assert (got.settle, got.settle_max, got.skip) == (1.0, 2.5, ("*.tmp",))
    for bad, message in (({"setle": 1}, "unknown key 'setle'"),
                         ({"settle": 0}, "positive number"),
                         ({"settle": True}, "positive number"),
                         ({"skip": "*.tmp"}, "list of patterns"),
                         ({"settle": 20, "settle_max": 10}, "settle_max")):
        with pytest.raises(ConfigError, match=message):
            watch_settings_from_dict(bad)


def test_a_burst_read_over_a_moment_makes_one_backup():
    # The daemon reads a burst's events in pieces: its paths settle up to a moment apart.
    # The backup waits for those due within a quarter of settle of the first, so the
    # burst is one snapshot, not two min_interval apart; a later change is not waited for.
    s = Settler(S)
    s.touch(b"/t/a", 0)
    s.touch(b"/t/b", 0.4)
    s.touch(b"/t/c", 0.9)
    s.touch(b"/t/late", 5)
    assert s.next_due() == 10.9
    assert s.take(10) is None
    assert s.take(10.9).subtrees == tuple(Subtree(p, False) for p in (b"/t/a", b"/t/b", b"/t/c"))
    assert s.pending == 1
