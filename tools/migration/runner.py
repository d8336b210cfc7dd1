"""One migration run: plan the window, move each study, verify it, record it, report.

For each study of the window (at most ``associations`` at a time, each worker with its own
association to the source):

1. **Skip** it if the state file has it verified and the source still counts the same instances.
2. **List** its instances at the source (IMAGE-level C-FIND). A source that refuses that query is
   verified by counts alone (NumberOfStudyRelatedInstances against our index).
3. **Move** what our index does not hold yet: C-MOVE to the gateway's AE title (the source sends the
   instances to the gateway itself), or C-GET (the instances come back to us and go into the inbox).
   The study first takes its instance count from the instances/s throttle.
4. **Verify**: wait until our index holds every instance the source listed (ingest runs after the
   gateway has stored each instance durably in the inbox; the wait ends when the index stops growing
   for ``verify_timeout``), then ask the gateway for Storage Commitment of them. If the source's count
   changed meanwhile, the missing instances are moved once more.
5. **Record** the outcome in the state file. A study that fails says why: the source's status (and
   Error Comment), no answer within the timeout, or the ingest outcome of the instances that did not
   arrive (their quarantine reason). The run goes on with the next study.

Everything the run needs from outside is passed in (:class:`Ports`), so the control flow is
unit-tested with fakes; the real peers are exercised end to end (tests/e2e/test_migrate_e2e.py).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tools.migration.dimse import (
    Commitment,
    DimseError,
    Peer,
    Retrieved,
    Sink,
    SourceInstance,
    SourceStudy,
    Window,
    status_text,
)
from tools.migration.state import VERIFIED, MigrationState
from tools.migration.throttle import Throttle

#: C-MOVE status: the source does not know the destination AE. Nothing can move: the run stops.
MOVE_DESTINATION_UNKNOWN = 0xA801
#: After a group's C-MOVE failed, how long the index may stay without progress (at most a quarter of the verify
#: timeout) before what it lacks is moved again study by study (what was sent is ingested within seconds: the
#: gateway closes its chunk at the move's end).
GROUP_PATIENCE = 5.0


class Session(Protocol):
    """What a worker asks the source (:class:`tools.migration.dimse.SourceSession`)."""

    def find_instances(self, study: str) -> list[SourceInstance]: ...
    def study_count(self, study: str) -> int | None: ...
    def move(self, study: str, destination: str, progress: Callable[[int], None] | None = None) -> Retrieved: ...
    def move_many(self, studies: Sequence[str], destination: str,
                  progress: Callable[[int], None] | None = None) -> Retrieved: ...
    def get(self, study: str, sink: Sink, progress: Callable[[int], None] | None = None) -> Retrieved: ...
    def close(self) -> None: ...


@dataclass
class Ports:
    """The run's outside world."""

    #: A new association with the source (``storage_classes``: for C-GET, the SOP classes to accept).
    session: Callable[[Sequence[str] | None], Session]
    #: Our index: SOP Instance UID -> SOP Class UID of every instance of a study.
    archived: Callable[[str], dict[str, str]]
    #: Storage Commitment of (SOP class, SOP instance) pairs by the gateway.
    commit: Callable[[Sequence[tuple[str, str]]], Commitment]
    #: Quarantine outcomes (reason code, sentence) of SOP Instance UIDs since a time.
    quarantined: Callable[[Sequence[str], dt.datetime], dict[str, tuple[str, str]]]
    #: Where a C-GET's instance goes (the batched ingest path); answers a DIMSE status and comment.
    sink: Sink | None = None
    #: Called after each C-GET: what it brought can be ingested now.
    got: Callable[[], None] | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def _chunk_size() -> int:
    from shared.ingest.batch import CHUNK_SIZE  # imported when options are made: the batched path is heavy

    return CHUNK_SIZE


