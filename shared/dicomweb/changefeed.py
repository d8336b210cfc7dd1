"""The change feed over HTTP, in the shape of the Azure DICOM service's change feed v2.

``GET {root}/changefeed?startTime=&endTime=&offset=&limit=&includemetadata=`` lists the changes
(create, update, delete) whose Timestamp lies in [startTime, endTime), ordered by Sequence,
``offset`` entries skipped, at most ``limit`` (default 100, at most 200).

``offset`` (decision): the feed never reads and skips more than :data:`MAX_COUNT_OFFSET` entries.
An offset up to that counts entries, as the Azure service's v2 does; an offset that is a Sequence
(:data:`SEQUENCE_FLOOR` or more: every one of ours is) is a cursor, the entries after that Sequence,
as the Azure service's v1 reads it, and the feed seeks straight to it (the hour bucket of that
sequence, then a key range): continue with ``offset=<the last Sequence you received>``. Anything in
between is a 400 that says so.
``GET {root}/changefeed/latest`` is the newest entry. Each entry::

    {"Sequence": 1732874400123042, "StudyInstanceUID": "...", "SeriesInstanceUID": "...",
     "SOPInstanceUID": "...", "Action": "create", "Timestamp": "2026-11-29T10:00:00.123Z",
     "State": "current", "Metadata": {...DICOM JSON...}}

``State`` is ``current`` (this is the instance as stored), ``replaced`` (a later change of the
same instance exists) or ``deleted``. ``Metadata`` is included for current entries unless
``includemetadata=false``. Sequences grow with time and may have gaps; an entry appears when its
study settles (a few seconds after ingest) and its order never changes afterwards.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any, Final

import orjson

from shared.audit import scope as audit_scope
from shared.dicomweb.errors import BadRequest
from shared.dicomweb.reply import Reply
from shared.index import changefeed
from shared.index.sequence import seq_of_time
from shared.index.store import READS, FeedEntry, IndexStore

if TYPE_CHECKING:
    from shared.dicomweb.service import Call

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 200
JSON: Final = "application/json"
#: The most entries a request reads and skips for a counting ``offset``.
MAX_COUNT_OFFSET: Final = 10_000
#: The smallest offset read as a Sequence cursor: the sequence of 2000-01-01T00:00:00Z.
SEQUENCE_FLOOR: Final = seq_of_time(946_684_800)


def _time(name: str, value: str | None) -> dt.datetime | None:
    if value is None or value == "":
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date-time such as 2026-11-29T10:00:00Z.") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _int(name: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if not re.fullmatch(r"[0-9]{1,20}", value) or not low <= int(value) <= high:  # ASCII digits only
        raise BadRequest(f"{name} must be a whole number from {low} to {high}.")
    return int(value)


def _bool(name: str, value: str | None) -> bool:
    if value is None or value == "":
        return True
    if value.lower() not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false.")
    return value.lower() == "true"


def _params(params: list[tuple[str, str]], allowed: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params:
        key = k.lower()
        if key not in allowed:
            raise BadRequest(f"Query parameter {k!r} is not supported by the change feed; use "
                             f"{', '.join(sorted(allowed))}.")
        out[key] = v
    return out


def entry_json(index: IndexStore, entries: list[FeedEntry], *, metadata: bool) -> list[dict[str, Any]]:
    metas: list[Any] = [None] * len(entries)
    if metadata:
        def meta(e: FeedEntry) -> Any:
            if e.state != "current":
                return None
            got = index.get_instance(e.study, e.series, e.sop)
            return orjson.loads(got.meta) if got is not None and got.meta else None

        metas = list(READS.map(meta, entries))
    out = []
    for e in entries:  # the audit record of this request names what it listed
        audit_scope.note(e.study, e.series, e.sop)
    for e, m in zip(entries, metas, strict=True):
        item: dict[str, Any] = {"Sequence": e.seq, "StudyInstanceUID": e.study, "SeriesInstanceUID": e.series,
                                "SOPInstanceUID": e.sop, "Action": e.action, "Timestamp": e.timestamp,
                                "State": e.state}
        if metadata:
            item["Metadata"] = m
        out.append(item)
    return out


def feed(call: Call) -> Reply:
    from shared.dicomweb.service import services

    p = _params(call.params, {"starttime", "endtime", "offset", "limit", "includemetadata"})
    start, end = _time("startTime", p.get("starttime")), _time("endTime", p.get("endtime"))
    if start is not None and end is not None and end <= start:
        raise BadRequest("endTime must be after startTime (startTime is inclusive, endTime exclusive).")
    offset = _int("offset", p.get("offset"), 0, 0, 2**63 - 1)
    if MAX_COUNT_OFFSET < offset < SEQUENCE_FLOOR:
        raise BadRequest(f"offset skips at most {MAX_COUNT_OFFSET:,} entries; to read further, pass the Sequence of "
                         "the last entry you received as offset (the feed continues after it).")
    after, skip = (offset, 0) if offset >= SEQUENCE_FLOOR else (None, offset)
    limit = _int("limit", p.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    metadata = _bool("includemetadata", p.get("includemetadata"))
    svc = services(call)
    page: list[FeedEntry] = []
    for n, entry in enumerate(changefeed.entries(svc.index, start, end, after=after, page=skip + limit,
                                                 horizon=svc.settings.changefeed_horizon_seconds)):
        if n < skip:
            continue
        page.append(entry)
        if len(page) == limit:
            break
    return Reply(200, {"Content-Type": JSON}, orjson.dumps(entry_json(svc.index, page, metadata=metadata)))


def latest(call: Call) -> Reply:
    from shared.dicomweb.service import services

    p = _params(call.params, {"includemetadata"})
    svc = services(call)
    entry = changefeed.latest(svc.index, horizon=svc.settings.changefeed_horizon_seconds)
    if entry is None:
        return Reply(200, {"Content-Type": JSON}, b"{}")  # an empty feed, as the Azure service answers
    body = entry_json(svc.index, [entry], metadata=_bool("includemetadata", p.get("includemetadata")))[0]
    return Reply(200, {"Content-Type": JSON}, orjson.dumps(body))
