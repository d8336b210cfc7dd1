"""Apply IOCM rejection notes, list what was rejected, and remove rejected files when their time is up.

When ingest stores a rejection note (arriving by any path: an inbox upload, STOW-RS or the DIMSE
gateway's C-STORE all end in ingest), :meth:`Rejections.apply` withdraws every instance it names:

1. the archived file (and the first version a bulk update kept) moves to ``dicom-archive/rejected/...``
   with the code, its meaning, the time and the note in the blob's metadata (a server-side copy, then a
   delete); with retention 0 for its code (always for 113039, Data Retention Policy Expired) the files
   are deleted at once instead;
2. its frame index and metadata sidecar go, as for DELETE;
3. its row is removed with a ``delete`` change entry whose source names the rejection, in one
   transaction per 100 instances, and the study is settled at once: QIDO, WADO-RS, C-FIND, C-MOVE,
   C-GET and the viewer no longer see it, the change feed lists ``delete`` and ``Dicom.ImageDeleted``
   goes out carrying ``rejectionCode`` and ``rejectionNote``. WADO-RS answers 410 Gone for an instance
   whose rejected file is still kept.

References to instances this archive does not hold, or that lie in another study than the note, are
reported (``GET /api/rejected``, the note's report in ``dicom-metadata/rejection-notes/``); nothing else
is hidden. The note itself stays an ordinary, visible instance. Idempotent: applying a note again
finds its instances already rejected (counted as such) and changes nothing.

:func:`purge` (a timer, hourly) deletes rejected files whose retention for their code
(``DICOMFLOW_REJECTION_RETENTION_DAYS``) has passed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from shared.actions import ActionRecord, completed
from shared.index.records import Action, ChangeEntry
from shared.index.store import utcnow
from shared.ports import BlobGone, BlobItem
from shared.rejection.codes import MEANING, RejectionCode
from shared.rejection.notes import RejectionNote
from shared.services import Services
from shared.storage import blobs, layout

log = logging.getLogger(__name__)

#: Blob metadata of a rejected file (names: letters, digits and ``_``).
CODE: Final = "rejection_code"
MEANING_META: Final = "rejection_meaning"
AT: Final = "rejected_at"
NOTE: Final = "rejection_note"
#: A delete change entry made by a rejection: ``rejected:<code>:<note SOP Instance UID>``.
SOURCE_PREFIX: Final = "rejected:"


def change_source(code: str, note_sop: str) -> str:
    return f"{SOURCE_PREFIX}{code}:{note_sop}"


def rejection_of(source: str) -> tuple[str, str] | None:
    """(code, note SOP Instance UID) of a change entry a rejection made, else None."""
    if not source.startswith(SOURCE_PREFIX):
        return None
    code, _, note = source[len(SOURCE_PREFIX):].partition(":")
    return code, note


@dataclass(slots=True)
class RejectionReport:
    """What applying one note did (also written to its report blob). UIDs only."""

    note: str
    study: str
    code: str
    at: str = field(default_factory=utcnow)
    rejected: list[dict[str, str]] = field(default_factory=list)
    deleted: list[dict[str, str]] = field(default_factory=list)
    already: list[dict[str, str]] = field(default_factory=list)
    unknown: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"note": self.note, "study": self.study, "code": self.code, "meaning": MEANING[RejectionCode(self.code)],
                "at": self.at, "rejected": self.rejected, "deleted": self.deleted, "alreadyRejected": self.already,
                "unknownReferences": self.unknown, "problems": self.problems}


def _ref(study: str, series: str, sop: str, why: str = "") -> dict[str, str]:
    out = {"study": study, "series": series, "sop": sop}
    if why:
        out["reason"] = why
    return out


class Rejections:
    def __init__(self, services: Services) -> None:
        self.svc = services

    def apply(self, note: RejectionNote) -> RejectionReport:
        """Withdraw what ``note`` names (see the module docstring); storage errors propagate (ingest's
        retry applies the note again, which finishes the work)."""
        svc = self.svc
        report = RejectionReport(note.sop, note.study, str(note.code), problems=list(note.problems))
        keep = svc.settings.retention_days(note.code) > 0
        by_study: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for ref in note.references:
            if ref.study != note.study:
                report.unknown.append(_ref(ref.study, ref.series, ref.sop, "another study than the note's"))
                continue
            by_study[ref.study].append((ref.series, ref.sop))
        for study, refs in by_study.items():
            withdrawn: list[tuple[str, str]] = []
            for series, sop in refs:
                outcome = self._withdraw(note, study, series, sop, keep=keep)
                if outcome == "withdrawn":
                    withdrawn.append((series, sop))
                    (report.rejected if keep else report.deleted).append(_ref(study, series, sop))
                elif outcome == "already":
                    report.already.append(_ref(study, series, sop))
                else:
                    report.unknown.append(_ref(study, series, sop, outcome))
            if withdrawn:
                now = utcnow()
                source = change_source(str(note.code), note.sop)
                changes = [ChangeEntry(study, se, i, Action.DELETE, svc.sequencer.next(), now, source=source)
                           for se, i in withdrawn]
                svc.index.remove_instances(study, withdrawn, changes)
                for se in sorted({se for se, _ in withdrawn}):  # served from the rows until settle rebuilds it
                    svc.blobs.delete(layout.METADATA, layout.series_metadata_path(study, se))
                svc.scheduler.reschedule(study, 0, force=True)
        blobs.put_json(svc.blobs, layout.METADATA, layout.rejection_report_path(note.study, note.sop), report.to_json(),
                       content_type="application/json")
        n = len(report.rejected) + len(report.deleted)
        completed(svc.settings, ActionRecord(
                               "reject", "success" if not report.unknown and not report.problems else "partial",
                               f"note:{note.sop}", study=note.study, count=n,
                               instances=[(r["series"], r["sop"]) for r in report.rejected + report.deleted],
                               detail=f"code={note.code} unknown={len(report.unknown)} already={len(report.already)}"))
        log.info("Rejection note %s (%s): %d withdrawn%s, %d already, %d unknown reference(s)", note.sop, note.code,
                 n, "" if keep else " and deleted", len(report.already), len(report.unknown))
        return report

    def _withdraw(self, note: RejectionNote, study: str, series: str, sop: str, *, keep: bool) -> str:
        """``withdrawn``, ``already`` (an earlier application did it), or why it is unknown."""
        svc = self.svc
        row = svc.index.get_instance(study, series, sop)
        if row is None:
            if svc.blobs.properties(layout.ARCHIVE, layout.rejected_path(study, series, sop)) is not None:
                return "already"
            return "not in the archive"
        path, original = layout.instance_path(study, series, sop), layout.original_path(study, series, sop)
        if keep:
            marks = {CODE: str(note.code), MEANING_META: MEANING[note.code], AT: utcnow(), NOTE: note.sop}
            for src, dst in ((path, layout.rejected_path(study, series, sop)),
                             (original, layout.rejected_original_path(study, series, sop))):
                blob = svc.blobs.open(layout.ARCHIVE, src)
                try:
                    if svc.topology.paired:
                        blob.read_range(0, 1)  # pins the copy that exists (own or the peer's replica)
                    svc.blobs.copy(blob, layout.ARCHIVE, dst, metadata=marks, if_absent=True)
                except BlobGone:
                    continue  # no kept original, or moved by an earlier application of this note
        svc.blobs.delete(layout.ARCHIVE, path)
        svc.blobs.delete(layout.ARCHIVE, original)
        svc.blobs.delete(layout.METADATA, layout.frame_index_path(study, series, sop))
        svc.blobs.delete(layout.METADATA, layout.instance_metadata_path(study, series, sop))
        return "withdrawn"


# -- listing and retention ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RejectedInstance:
    study: str
    series: str
    sop: str
    code: str
    rejected_at: str
    note: str
    delete_after: str
    original: bool = False

    def to_json(self) -> dict[str, Any]:
        meaning = MEANING[RejectionCode(self.code)] if self.code in _CODES else ""
        return {"study": self.study, "series": self.series, "sop": self.sop, "code": self.code, "meaning": meaning,
                "rejectedAt": self.rejected_at, "note": self.note, "deleteAfter": self.delete_after}


_CODES: Final = frozenset(c.value for c in RejectionCode)


def _parse(svc: Services, item: BlobItem) -> RejectedInstance | None:
    parts = item.name.split("/")
    original = len(parts) == 5 and parts[1] == layout.ORIGINALS
    if original:
        parts = [parts[0], *parts[2:]]
    if len(parts) != 4 or not parts[3].endswith(".dcm"):
        return None
    code = item.metadata.get(CODE, "")
    at = item.metadata.get(AT, "")
    try:
        when = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        when = item.last_modified or dt.datetime.now(dt.UTC)
    days = svc.settings.retention_days(code) if code in _CODES else 0.0
    after = (when + dt.timedelta(days=days)).isoformat(timespec="seconds").replace("+00:00", "Z")
    return RejectedInstance(parts[1], parts[2], parts[3][: -len(".dcm")], code, at, item.metadata.get(NOTE, ""),
                            after, original)


def rejected(svc: Services, study: str | None = None) -> Iterator[RejectedInstance]:
    """The rejected instances whose files are still kept, by study (a kept first version of an updated
    instance is its companion, not listed apart)."""
    for item in svc.blobs.list(layout.ARCHIVE, layout.rejected_prefix(study), metadata=True):
        got = _parse(svc, item)
        if got is not None and not got.original:
            yield got


def reports(svc: Services, study: str | None = None) -> Iterator[dict[str, Any]]:
    """What each rejection note's application found (its unknown references included)."""
    prefix = f"{layout.REJECTION_REPORTS}{study}/" if study else layout.REJECTION_REPORTS
    for item in svc.blobs.list(layout.METADATA, prefix):
        doc = blobs.get_json(svc.blobs, layout.METADATA, item.name)
        if isinstance(doc, dict):
            yield doc


def purge(svc: Services, now: dt.datetime | None = None, *, actor: str = "system") -> int:
    """Delete rejected files whose retention has passed; returns how many."""
    now = now or dt.datetime.now(dt.UTC)
    gone = 0
    for item in svc.blobs.list(layout.ARCHIVE, layout.rejected_prefix(), metadata=True):
        entry = _parse(svc, item)
        if entry is None:
            continue
        due = dt.datetime.fromisoformat(entry.delete_after.replace("Z", "+00:00")) <= now
        if due and svc.blobs.delete(layout.ARCHIVE, item.name):
            gone += 1
            if not entry.original:
                completed(svc.settings, ActionRecord("purge", "success", actor, study=entry.study,
                                                     instances=[(entry.series, entry.sop)], count=1,
                                                     detail=f"code={entry.code}"))
    if gone:
        log.info("Rejected files past their retention deleted: %d", gone)
    return gone


MAX_LISTED: Final = 5000


def listing(svc: Services, study: str | None = None, limit: int = 1000) -> dict[str, Any]:
    """``GET /api/rejected`` and ``python -m tools rejected list``: the rejected instances still kept and
    what each note's application found (its unknown references), at most ``limit`` of each."""
    from shared.audit import scope as audit_scope

    svc.ensure_ready()
    instances: list[dict[str, Any]] = []
    for entry in rejected(svc, study):
        if len(instances) == limit:
            break
        instances.append(entry.to_json())
        audit_scope.note(entry.study, entry.series, entry.sop)  # what the admin saw, for the request's record
    notes: list[dict[str, Any]] = []
    for doc in reports(svc, study):
        if len(notes) == limit:
            break
        notes.append(doc)
    return {"instances": instances, "notes": notes}
