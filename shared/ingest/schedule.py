"""When a study is settled: once per quiet period, decided in-process, off the instance write path.

A modality sends a study's slices in parallel, so nothing shared may be written per instance to
debounce them (that made every ingest of a study contend for one row). Instead each process
remembers, per study, when the settle message it sent will run, and per series, when it last
wrote the series' pending row:

* ``before_write`` (ingest, before the instance row is written): the series' pending row, if
  this process has not written it within the last ``stable_age - margin`` seconds. A pending row
  is removed only by a settle run that finds the study stable (quiet for ``stable_age``), and
  such a run reads the partition after every instance whose writer skipped the pending row
  (their writes precede ``t_pending + stable_age - margin``), so no archived instance is ever
  without either a pending row or its lookup rows.
* ``after_write`` (ingest, after the row): the study joins this process's *arrival group*, one settle
  message for every study the process wrote first within a window, unless a message this process sent
  for it has not run yet (it will see this instance: the row is already written). The group's message is
  sent with the window's first study, due ``settle_delay`` later; the studies after it are added by
  rewriting that message (Azure Queue's Update Message), which succeeds only while nobody has received
  it, so the run that reads it reads their rows too. The rewrite waits up to :data:`GROUP_FLUSH_SECONDS`
  (a timer) so the studies that join meanwhile go in one request: at most one request per second and
  process instead of one per study, one message to receive and delete, and one settle run whose writes
  to shared partitions (lookups, change-feed shards, events) go in shared batches. A study joins only
  while the message is due at least ``settle_delay / 2`` later, so a burst of its instances still lands
  before the run (and the rewrite well before it); otherwise a new group opens. A process that stops
  between a study's join and the rewrite leaves that study to the pending sweep
  (:mod:`shared.ingest.sweep`): its pending row is there, and the sweep settles every study whose pending
  row outlived the stable age by far.
* ``reschedule`` (settle, not yet stable): a message for when the study will be quiet;
  ``reschedule_group`` one message for a group run's studies.

A queue may hand a delayed message over up to :data:`EARLY_DELIVERY` before its due time, so a
message due that soon is not counted on by a settle run asking to be followed up (it may be that
run's own), nor by a write just before a quiet-period run (that run may have read the partition
already, and would call the study stable without it).

Across processes (several function instances) each sends its own: settle runs are idempotent,
their writes are conditional on the settle state they read, and a run that announces a study's
images holds it (:mod:`shared.ingest.settle`), so two processes' groups do not announce one study twice.

``SettleScheduler.clock`` is the process's quiet-period clock: ingest stamps each instance's
arrival with it and settle measures the quiet period with it (tests drive it by hand).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.index.records import SeriesRecord
from shared.index.store import IndexStore
from shared.ports import Queues, SentMessage
from shared.storage import layout


@dataclass(frozen=True, slots=True)
class SettleRequest:
    """The settle queue message: the one format its producers (ingest, DELETE, settle's own
    re-schedule, reprocess) and its consumer (the ``settle`` function) share."""

    study: str = ""
    #: Run even if nothing changed (DELETE, reprocess, tests): re-derive and re-announce.
    force: bool = False
    #: Re-derive every derived row and bundle even if nothing changed, announcing nothing new
    #: (``reindex --rebuild`` after a change of the row schema).
    rederive: bool = False
    #: A group of studies settled in one run (the backfill path: :mod:`shared.ingest.batch`), instead of ``study``.
    studies: tuple[str, ...] = ()
    #: The group's pending rows as the batched path wrote them (study -> series -> ETag): removed without a read.
    pending: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: A group whose runs hold each study they announce images of (the per-file path's groups: several
    #: processes may settle one study at once); the backfill path's groups do not.
    hold: bool = False
    #: How many times settle put this request back for later because storage failed (backoff, settle.py).
    attempt: int = 0
    #: How many times the redrive timer took it back from the poison queue (shared/ingest/redrive.py).
    redrives: int = 0

    def to_message(self) -> str:
        body: dict[str, Any] = {"studies": list(self.studies)} if self.studies else {"study": self.study}
        if self.pending:
            body["pending"] = {s: dict(p) for s, p in self.pending.items()}
        if self.hold and self.studies:
            body["hold"] = True
        if self.force:
            body["force"] = True
        if self.rederive:
            body["rederive"] = True
        if self.attempt:
            body["attempt"] = self.attempt
        if self.redrives:
            body["redrives"] = self.redrives
        return orjson.dumps(body).decode()

    @classmethod
    def from_message(cls, body: bytes | str) -> SettleRequest:
        """Parse a queue message; a message that is not ours raises ``ValueError`` (the trigger's
        poison handling parks it after its retries)."""
        doc = orjson.loads(body)
        group = doc.get("studies") if isinstance(doc, dict) else None
        if isinstance(group, list) and group and all(isinstance(s, str) for s in group):
            raw = doc.get("pending")
            pending = {str(s): {str(k): str(v) for k, v in p.items()} for s, p in raw.items()
                       if isinstance(p, dict)} if isinstance(raw, dict) else {}
            return cls(studies=tuple(group), force=bool(doc.get("force", False)), pending=pending,
                       hold=doc.get("hold") is True, attempt=_count(doc.get("attempt")),
                       redrives=_count(doc.get("redrives")))
        if not isinstance(doc, dict) or not isinstance(doc.get("study"), str):
            raise ValueError("A settle message is a JSON object with a 'study' UID (or a 'studies' list).")
        return cls(study=doc["study"], force=bool(doc.get("force", False)),
                   rederive=bool(doc.get("rederive", False)), attempt=_count(doc.get("attempt")),
                   redrives=_count(doc.get("redrives")))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


#: How much before its due time a queue may deliver a delayed message: visibility timeouts are whole
#: seconds on the storage service's clock. A message due within this margin may be the very one
#: whose run is asking, so it is not counted on to come later.
EARLY_DELIVERY = 2.0
#: Studies in one arrival group at most (its message stays far below the queue's 64 KiB).
GROUP_STUDIES = 200
#: The open group's message is rewritten at most this often (and within a quarter of the settle delay) to
#: name the studies that joined since.
GROUP_FLUSH_SECONDS = 1.0

log = logging.getLogger(__name__)
#: The schedulers of this process, whose open groups are named in full at exit (a clean stop).
_LIVE: weakref.WeakSet[SettleScheduler] = weakref.WeakSet()


@dataclass(slots=True)
class _Group:
    """The arrival group this process has open: its message's handle, when it is due, its studies."""

    handle: SentMessage
    due: float
    studies: list[str]
    #: How many of ``studies`` the message names (the rest joined since its last rewrite).
    named: int = 1


