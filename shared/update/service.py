"""Bulk update (``POST /studies/$bulkUpdate``, the Azure DICOM service's shape): submit, then run.

:func:`submit` checks the request, records an operation, locks its studies (one operation per study at
a time: 409 otherwise) and queues it; the ``operations`` function calls :func:`run`, which gives every
instance of each study a new version:

1. the instance's row and its archived file's header (one ranged read) are read;
2. the first version is kept, once, at ``dicom-archive/original/<study>/<series>/<sop>.dcm`` (a
   server-side copy; later updates keep that first original, as the Azure service does);
3. the new version is written over the archived file: a rewritten head and the untouched rest of the
   file copied server-side (:mod:`shared.update.rewrite`), conditional on the version read;
4. its row is written from the new header, with an ``update`` change entry, in one transaction, as
   ingest writes an updated instance. Settle then announces ``Dicom.ImageUpdated``, lists ``update`` in
   the change feed and rewrites aggregates, lookup rows and series metadata, so QIDO, WADO-RS metadata,
   C-FIND and the Part 10 file all carry the new values.

Resumable and idempotent: a row written by this operation (its ``source`` is ``update:<id>``) is done,
so a re-delivered message (after a crash, or ``python -m tools update resume``) skips it and continues;
each step is safe to repeat (the original is copied only if absent, the new version replaces only the
version read, the row only the row read). Progress is saved every :data:`SAVE_EVERY` instances.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.actions import ActionRecord, completed
from shared.dicom.dicomjson import to_dicom_json
from shared.dicom.header import read_header
from shared.dicom.ranged import RangedReader
from shared.dicom.validate import is_valid_uid, validate
from shared.errors import BadInput
from shared.index.records import InstanceRecord, SeriesRecord, series_part, study_part
from shared.index.store import utcnow
from shared.ingest.service import ContentDigest, IngestService, record_of
from shared.operations.store import (
    OPERATION_META,
    Operation,
    OperationMessage,
    OperationStatus,
    OperationStore,
    OperationType,
    new_id,
)
from shared.ports import BlobGone, RowChanged, RowExists
from shared.services import Services
from shared.storage import layout
from shared.storage.regions import STAMP
from shared.update.changes import ChangeRefused, ChangeSet, from_json, parse_changes
from shared.update.rewrite import CannotRewrite, KnownPrefix, new_version

log = logging.getLogger(__name__)

MAX_STUDIES: Final = 50
#: One run works this long at most, then queues the rest of the operation (a function invocation is
#: bounded: ``functionTimeout`` is 10 minutes), so a large operation is many short runs, never a timeout.
RUN_BUDGET_SECONDS: Final = 480.0
SAVE_EVERY: Final = 10
ATTEMPTS: Final = 5


class UpdateRefused(Exception):
    """The request cannot be accepted: ``status`` (400, 409) and a message that says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InstanceFailed(Exception):
    """This instance cannot be updated (the operation goes on with the others)."""


def source_of(operation_id: str) -> str:
    """What an instance row written by an operation remembers as its source."""
    return f"update:{operation_id}"


def parse_request(body: Any) -> tuple[list[str], ChangeSet]:
    """``{"studyInstanceUids": [...], "changeDataset": {...}}`` checked: 400 naming what is wrong."""
    if not isinstance(body, Mapping):
        raise UpdateRefused(400, 'The body must be a JSON object: {"studyInstanceUids": [...], '
                                 '"changeDataset": {DICOM JSON}}.')
    unknown = sorted(set(body) - {"studyInstanceUids", "changeDataset"})
    if unknown:
        raise UpdateRefused(400, f"Unknown field(s) {', '.join(repr(u)[:40] for u in unknown)}; the body has "
                                 "studyInstanceUids and changeDataset.")
    studies = body.get("studyInstanceUids")
    if not isinstance(studies, list) or not studies:
        raise UpdateRefused(400, "studyInstanceUids must be a non-empty list of Study Instance UIDs.")
    if len(studies) > MAX_STUDIES:
        raise UpdateRefused(400, f"A bulk update covers at most {MAX_STUDIES} studies; {len(studies)} were given. "
                                 "Split them into several operations.")
    bad = [i for i, s in enumerate(studies) if not is_valid_uid(s)]
    if bad:
        raise UpdateRefused(400, f"studyInstanceUids[{bad[0]}] is not a UID (digits and dots, at most 64 "
                                 "characters).")
    if len(set(studies)) != len(studies):
        raise UpdateRefused(400, "studyInstanceUids names a study twice.")
    try:
        changes = parse_changes(body.get("changeDataset"))
    except ChangeRefused as refused:
        raise UpdateRefused(400, str(refused)) from None
    return [str(s) for s in studies], changes


