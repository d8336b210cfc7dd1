"""The peer follower's guarantees on fakes: parallel steps, back-off for files not yet replicated, entries
committed late, deletes of waiting entries, a failure that stops the cursor before it, the lag line and
saved state, the failback gate, and ``reindex --since``."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import types
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.index import changefeed, keys
from shared.index.sequence import seq_of_time, time_of_seq
from shared.index.store import FeedEntry, IndexStore
from shared.ingest import follow, reindex, settle
from shared.ingest.failback import FailbackGate
from shared.ingest.follow import Follower, read_state, since_for_reindex
from shared.storage import layout
from tests.fakes import MemoryBlob
from tests.instances import study_of
from tests.pair import A_ARCHIVE, Pair, sops_found
from tools.reindex import parse_since


def _ingest_settled(pair: Pair, n_series: int, n: int, tag: str) -> list[tuple[str, str, str, bytes]]:
    items = study_of(n_series, n, tag=tag)
    for _, _, sop, data in items:
        pair.ingest("a", data, f"{sop}.dcm")
    pair.settle("a", items[0][0])
    return items


def test_a_step_is_indexed_by_several_workers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = Pair(DICOMFLOW_FOLLOW_WORKERS="4")
    items = _ingest_settled(pair, 2, 4, "parallel")
    pair.replicate("a")
    # The first four header reads meet at a barrier: they pass only if four run at the same time (one at a
    # time, the first would wait out the timeout and fail the run).
    barrier = threading.Barrier(4, timeout=10)
    calls = 0
    lock = threading.Lock()
    read = MemoryBlob.read_range

    def meeting(self: MemoryBlob, offset: int, length: int) -> tuple[bytes, int]:
        nonlocal calls
        with lock:
            calls += 1
            first = calls <= 4
        if first:
            barrier.wait()
        return read(self, offset, length)

    monkeypatch.setattr(MemoryBlob, "read_range", meeting)
    assert pair.follow("b") == {"archived": 8}
    assert sops_found(pair.b, items[0][0]) == {sop for _, _, sop, _ in items}


def test_a_file_not_yet_replicated_is_read_again_with_a_growing_delay_not_on_every_run() -> None:
    pair = Pair()
    _ingest_settled(pair, 1, 3, "backoff")
    reads = pair.b.blobs.requests

    assert pair.follow("b") == {"waiting": 3} and reads["blob GET range"] == 3
    assert pair.follow("b") == {} and reads["blob GET range"] == 3  # not due: no read
    delays = []
    for _ in range(7):
        before = reads["blob GET range"]
        waited = 0.0
        while reads["blob GET range"] == before:  # move time on until the entries are read again
            pair.later(5)
            waited += 5
            assert pair.follow("b") in ({}, {"waiting": 3})
        delays.append(waited)
    assert delays == [10, 20, 40, 80, 160, 300, 300]  # doubling, capped at BACKOFF_CAP_SECONDS
    state = read_state(pair.b.services)
    assert state is not None and state.waiting == 3 and state.waiting_since > 0

    pair.replicate("a")
    pair.later(follow.BACKOFF_CAP_SECONDS)
    assert pair.follow("b") == {"archived": 3}
    assert pair.b.services.index.sync_rows(keys.follow_wait_partition("a")) == []


def test_an_entry_committed_after_the_follower_passed_its_sequence_is_still_indexed() -> None:
    pair = Pair()
    first = _ingest_settled(pair, 1, 2, "early")
    pair.replicate("a")
    assert pair.follow("b") == {"archived": 2}
    # A settle run took its sequence 20 s ago but its write lands only now (throttled, retried): the
    # follower has read past that sequence already.
    (study, series, sop, data), = study_of(1, 1, tag="late-commit")
    pair.ingest("a", data, "late.dcm")
    pair.replicate("a")
    late = FeedEntry(seq_of_time(time.time() - 20), study, series, sop, "create", "current", "", "a")
    pair.a.services.index.append_feed([late])
    assert pair.follow("b") == {"archived": 1}
    assert sop in sops_found(pair.b, study)
    # What the follower handled is not handled again by it; its cursor never passes the late-commit tail.
    assert pair.follow("b") == {}
    state = read_state(pair.b.services)
    assert state is not None and state.cursor <= seq_of_time(time.time() - follow.LATE_COMMIT_SECONDS)
    # A new process (no memory of the tail) reads the tail again: idempotent, nothing changes; each entry
    # costs a header read, a refused insert and a row read.
    rows = {sop: pair.b.services.index.get_instance(st, se, sop) for st, se, sop, _ in [*first, (study, series, sop,
                                                                                              data)]}
    fresh = Follower(pair.b.services, IndexStore(pair.a.tables))
    before = pair.b.blobs.requests["blob GET range"]
    result = fresh.run()
    assert result is not None and dict(result.counts) == {"duplicate": 3}
    assert pair.b.blobs.requests["blob GET range"] - before == 3
    after = {sop: pair.b.services.index.get_instance(st, se, sop) for st, se, sop, _ in [*first, (study, series, sop,
                                                                                               data)]}
    assert {k: v.etag for k, v in after.items() if v} == {k: v.etag for k, v in rows.items() if v}


def test_settle_lists_entries_again_when_its_feed_write_took_longer_than_the_commit_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pair = Pair()
    items = study_of(1, 3, tag="slow-write")
    for _, _, sop, data in items:
        pair.ingest("a", data, f"{sop}.dcm")
    checks = 0

    class SlowFirstWrite:
        @staticmethod
        def time() -> float:  # the first check after the feed write sees it 31 s late
            nonlocal checks
            checks += 1
            return time.time() + (changefeed.COMMIT_WITHIN_SECONDS + 1 if checks == 1 else 0)

    monkeypatch.setattr(settle, "time", SlowFirstWrite)
    pair.settle("a", items[0][0])
    feed = list(changefeed.entries(pair.a.services.index, None, None, horizon=0))
    assert len(feed) == 6 and len({e.sop for e in feed}) == 3  # each listed twice: never missing behind a cursor
    published = {c.feed_seq for c in pair.a.services.index.changes(items[0][0])}
    assert published == {e.seq for e in feed[3:]}  # the study remembers the later listing


def test_a_delete_drops_the_entries_still_waiting_for_the_deleted_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.dicomweb import service
    from shared.dicomweb.delete import delete

    pair = Pair()
    monkeypatch.setattr(service, "services", lambda call: pair.a.services)
    items = _ingest_settled(pair, 1, 2, "del-wait")
    study, series, sop, _ = items[0]
    assert pair.follow("b") == {"waiting": 2}  # nothing replicated yet
    assert delete(service.Call(pair.a.services.settings, method="DELETE", study=study, series=series,
                               sop=sop)).status == 204
    pair.settle("a", study)
    pair.follow("b")
    waiting = pair.b.services.index.sync_rows(keys.follow_wait_partition("a"))
    assert [r["sop"] for r in waiting] == [items[1][2]]  # the deleted one waits no more


def test_a_failure_stops_the_cursor_before_the_failed_entry_and_the_next_run_resumes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pair = Pair()
    items = _ingest_settled(pair, 1, 4, "fail")
    pair.replicate("a")
    broken = items[1][2]
    read = MemoryBlob.read_range

    def flaky(self: MemoryBlob, offset: int, length: int) -> tuple[bytes, int]:
        if broken in self.name:
            raise ServiceRequestError("connection reset")
        return read(self, offset, length)

    monkeypatch.setattr(MemoryBlob, "read_range", flaky)
    pair.later(120)  # the entries are older than the late-commit tail: the cursor may pass them
    assert pair.follow("b") == {"archived": 3}
    feed = {e.sop: e.seq for e in changefeed.entries(pair.a.services.index, None, None, horizon=0)}
    state = read_state(pair.b.services)
    assert state is not None and state.cursor < feed[broken]
    monkeypatch.setattr(MemoryBlob, "read_range", read)
    assert pair.follow("b") == {"archived": 1}
    state = read_state(pair.b.services)
    assert state is not None and state.cursor == max(feed.values())


class _Down:
    """The peer's tables when the peer region is lost."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: object, **kwargs: object) -> Any:
            raise ServiceRequestError("the peer region does not answer")
        return fail


