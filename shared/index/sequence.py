"""Sequence numbers for changes: increasing, unique per region with overwhelming probability,
and exact in JavaScript (below 2**53, for viewers and dashboards that read the change feed).

``seq = milliseconds since the epoch * 1000 + n``: a process starts ``n`` at a random point of
its millisecond (so two processes rarely meet) and counts up; it never repeats or goes back,
even if the clock does. Order follows time, which is what change-feed windows rely on.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable


class Sequencer:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self._lock = threading.Lock()
        self._last = 0
        self._offset = random.randrange(500)  # noqa: S311 - spreading, not security

    def next(self) -> int:
        with self._lock:
            now = int(self._clock() * 1000) * 1000 + self._offset
            self._last = max(self._last + 1, now)
            return self._last


def seq_of_time(seconds: float) -> int:
    """The smallest sequence a change at ``seconds`` (epoch) can have."""
    return int(seconds * 1000) * 1000


def time_of_seq(seq: int) -> float:
    return (seq // 1000) / 1000.0
