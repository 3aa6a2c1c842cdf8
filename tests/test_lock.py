"""The writer lock (btfs.lock): asked without being taken, dropped by the kernel when its
holder dies, and exclusive with the flock older btfs versions took."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from btfs.errors import LockedError
from btfs.lock import WriterLock

_HOLD = ("import sys, time\n"
         "from pathlib import Path\n"
         "from btfs.lock import WriterLock\n"
         "WriterLock(Path(sys.argv[1])).acquire()\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n")


def test_is_held_asks_without_taking(tmp_path):
    path = tmp_path / "writer.lock"
    reader = WriterLock(path)
    assert not reader.is_held()  # no file yet: no writer ever ran
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert reader.is_held()
        with pytest.raises(LockedError, match=rf"\(pid {holder.pid}\)"):
            WriterLock(path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    assert not reader.is_held()  # the kernel dropped it with its holder
    with WriterLock(path) as writer:
        writer.acquire()
        for _ in range(100):  # a reader asking never makes the writer lose it
            assert reader.is_held()
        with pytest.raises(LockedError):
            WriterLock(path).acquire()
    assert not reader.is_held()


def test_a_writer_of_an_older_btfs_holding_an_flock_is_respected(tmp_path):
    path = tmp_path / "writer.lock"
    old = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(old, fcntl.LOCK_EX)
        os.pwrite(old, b"4242\n", 0)
        with pytest.raises(LockedError, match=r"\(pid 4242\)"):
            WriterLock(path).acquire()
    finally:
        os.close(old)
    with WriterLock(path) as writer:
        writer.acquire()
        old = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(old)
