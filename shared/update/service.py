"""Bulk update (``POST /studies/$bulkUpdate``, the Azure DICOM service's shape): submit, then run in steps.

:func:`submit` checks the request, locks its studies (one operation per study at a time: 409 otherwise)
and starts an operation of type ``update`` (:mod:`shared.ops`: the one store and runner of long-running
operations, ``GET /operations/{id}``); the ``operations`` function runs its steps (:func:`step`, at most
20 s each), which give every instance of each study a new version:

1. the instance's row and its archived file's header (one ranged read) are read;
2. the first version is kept, once, at ``dicom-archive/original/<study>/<series>/<sop>.dcm`` (a
   server-side copy; later updates keep that first original, as the Azure service does);
3. the new version is written over the archived file: a rewritten head and the untouched rest of the
   file copied server-side (:mod:`shared.update.rewrite`), conditional on the version read;
4. its row is written from the new header, with an ``update`` change entry, in one transaction, as
   ingest writes an updated instance. Settle then announces ``Dicom.ImageUpdated``, lists ``update`` in
   the change feed and rewrites aggregates, lookup rows and series metadata, so QIDO, WADO-RS metadata,
   C-FIND and the Part 10 file all carry the new values.

Resumable and idempotent: the runner records each step's cursor (the studies done) and results; a step
that crashed runs again, and a row written by this operation (its ``source`` is ``update:<id>``) is done,
so it is skipped; each write is safe to repeat (the original is copied only if absent, the new version
replaces only the version read, the row only the row read).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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
from shared.ops import kinds, runner
from shared.ops.kinds import Step
from shared.ops.store import Operation, OperationStore, new_id
from shared.ports import BlobGone, RowChanged, RowExists
from shared.services import Services
from shared.storage import layout
from shared.storage.regions import OPERATION_META, STAMP
from shared.update.changes import ChangeRefused, ChangeSet, from_json, parse_changes
from shared.update.locks import StudyLocks
from shared.update.rewrite import CannotRewrite, KnownPrefix, new_version

log = logging.getLogger(__name__)

MAX_STUDIES: Final = 50
ATTEMPTS: Final = 5
#: Errors listed in an operation's results (a table property holds 64 KiB); more are counted.
MAX_ERRORS: Final = 100


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
    """Lock the studies (409 naming the study and the operation that holds it), then start the operation.
    Returns it (not started yet)."""
    svc.ensure_ready()
    locks = StudyLocks(svc.tables)
    op_id = new_id()
    conflicts = locks.lock(op_id, studies)
    if conflicts:
        first = conflicts[0]
        raise UpdateRefused(409, f"Study {first.study} is already being updated by operation {first.operation} "
                                 f"(one operation per study at a time); wait until GET operations/{first.operation} "
                                 "says it has ended, then send the request again.")
    try:
        op = runner.start(svc, kinds.UPDATE, operation_id=op_id, resources=[f"studies/{s}" for s in studies],
                          params={"studyInstanceUids": studies, "changeDataset": changes.json, "actor": actor})
    except BaseException:
        locks.unlock(op_id, studies)
        raise
    log.info("Bulk update %s: %d studies, attributes %s", op.id, len(studies), ",".join(changes.keywords))
    return op


def resume(svc: Services, operation_id: str) -> Operation | None:
    """Queue an operation that has not ended again (its messages were used up, or lost)."""
    op = OperationStore(svc.tables).get(operation_id)
    if op is not None and not op.done:
        svc.queues.send(layout.OPERATIONS_QUEUE, runner.message(op.id))
    return op


def step(svc: Services, op: Operation, deadline: float) -> Step:
    """The ``update`` operations' step (:data:`shared.ops.kinds.HANDLERS`)."""
    return BulkUpdate(svc).step(op, deadline)


def _carries(meta: bytes | None, changes: ChangeSet) -> bool:
    """Whether an instance's DICOM JSON already holds every value of the change."""
    if not meta:
        return False
    doc = orjson.loads(meta)
    return all(doc.get(tag, {}).get("Value") == element["Value"] for tag, element in changes.json.items())


@dataclass(slots=True)
class _Study:
    updated: int = 0
    failed: int = 0
    gone: int = 0
    total: int = 0
    finished: bool = True
    errors: list[str] = field(default_factory=list)
    instances: list[tuple[str, str]] = field(default_factory=list)
    #: The Patient IDs the study had, and the one it gets (the audit record keeps them as digests).
    patients: set[str] = field(default_factory=set)