class SettleScheduler:
    def __init__(self, queues: Queues, index: IndexStore, *, settle_delay: float, stable_age: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.queues = queues
        self.index = index
        self.settle_delay = settle_delay
        self.stable_age = stable_age
        #: A pending row written this long ago still counts (see the module docstring).
        self.pending_window = stable_age - max(2.0, stable_age / 4)
        self.clock = clock
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}
        self._rederive: dict[str, float] = {}
        #: Studies whose next message settle sent (its run may find the study stable), by due time.
        self._quiet: dict[str, float] = {}
        self._pending: dict[tuple[str, str], float] = {}
        #: The open arrival group, and the lock that orders the rewrites of its message (each needs the
        #: receipt the one before returned).
        self._group: _Group | None = None
        self._group_lock = threading.Lock()
        #: Seconds a joined study waits for the group's rewrite, well before the group's run (tests set it high
        #: and call :meth:`flush`).
        self.flush_seconds = min(GROUP_FLUSH_SECONDS, settle_delay / 4)
        self._timer: threading.Timer | None = None
        _LIVE.add(self)

    def before_write(self, series: SeriesRecord) -> None:
        key = (series.study_instance_uid, series.series_instance_uid)
        now = self.clock()
        with self._lock:
            written = self._pending.get(key)
            if written is not None and now - written < self.pending_window:
                return
        self.index.put_pending(series, now)
        with self._lock:
            self._pending[key] = now
            if len(self._pending) > 100_000:  # bound the memory of a long-running worker
                cutoff = now - max(self.pending_window, 0.0)
                self._pending = {k: v for k, v in self._pending.items() if v >= cutoff}

    def pending_needed(self, records: Sequence[SeriesRecord]) -> list[SeriesRecord]:
        """The series whose pending row this process has not written within the pending window (the
        batched path writes those in one batch; see :meth:`before_write`), marked as written now."""
        now = self.clock()
        with self._lock:
            out = [r for r in records if now - self._pending.get((r.study_instance_uid, r.series_instance_uid),
                                                                 -1e18) >= self.pending_window]
            for r in out:
                self._pending[(r.study_instance_uid, r.series_instance_uid)] = now
        return out

    def _covered(self, study: str, now: float) -> float | None:
        """None if a message of ours still to come reads a write made now, else the study's due time (0:
        none). Not counted on: one due within EARLY_DELIVERY that settle sent for the end of the quiet
        period: its run may already be reading the partition, would miss this write and call the study
        stable. (A run of the arrival window is never stable, so it reschedules and the write is read then.)"""
        due = self._due.get(study, 0.0)
        return None if due > now + (EARLY_DELIVERY if self._quiet.get(study) == due else 0.0) else due

    def after_write(self, study: str) -> None:
        with self._lock:
            if self._covered(study, self.clock()) is None:
                return
        with self._group_lock:
            now = self.clock()
            with self._lock:
                due = self._covered(study, now)  # another thread may have added it meanwhile
            if due is None:
                return
            g = self._group
            # Join the open group while its run is far enough off for the study's burst to land first (and
            # after a quiet-period run due just now, which may miss this write).
            if g is not None and g.due - now >= self.settle_delay / 2 and g.due > due + 1.0 \
                    and len(g.studies) < GROUP_STUDIES:
                g.studies.append(study)
                self._note_due(study, g.due, now)
                if self.flush_seconds > 0:
                    self._arm()
                else:  # no settle delay: the message may be received any moment, so name the study now
                    self._name_all(g)
                return
            if g is not None and g.named < len(g.studies):
                self._name_all(g)  # the group closes: its message names its last studies first
            delay = max(0.0, due - now) + self.settle_delay
            sent = self.queues.send(layout.SETTLE_QUEUE, SettleRequest(studies=(study,), hold=True).to_message(),
                                    delay_seconds=delay)
            self._group = _Group(sent, now + delay, [study]) if sent is not None else None
            self._note_due(study, now + delay, now)

    def flush(self) -> None:
        """Rewrite the open group's message to name every study that joined it (the timer does this within
        :attr:`flush_seconds` of a join)."""
        with self._group_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            g = self._group
            if g is not None and g.named < len(g.studies):
                self._name_all(g)

    def _arm(self) -> None:
        """Have the timer rewrite the open group's message soon (under ``_group_lock``)."""
        if self._timer is None:
            self._timer = threading.Timer(self.flush_seconds, self._flush_on_timer)
            self._timer.daemon = True
            self._timer.start()

    def _flush_on_timer(self) -> None:
        try:
            self.flush()
        except Exception:  # a timer thread: nothing above it would log; the sweep settles them
            log.warning("The settle group's message could not name its last studies; the pending sweep will "
                        "settle them", exc_info=True)

    def _name_all(self, g: _Group) -> None:
        """Rewrite ``g``'s message to name all its studies (under ``_group_lock``). If it was received meanwhile
        (its run started, or the queue handed it over early), the studies it does not name get a message of
        their own, due as the group was."""
        now = self.clock()
        text = SettleRequest(studies=tuple(g.studies), hold=True).to_message()
        handle = self.queues.update(layout.SETTLE_QUEUE, g.handle, text, delay_seconds=max(0.0, g.due - now))
        if handle is not None:
            g.handle, g.named = handle, len(g.studies)
            return
        rest = g.studies[g.named:]
        sent = self.queues.send(layout.SETTLE_QUEUE, SettleRequest(studies=tuple(rest), hold=True).to_message(),
                                delay_seconds=max(0.0, g.due - now))
        g.named = len(g.studies)
        if self._group is g:
            self._group = _Group(sent, g.due, list(rest), len(rest)) if sent is not None else None

    def _note_due(self, study: str, due: float, now: float) -> None:
        with self._lock:
            self._due[study] = due
            self._quiet.pop(study, None)
            if len(self._due) > 100_000:
                self._due = {k: v for k, v in self._due.items() if v > now}
                self._quiet = {k: v for k, v in self._quiet.items() if k in self._due}

    def reschedule(self, study: str, delay: float, *, force: bool = False, rederive: bool = False) -> None:
        """A message in ``delay`` seconds (settle not yet stable; DELETE and reprocess with 0)."""
        now = self.clock()
        with self._lock:
            due = self._due.get(study, 0.0)
            if not (force or rederive) and now + EARLY_DELIVERY < due <= now + delay + 1.0:
                return  # a message of ours already runs by then (and it is not this run's own)
            if rederive and self._rederive.get(study, 0.0) > now:
                return  # one rederive run per study and window is enough
            self._due[study] = max(due, now + delay)
            self._quiet[study] = self._due[study]
            if rederive:
                self._rederive[study] = now + delay
        self._send(SettleRequest(study, force=force, rederive=rederive), delay)

    def reschedule_group(self, waits: Mapping[str, float]) -> None:
        """Follow-up runs for the studies a group run found not yet stable (study -> seconds until it will
        have been quiet for the stable age): one held group message per spread of ``settle_delay``, due when
        its last study will be quiet (they arrived in one window, so within seconds of each other)."""
        now = self.clock()
        with self._lock:
            wanted = sorted(((d, s) for s, d in waits.items()
                             if not now + EARLY_DELIVERY < self._due.get(s, 0.0) <= now + d + 1.0))
        batches: list[list[tuple[float, str]]] = []
        for d, s in wanted:
            if batches and d - batches[-1][0][0] <= self.settle_delay and len(batches[-1]) < GROUP_STUDIES:
                batches[-1].append((d, s))
            else:
                batches.append([(d, s)])
        for batch in batches:
            delay = batch[-1][0]
            with self._lock:
                for _, s in batch:
                    self._due[s] = max(self._due.get(s, 0.0), now + delay)
                    self._quiet[s] = self._due[s]
            self._send(SettleRequest(studies=tuple(s for _, s in batch), hold=True), delay)

    def schedule_group(self, studies: Sequence[str], delay: float, *,
                       pending: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """One message for several studies, settled together in ``delay`` seconds (the backfill path:
        one run per study that announces images and stability together when ``delay`` is the stable age),
        with the ETags of the pending rows written for them."""
        now = self.clock()
        with self._lock:
            # A study a message of ours already covers (due no earlier than this one, give or take the margin
            # a chunk's message carries: the next chunk of the same study, moments later) is left out.
            wanted = [s for s in dict.fromkeys(studies) if self._due.get(s, 0.0) < now + delay - EARLY_DELIVERY - 1.0]
            for s in wanted:
                self._due[s] = now + delay
        if wanted:
            self._send(SettleRequest(studies=tuple(wanted), pending={s: (pending or {})[s] for s in wanted
                                                                     if s in (pending or {})}), delay)

    def _send(self, request: SettleRequest, delay: float) -> None:
        self.queues.send(layout.SETTLE_QUEUE, request.to_message(), delay_seconds=max(0.0, delay))


@atexit.register
def _name_all_at_exit() -> None:
    """A clean stop names every joined study in its group's message (a crash leaves them to the sweep)."""
    for scheduler in list(_LIVE):
        try:
            scheduler.flush()
        except Exception:  # noqa: BLE001 - at exit: the pending sweep settles what is left
            log.warning("At exit, a settle group's message could not name its last studies; the pending sweep "
                        "will settle them")