def test_every_run_logs_its_lag_and_saves_its_state(caplog: pytest.LogCaptureFixture) -> None:
    pair = Pair()
    _ingest_settled(pair, 1, 2, "lag")
    pair.replicate("a")
    with caplog.at_level(logging.INFO, logger="shared.ingest.follow"):
        pair.follow("b")
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("follower ")][-1]
    assert line.startswith("follower lag_seconds=0.0 peer=a indexed=2 waiting=0 ") and line.endswith("reachable=true")
    state = read_state(pair.b.services)
    assert state is not None and state.reachable and state.lag(time.time()) < 5

    # The peer is lost: the run says so, and the lag grows with the time since the feed was last read.
    lost = Follower(pair.b.services, IndexStore(_Down()), clock=lambda: time.time() + 400)  # type: ignore[arg-type]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shared.ingest.follow"):
        result = lost.run()
    assert result is not None and not result.reachable and 395 < result.lag_seconds < 410
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("follower ")][-1]
    assert line.startswith("follower lag_seconds=4") and line.endswith("reachable=false")
    state = read_state(pair.b.services)
    assert state is not None and not state.reachable


def test_the_failback_gate_closes_while_the_region_is_behind_a_reachable_peer_and_reads_once_per_period() -> None:
    pair = Pair(DICOMFLOW_FAILBACK_MAX_LAG_SECONDS="60", DicomPeerStorage="memory")
    _ingest_settled(pair, 1, 2, "gate")
    pair.replicate("a")
    now = [time.time()]
    gate = FailbackGate(cache_seconds=10, clock=lambda: now[0])
    assert gate.status(pair.b.services) is None  # the follower never ran: no evidence, serve
    pair.follow("b")
    now[0] += 11
    assert gate.status(pair.b.services) is None  # caught up

    # The region was down for 10 minutes (its follower with it): on its return it is behind.
    now[0] += 600
    closed = gate.status(pair.b.services)
    assert closed is not None and closed["status"] == "catching up" and closed["behind_seconds"] > 600
    assert closed["max_lag_seconds"] == 60 and closed["peer"] == "a"
    before = sum(pair.b.tables.requests.values())
    for _ in range(5):
        assert gate.status(pair.b.services) == closed  # probes within the period: cached, no request
    assert sum(pair.b.tables.requests.values()) == before
    # Its follower catches up: the next read opens the gate.
    pair.later(now[0] - time.time())
    pair.follow("b")
    now[0] += 11
    assert gate.status(pair.b.services) is None
    # A peer that does not answer has nothing to catch up from: the region serves.
    Follower(pair.b.services, IndexStore(_Down()), clock=lambda: now[0] + 1000).run()  # type: ignore[arg-type]
    now[0] += 2000
    assert gate.status(pair.b.services) is None
    # Off by default.
    assert FailbackGate().status(Pair().b.services) is None