@dataclass(frozen=True)
class Options:
    source: Peer
    gateway: Peer
    retrieve: Literal["move", "get"] = "move"
    associations: int = 2
    rate: float | None = None
    #: Seconds our index may stay without a new instance before the wait for a study ends.
    verify_timeout: float = 120.0
    #: Ask the gateway for Storage Commitment of each verified study's instances (about 11 index reads per
    #: instance on the gateway's side: it finds each SOP Instance UID without its study).
    commitment: bool = False
    #: Small studies are moved together by one C-MOVE, up to this many instances (one chunk of the
    #: batched ingest path: shared/ingest/batch.py CHUNK_SIZE).
    group_instances: int = field(default_factory=lambda: _chunk_size())


@dataclass(frozen=True, slots=True)
class Listing:
    """A study's instances as the source listed them (None: it would not), their count, and a note."""

    listed: list[SourceInstance] | None
    count: int | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class StudyResult:
    study: str
    outcome: Literal["migrated", "skipped", "failed"]
    instances: int = 0
    reason: str = ""


@dataclass
class Report:
    planned: int = 0
    results: list[StudyResult] = field(default_factory=list)
    #: Set when the run stopped early (nothing could move); the sentence says what to do.
    stopped: str = ""

    def of(self, outcome: str) -> list[StudyResult]:
        return [r for r in self.results if r.outcome == outcome]

    @property
    def verified(self) -> int:
        return len(self.of("migrated")) + len(self.of("skipped"))

    def last_line(self) -> str:
        migrated = self.of("migrated")
        return (f"migrated {len(migrated)} studies, {sum(r.instances for r in migrated)} instances; "
                f"verified {self.verified}/{self.planned}")


class Stop(Exception):
    """Nothing can be moved (e.g. the source does not know our gateway): the run ends."""


class Progress(Protocol):
    def study_done(self, result: StudyResult) -> None: ...
    def instances(self, n: int) -> None: ...


class _Quiet:
    def study_done(self, result: StudyResult) -> None:
        pass

    def instances(self, n: int) -> None:
        pass


