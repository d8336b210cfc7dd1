"""Reading the region's change feed (written by settle, see :mod:`shared.ingest.settle`).

Entries live in hour buckets, each split into :data:`shared.index.keys.FEED_SHARDS` partitions;
a window is read bucket by bucket (the shards of a bucket concurrently, merged by sequence), so
a page costs a few queries whatever the feed's size. Entries newer than ``horizon`` seconds are
not served yet: a sequence is taken just before its entry is written, so an entry with a lower
sequence may still be in flight for a moment; holding the newest ones back keeps the order a
reader sees from ever changing under it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from shared.index import keys
from shared.index.sequence import seq_of_time, time_of_seq
from shared.index.store import FeedEntry, IndexStore

_HOUR = dt.timedelta(hours=1)


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
    bucket = begin.replace(minute=0, second=0, microsecond=0)
    while bucket < stop:
        lo = low
        while True:
            got = index.feed_bucket(keys.feed_bucket(bucket), lo, high, limit=page)
            yield from got
            if len(got) < page:
                break
            lo = got[-1].seq + 1
        bucket += _HOUR


def latest(index: IndexStore, *, horizon: float) -> FeedEntry | None:
    """The newest entry (servable now), searching back bucket by bucket; inside a bucket, the last second,
    then the last minute, then the rest (a busy hour is never read whole to find its last entry)."""
    now = dt.datetime.now(dt.UTC)
    stop = now - dt.timedelta(seconds=horizon)
    head = index.feed_head()
    if head is None:
        return None
    bucket = stop.replace(minute=0, second=0, microsecond=0)
    high = seq_of_time(stop.timestamp() + 0.001)
    while bucket >= head:
        floor = seq_of_time(bucket.timestamp())
        top = min(high, seq_of_time((bucket + _HOUR).timestamp()))
        for window in _LATEST_WINDOWS:
            found = index.feed_bucket(keys.feed_bucket(bucket), max(floor, top - window), top)
            if found:
                return found[-1]
            if top - window <= floor:
                break
        bucket -= _HOUR
    return None


#: Sequence spans :func:`latest` looks back through inside a bucket: a second, a minute, the hour.
_LATEST_WINDOWS = (seq_of_time(1), seq_of_time(60), seq_of_time(3600))