def test_behind_is_the_lag_of_the_last_run_while_fresh_and_the_time_since_the_feed_was_read_once_stale() -> None:
    def state(**kw: float) -> follow.FollowState:
        values = {"upto": 1000.0, "at": 1000.0, "oldest_waiting": 0.0, **kw}
        return follow.FollowState("a", cursor=0, upto=values["upto"], at=values["at"], reachable=True,
                                  oldest_waiting=values["oldest_waiting"])

    fresh = 1000.0 + follow.STALE_SECONDS - 1
    assert state().behind(fresh) == 0.0  # caught up at its last run: no drift between runs (no flapping)
    assert state(upto=940.0).behind(fresh) == 60.0  # its last run stopped 60 s short of the feed's end
    stale = 1000.0 + follow.STALE_SECONDS + 100
    assert state().behind(stale) == stale - 1000.0  # the region may have been down since: behind since then
    assert state(oldest_waiting=900.0).behind(fresh) == fresh - 900.0  # a file still not here counts


def test_reindex_since_finds_what_replicated_through_the_arrival_marks_of_the_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.storage import regions

    pair = Pair()
    now = time.time()
    items = study_of(1, 4, tag="since")
    other = study_of(1, 2, tag="since-other")
    # Three hours ago: the first two instances of the study, and another study; now: the study's last two.
    monkeypatch.setattr(regions, "time", types.SimpleNamespace(time=lambda: now - 3 * 3600))
    pair.a.services.arrivals.clock = lambda: now - 3 * 3600
    for _, _, sop, data in [*items[:2], *other]:
        pair.ingest("a", data, f"{sop}.dcm")
    monkeypatch.undo()
    pair.a.services.arrivals.clock = time.time
    for _, _, sop, data in items[2:]:
        pair.ingest("a", data, f"{sop}.dcm")
    marks = [n for n in pair.a.blobs.names(A_ARCHIVE) if n.startswith(layout.ARRIVALS_PREFIX)]
    assert len(marks) == 3  # the study in two hours, the other study in one: once per study and hour
    pair.replicate("a")  # replicated; b's follower never read a's feed (a was lost first)

    since = dt.datetime.fromtimestamp(now - 3600, dt.UTC)
    items_listed = reindex.changed_since(pair.b.services, reindex.archive_containers(pair.b.services), since)
    assert {i.name.rsplit("/", 1)[1] for i in items_listed[A_ARCHIVE]} == {f"{sop}.dcm" for _, _, sop, _ in items[2:]}
    result = reindex.reindex(pair.b.services, since=since, workers=4)
    assert result.total() == {"archived": 2}
    assert sops_found(pair.b, items[0][0]) == {sop for _, _, sop, _ in items[2:]}
    assert sops_found(pair.b, other[0][0]) == set()  # its hour is before the window: not even listed
    assert pair.b.services.index.sync_rows("reindex") == []  # a --since run keeps no position
    reads = pair.b.tables.requests.copy()
    assert reindex.reindex(pair.b.services, since=since).total() == {"current": 2}
    spent = pair.b.tables.requests - reads
    assert spent == {"table GET query dicominstances": 1}  # one query for the study, no row read per file
    # A run without --since lists everything (marks aside) and finds the rest.
    assert reindex.reindex(pair.b.services).total() == {"archived": 4, "current": 2}


def test_the_follower_says_from_when_reindex_must_look() -> None:
    state = follow.FollowState("a", cursor=seq_of_time(10_000.0), upto=10_000.0, at=10_005.0, reachable=True,
                               waiting=1, oldest_waiting=9_000.0, waiting_since=9_500.0)
    assert since_for_reindex(state, 3600).timestamp() == 10_000.0 - 3600
    assert since_for_reindex(state, 60).timestamp() == 9_500.0 - follow.CLOCK_SKEW_SECONDS  # a miss before that
    assert state.behind(10_010.0) == 1010.0 and state.lag(10_010.0) == 10.0
    assert time_of_seq(state.cursor) == 10_000.0
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    assert parse_since("90m", now) == now - dt.timedelta(minutes=90)
    assert parse_since("2026-12-01T09:00Z", now) == dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    assert parse_since("2026-12-01T09:00", now).tzinfo == dt.UTC
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_since("yesterday", now)
    assert layout.regional(layout.ARCHIVE, "a") == A_ARCHIVE