class Migration:
    def __init__(self, options: Options, state: MigrationState, ports: Ports, *,
                 progress: Progress | None = None) -> None:
        self.o = options
        self.state = state
        self.ports = ports
        self.progress = progress or _Quiet()
        self.throttle = Throttle(options.rate, sleep=ports.sleep, clock=ports.clock)
        self._stop = threading.Event()
        self._stopped = ""
        self._local = threading.local()
        self._sessions: list[Session] = []
        self._lock = threading.Lock()
        self.started = dt.datetime.now(dt.UTC)

    # -- the run ---------------------------------------------------------------------------------
    def run(self, studies: Sequence[SourceStudy]) -> Report:
        report = Report(planned=len(studies))
        for s in studies:
            self.state.planned(s.uid)

        def work(group: list[SourceStudy]) -> list[StudyResult]:
            if self._stop.is_set():
                return []
            try:
                results = self.migrate_group(group)
            except Stop as stop:
                with self._lock:
                    self._stopped = self._stopped or str(stop)
                self._stop.set()
                return []
            for result in results:
                self.progress.study_done(result)
            return results

        try:
            with ThreadPoolExecutor(max_workers=max(1, self.o.associations),
                                    thread_name_prefix="migrate") as pool:
                for results in pool.map(work, self.groups(studies)):
                    report.results += results
        finally:
            for session in self._sessions:
                session.close()
        report.stopped = self._stopped
        return report

    def groups(self, studies: Sequence[SourceStudy]) -> list[list[SourceStudy]]:
        """The studies moved together (:func:`group_studies`); with C-GET, one study at a time."""
        if self.o.retrieve != "move":
            return [[s] for s in studies]
        return group_studies(studies, self.o.group_instances)

    def _session(self) -> Session:
        """This worker's association with the source (C-GET: one per study, for its SOP classes)."""
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self.ports.session(None)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    # -- a group of studies, one study -------------------------------------------------------------
    def migrate_group(self, group: Sequence[SourceStudy]) -> list[StudyResult]:
        """Skip what is verified; move the rest of the group in one C-MOVE (when more than one study needs
        it), then take each study through its own steps, which wait for what the group move brought and move
        again, alone, what it did not (a study that fails a group's move fails only itself)."""
        results: dict[str, StudyResult] = {}
        todo: list[SourceStudy] = []
        for s in group:
            prev = self.state.get(s.uid)
            if prev is not None and prev.state == VERIFIED and (s.count is None or prev.source_count == s.count):
                results[s.uid] = StudyResult(s.uid, "skipped", prev.verified_instances)
            else:
                self.state.moving(s.uid)
                todo.append(s)
        listings: dict[str, Listing] = {}
        premoved: Retrieved | None = None
        if len(todo) > 1:
            session = self._session()
            for s in todo:
                listings[s.uid] = self._list(session, s)
            wanted = [s for s in todo if self._missing(listings[s.uid].listed, listings[s.uid].count or 0,
                                                       self.ports.archived(s.uid))]
            if len(wanted) > 1:
                try:
                    self.throttle.take(sum(listings[s.uid].count or 0 for s in wanted))
                    premoved = session.move_many([s.uid for s in wanted], self.o.gateway.ae, self.progress.instances)
                except DimseError:
                    premoved = Retrieved(-1)  # each study tries alone
                if premoved.status == MOVE_DESTINATION_UNKNOWN:
                    raise Stop(f"{self.o.source} answered the C-MOVE with "
                               f"{status_text(premoved.status, premoved.comment, dest=self.o.gateway.ae)}; nothing "
                               "was moved")
                if not premoved.ok:  # what the source did send before it stopped: wait until it is in
                    self._wait_for_group(wanted)
                else:  # the group's instances are ingested together (one chunk): wait on one study, then check each
                    last = wanted[-1]
                    self._wait_for_index(last.uid, listings[last.uid].listed, listings[last.uid].count or 0,
                                         self.ports.archived(last.uid))
        for s in todo:
            results[s.uid] = self.migrate(s, listing=listings.get(s.uid), premoved=premoved)
        return [results[s.uid] for s in group]

    def migrate(self, s: SourceStudy, *, listing: Listing | None = None,
                premoved: Retrieved | None = None) -> StudyResult:
        try:
            result = self._migrate(s, listing or self._list(self._session(), s), premoved)
        except DimseError as exc:
            result = StudyResult(s.uid, "failed", reason=str(exc))
        if result.outcome == "migrated":
            self.state.verified(s.uid, result.instances, result.instances)
        else:
            self.state.failed(s.uid, result.reason, result.instances)
        return result

    def _list(self, session: Session, s: SourceStudy) -> Listing:
        try:
            listed: list[SourceInstance] | None = session.find_instances(s.uid)
            note = ""
        except DimseError as exc:
            listed = None  # verified by counts alone
            note = f"instances not listed by the source ({exc}): verified by count"
        return Listing(listed, len(listed) if listed is not None else s.count, note)

    def _migrate(self, s: SourceStudy, listing: Listing, premoved: Retrieved | None) -> StudyResult:
        session = self._session()
        listed, count = listing.listed, listing.count
        notes = [listing.note] if listing.note else []
        if listed is not None and not listed:
            return StudyResult(s.uid, "failed", reason="the source lists no instances of this study (removed "
                                                       "since the window was listed?)")
        if count is None:
            return StudyResult(s.uid, "failed", reason="the source gives neither the study's instances nor its "
                                                       "instance count: nothing to verify against")
        moved: Retrieved | None = None
        attempts = 3 if premoved is not None else 2
        for attempt in range(1, attempts + 1):
            have = self.ports.archived(s.uid)
            missing = self._missing(listed, count, have)
            sent: int | None = None
            patience = self.o.verify_timeout
            if attempt == 1 and premoved is not None:  # the group's move brought it, or some of it
                if not premoved.ok:
                    patience = 0.0  # the group's wait is over (_wait_for_group): move alone what is missing
            elif missing:
                moved = self._retrieve(session, s.uid, listed, missing)
                if not moved.ok:  # what the source did send is all that can still arrive
                    sent = len(have) + moved.completed + moved.warning
                have = self.ports.archived(s.uid)
            have = self._wait_for_index(s.uid, listed, count, have, sent, patience)
            if attempt == 1 and premoved is not None:
                if self._missing(listed, count, have):
                    continue
                moved = premoved
            now = session.study_count(s.uid)
            if now is None or now == count or attempt == attempts:
                if now is not None and now != count:
                    notes.append(f"the source's instance count changed during the move ({count} -> {now}): "
                                 "it is still receiving this study; run again later")
                break
            notes.append(f"the source's instance count changed during the move ({count} -> {now}); moved again")
            listed = session.find_instances(s.uid) if listed is not None else None
            count = len(listed) if listed is not None else now
        return self._verdict(s.uid, listed, count, self.ports.archived(s.uid), moved, notes)

    @staticmethod
    def _missing(listed: list[SourceInstance] | None, count: int, have: dict[str, str]) -> int:
        if listed is None:
            return max(0, count - len(have))
        return sum(1 for i in listed if i.sop not in have)

    def _retrieve(self, session: Session, study: str, listed: list[SourceInstance] | None,
                  missing: int) -> Retrieved:
        if self.o.retrieve == "move":
            self.throttle.take(missing)  # the source sends the study at its pace: paid for up front
            moved = session.move(study, self.o.gateway.ae, self.progress.instances)
        else:
            sink = self.ports.sink
            if sink is None:
                raise ValueError("C-GET needs a sink for the retrieved instances")
            classes = sorted({i.sop_class for i in listed or [] if i.sop_class}) or None
            get_session = self.ports.session(classes or [])

            def paced(data: bytes, sop: str) -> tuple[int, str]:
                self.throttle.take(1)  # the source asks for the next instance only once this one is answered
                return sink(data, sop)

            try:
                moved = get_session.get(study, paced, self.progress.instances)
            finally:
                get_session.close()
                if self.ports.got is not None:
                    self.ports.got()  # what the C-GET brought is ingested now, not when its chunk times out
        if moved.status == MOVE_DESTINATION_UNKNOWN:
            raise Stop(f"{self.o.source} answered the C-MOVE with "
                       f"{status_text(moved.status, moved.comment, dest=self.o.gateway.ae)}; nothing was moved")
        return moved

    def _wait_for_group(self, group: Sequence[SourceStudy]) -> None:
        """After a group's C-MOVE that failed: until our index has not grown for :data:`GROUP_PATIENCE` (a
        source that stops a move at a failure does not say how much it sent before: Orthanc answers 0)."""
        def total() -> int:
            return sum(len(self.ports.archived(s.uid)) for s in group)

        patience = min(GROUP_PATIENCE, self.o.verify_timeout / 4)
        seen = total()
        delay, last_growth = 1.0, self.ports.clock()
        while self.ports.clock() - last_growth < patience:
            self.ports.sleep(delay)
            delay = min(delay * 1.5, 3.0)
            now = total()
            if now > seen:
                seen, last_growth = now, self.ports.clock()

    def _wait_for_index(self, study: str, listed: list[SourceInstance] | None, count: int,
                        have: dict[str, str], sent: int | None = None, patience: float | None = None
                        ) -> dict[str, str]:
        """Until our index holds the study's instances (or, after a failed move, as many as the source
        sent), or it has not grown for ``patience`` (``verify_timeout``)."""
        patience = self.o.verify_timeout if patience is None else patience
        wanted = {i.sop for i in listed} if listed is not None else None
        # Each look is a query of the study's partition: start at half a second, then less and less often.
        delay, last_growth, seen = 0.5, self.ports.clock(), len(have)
        while True:
            complete = wanted <= have.keys() if wanted is not None else len(have) >= count
            if sent is not None and len(have) >= sent:
                complete = True
            if complete or self.ports.clock() - last_growth >= patience:
                return have
            self.ports.sleep(delay)
            delay = min(delay * 1.5, 3.0)
            have = self.ports.archived(study)
            if len(have) > seen:
                seen, last_growth = len(have), self.ports.clock()

    def _quarantined(self, missing: list[str], moved: Retrieved | None) -> dict[str, tuple[str, str]]:
        """Quarantine outcomes of missing instances. After a failed move, ingest may still be quarantining
        what the gateway refused: asked again for a few seconds until one shows."""
        since = self.started - dt.timedelta(minutes=1)
        deadline = self.ports.clock() + (min(15.0, self.o.verify_timeout) if moved is not None and not moved.ok
                                         else 0.0)
        while True:
            found = self.ports.quarantined(missing, since)
            if found or self.ports.clock() >= deadline:
                return found
            self.ports.sleep(1.0)

    def _verdict(self, study: str, listed: list[SourceInstance] | None, count: int, have: dict[str, str],
                 moved: Retrieved | None, notes: list[str]) -> StudyResult:
        if listed is not None:
            missing = [i.sop for i in listed if i.sop not in have]
            refs = [(i.sop_class or have.get(i.sop, ""), i.sop) for i in listed if i.sop in have]
            total = len(listed)
        else:
            missing = []
            refs = [(cls, sop) for sop, cls in have.items()]
            total = count
        reasons: list[str] = []
        if missing or len(have) < total:
            n = len(missing) if listed is not None else total - len(have)
            reasons.append(f"{n} of {total} instance(s) not in the archive")
            found = self._quarantined(missing, moved) if missing else {}
            if found:
                by = Counter(reason for reason, _ in found.values())
                example = next(iter(found.values()))[1].rstrip(". ")
                reasons.append(f"{len(found)} quarantined by ingest: " +
                               ", ".join(f"{r} ({c})" for r, c in sorted(by.items())) +
                               (f" ({example})" if example else ""))
            if moved is not None and not moved.ok:
                word = "C-MOVE" if self.o.retrieve == "move" else "C-GET"
                reasons.append(f"the source's {word} ended with {status_text(moved.status, moved.comment)}, "
                               f"{moved.completed} sent, {moved.failed} failed")
        elif self.o.commitment and refs:
            commitment = self.ports.commit(refs)
            if commitment.failed:
                codes = Counter(f"0x{reason:04X}" for _, reason in commitment.failed)
                reasons.append(f"Storage Commitment failed for {len(commitment.failed)} of {len(refs)} instance(s) "
                               f"({', '.join(f'{c} x{n}' for c, n in sorted(codes.items()))})")
        if reasons:
            return StudyResult(study, "failed", len(have), "; ".join(reasons + notes))
        return StudyResult(study, "migrated", total, "; ".join(notes))


def group_studies(studies: Sequence[SourceStudy], limit: int) -> list[list[SourceStudy]]:
    """Consecutive small studies moved by one C-MOVE (a list of Study Instance UIDs), up to ``limit`` instances
    together: one association at the source and one chunk of our batched ingest for a handful of X-ray studies,
    instead of one each. A study of unknown size goes alone. (``bench/migrate.py`` moves Orthanc to Orthanc in
    the same groups.)"""
    out: list[list[SourceStudy]] = []
    size = 0
    for s in studies:
        n = s.count if s.count is not None else limit
        if out and size + n <= limit and out[-1][-1].count:
            out[-1].append(s)
            size += n
        else:
            out.append([s])
            size = n
    return out


def plan(session: Any, window: Window) -> list[SourceStudy]:
    """The studies of the window at the source (a C-FIND at STUDY level)."""
    return list(session.find_studies(window))
