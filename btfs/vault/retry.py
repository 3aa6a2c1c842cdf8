"""Retrying a remote vault's requests: exponential backoff with full jitter, in a budget.

A request that fails with a temporary error (the caller's `transient` says which) is tried
again after a random delay in [0, min(cap, base * 2**attempt)) ("full jitter": clients that
failed together do not come back together), until the next delay would end past the
budget; then the last error is raised. Permanent errors are raised at once.

Knows nothing about S3 or the network: time, sleep and randomness are injected, so the
policy is tested without either. Thread-safe: a policy holds no state between calls.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    budget: float = 900.0  # seconds from the first attempt after which no retry starts
    base: float = 0.5  # seconds: the first delay is drawn from [0, base)
    cap: float = 60.0  # seconds: no delay is drawn from a longer interval
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    random: Callable[[], float] = field(default=random.random)

    def delay(self, attempt: int) -> float:
        """The wait before retry number `attempt` (0 for the first retry)."""
        return self.random() * min(self.cap, self.base * 2 ** min(attempt, 32))

    def call(self, what: str, fn: Callable[[], T], transient: Callable[[BaseException], bool],
             on_retry: Callable[[BaseException], None] | None = None) -> T:
        """fn(), tried again while it raises errors `transient` accepts and the budget
        lasts. `on_retry(error)` runs before each wait (e.g. to slow other requests)."""
        start = self.clock()
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as e:
                if not transient(e):
                    raise
                wait = self.delay(attempt)
                if self.clock() + wait - start > self.budget:
                    log.debug("%s: giving up after %d attempts: %s", what, attempt + 1, e)
                    raise
                log.info("%s: %s; retry %d in %.1fs", what, e, attempt + 1, wait)
                if on_retry is not None:
                    on_retry(e)
                self.sleep(wait)
                attempt += 1