def submit(svc: Services, studies: list[str], changes: ChangeSet, *, actor: str) -> Operation:
    """Record the operation, lock its studies (409 naming the study and the operation that holds it)
    and queue it. Returns the operation (not started yet)."""
    svc.ensure_ready()
    store = OperationStore(svc.tables)
    op = store.create(Operation(new_id(), OperationType.UPDATE, studies, {"changeDataset": changes.json},
                                actor=actor))
    conflicts = store.lock(op.id, studies)
    if conflicts:
        op.status = OperationStatus.FAILED
        for c in conflicts:
            op.error(f"Study {c.study} is being updated by operation {c.operation}")
        store.save(op)
        first = conflicts[0]
        raise UpdateRefused(409, f"Study {first.study} is already being updated by operation {first.operation} "
                                 f"(one operation per study at a time); wait until GET operations/{first.operation} "
                                 "says it has ended, then send the request again.")
    svc.queues.send(layout.OPERATIONS_QUEUE, OperationMessage(op.id).to_message())
    log.info("Bulk update %s: %d studies, attributes %s", op.id, len(studies), ",".join(changes.keywords))
    return op


def resume(svc: Services, operation_id: str) -> Operation | None:
    """Queue an operation that has not ended again (its messages were used up, or lost)."""
    op = OperationStore(svc.tables).get(operation_id)
    if op is not None and not op.status.ended:
        svc.queues.send(layout.OPERATIONS_QUEUE, OperationMessage(op.id).to_message())
    return op


@dataclass(slots=True)
class _Study:
    updated: int = 0
    failed: int = 0
    gone: int = 0


def _carries(meta: bytes | None, changes: ChangeSet) -> bool:
    """Whether an instance's DICOM JSON already holds every value of the change."""
    if not meta:
        return False
    doc = orjson.loads(meta)
    return all(doc.get(tag, {}).get("Value") == element["Value"] for tag, element in changes.json.items())


class _OutOfTime(Exception):
    """This run's budget is used up: the operation continues in a new message."""