def _results(previous: Mapping[str, Any]) -> dict[str, Any]:
    """The Azure service's update results, as recorded so far."""
    out = {"studyProcessed": 0, "studyUpdated": 0, "studyFailed": 0, "instanceUpdated": 0}
    out.update({k: v for k, v in previous.items() if k in out or k == "errors"})
    return out


class BulkUpdate:
    """Runs the steps of ``update`` operations."""

    def __init__(self, services: Services) -> None:
        self.svc = services
        self.ingest = IngestService(services)

    def step(self, op: Operation, deadline: float) -> Step:
        """Work on the operation's studies until they are all done or ``deadline`` (``time.monotonic()``)."""
        studies = [str(s) for s in op.params["studyInstanceUids"]]
        changes = from_json(op.params["changeDataset"])
        actor = str(op.params.get("actor", ""))
        done = [str(s) for s in op.cursor.get("done", [])]
        results = _results(op.results)
        # Instances of finished studies (the results of a step that ran out of time also show the unfinished
        # study's count so far: it is counted again from its start, where that study resumes).
        results["instanceUpdated"] = int(op.cursor.get("counted", 0))
        for study in studies:
            if study in done:
                continue
            result = self._study(study, changes, op.id, deadline) if time.monotonic() < deadline else _Study(
                finished=False)
            if not result.finished:  # out of time: the next step goes on with this study
                part = result.updated / result.total if result.total else 0.0
                return Step(done=False, percent=int(99 * (len(done) + part) / len(studies)),
                            cursor={"done": done, "current": study, "counted": results["instanceUpdated"]},
                            results={**results, "instanceUpdated": results["instanceUpdated"] + result.updated})
            done.append(study)
            results["studyProcessed"] += 1
            results["instanceUpdated"] += result.updated
            if result.failed or not (result.updated or result.gone):
                results["studyFailed"] += 1
                outcome = "partial" if result.updated else "failure"
            else:
                results["studyUpdated"] += 1
                outcome = "success"
            if result.errors:
                errors = [*results.get("errors", []), *result.errors]
                results["errors"] = errors[:MAX_ERRORS] + ([f"... and {len(errors) - MAX_ERRORS} more"]
                                                           if len(errors) > MAX_ERRORS else [])
            completed(self.svc.settings, ActionRecord(
                "update", outcome, actor, study=study, count=result.updated, operation=op.id,
                instances=result.instances, patients=sorted(result.patients),
                detail=f"{result.failed} failed" if result.failed else "",
                extra={"attributes": ",".join(changes.keywords)}))
        StudyLocks(self.svc.tables).unlock(op.id, studies)
        log.info("Bulk update %s: %d studies updated, %d failed, %d instances", op.id, results["studyUpdated"],
                 results["studyFailed"], results["instanceUpdated"])
        return Step(done=True, percent=100, cursor={"done": done, "counted": results["instanceUpdated"]},
                    results=results,
                    failed=results["studyFailed"] > 0)

    def _study(self, study: str, changes: ChangeSet, operation_id: str, deadline: float) -> _Study:
        svc = self.svc
        rows = sorted(svc.index.list_study_instances(study), key=lambda r: (r.series_instance_uid,
                                                                           r.sop_instance_uid))
        result = _Study(total=len(rows), patients={r.patient_id for r in rows if r.patient_id})
        new_patient = changes.dataset.get("PatientID")
        if new_patient:
            result.patients.add(str(new_patient))
        if not rows:
            result.errors.append(f"Failed to update instances for study {study}: the study is not in the archive")
            return result
        source = source_of(operation_id)
        pending: set[str] = set()
        for rec in rows:
            if time.monotonic() > deadline:
                result.finished = False
                return result
            if rec.source == source:
                result.updated += 1  # done by an earlier step of this operation
                result.instances.append((rec.series_instance_uid, rec.sop_instance_uid))
                continue
            if rec.series_instance_uid not in pending:
                self._pending(rec, changes)
                pending.add(rec.series_instance_uid)
            try:
                outcome = self.instance(rec, changes, operation_id)
            except InstanceFailed as failed:
                result.failed += 1
                result.errors.append(f"Failed to update instance - StudyInstanceUID: {study}, SeriesInstanceUID: "
                                     f"{rec.series_instance_uid}, SOPInstanceUID: {rec.sop_instance_uid}: {failed}")
                continue
            if outcome in ("updated", "already"):
                result.updated += 1
                result.instances.append((rec.series_instance_uid, rec.sop_instance_uid))
            elif outcome == "gone":
                result.gone += 1
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
