"""C-STORE SCP: each received data set goes to ``dicom-inbox`` and from there the one ingest path.

pynetdicom writes the data set, as it arrives, to a temporary DICOM file
(``STORE_RECV_CHUNKED_DATASET``): a large instance never sits in memory whole. The
handler reads its header with ingest's own code (ranged reads of the file, never
the pixel data), uploads the file to ``dicom-inbox/dimse/<calling AE>/<association>/<sop>.dcm``
and answers only when the upload is committed: success means durable. Ingest then
archives, indexes and announces it like any upload; its outcome is in
``GET /api/ingest/status?blob=<that name>`` and the events.

A data set that ingest would refuse (no SOP Instance UID, invalid UIDs, an undecodable
header...) gets failure ``0xC000`` (Cannot understand) with the reason code as the Error
Comment, so the sender knows at once and keeps its copy; it is still written to the
inbox, so ingest quarantines it with the same reason (``dicom-quarantine``, the ingest
log, ``Dicom.IngestFailed``): nothing is silently dropped. A failed upload answers
``0xA700`` (Out of resources): the sender retries later.

The temporary file is the spool's (:mod:`gateway.spool`: capped in size, in the gateway's own
folder); this handler removes it on every way out, including an exception.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from azure.core.exceptions import AzureError
from pydicom.dataset import Dataset

from gateway import audit
from gateway.app import Gateway
from gateway.spool import Spool
from gateway.status import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS, status
from shared.audit import record as atna
from shared.audit.record import Subjects
from shared.dicom.header import read_header_file
from shared.dicom.validate import is_valid_uid, validate
from shared.errors import BadInput
from shared.storage import layout

log = logging.getLogger(__name__)


def association_id(assoc: Any) -> str:
    """A short id per association (blob folder and log correlation), assigned on first use."""
    aid = getattr(assoc, "_dicomflow_id", None)
    if aid is None:
        aid = uuid.uuid4().hex[:12]
        assoc._dicomflow_id = aid
    return str(aid)


def handle_store(event: Any, gw: Gateway, spool: Spool | None = None) -> Dataset:
    path = event.dataset_path
    try:
        if spool is not None and spool.overflowed(path):
            return status(OUT_OF_RESOURCES, "Data set larger than the gateway accepts")
        return _store(event, gw, path)
    finally:
        if spool is not None:
            spool.discard(path)


def _store(event: Any, gw: Gateway, path: Any) -> Dataset:
    assoc = event.assoc
    aid = association_id(assoc)
    calling = str(assoc.requestor.ae_title).strip()
    affected = str(event.request.AffectedSOPInstanceUID or "")
    refused: BadInput | None = None
    subjects = Subjects()
    try:
        header = read_header_file(path)
        study, series, sop, sop_class = validate(header)
        subjects.add(study, series, sop, sop_class)
        subjects.add_patient(_patient_id(header.dataset), gw.settings.audit.patient_salt)
    except BadInput as bad:
        refused = bad
        sop = affected
    name_sop = sop if is_valid_uid(sop) else f"unnamed-{uuid.uuid4().hex[:8]}"
    blob_name = layout.gateway_inbox_path(calling, aid, name_sop)
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            gw.blobs.write(layout.INBOX, blob_name, f, content_type="application/dicom")
    except (AzureError, OSError) as exc:
        log.warning("C-STORE assoc=%s sop=%s: inbox upload failed (%s); answered 0xA700", aid,
                    name_sop, type(exc).__name__)
        _audit(gw, assoc, subjects, atna.SERIOUS_FAILURE, "C-STORE: 0xA700 inbox unavailable")
        return status(OUT_OF_RESOURCES, "Archive inbox unavailable; retry later")
    if refused is not None:
        log.warning("C-STORE assoc=%s from %s: refused (%s), %d bytes -> %s/%s for quarantine", aid, calling,
                    refused.reason, size, layout.INBOX, blob_name)
        _audit(gw, assoc, subjects, atna.MINOR_FAILURE, f"C-STORE: 0xC000 {refused.reason}")
        return status(CANNOT_UNDERSTAND, str(refused.reason))
    log.info("C-STORE assoc=%s from %s: sop=%s %d bytes -> %s/%s", aid, calling, sop, size, layout.INBOX, blob_name)
    _audit(gw, assoc, subjects, atna.SUCCESS, "C-STORE: 0x0000")
    return status(SUCCESS)


def _patient_id(ds: Dataset) -> str | None:
    """For the audit record's digest only (never logged or sent anywhere)."""
    try:
        value = ds.get("PatientID")
    except Exception:  # noqa: BLE001 - an undecodable value is absent for the audit's purpose
        return None
    return str(value) if value else None


def _audit(gw: Gateway, assoc: Any, subjects: Subjects, outcome: int, description: str) -> None:
    audit.record(gw, assoc, atna.INSTANCES_TRANSFERRED, atna.CREATE, outcome=outcome, subjects=subjects,
                 role=atna.SOURCE, ours=atna.DESTINATION, description=description)