class BulkUpdate:
    """Runs one operation (the ``operations`` function's body: :meth:`run`)."""

    def __init__(self, services: Services, *, budget_seconds: float = RUN_BUDGET_SECONDS) -> None:
        self.svc = services
        self.store = OperationStore(services.tables)
        self.ingest = IngestService(services)
        self.budget = budget_seconds
        self._deadline = 0.0

    def run(self, operation_id: str) -> Operation | None:
        """Run (or resume) the operation; returns its record (None if there is no such operation)."""
        self._deadline = time.monotonic() + self.budget
        try:
            return self._run(operation_id)
        except _OutOfTime:
            self.svc.queues.send(layout.OPERATIONS_QUEUE, OperationMessage(operation_id).to_message())
            log.info("Bulk update %s: this run's time is up; continuing in a new run", operation_id)
            return self.store.get(operation_id)

    def _run(self, operation_id: str) -> Operation | None:
        svc = self.svc
        svc.ensure_ready()
        op = self.store.get(operation_id)
        if op is None:
            log.warning("Operation %s: no such operation; message dropped", operation_id)
            return None
        if op.status.ended:
            self.store.unlock(op.id, op.studies)  # a crash may have come between the end and the unlock
            return op
        op.status = OperationStatus.RUNNING
        self.store.save(op)
        changes = from_json(op.spec["changeDataset"])
        for study in op.studies:
            if study in op.done:
                continue
            result = self._study(op, study, changes)
            op.done.append(study)
            op.instance_updated += result.updated
            op.current, op.current_done, op.current_total = "", 0, 0
            if result.failed or not (result.updated or result.gone):
                op.study_failed += 1
                outcome = "partial" if result.updated else "failure"
            else:
                op.study_updated += 1
                outcome = "success"
            self.store.save(op)
            completed(ActionRecord("update", outcome, op.actor, study=study, count=result.updated,
                                   operation=op.id, detail=f"{result.failed} failed" if result.failed else "",
                                   extra={"attributes": ",".join(changes.keywords)}))
        op.status = OperationStatus.FAILED if op.study_failed else OperationStatus.COMPLETED
        self.store.save(op)
        self.store.unlock(op.id, op.studies)
        log.info("Bulk update %s %s: %d studies updated, %d failed, %d instances", op.id, op.status,
                 op.study_updated, op.study_failed, op.instance_updated)
        return op

    def _study(self, op: Operation, study: str, changes: ChangeSet) -> _Study:
        svc = self.svc
        rows = sorted(svc.index.list_study_instances(study), key=lambda r: (r.series_instance_uid,
                                                                           r.sop_instance_uid))
        result = _Study()
        if not rows:
            op.error(f"Failed to update instances for study {study}: the study is not in the archive")
            return result
        op.current, op.current_done, op.current_total = study, 0, len(rows)
        source = source_of(op.id)
        pending: set[str] = set()
        last_save = time.monotonic()
        for n, rec in enumerate(rows, 1):
            if time.monotonic() > self._deadline:
                self.store.save(op)
                raise _OutOfTime
            if rec.source == source:
                result.updated += 1  # done by an earlier run of this operation
            else:
                if rec.series_instance_uid not in pending:
                    self._pending(rec, changes)
                    pending.add(rec.series_instance_uid)
                try:
                    outcome = self.instance(rec, changes, op.id)
                except InstanceFailed as failed:
                    result.failed += 1
                    op.error(f"Failed to update instance - StudyInstanceUID: {study}, SeriesInstanceUID: "
                             f"{rec.series_instance_uid}, SOPInstanceUID: {rec.sop_instance_uid}: {failed}")
                    outcome = "failed"
                if outcome in ("updated", "already"):
                    result.updated += 1
                elif outcome == "gone":
                    result.gone += 1
            op.current_done = result.updated
            if n % SAVE_EVERY == 0 or time.monotonic() - last_save > 5.0:
                self.store.save(op)
                last_save = time.monotonic()
        return result

    def _pending(self, rec: InstanceRecord, changes: ChangeSet) -> None:
        """The series' pending row with the new study-level values, so that QIDO never finds the series by
        a value it no longer has while its lookup rows are rewritten (settle removes it once stable)."""
        from shared.index.records import from_dicom_json

        updated = from_dicom_json(changes.json, study_instance_uid=rec.study_instance_uid)
        series = SeriesRecord(**study_part(rec), **series_part(rec))
        for name, value in study_part(updated).items():
            if value not in (None, "", []) and name != "study_instance_uid":
                setattr(series, name, value)
        self.svc.index.put_pending(series, self.svc.scheduler.clock())

    def instance(self, rec: InstanceRecord, changes: ChangeSet, operation_id: str) -> str:
        """Give one instance its new version: ``updated``, ``already`` (this operation did), ``gone``
        (deleted meanwhile); :class:`InstanceFailed` when it cannot be."""
        svc = self.svc
        s, se, i = rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid
        source = source_of(operation_id)
        path = layout.instance_path(s, se, i)
        own = svc.topology.own(layout.ARCHIVE)
        for _ in range(ATTEMPTS):
            existing = svc.index.get_instance(s, se, i)
            if existing is None:
                return "gone"
            if existing.record.source == source:
                return "already"
            if _carries(existing.meta, changes):
                return "already"  # it has these values already (e.g. a merge sent twice): no new version
            blob = svc.blobs.open(layout.ARCHIVE, path)
            reader = RangedReader(blob)
            try:
                header = read_header(reader)
                version = new_version(header, reader, changes)
            except BlobGone:
                if svc.blobs.properties(layout.ARCHIVE, path) is None:
                    raise InstanceFailed("its file is not in the archive") from None
                continue  # replaced while it was read: read it again
            except BadInput as bad:
                raise InstanceFailed(f"its archived file cannot be read ({bad.reason})") from None
            except CannotRewrite as exc:
                raise InstanceFailed(str(exc)) from None
            try:
                # The first version stays, once: its own stamp kept (it is that version).
                svc.blobs.copy(blob, layout.ARCHIVE, layout.original_path(s, se, i),
                               metadata=dict(blob.metadata) or None, if_absent=True)
                stamp = svc.topology.new_stamp()
                marks = {STAMP: stamp, OPERATION_META: operation_id}
                etag = svc.blobs.compose(layout.ARCHIVE, path, version.parts(blob, reader.prefix()),
                                         content_type="application/dicom", metadata=marks,
                                         if_match=blob.etag if blob.container == own else None)
                # The new version's header: from the bytes in hand, the rest (a long header) read from it.
                stored = svc.blobs.open_version(layout.ARCHIVE, path, etag)
                written = KnownPrefix(version.known(reader.prefix()), stored, version.new_size)
                new_header = read_header(RangedReader(written))
            except BlobGone:
                continue  # the file changed since it was read (an upload of a new version): start over
            uids = validate(new_header)
            doc = to_dicom_json(new_header, uids[0], uids[1], uids[2])
            new = record_of(doc, new_header, uids, source, ContentDigest(new_header, None).value)
            new.stamp, new.ingested_at, new.updated_at = stamp, existing.record.ingested_at, utcnow()
            try:
                self.ingest.store_version(new, doc, expect=existing)
            except (RowExists, RowChanged):
                continue  # the row changed meanwhile: look again
            return "updated"
        raise InstanceFailed("it kept changing under concurrent writes; run the operation again")
