"""Reading the region's change feed (written by settle, see :mod:`shared.ingest.settle`).

Entries live in hour buckets, each split into :data:`shared.index.keys.FEED_SHARDS` partitions;
a window is read bucket by bucket (the shards of a bucket concurrently, merged by sequence), so
a page costs a few queries whatever the feed's size. Entries newer than ``horizon`` seconds are
not served yet: a sequence is taken just before its entry is written, so an entry with a lower
sequence may still be in flight for a moment; holding the newest ones back keeps the order a
reader sees from ever changing under it.

A reader that must see every entry (the peer region's follower, :mod:`shared.ingest.follow`) cannot rely
on a short horizon: a write can be slow (throttling, retries). Settle therefore promises
:data:`COMMIT_WITHIN_SECONDS`: an entry it marks published was committed within that time of its
sequence (a slower write is listed again under fresh sequences, so an entry may appear twice but is
never missing). A reader that re-reads the last :data:`COMMIT_WITHIN_SECONDS` (plus clock skew) on every pass
and skips what it has handled misses nothing; :func:`after` is its bounded read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from shared.index import keys
from shared.index.sequence import seq_of_time, time_of_seq
from shared.index.store import FeedEntry, IndexStore

_HOUR = dt.timedelta(hours=1)
#: Settle's promise: an entry it marks published was committed within this many seconds of its sequence.
COMMIT_WITHIN_SECONDS = 30.0


def entries(index: IndexStore, start: dt.datetime | None, end: dt.datetime | None, *,
            horizon: float) -> Iterator[FeedEntry]:
    """Entries with start <= time < end (both optional), in sequence order, up to the horizon."""
    now = dt.datetime.now(dt.UTC)
    limit = now - dt.timedelta(seconds=horizon)
    if end is not None and end <= limit:
        stop, high = end, seq_of_time(end.timestamp())  # endTime is exclusive
    else:  # up to the horizon, its own millisecond included (a sequence is ms * 1000 + a counter)
        stop, high = limit, seq_of_time(limit.timestamp() + 0.001)
    head = index.feed_head()
    if head is None:
        return
    begin = max(start, head) if start is not None else head
    if begin >= stop:
        return
    low = seq_of_time(begin.timestamp())
    bucket = begin.replace(minute=0, second=0, microsecond=0)
    while bucket < stop:
        yield from index.feed_bucket(keys.feed_bucket(bucket), low, high)
        bucket += _HOUR


def latest(index: IndexStore, *, horizon: float) -> FeedEntry | None:
    """The newest entry (servable now), searching back bucket by bucket."""
    now = dt.datetime.now(dt.UTC)
    stop = now - dt.timedelta(seconds=horizon)
    head = index.feed_head()
    if head is None:
        return None
    bucket = stop.replace(minute=0, second=0, microsecond=0)
    high = seq_of_time(stop.timestamp() + 0.001)
    while bucket >= head:
        found = index.feed_bucket(keys.feed_bucket(bucket), 0, high)
        if found:
            return found[-1]
        bucket -= _HOUR
    return None


def after(index: IndexStore, low_seq: int, high_seq: int, limit: int) -> list[FeedEntry]:
    """Up to ``limit`` entries with ``low_seq < seq < high_seq``, in sequence order, with no horizon.

    Bounded: each hour bucket is read at most ``limit`` rows per shard (one request each), and the read
    stops at the first bucket that fills the page, so a reader far behind costs a few queries per step,
    not the whole backlog in memory."""
    head = index.feed_head()
    if head is None or high_seq <= low_seq + 1:
        return []
    begin = max(dt.datetime.fromtimestamp(time_of_seq(low_seq), dt.UTC), head)
    stop = dt.datetime.fromtimestamp(time_of_seq(high_seq), dt.UTC)
    bucket = begin.replace(minute=0, second=0, microsecond=0)
    found: list[FeedEntry] = []
    while bucket <= stop and len(found) < limit:
        found += index.feed_bucket(keys.feed_bucket(bucket), low_seq + 1, high_seq, limit=limit)
        bucket += _HOUR
    return sorted(found, key=lambda e: e.seq)[:limit]
