"""Shared limits on a remote vault's uploads: how many at once, and how many bytes a second.

`AdaptiveLimit` is the number of uploads allowed in flight: halved when the server says
"slow down" (S3's 503 SlowDown), grown back by one per success, never above its maximum
nor below one. `TokenBucket` caps bytes per second for everything that takes from it; a
vault holds one, shared by all its upload threads, so `--limit-upload` is one limit for
the process. Both are thread-safe and block only the thread that must wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class AdaptiveLimit:
    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            while self.in_flight >= self.limit:
                self._cond.wait()
            self.in_flight += 1

    def release(self) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify()

    def slow_down(self) -> None:
        with self._cond:
            self.limit = max(1, self.limit // 2)

    def success(self) -> None:
        with self._cond:
            if self.limit < self.maximum:
                self.limit += 1
                self._cond.notify()

    def __enter__(self) -> AdaptiveLimit:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class TokenBucket:
    """`rate` bytes per second, with bursts of up to one second's worth."""

    def __init__(self, rate: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(rate)
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Wait until `n` bytes may go. Takes the tokens at once (possibly into debt), so
        threads waiting together are served in turn and the total rate holds."""
        if self.rate <= 0 or n <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.rate), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
