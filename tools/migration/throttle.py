"""The instances/s limit of a migration: a token bucket shared by its workers.

A C-MOVE hands a whole study to the source, which sends it at its own pace, so a study takes its
instance count from the bucket before it is moved: over a run the rate holds on average, and one
study may go faster than the rate for a moment (a study larger than a second's worth waits until its
instances are paid for). A C-GET takes one token per instance as it arrives, which paces the source
itself: the next instance is asked for only when this one is answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Throttle:
    """``rate`` instances per second (0 or None: unlimited), with a burst of one second's worth."""

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = float(rate or 0)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.rate
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, n: int = 1) -> float:
        """Take ``n`` tokens, waiting until they are paid for; returns the seconds waited."""
        if self.rate <= 0 or n <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n  # may go below zero: the debt is what this caller waits for
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait
