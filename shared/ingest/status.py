""""Did my file get in?": the outcome of one inbox blob, read from what ingest left behind.

Ingest writes no log row per file (that would be a fourth request per instance). The outcome
is where the file's content went, and the inbox blob (kept until the inbox lifecycle rule
removes it) says what to look for:

* a quarantine copy ``dicom-quarantine/<etag>/<name>`` → ``quarantined``, reason in its metadata;
* else the header's UIDs name an instance row: written by this blob version → ``archived``
  (``updated`` if it replaced content); identical content from another upload → ``duplicate``;
  a change entry of this blob version in the study's history → ``archived``/``updated`` (since
  replaced by a later upload);
* else ``pending`` (ingest has not finished it), and ``unknown`` when the inbox no longer holds
  the blob (never uploaded, or removed by the lifecycle rule).

The same check serves STOW-RS and the DIMSE gateway, which know the blob and its UIDs already.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from shared.dicom.header import read_header
from shared.dicom.ranged import RangedReader
from shared.dicom.validate import validate
from shared.errors import BadInput
from shared.index import changefeed
from shared.index.records import Action
from shared.ingest.service import ContentDigest, source_of
from shared.ingest.states import IngestState, Outcome
from shared.ports import BlobGone
from shared.services import Services
from shared.storage import layout

RECENT_FAILURES = 20
SUMMARY_HOURS = 24


def check_params(params: list[tuple[str, str]]) -> str | None:
    """What is wrong with the query of ``GET /api/ingest/status`` (a sentence for a 400), or None: at most
    one ``blob``, naming a blob of the inbox (:func:`shared.storage.layout.is_safe_blob_name`)."""
    names = [k for k, _ in params]
    if any(k != "blob" for k in names) or len(names) > 1:
        return "The only query parameter is blob, given once: /api/ingest/status?blob=<inbox blob name>."
    if params and not layout.is_safe_blob_name(params[0][1]):
        return ("blob must name a blob of the inbox: 1-1024 characters, no control characters or backslashes, "
                "no empty, '.' or '..' path segments.")
    return None


def blob_status(svc: Services, name: str) -> Outcome:
    if not layout.is_safe_blob_name(name):  # never resolved into another container's blob
        return Outcome(name, IngestState.UNKNOWN, message="Not a name of an inbox blob.")
    blob = svc.blobs.open(layout.INBOX, name)
    reader = RangedReader(blob)
    try:
        header = read_header(reader, limits=svc.settings.limits.header)
        uids: tuple[str, str, str] | None = validate(header)[:3]
    except BlobGone:
        return Outcome(name, IngestState.UNKNOWN, message="No such blob in the inbox (never uploaded, or "
                          "removed by the inbox retention rule).")
    except BadInput:
        uids = None
    quarantined = svc.blobs.properties(layout.QUARANTINE, layout.quarantine_path(name, blob.etag or ""))
    if quarantined is not None:
        return Outcome(name, IngestState.QUARANTINED, reason=quarantined.metadata.get("reason"),
                       message=quarantined.metadata.get("message"), updated_at=_iso(quarantined.last_modified))
    if uids is None:
        return Outcome(name, IngestState.PENDING)
    return outcome_of(svc, name, blob.etag or "", *uids, digest=ContentDigest(header, blob.content_md5))


def outcome_of(svc: Services, name: str, etag: str, study: str, series: str, sop: str, *,
               digest: ContentDigest) -> Outcome:
    """The outcome of version ``etag`` of inbox blob ``name``, whose UIDs and digest are known."""
    stored = svc.index.get_instance(study, series, sop)
    source = source_of(name, etag)
    if stored is not None:
        rec = stored.record
        if rec.source == source:
            state = IngestState.UPDATED if rec.updated_at else IngestState.ARCHIVED
            return Outcome(name, state, study=study, series=series, sop=sop,
                              updated_at=rec.updated_at or rec.ingested_at)
        if digest.matches(rec.digest):
            return Outcome(name, IngestState.DUPLICATE, study=study, series=series, sop=sop,
                              updated_at=rec.ingested_at)
    history = [c for c in svc.index.changes(study) if c.sop == sop]
    for change in history:
        if change.source == source:
            state = IngestState.UPDATED if change.action is Action.UPDATE else IngestState.ARCHIVED
            return Outcome(name, state, study=study, series=series, sop=sop, updated_at=change.at)
    for change in history:  # identical to a version stored earlier (and replaced since): it was a duplicate
        if digest.matches(change.digest) and change.action is not Action.DELETE:
            return Outcome(name, IngestState.DUPLICATE, study=study, series=series, sop=sop, updated_at=change.at)
    return Outcome(name, IngestState.PENDING)


def summary(svc: Services, *, hours: int = SUMMARY_HOURS, max_items: int | None = None) -> dict[str, Any]:
    """Outcomes of the last ``hours``: instance changes from the change feed, quarantined files
    (with their reasons) from the quarantine. Duplicates leave no record and are not counted.

    Bounded: at most ``max_items`` (``DICOMFLOW_STATUS_MAX_ITEMS``) change-feed entries and as many
    quarantined files are looked at; ``complete`` is false when either stopped short (the counts are
    then lower bounds; per-blob status is always exact)."""
    most = max_items if max_items is not None else svc.settings.limits.status_max_items
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    counts: Counter[str] = Counter()
    complete = True
    for n, entry in enumerate(changefeed.entries(svc.index, since, None, horizon=0, page=min(most, 1000))):
        if n == most:
            complete = False
            break
        counts[{"create": "archived", "update": "updated", "delete": "deleted"}.get(entry.action, entry.action)] += 1
    failures = []
    for n, item in enumerate(svc.blobs.list(layout.QUARANTINE, metadata=True)):
        if n == most:
            complete = False
            break
        if item.last_modified is not None and item.last_modified >= since:
            counts[str(IngestState.QUARANTINED)] += 1
            failures.append({"blob": item.name.split("/", 1)[-1], "reason": item.metadata.get("reason"),
                             "message": item.metadata.get("message"), "at": _iso(item.last_modified)})
    failures.sort(key=lambda f: f["at"] or "", reverse=True)
    return {"hours": hours, "counts": dict(sorted(counts.items())), "complete": complete,
            "recentFailures": failures[:RECENT_FAILURES]}


def _iso(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else None
