"""The change feed over HTTP, in the shape of the Azure DICOM service's change feed v2.

``GET {root}/changefeed?startTime=&endTime=&offset=&limit=&includemetadata=`` lists the changes
(create, update, delete) whose Timestamp lies in [startTime, endTime), ordered by Sequence,
``offset`` entries skipped, at most ``limit`` (default 100, at most 200).
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
from typing import TYPE_CHECKING, Any, Final

import orjson

from shared.audit import scope as audit_scope
from shared.dicomweb.errors import BadRequest
from shared.dicomweb.reply import Reply
from shared.index import changefeed
from shared.index.store import READS, FeedEntry, IndexStore

if TYPE_CHECKING:
    from shared.dicomweb.service import Call

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 200
JSON: Final = "application/json"


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
    if not value.isdigit() or not low <= int(value) <= high:
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
    offset = _int("offset", p.get("offset"), 0, 0, 10**9)
    limit = _int("limit", p.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    metadata = _bool("includemetadata", p.get("includemetadata"))
    svc = services(call)
    page: list[FeedEntry] = []
    for n, entry in enumerate(changefeed.entries(svc.index, start, end,
                                                 horizon=svc.settings.changefeed_horizon_seconds)):
        if n < offset:
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
