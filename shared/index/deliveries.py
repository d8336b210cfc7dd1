"""Delivery ledger keys and rows (table :data:`shared.index.tables.DELIVERIES`).

One row per (study, rule, destination, unit): the unit is a SOP Instance UID for
destinations that take instances (``dicom``, ``dicomweb``, ``export``) and
:data:`STUDY_UNIT` for those that take a study as a whole (``worklist``).

* PartitionKey = StudyInstanceUID: every delivery of a study in one partition, so
  the ledger of a study is one query and rows never contend across studies.
* RowKey = ``<rule>~<destination>~<unit>`` with rule and destination escaped by
  :func:`shared.index.keys.escape` (``~`` is escaped too so the split is exact).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shared.index.keys import escape

STUDY_UNIT = "study"
#: Unit of the row that records "RoutingCompleted was announced" for a (study, rule, destination).
ANNOUNCED_UNIT = "~announced"
_SEP = "~"


class State:
    SENDING = "sending"
    FAILED = "failed"  # will be retried
    DELIVERED = "delivered"
    DEAD = "dead"  # retries exhausted: dead-lettered


def _part(value: str) -> str:
    return escape(value).replace(_SEP, "%7E")


def delivery_keys(study: str, rule: str, destination: str, unit: str) -> tuple[str, str]:
    return study, f"{_part(rule)}{_SEP}{_part(destination)}{_SEP}{unit}"


def rule_destination_prefix(rule: str, destination: str) -> str:
    """RowKey prefix of every row of one (rule, destination) in a study partition."""
    return f"{_part(rule)}{_SEP}{_part(destination)}{_SEP}"


@dataclass(slots=True)
class DeliveryRow:
    study: str
    rule: str
    destination: str
    unit: str
    series: str = ""
    state: str = State.SENDING
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
