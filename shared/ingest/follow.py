"""Follow the peer region's change feed: index what object replication brought here.

Azure raises no ``BlobCreated`` event for a blob that object replication writes: Event Grid's blob
events come from clients' calls of the Blob REST API (PutBlob, PutBlockList, CopyBlob), and
replication is the storage service's own doing (docs/deploy.md cites the sources). So a region
learns of the peer's instances from the peer's change feed (:mod:`shared.index.changefeed`), read
straight from the peer's table endpoint with this region's identity (Storage Table Data Reader on
the peer's account: no HTTP call through Front Door, no token, no key). A timer runs
:meth:`Follower.run` every few seconds; one run:

1. tries again the entries whose file had not been replicated yet and whose turn has come: each waits
   with a growing delay (:data:`BACKOFF_FIRST_SECONDS`, doubling up to :data:`BACKOFF_CAP_SECONDS`), so
   a file that is slow to replicate costs one read per back-off step, not one per run; after
   :data:`GIVE_UP_SECONDS` an entry is dropped with a warning (``reindex`` indexes the file if it comes);
2. reads the feed after its cursor in steps of ``DICOMFLOW_FOLLOW_BATCH`` entries and indexes each step's
   entries in parallel (``DICOMFLOW_FOLLOW_WORKERS`` threads; the entries of one instance in order, by
   one thread): a create or update indexes the replica here
   (:meth:`shared.ingest.service.IngestService.index_archived`: the ingest path without the copy; the
   newer version stamp wins); a file not here yet waits (1.); a delete is applied here unless this region
   holds a newer version. Steps continue until the feed is drained or ``DICOMFLOW_FOLLOW_RUN_SECONDS``;
3. saves its state: the cursor, how far it has read, what waits, and whether the peer answered. The
   state row is what the lag line, the failback gate (:mod:`shared.ingest.failback`) and ``reindex
   --since follower`` read.

**Late commits.** A feed entry's sequence is taken just before it is written, and a write can be slow,
so an entry may appear below sequences a reader has already passed. Settle commits every entry within
:data:`shared.index.changefeed.COMMIT_WITHIN_SECONDS` of its sequence (or lists it again under a new
one), so the saved cursor never passes ``now -`` :data:`LATE_COMMIT_SECONDS`: each run reads that tail
again and skips, from memory, what this process has handled. A new process handles the tail once more
(idempotent: each such entry costs a header read and a table read or two).

**The lag line.** Every run logs ``follower lag_seconds=<n> peer=<key> ...``: how far behind the peer's
feed this region's index is (0 when the run read the feed to its end). Alerts query that line.

Entries of this region's own origin are skipped: the peer's feed lists what it indexed from our
archive too. Each replicated instance costs this region one header read and one table transaction
(plus its study's settle run), and the peer's ingest nothing. An unreachable peer (the region is
lost) ends the run with a warning; the next run resumes at the cursor.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from shared.index import changefeed, keys
from shared.index.records import Action, ChangeEntry
from shared.index.sequence import seq_of_time, time_of_seq
from shared.index.store import FeedEntry, IndexStore, utcnow
from shared.ingest.service import IngestService
from shared.ingest.states import IngestState, Outcome
from shared.ports import Row
from shared.services import Services
from shared.storage import layout
from shared.storage.regions import physical_store, stamp

log = logging.getLogger(__name__)

#: A peer entry whose file has not arrived after this long is dropped (reindex finds the file later).
GIVE_UP_SECONDS: Final = 24 * 3600.0
#: An entry whose file has not arrived is tried again after this long, then after twice as long, ...
BACKOFF_FIRST_SECONDS: Final = 10.0
#: ... but never later than this (after a region loss, a file that did replicate is found within it).
BACKOFF_CAP_SECONDS: Final = 300.0
#: Clocks of the two regions' machines may differ by this much (NTP keeps them far closer).
CLOCK_SKEW_SECONDS: Final = 10.0
#: How much of the feed's tail every run reads again (entries may commit this late, see the module doc).
LATE_COMMIT_SECONDS: Final = changefeed.COMMIT_WITHIN_SECONDS + CLOCK_SKEW_SECONDS
#: A saved state older than this says nothing about now (runs come every 10 s and save after every step; a
#: health probe may look at a copy cached for 5 s): the region may have been down since.
STALE_SECONDS: Final = 20.0


@dataclass(slots=True)
class FollowResult:
    """What one run did, by outcome (``archived``, ``updated``, ``duplicate``, ``superseded``, ``waiting``,
    ``deleted``, ``skipped``, ``refused``, ``dropped``), and where it stands."""

    peer: str
    counts: Counter[str] = field(default_factory=Counter)
    cursor: int = 0
    error: str | None = None
    #: How far behind the peer's feed this region's index is, in seconds (0: read to the end).
    lag_seconds: float = 0.0
    #: Entries whose file has not arrived yet, and the age of the oldest (by its feed time), in seconds.
    waiting: int = 0
    oldest_waiting_seconds: float = 0.0

    @property
    def indexed(self) -> int:
        return self.counts["archived"] + self.counts["updated"]

    @property
    def reachable(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class FollowState:
    """The follower's saved state (its row in the sync table), as the last run left it."""

    peer: str
    #: Every peer feed entry with a sequence up to this has been handled (indexed, waiting or skipped).
    cursor: int
    #: Epoch seconds up to which the peer's feed had been read and handled at the last run.
    upto: float
    #: Epoch seconds of the last run.
    at: float
    #: Whether the last run could read the peer's feed.
    reachable: bool
    waiting: int = 0
    #: Feed time (epoch seconds) of the oldest entry still waiting for its file; 0 if none waits.
    oldest_waiting: float = 0.0
    #: Epoch seconds since which the oldest waiting entry has waited (when its file was first missed).
    waiting_since: float = 0.0

    def lag(self, now: float) -> float:
        """Seconds since the peer's feed was last known read to ``upto`` (grows between runs)."""
        return max(0.0, now - self.upto)

    def behind(self, now: float) -> float:
        """How far behind its peer this region is, as far as the saved state can tell: the lag the last run
        measured (0 if it read the feed to its end) while the state is fresh, else the time since the feed
        was last read (the region, and its follower, may have been down since); or the age of the oldest
        entry still waiting for its file, if that is larger. What a region coming back must make up."""
        stale = now - self.at > STALE_SECONDS
        lag = self.lag(now) if stale else max(0.0, self.at - self.upto)
        return max(lag, now - self.oldest_waiting if self.oldest_waiting else 0.0)

    @classmethod
    def of_row(cls, peer: str, row: Mapping[str, Any]) -> FollowState:
        def num(name: str, default: float = 0.0) -> float:
            try:
                return float(row.get(name, default) or default)
            except (TypeError, ValueError):
                return default

        cursor = int(row.get("seq", 0) or 0)
        return cls(peer, cursor, upto=num("upto", time_of_seq(cursor)), at=num("ran", num("upto")),
                   reachable=bool(row.get("reachable", True)), waiting=int(num("waiting")),
                   oldest_waiting=num("oldest_waiting"), waiting_since=num("waiting_since"))


