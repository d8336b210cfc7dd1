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
from dataclasses import replace
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.index.deliveries import ANNOUNCED_UNIT, DeliveryRow, State, delivery_keys, rule_destination_prefix

LEASE = dt.timedelta(minutes=10)


class Claim(enum.StrEnum):
    SEND = "send"
    DONE = "done"
    BUSY = "busy"
    WAIT = "wait"
    DEAD = "dead"


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
                state=State.SENDING,
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
        if row.state == State.DELIVERED:
            return Claim.DONE, row
        if row.state == State.DEAD:
            return Claim.DEAD, row
        if row.state == State.SENDING and row.lease_until and row.lease_until > now:
            return Claim.BUSY, row
        if row.state == State.FAILED and row.next_attempt_at and row.next_attempt_at > now:
            return Claim.WAIT, row
        taken = replace(row, state=State.SENDING, attempts=row.attempts + 1, lease_until=now + LEASE, updated_at=now)
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
            row, state=State.DELIVERED, last_error="", lease_until=None, next_attempt_at=None, updated_at=_now()
        )
        self._write(done)
        return done

    def failed(self, row: DeliveryRow, error: str, *, max_attempts: int, backoff_seconds: float) -> DeliveryRow:
        """Record a failure: ``failed`` with a next attempt time, or ``dead`` when attempts are used up."""
        now = _now()
        if row.attempts >= max_attempts:
            out = replace(
                row, state=State.DEAD, last_error=error, lease_until=None, next_attempt_at=None, updated_at=now
            )
        else:
            out = replace(
                row,
                state=State.FAILED,
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
        rows = [DeliveryRow.from_entity(e) for e in self.table.query_entities(query, parameters=params)]
        rows = [r for r in rows if r.unit != ANNOUNCED_UNIT]
        if rule is not None and destination is not None:
            prefix = rule_destination_prefix(rule, destination)
            rows = [r for r in rows if delivery_keys(r.study, r.rule, r.destination, r.unit)[1].startswith(prefix)]
        return rows

    def announced(self, study: str, rule: str, destination: str) -> bool:
        return self.get(study, rule, destination, ANNOUNCED_UNIT) is not None

    def mark_announced(self, study: str, rule: str, destination: str, delivered: int) -> None:
        """Remember that completion was announced (so a retry that finds all done does not repeat it)."""
        row = DeliveryRow(
            study, rule, destination, ANNOUNCED_UNIT, state=State.DELIVERED, attempts=delivered, updated_at=_now()
        )
        self.table.upsert_entity(row.to_entity(), mode=UpdateMode.REPLACE)
