"""STOW-RS (PS3.18 10.5): validate each part like ingest does, drop it in the inbox, report.

Each ``application/dicom`` part is parsed with the same header code as ingest
(:func:`shared.dicom.header.read_header_bytes` + :func:`shared.dicom.validate.validate`)
and, if valid, uploaded to ``dicom-inbox/stow/<request id>/<sop>.dcm``: from there
ingestion, indexing and events take the one path every upload takes.

Waiting (decision): STOW waits, bounded by ``DICOMFLOW_STOW_WAIT_SECONDS`` (10 s by
default), for each part's ingest outcome (:func:`shared.ingest.status.outcome_of`: its
instance row written by this upload, a duplicate of what is stored, or a quarantine copy). DICOMweb clients,
viewers and routers read "200" as "stored and retrievable" and retry on anything
else; answering before ingestion would make a following WADO/QIDO miss the
instance, and a part that ingest quarantines (say, a UID clash found only against
the index) would be reported as stored. Ingestion normally takes well under a
second, so the wait is short; if it runs out, the answer is 202 with the parts
still pending listed in ReferencedSOPSequence and a ``Warning`` header pointing at
``/api/ingest/status?blob=...``, where the final outcome appears.

Status (PS3.18 Table 10.5.3-1): 200 all stored; 202 some failed (or are pending);
409 none stored. FailureReason: 0xC000 cannot understand (not DICOM, bad header,
quarantined by ingest), 0xA900 does not match (instance of another study than the
URL's), 0xA700 out of resources (the inbox write failed). A part equal to an
instance already stored (ingest "duplicate") counts as stored: a retried STOW
succeeds (rule STOW_IDEMPOTENT).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from shared.audit import scope as audit_scope
from shared.dicom.header import read_header_bytes
from shared.dicom.validate import validate
from shared.dicomweb.media import negotiate_json
from shared.dicomweb.multipart import parse_stow_body
from shared.dicomweb.reply import Reply
from shared.errors import BadInput, Reason
from shared.ingest.service import ContentDigest
from shared.ingest.states import STORED, IngestState, Outcome
from shared.ingest.status import outcome_of
from shared.services import Services
from shared.storage import layout

if TYPE_CHECKING:
    from shared.dicomweb.service import Call

log = logging.getLogger(__name__)

PROCESSING_FAILURE: Final = 0x0110
OUT_OF_RESOURCES: Final = 0xA700
DOES_NOT_MATCH: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000


@dataclass
class PartResult:
    sop_class: str | None = None
    sop: str | None = None
    study: str | None = None
    series: str | None = None
    blob: str | None = None
    failure: int | None = None
    state: str = "pending"  # pending | stored | failed
    etag: str = ""
    digest: ContentDigest | None = None


def store(call: Call) -> Reply:
    from shared.dicomweb.service import services

    negotiate_json(call.accept)
    parts = parse_stow_body(call.body, call.content_type)
    svc = services(call)
    svc.ensure_ready()
    request_id = uuid.uuid4().hex
    results: list[PartResult] = []
    for n, part in enumerate(parts):
        res = PartResult()
        results.append(res)
        if part.content_type not in ("application/dicom", ""):
            res.failure, res.state = CANNOT_UNDERSTAND, "failed"
            continue
        try:
            header = read_header_bytes(part.content)
            res.sop_class, res.sop = header.sop_class_uid, header.sop_uid
            study, series, sop, sop_class = validate(header)
            res.study, res.series, res.sop, res.sop_class = study, series, sop, sop_class
            if call.study and study != call.study:
                raise BadInput(Reason.STUDY_MISMATCH)
            audit_scope.note(study, series, sop, sop_class=sop_class, patient_id=_patient_id(header))
        except BadInput as bad:
            res.failure = DOES_NOT_MATCH if bad.reason == Reason.STUDY_MISMATCH else CANNOT_UNDERSTAND
            res.state = "failed"
            log.info("STOW %s part %d refused: %s", request_id, n + 1, bad.reason)
            continue
        res.blob = layout.stow_inbox_path(request_id, n + 1, sop)
        content = bytes(part.content)
        res.digest = ContentDigest(header, hashlib.md5(content).digest())  # noqa: S324 - Content-MD5, not security
        try:
            res.etag = svc.blobs.write(layout.INBOX, res.blob, content, content_type="application/dicom")
        except Exception:  # guards one part's inbox write: any storage failure is that part's 0xA700
            log.warning("STOW %s part %d: inbox write failed", request_id, n + 1, exc_info=True)
            res.failure, res.state = OUT_OF_RESOURCES, "failed"
    _await_ingest(svc, [r for r in results if r.state == "pending"], call.settings.stow_wait_seconds)
    return _response(call, results, request_id)


def _patient_id(header: Any) -> str | None:
    """The part's Patient ID, for the audit record's digest only (never logged or answered)."""
    try:
        value = header.dataset.get("PatientID")
    except Exception:  # noqa: BLE001 - an undecodable value is absent for the audit's purpose
        return None
    return str(value) if value else None


def _await_ingest(svc: Services, pending: list[PartResult], budget: float) -> None:
    """Poll (bounded) until each part is archived or quarantined."""
    deadline = time.monotonic() + budget
    delay = 0.05
    while pending:
        for r in list(pending):
            assert r.blob is not None and r.study and r.series and r.sop and r.digest is not None
            entry = outcome_of(svc, r.blob, r.etag, r.study, r.series, r.sop, digest=r.digest)
            if entry.state is IngestState.PENDING:
                quarantined = svc.blobs.properties(layout.QUARANTINE, layout.quarantine_path(r.blob, r.etag))
                if quarantined is None:
                    continue
                entry = Outcome(r.blob, IngestState.QUARANTINED)
            if entry.state in STORED:
                r.state = "stored"
            else:
                r.state, r.failure = "failed", CANNOT_UNDERSTAND
            pending.remove(r)
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)


def _response(call: Call, results: list[PartResult], request_id: str) -> Reply:
    base = call.base_url
    referenced, failed = [], []
    for r in results:
        if r.state == "failed":
            item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [r.failure or PROCESSING_FAILURE]}}
            if r.sop_class:
                item["00081150"] = {"vr": "UI", "Value": [r.sop_class]}
            if r.sop:
                item["00081155"] = {"vr": "UI", "Value": [r.sop]}
            failed.append(dict(sorted(item.items())))
            continue
        url = f"{base}/studies/{r.study}/series/{r.series}/instances/{r.sop}"
        item = {"00081150": {"vr": "UI", "Value": [r.sop_class]}, "00081155": {"vr": "UI", "Value": [r.sop]},
                "00081190": {"vr": "UR", "Value": [url]}}
        referenced.append(item)
    body: dict[str, Any] = {}
    studies = sorted({r.study for r in results if r.study and r.state != "failed"})
    if call.study or len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{call.study or studies[0]}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    pending = [r for r in results if r.state == "pending"]
    headers: dict[str, str] = {}
    if not referenced:
        status = 409
    elif failed or pending:
        status = 202
    else:
        status = 200
    if pending:
        blobs = ", ".join(r.blob or "" for r in pending[:3])
        headers["Warning"] = (
            f'299 {call.settings.service_host_name} "{len(pending)} instance(s) accepted but not yet ingested; '
            f'see /api/ingest/status?blob=<name> for {blobs}{", ..." if len(pending) > 3 else ""}"'
        )
    log.info("STOW %s: %d stored, %d failed, %d pending -> %d", request_id,
             len(referenced) - len(pending), len(failed), len(pending), status)
    return Reply.json(body, status=status, headers=headers)