def read_state(svc: Services) -> FollowState | None:
    """The follower's saved state in this region (None: it has never run, or this region follows no peer)."""
    peer = svc.settings.region.peer
    if not peer:
        return None
    row = svc.index.get_sync(keys.follow_cursor_keys(peer))
    return FollowState.of_row(peer, row) if row is not None else None


def since_for_reindex(state: FollowState, margin_seconds: float) -> dt.datetime:
    """From when ``reindex --since`` must look so that it finds every replicated file the follower had not
    indexed: ``margin_seconds`` before the cursor (a file may be archived that long before its feed entry:
    the settle delay, a settle backlog) and no later than the first miss of any entry still waiting."""
    start = time_of_seq(state.cursor) - margin_seconds
    if state.waiting_since:
        start = min(start, state.waiting_since - CLOCK_SKEW_SECONDS)
    return dt.datetime.fromtimestamp(max(0.0, start), dt.UTC)


class _PeerUnreachable(Exception):
    """The peer's change feed could not be read; carries where the run stood."""

    def __init__(self, kind: str, cursor: int, upto: float) -> None:
        super().__init__(kind)
        self.kind, self.cursor, self.upto = kind, cursor, upto


class Follower:
    """Follows the peer's feed. Keep one per process (the timer does): it remembers which entries of the
    re-read tail it has handled."""

    def __init__(self, services: Services, peer_index: IndexStore | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.svc = services
        self.peer_index = peer_index if peer_index is not None else services.peer_index
        self.peer = services.settings.region.peer
        self.ingest = IngestService(services)
        self.clock = clock
        region = services.settings.region
        self.workers = region.follow_workers
        self.batch = region.follow_batch
        self.run_seconds = region.follow_run_seconds
        #: Sequences above the saved cursor that this process has handled (the re-read tail skips them).
        self._handled: set[int] = set()
        self._lock = threading.Lock()

    def run(self) -> FollowResult | None:
        """One pass (the timer's body). None when this region follows no peer."""
        if self.peer_index is None or not self.peer:
            return None
        svc = self.svc
        svc.ensure_ready()
        result = FollowResult(self.peer)
        row = svc.index.get_sync(keys.follow_cursor_keys(self.peer))
        state = FollowState.of_row(self.peer, row) if row is not None else None
        cursor = state.cursor if state is not None else 0
        upto = state.upto if state is not None else 0.0
        result.cursor = cursor
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="follow") as pool:
            waits = self._retry_waiting(result, pool)
            try:
                cursor, upto = self._follow(result, pool, cursor, upto, waits)
            except _PeerUnreachable as exc:
                result.error = exc.kind
                cursor, upto = exc.cursor, exc.upto
                log.warning("Follow %s: the peer region's change feed cannot be read (%s); the next run resumes",
                            self.peer, result.error)
        now = self.clock()
        result.cursor = cursor
        result.lag_seconds = max(0.0, now - upto) if upto else 0.0
        saved = self._state_row(cursor, upto, now, waits, reachable=result.reachable)
        svc.index.put_sync(keys.follow_cursor_keys(self.peer), saved)
        result.waiting = len(waits)
        oldest = float(saved["oldest_waiting"])
        result.oldest_waiting_seconds = max(0.0, now - oldest) if oldest else 0.0
        if result.counts:
            log.info("Follow %s: %s (cursor %d)", self.peer,
                     ", ".join(f"{n} {k}" for k, n in sorted(result.counts.items())), result.cursor)
        # The line alerts query (a scheduled query in infra/): keep its shape.
        log.info("follower lag_seconds=%.1f peer=%s indexed=%d waiting=%d oldest_waiting_seconds=%.1f reachable=%s",
                 result.lag_seconds, self.peer, result.indexed, result.waiting, result.oldest_waiting_seconds,
                 "true" if result.reachable else "false")
        return result

    # -- steps -------------------------------------------------------------------------------------
    def _follow(self, result: FollowResult, pool: ThreadPoolExecutor, cursor: int, upto: float,
                waits: dict[int, Row]) -> tuple[int, float]:
        """Read and index the feed after ``cursor`` in steps; returns the new (cursor, upto)."""
        assert self.peer_index is not None
        started = self.clock()
        pos = cursor
        with self._lock:
            self._handled = {s for s in self._handled if s > cursor}
        from azure.core.exceptions import AzureError  # an unreachable peer region surfaces as this

        while True:
            now = self.clock()
            high = seq_of_time(now + 1.0)
            try:
                page = changefeed.after(self.peer_index, pos, high, self.batch)
            except AzureError as exc:  # the peer's tables only: this region's own failures propagate
                raise _PeerUnreachable(type(exc).__name__, cursor, upto) from exc
            with self._lock:
                new = [e for e in page if e.seq not in self._handled]
            failed = self._handle_all(new, result, pool, waits)
            if failed is not None:  # a transient failure here: stop before it, the next run resumes there
                done = [e.seq for e in page if e.seq < failed]
                pos = max([pos, *done])
                upto = max(upto, time_of_seq(pos))
                return self._save(cursor, pos, upto, now, waits), upto
            if page:
                pos = page[-1].seq
            drained = len(page) < self.batch
            upto = max(upto, now if drained else time_of_seq(pos))
            last = drained or self.clock() - started >= self.run_seconds
            cursor = self._save(cursor, pos, upto, now, waits, write=not last)  # run() saves the last step
            if last:
                return cursor, upto

    def _save(self, cursor: int, pos: int, upto: float, now: float, waits: dict[int, Row], *,
              write: bool = True) -> int:
        """Where the run stands after a step, saved (a long catch-up keeps its place if the run is cut
        short). The cursor kept is what has been read, but never within the late-commit tail (re-read by
        the next run)."""
        new = max(cursor, min(pos, seq_of_time(now - LATE_COMMIT_SECONDS)))
        if write:
            self.svc.index.put_sync(keys.follow_cursor_keys(self.peer),
                                    self._state_row(new, upto, now, waits, reachable=True))
        return new

    def _state_row(self, cursor: int, upto: float, now: float, waits: dict[int, Row], *,
                   reachable: bool) -> dict[str, Any]:
        """The follower's row (see :class:`FollowState`)."""
        with self._lock:
            pending = list(waits.items())
        oldest = min((time_of_seq(seq) for seq, _ in pending), default=0.0)
        since = min((float(r.get("since", now) or now) for _, r in pending), default=0.0)
        return {"seq": cursor, "at": utcnow(), "ran": now, "upto": upto, "reachable": reachable,
                "waiting": len(pending), "oldest_waiting": oldest, "waiting_since": since}

    def _handle_all(self, entries: Sequence[FeedEntry], result: FollowResult, pool: ThreadPoolExecutor,
                    waits: dict[int, Row]) -> int | None:
        """Handle ``entries`` in parallel, one instance's entries in order by one thread. Returns the lowest
        sequence that failed (a transient error, re-raised if it is not a storage error), or None."""
        if not entries:
            return None
        groups: dict[tuple[str, str, str], list[FeedEntry]] = {}
        for e in entries:
            groups.setdefault((e.study, e.series, e.sop), []).append(e)

        def one(group: list[FeedEntry]) -> list[tuple[int, str]]:
            out = []
            for entry in group:
                out.append((entry.seq, self._handle(entry, waits)))
                with self._lock:
                    self._handled.add(entry.seq)
            return out

        futures = [(g[0].seq, pool.submit(one, g)) for g in groups.values()]
        failed: int | None = None
        error: BaseException | None = None
        for first, fut in futures:
            try:
                for _, outcome in fut.result():
                    result.counts[outcome] += 1
            except Exception as exc:  # noqa: BLE001 - any failure of one instance stops the cursor before it
                failed = first if failed is None else min(failed, first)
                error = error or exc
        if error is not None:
            from azure.core.exceptions import AzureError

            log.warning("Follow %s: indexing stopped at sequence %s (%s); the next run resumes there",
                        self.peer, failed, type(error).__name__)
            if not isinstance(error, AzureError):
                raise error
        return failed

    def _handle(self, entry: FeedEntry, waits: dict[int, Row]) -> str:
        origin = entry.origin or self.peer
        if origin == self.svc.topology.region:
            return "skipped"  # the peer indexed it from our archive: ours already
        if entry.action == str(Action.DELETE):
            self._forget_waiting(entry, waits)
            return self._delete(entry, origin)
        if entry.state in ("replaced", "deleted"):
            return "skipped"  # a later entry of the same instance follows (its update, or its delete)
        outcome = self._index(entry.study, entry.series, entry.sop, origin)
        if outcome.state is not IngestState.GONE:
            with self._lock:
                was_waiting = waits.pop(entry.seq, None) is not None
            if was_waiting:  # read again after a restart, and its file has come meanwhile
                self.svc.index.delete_sync(keys.follow_wait_keys(self.peer, entry.seq))
            return str(outcome.state)
        with self._lock:
            if entry.seq in waits:
                return "waiting"  # read again after a restart: it keeps its turn
        now = self.clock()
        values = {"study": entry.study, "series": entry.series, "sop": entry.sop, "origin": origin,
                  "since": now, "attempts": 1, "due": now + BACKOFF_FIRST_SECONDS}
        wait_keys = keys.follow_wait_keys(self.peer, entry.seq)
        self.svc.index.put_sync(wait_keys, values)
        with self._lock:
            waits[entry.seq] = Row.of({"PartitionKey": wait_keys[0], "RowKey": wait_keys[1], **values}, "")
        return "waiting"

    def _index(self, study: str, series: str, sop: str, origin: str) -> Outcome:
        """Index the replica of the peer's file (that container specifically: this region's own copy
        of the same SOP, if any, is not the file the entry announces)."""
        physical = layout.regional(layout.ARCHIVE, origin)
        blob = physical_store(self.svc.blobs).open(physical, layout.instance_path(study, series, sop))
        return self.ingest.index_archived(blob)

    def _retry_waiting(self, result: FollowResult, pool: ThreadPoolExecutor) -> dict[int, Row]:
        """Try the waiting entries whose turn has come (in parallel); returns every entry still waiting,
        by sequence. One query lists them all; a file is read only when its entry is due."""
        svc = self.svc
        now = self.clock()
        rows = {int(str(r["RowKey"])): r for r in svc.index.sync_rows(keys.follow_wait_partition(self.peer))}
        due = [(seq, r) for seq, r in rows.items() if float(r.get("due", 0) or 0) <= now]

        def one(seq: int, row: Row) -> str:
            wait_keys = (str(row["PartitionKey"]), str(row["RowKey"]))
            outcome = self._index(str(row["study"]), str(row["series"]), str(row["sop"]),
                                  str(row.get("origin") or self.peer))
            if outcome.state is not IngestState.GONE:
                svc.index.delete_sync(wait_keys)
                return str(outcome.state)
            since = float(row.get("since", now) or now)
            if now - since >= GIVE_UP_SECONDS:
                log.warning("Follow %s: instance %s never arrived by replication; dropped (reindex indexes it "
                            "if it arrives later)", self.peer, row["sop"])
                svc.index.delete_sync(wait_keys)
                return "dropped"
            attempts = int(row.get("attempts", 0) or 0) + 1
            delay = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (attempts - 1))
            values = {k: v for k, v in row.items() if k not in ("PartitionKey", "RowKey")}
            values.update({"since": since, "attempts": attempts, "due": now + delay})
            svc.index.put_sync(wait_keys, values)
            return "waiting"

        for (seq, _), outcome in zip(due, pool.map(lambda item: one(*item), due), strict=True):
            result.counts[outcome] += 1
            if outcome != "waiting":
                rows.pop(seq, None)
        return rows

    def _forget_waiting(self, entry: FeedEntry, waits: dict[int, Row]) -> None:
        """A delete: the instance's earlier entries still waiting for a file will never see it."""
        with self._lock:
            earlier = [seq for seq, r in waits.items() if str(r.get("sop")) == entry.sop and seq < entry.seq]
            for seq in earlier:
                waits.pop(seq, None)
        for seq in earlier:
            self.svc.index.delete_sync(keys.follow_wait_keys(self.peer, seq))

    def _delete(self, entry: FeedEntry, origin: str) -> str:
        """The peer deleted an instance: remove it here too, unless this region holds a newer version."""
        svc = self.svc
        s, se, i = entry.study, entry.series, entry.sop
        got = svc.index.get_instance(s, se, i)
        if got is not None and got.record.stamp > stamp(origin, time_of_seq(entry.seq)):
            return "skipped"  # written here after the peer's delete: the newer write wins
        svc.blobs.delete(layout.ARCHIVE, layout.instance_path(s, se, i))  # this account's copies
        svc.blobs.delete(layout.METADATA, layout.frame_index_path(s, se, i))
        svc.blobs.delete(layout.METADATA, layout.instance_metadata_path(s, se, i))
        if got is None:
            return "skipped"
        svc.blobs.delete(layout.METADATA, layout.series_metadata_path(s, se))  # rows serve it until settle
        change = ChangeEntry(s, se, i, Action.DELETE, svc.sequencer.next(), utcnow(), origin=origin)
        svc.index.remove_instances(s, [(se, i)], [change])
        svc.scheduler.after_write(s)
        return "deleted"

