"""Reading the region's change feed (written by settle, see :mod:`shared.ingest.settle`).

Entries live in hour buckets, each split into :data:`shared.index.keys.FEED_SHARDS` partitions;
a window is read bucket by bucket (the shards of a bucket concurrently, merged by sequence; empty
hours skipped in one partition-range query), so a page costs a few queries whatever the feed's
size. Entries newer than ``horizon`` seconds are not served yet: a sequence is taken just before
its entry is written, so an entry with a lower sequence may still be in flight for a moment;
holding the newest ones back keeps the order a reader sees from ever changing under it.

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
            horizon: float, after: int | None = None, page: int = 1000) -> Iterator[FeedEntry]:
    """Entries with start <= time < end (both optional) and, with ``after``, a sequence above it, in
    sequence order, up to the horizon. ``after`` seeks: reading starts at the hour bucket of that
    sequence, not at the window's start. Read lazily, at most ``page`` entries per shard query, so a
    reader holds one page whatever the window holds."""
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
    low = seq_of_time(begin.timestamp())
    if after is not None:
        low = max(low, after + 1)
        begin = max(begin, dt.datetime.fromtimestamp(time_of_seq(after), dt.UTC))
    if begin >= stop:
        return
    last = keys.feed_bucket(stop)
    bucket = index.first_feed_bucket(keys.feed_bucket(begin), last)
    while bucket is not None:
        lo = low
        while True:
            got = index.feed_bucket(bucket, lo, high, limit=page)
            yield from got
            if len(got) < page:
                break
            lo = got[-1].seq + 1
        following = _bucket_time(bucket) + _HOUR
        bucket = index.first_feed_bucket(keys.feed_bucket(following), last) if following < stop else None


def _bucket_time(bucket: str) -> dt.datetime:
    return dt.datetime.strptime(bucket, "%Y%m%d%H").replace(tzinfo=dt.UTC)


def latest(index: IndexStore, *, horizon: float) -> FeedEntry | None:
    """The newest entry (servable now). The last hour bucket holding entries is found by bisection over
    partition ranges (one row each: about log2 of the feed's age in hours, never a read per empty hour);
    inside it, the last second, then the last minute, then the rest (a busy hour is never read whole to
    find its last entry). A bucket whose entries are all within the horizon sends the search earlier."""
    now = dt.datetime.now(dt.UTC)
    stop = now - dt.timedelta(seconds=horizon)
    head = index.feed_head()
    if head is None:
        return None
    high = seq_of_time(stop.timestamp() + 0.001)
    hi = stop.replace(minute=0, second=0, microsecond=0)
    while hi >= head:
        bucket = _last_bucket(index, head, hi)
        if bucket is None:
            return None
        floor = seq_of_time(bucket.timestamp())
        top = min(high, seq_of_time((bucket + _HOUR).timestamp()))
        for window in _LATEST_WINDOWS:
            found = index.feed_bucket(keys.feed_bucket(bucket), max(floor, top - window), top)
            if found:
                return found[-1]
            if top - window <= floor:
                break
        hi = bucket - _HOUR
    return None


def _last_bucket(index: IndexStore, lo: dt.datetime, hi: dt.datetime) -> dt.datetime | None:
    """The latest hour bucket from ``lo`` to ``hi`` holding an entry (bisection on "is there one at or
    after this hour")."""
    last = keys.feed_bucket(hi)
    if index.first_feed_bucket(keys.feed_bucket(lo), last) is None:
        return None
    hours = int((hi - lo) / _HOUR)
    low, up = 0, hours  # invariant: an entry lies in hour lo + low or later
    while low < up:
        mid = (low + up + 1) // 2
        if index.first_feed_bucket(keys.feed_bucket(lo + mid * _HOUR), last) is not None:
            low = mid
        else:
            up = mid - 1
    return lo + low * _HOUR


#: Sequence spans :func:`latest` looks back through inside a bucket: a second, a minute, the hour.
_LATEST_WINDOWS = (seq_of_time(1), seq_of_time(60), seq_of_time(3600))


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
