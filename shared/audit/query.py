"""Reading the audit trail back: records of a time window, by study, requestor or patient.

The records of one hour are in ``dicom-audit/YYYY/MM/DD/HH/`` (one append blob per writer): a window is read
day folder by day folder (one listing per day), each blob whole, and filtered here. Records are deduplicated by
their ``id`` (a batch appended twice after a crash is listed once) and returned oldest first. A window is at most
:data:`MAX_DAYS` days; the default is the last 24 hours. This region's trail only: each region keeps the record
of what was asked of it (Log Analytics holds both).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.audit.record import patient_digest, patients_of, requestors_of, studies_of, time_of
from shared.ports import BlobStore
from shared.storage import layout

MAX_DAYS: Final = 31
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000


class AuditQueryError(ValueError):
    """A query that cannot be answered; the message says what to change."""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    start: dt.datetime
    end: dt.datetime
    study: str | None = None
    actor: str | None = None
    #: Patient ID digests (:func:`shared.audit.record.patient_digest`) and the studies of that patient.
    patients: frozenset[str] = frozenset()
    patient_studies: frozenset[str] = frozenset()
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(cls, params: Mapping[str, str], *, salt: str = "", now: dt.datetime | None = None) -> AuditQuery:
        """From query parameters ``study``, ``actor``, ``patient``, ``from``, ``to`` (ISO 8601), ``limit``."""
        allowed = {"study", "actor", "patient", "from", "to", "limit"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise AuditQueryError(f"Unknown parameter {unknown[0]!r}; use study, actor, patient, from, to, limit.")
        now = now or dt.datetime.now(dt.UTC)
        end = _time("to", params.get("to")) or now
        start = _time("from", params.get("from")) or end - dt.timedelta(days=1)
        if start >= end:
            raise AuditQueryError("from must be before to.")
        if end - start > dt.timedelta(days=MAX_DAYS):
            raise AuditQueryError(f"The window is at most {MAX_DAYS} days; narrow from/to.")
        study = (params.get("study") or "").strip() or None
        if study is not None and (len(study) > 64 or not all(c.isdigit() or c == "." for c in study)):
            raise AuditQueryError("study must be a Study Instance UID (digits and dots).")
        actor = (params.get("actor") or "").strip() or None
        if actor is not None and (len(actor) > 256 or not actor.isprintable()):
            raise AuditQueryError("actor must be a user or application id (printable, at most 256 characters).")
        patient = (params.get("patient") or "").strip()
        raw_limit = (params.get("limit") or str(DEFAULT_LIMIT)).strip()
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise AuditQueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
        return cls(start, end, study, actor, frozenset({patient_digest(patient, salt)}) if patient else frozenset(),
                   frozenset(), int(raw_limit))

    def matches(self, doc: Mapping[str, Any]) -> bool:
        at = _parse_at(time_of(doc))
        if at is None or not self.start <= at < self.end:
            return False
        if self.study and self.study not in studies_of(doc):
            return False
        if self.actor and self.actor not in requestors_of(doc):
            return False
        return not self.patients or bool(self.patients & patients_of(doc) or self.patient_studies & studies_of(doc))

    def to_json(self) -> dict[str, Any]:
        return {"from": _iso(self.start), "to": _iso(self.end), "study": self.study, "actor": self.actor,
                "patient": bool(self.patients), "limit": self.limit}


def _time(name: str, raw: str | None) -> dt.datetime | None:
    if not raw:
        return None
    when = _parse_at(raw.strip())
    if when is None:
        raise AuditQueryError(f"{name} must be an ISO 8601 date-time such as 2026-11-29T10:00:00Z.")
    return when


def _parse_at(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _days(start: dt.datetime, end: dt.datetime) -> Iterator[dt.date]:
    day = start.astimezone(dt.UTC).date()
    last = end.astimezone(dt.UTC).date()
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Found:
    records: list[dict[str, Any]]
    more: bool
    blobs: int


def search(blobs: BlobStore, query: AuditQuery) -> Found:
    """The records of ``query``'s window that match it, oldest first, at most ``limit`` (``more`` if cut)."""
    first_hour = query.start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    seen: set[str] = set()
    found: list[dict[str, Any]] = []
    read = 0
    for day in _days(query.start, query.end):
        for item in sorted(blobs.list(layout.AUDIT, day.strftime("%Y/%m/%d/")), key=lambda b: b.name):
            hour = _hour_of(item.name)
            if hour is None or hour < first_hour or hour >= query.end:
                continue
            raw = blobs.read(layout.AUDIT, item.name)
            read += 1
            for line in (raw or b"").splitlines():
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                rid = str(doc.get("id", ""))
                if rid in seen or not query.matches(doc):
                    continue
                seen.add(rid)
                found.append(doc)
    found.sort(key=time_of)
    return Found(found[:query.limit], len(found) > query.limit, read)


def _hour_of(name: str) -> dt.datetime | None:
    parts = name.split("/")
    if len(parts) < 5:
        return None
    try:
        return dt.datetime(int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]), tzinfo=dt.UTC)
    except ValueError:
        return None
