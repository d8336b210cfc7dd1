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
* ``after_write`` (ingest, after the row): a settle message in ``settle_delay`` seconds unless
  one this process sent has not run yet (it will see this instance: the row is already written).
* ``reschedule`` (settle, not yet stable): a message for when the study will be quiet.

A queue may hand a delayed message over up to :data:`EARLY_DELIVERY` before its due time, so a
message due that soon is not counted on by a settle run asking to be followed up (it may be that
run's own), nor by a write just before a quiet-period run (that run may have read the partition
already, and would call the study stable without it).

Across processes (several function instances) each sends its own: settle runs are idempotent,
and their writes are conditional on the study row they read.

``SettleScheduler.clock`` is the process's quiet-period clock: ingest stamps each instance's
arrival with it and settle measures the quiet period with it (tests drive it by hand).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from shared.index.records import SeriesRecord
from shared.index.store import IndexStore
from shared.ports import Queues
from shared.storage import layout


@dataclass(frozen=True, slots=True)
class SettleRequest:
    """The settle queue message: the one format its producers (ingest, DELETE, settle's own
    re-schedule, reprocess) and its consumer (the ``settle`` function) share."""

    study: str
    #: Run even if nothing changed (DELETE, reprocess, tests): re-derive and re-announce.
    force: bool = False
    #: Re-derive every derived row and bundle even if nothing changed, announcing nothing new
    #: (``reindex --rebuild`` after a change of the row schema).
    rederive: bool = False
    #: How many times settle put this request back for later because storage failed (backoff, settle.py).
    attempt: int = 0
    #: How many times the redrive timer took it back from the poison queue (shared/ingest/redrive.py).
    redrives: int = 0

    def to_message(self) -> str:
        body: dict[str, Any] = {"study": self.study}
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
        if not isinstance(doc, dict) or not isinstance(doc.get("study"), str):
            raise ValueError("A settle message is a JSON object with a 'study' UID.")
        return cls(study=doc["study"], force=bool(doc.get("force", False)),
                   rederive=bool(doc.get("rederive", False)), attempt=_count(doc.get("attempt")),
                   redrives=_count(doc.get("redrives")))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


#: How much before its due time a queue may deliver a delayed message: visibility timeouts are whole
#: seconds on the storage service's clock. A message due within this margin may be the very one
#: whose run is asking, so it is not counted on to come later.
EARLY_DELIVERY = 2.0


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

    def after_write(self, study: str) -> None:
        now = self.clock()
        with self._lock:
            due = self._due.get(study, 0.0)
            # A message of ours still to come reads this write. Not counted on: one due within
            # EARLY_DELIVERY that settle sent for the end of the quiet period: its run may already
            # be reading the partition, would miss this write and call the study stable. (A run of
            # the arrival window is never stable, so it reschedules and the write is read then.)
            if due > now + (EARLY_DELIVERY if self._quiet.get(study) == due else 0.0):
                return
            delay = max(0.0, due - now) + self.settle_delay
            self._due[study] = now + delay
            self._quiet.pop(study, None)
            if len(self._due) > 100_000:
                self._due = {k: v for k, v in self._due.items() if v > now}
                self._quiet = {k: v for k, v in self._quiet.items() if k in self._due}
        self._send(SettleRequest(study), delay)

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

    def _send(self, request: SettleRequest, delay: float) -> None:
        self.queues.send(layout.SETTLE_QUEUE, request.to_message(), delay_seconds=max(0.0, delay))
