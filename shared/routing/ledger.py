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
from dataclasses import dataclass, replace
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.index.keys import delivery_keys, delivery_range

LEASE = dt.timedelta(minutes=10)
#: Unit of the rows of destinations that take a study as a whole (``worklist``).
STUDY_UNIT = "study"
#: Unit of the row that records "RoutingCompleted was announced" for a (study, rule, destination).
ANNOUNCED_UNIT = "~announced"


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
    def from_entity(cls, entity: Any) -> DeliveryRow:
        meta = getattr(entity, "metadata", None) or {}
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
            etag=meta.get("etag"),
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
    def __init__(self, table_client: Any) -> None:
        self.table = table_client

    def get(self, study: str, rule: str, destination: str, unit: str) -> DeliveryRow | None:
        pk, rk = delivery_keys(study, rule, destination, unit)
        try:
            return DeliveryRow.from_entity(self.table.get_entity(pk, rk))
        except ResourceNotFoundError:
            return None

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
                meta = self.table.create_entity(row.to_entity())
            except ResourceExistsError:
                return Claim.BUSY, row
            row.etag = meta.get("etag")
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
            meta = self.table.update_entity(
                taken.to_entity(), mode=UpdateMode.REPLACE, etag=row.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceNotFoundError, HttpResponseError) as exc:
            if getattr(exc, "status_code", None) in (404, 409, 412):
                return Claim.BUSY, row
            raise
        taken.etag = meta.get("etag")
        return Claim.SEND, taken

    def _write(self, row: DeliveryRow) -> None:
        self.table.update_entity(
            row.to_entity(), mode=UpdateMode.REPLACE, etag=row.etag, match_condition=MatchConditions.IfNotModified
        )

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
        query = "PartitionKey eq @pk"
        params: dict[str, Any] = {"pk": study}
        if rule is not None and destination is not None:
            query += " and RowKey ge @lo and RowKey lt @hi"
            params["lo"], params["hi"] = delivery_range(rule, destination)
        rows = [DeliveryRow.from_entity(e) for e in self.table.query_entities(query, parameters=params)]
        return [r for r in rows if r.unit != ANNOUNCED_UNIT]

    def announced(self, study: str, rule: str, destination: str) -> bool:
        return self.get(study, rule, destination, ANNOUNCED_UNIT) is not None

    def mark_announced(self, study: str, rule: str, destination: str, delivered: int) -> None:
        """Remember that completion was announced (so a retry that finds all done does not repeat it)."""
        row = DeliveryRow(study, rule, destination, ANNOUNCED_UNIT, state=DeliveryState.DELIVERED,
                          attempts=delivered, updated_at=_now())
        self.table.upsert_entity(row.to_entity(), mode=UpdateMode.REPLACE)
