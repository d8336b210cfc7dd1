"""Arrival marks: what a region archived, by hour, in a form that replicates with the archive.

The peer region learns of new instances from this region's change feed while this region is up
(:mod:`shared.ingest.follow`). When this region is lost, the peer must find what had replicated without
it, and quickly: listing a whole archive container takes one request per 5,000 names, hours for a
multi-year archive. So before its first archive write of a study in an hour, each process writes an
empty blob ``.arrivals/<hour>/<study>`` into the region's own archive container
(:func:`shared.storage.layout.arrival_path`). It replicates with the files, and ``reindex --since T``
(:mod:`shared.ingest.reindex`) lists the marks of the hours since ``T`` (a request per 5,000 studies),
then the marked studies (a request per 5,000 instances), and indexes what was written since ``T``:
work in proportion to the window, not to the archive.

Cost: one blob write per study, hour and process (a 60-slice CT study: one write beside 180 requests;
a one-image study: one beside about five), only in a region of a pair. The mark is written before the
archive copy, so in the source account's change feed, which object replication works from, it comes
first; Azure documents no order of replication, so a study's first file of an hour could in principle
replicate a moment before its mark. If the region is lost in that moment, only a full ``reindex`` (which
lists everything) finds that file: docs/deploy.md's runbook says when to run one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from shared.ports import BlobStore
from shared.storage import layout

#: Marks remembered per process (a long-running worker forgets the oldest hours first).
_REMEMBER: Final = 100_000
#: A mark may be filed this long before the write it announces (the hour can turn in between).
_EARLY: Final = 60.0


class Arrivals:
    """Writes a study's arrival mark once per hour per process (:meth:`mark`); a no-op in one region."""

    def __init__(self, blobs: BlobStore, *, enabled: bool, clock: Callable[[], float] = time.time) -> None:
        self.blobs = blobs
        self.enabled = enabled
        self.clock = clock
        self._done: dict[tuple[str, str], None] = {}
        self._lock = threading.Lock()

    def mark(self, study: str) -> None:
        """Before this region writes an instance of ``study`` into its archive."""
        if not self.enabled:
            return
        hour = layout.arrival_hour(self.clock())
        key = (hour, study)
        with self._lock:
            if key in self._done:
                return
        self.blobs.write(layout.ARCHIVE, layout.arrival_path(hour, study), b"")
        with self._lock:
            self._done[key] = None
            while len(self._done) > _REMEMBER:
                self._done.pop(next(iter(self._done)))


def hours(since: float, until: float) -> list[str]:
    """The hours whose marks can announce a write at or after ``since`` (up to ``until``)."""
    start = int((since - _EARLY) // 3600) * 3600
    return [layout.arrival_hour(t) for t in range(start, int(until) + 1, 3600)]


def studies_since(store: BlobStore, container: str, since: float, until: float | None = None) -> list[str]:
    """Studies with an arrival mark in physical ``container`` (of ``store``, unmapped) since ``since``."""
    found: dict[str, None] = {}
    for hour in hours(since, until if until is not None else time.time() + _EARLY):
        for item in store.list(container, layout.arrivals_prefix(hour)):
            found[item.name.rsplit("/", 1)[-1]] = None
    return list(found)
