"""The delivery ledger: one row per (study, rule, destination, instance), in Table storage.

``claim`` decides whether this invocation may send an instance now:

* no row → created as ``sending`` (attempt 1); a concurrent creator loses the
  insert and backs off (``busy``);
* ``delivered`` → ``done`` (an event delivered twice sends once);
* ``dead`` → ``dead`` (retries exhausted earlier; not retried automatically);
* ``sending`` with a live lease → ``busy`` (another worker has it);
* ``failed`` before its ``NextAttemptAt`` → ``wait`` (backoff);
* otherwise the row is taken with an ETag-conditional update (attempt n+1).

Rows are updated with ``If-Match`` so two workers never both take one instance.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from shared.index import tables
from shared.index.keys import delivery_keys, delivery_range
from shared.ports import RowChanged, RowExists, TableStore

LEASE = dt.timedelta(minutes=10)
#: Unit of the rows of destinations that take a study as a whole (``worklist``).
STUDY_UNIT = "study"
#: Unit of the row that records "RoutingCompleted was announced" for a (study, rule, destination).
ANNOUNCED_UNIT = "~announced"
#: Unit of the row that records how many dead deliveries ``Dicom.RoutingFailed`` announced for a
#: (study, rule, destination): a failure is announced once, not once per run that saw it.
FAILURE_ANNOUNCED_UNIT = "~failed"
MARKER_UNITS = frozenset({ANNOUNCED_UNIT, FAILURE_ANNOUNCED_UNIT})


class DeliveryState(enum.StrEnum):
    SENDING = "sending"
    FAILED = "failed"  # will be retried
    DELIVERED = "delivered"
    DEAD = "dead"  # retries exhausted: dead-lettered


class Claim(enum.StrEnum):
    SEND = "send"
    DONE = "done"
    BUSY = "busy"
    WAIT = "wait"
    DEAD = "dead"


@dataclass(slots=True)
class DeliveryRow:
    study: str
    rule: str
    destination: str
    unit: str
    series: str = ""
    state: str = DeliveryState.SENDING
    attempts: int = 0
    last_error: str = ""
    next_attempt_at: dt.datetime | None = None
    lease_until: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    etag: str | None = None

    def to_entity(self) -> dict[str, Any]:
        pk, rk = delivery_keys(self.study, self.rule, self.destination, self.unit)
        entity: dict[str, Any] = {
            "PartitionKey": pk,
            "RowKey": rk,
            "Rule": self.rule,
            "Destination": self.destination,
            "Unit": self.unit,
            "Series": self.series,
            "State": self.state,
            "Attempts": self.attempts,
            "LastError": self.last_error[:1024],
            "UpdatedAt": self.updated_at or dt.datetime.now(dt.UTC),
        }
        if self.next_attempt_at is not None:
            entity["NextAttemptAt"] = self.next_attempt_at
        if self.lease_until is not None:
            entity["LeaseUntil"] = self.lease_until
        return entity

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any], etag: str | None = None) -> DeliveryRow:
        return cls(
            study=str(entity["PartitionKey"]),
            rule=str(entity.get("Rule", "")),
            destination=str(entity.get("Destination", "")),
            unit=str(entity.get("Unit", "")),
            series=str(entity.get("Series", "")),
            state=str(entity.get("State", "")),
            attempts=int(entity.get("Attempts", 0)),
            last_error=str(entity.get("LastError", "")),
            next_attempt_at=_utc(entity.get("NextAttemptAt")),
            lease_until=_utc(entity.get("LeaseUntil")),
            updated_at=_utc(entity.get("UpdatedAt")),
            etag=etag,
        )


def _utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def backoff(attempts: int, base_seconds: float) -> dt.timedelta:
    """Exponential: base, 2x, 4x ... capped at one hour."""
    return dt.timedelta(seconds=min(3600.0, base_seconds * (2 ** max(0, attempts - 1))))


class Ledger:
    def __init__(self, store: TableStore) -> None:
        self.t = store

    def get(self, study: str, rule: str, destination: str, unit: str) -> DeliveryRow | None:
        row = self.t.get(tables.DELIVERIES, *delivery_keys(study, rule, destination, unit))
        return DeliveryRow.from_entity(row, row.etag) if row is not None else None

    def claim(self, study: str, series: str, rule: str, destination: str, unit: str) -> tuple[Claim, DeliveryRow]:
        now = _now()
        row = self.get(study, rule, destination, unit)
        if row is None:
            row = DeliveryRow(
                study,
                rule,
                destination,
                unit,
                series=series,
                state=DeliveryState.SENDING,
                attempts=1,
                lease_until=now + LEASE,
                updated_at=now,
            )
            try:
                row.etag = self.t.insert(tables.DELIVERIES, row.to_entity())
            except RowExists:
                return Claim.BUSY, row
            return Claim.SEND, row
        if row.state == DeliveryState.DELIVERED:
            return Claim.DONE, row
        if row.state == DeliveryState.DEAD:
            return Claim.DEAD, row
        if row.state == DeliveryState.SENDING and row.lease_until and row.lease_until > now:
            return Claim.BUSY, row
        if row.state == DeliveryState.FAILED and row.next_attempt_at and row.next_attempt_at > now:
            return Claim.WAIT, row
        taken = replace(row, state=DeliveryState.SENDING, attempts=row.attempts + 1, lease_until=now + LEASE,
                        updated_at=now)
        try:
            taken.etag = self.t.replace(tables.DELIVERIES, taken.to_entity(), etag=row.etag or "*")
        except RowChanged:
            return Claim.BUSY, row
        return Claim.SEND, taken

    def _write(self, row: DeliveryRow) -> None:
        self.t.replace(tables.DELIVERIES, row.to_entity(), etag=row.etag or "*")

    def delivered(self, row: DeliveryRow) -> DeliveryRow:
        done = replace(
            row, state=DeliveryState.DELIVERED, last_error="", lease_until=None, next_attempt_at=None, updated_at=_now()
        )
        self._write(done)
        return done

    def failed(self, row: DeliveryRow, error: str, *, max_attempts: int, backoff_seconds: float) -> DeliveryRow:
        """Record a failure: ``failed`` with a next attempt time, or ``dead`` when attempts are used up."""
        now = _now()
        if row.attempts >= max_attempts:
            out = replace(
                row, state=DeliveryState.DEAD, last_error=error, lease_until=None, next_attempt_at=None, updated_at=now
            )
        else:
            out = replace(
                row,
                state=DeliveryState.FAILED,
                last_error=error,
                lease_until=None,
                next_attempt_at=now + backoff(row.attempts, backoff_seconds),
                updated_at=now,
            )
        self._write(out)
        return out

    def rows(self, study: str, rule: str | None = None, destination: str | None = None) -> list[DeliveryRow]:
        """The ledger of a study (optionally of one rule and destination)."""
        rk = delivery_range(rule, destination) if rule is not None and destination is not None else None
        rows = [DeliveryRow.from_entity(e, e.etag) for e in self.t.query(tables.DELIVERIES, pk=study, rk_range=rk)]
        return [r for r in rows if r.unit not in MARKER_UNITS]

    def announced(self, study: str, rule: str, destination: str) -> bool:
        return self.get(study, rule, destination, ANNOUNCED_UNIT) is not None

    def failure_announced(self, study: str, rule: str, destination: str) -> int:
        """How many dead deliveries a ``Dicom.RoutingFailed`` already announced (0: none)."""
        row = self.get(study, rule, destination, FAILURE_ANNOUNCED_UNIT)
        return row.attempts if row is not None else 0

    def mark_failure_announced(self, study: str, rule: str, destination: str, dead: int) -> None:
        row = DeliveryRow(study, rule, destination, FAILURE_ANNOUNCED_UNIT, state=DeliveryState.DEAD,
                          attempts=dead, updated_at=_now())
        self.t.upsert(tables.DELIVERIES, row.to_entity())

    def mark_announced(self, study: str, rule: str, destination: str, delivered: int) -> None:
        """Remember that completion was announced (so a retry that finds all done does not repeat it)."""
        row = DeliveryRow(study, rule, destination, ANNOUNCED_UNIT, state=DeliveryState.DELIVERED,
                          attempts=delivered, updated_at=_now())
        self.t.upsert(tables.DELIVERIES, row.to_entity())
