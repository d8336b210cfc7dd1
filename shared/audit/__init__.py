"""The audit trail: one record (DICOM PS3.15 A.5 / IHE ATNA) per access to or change of patient data.

How to write one, from any part of the app (HTTP functions, the gateway, operations, the CLI)::

    from shared import audit
    from shared.audit.record import INSTANCES_ACCESSED, UPDATE, UPDATE_ACTION, Actor, Subjects

    subjects = Subjects()
    subjects.add(study, series, sop)                 # the UIDs touched (validated values only)
    subjects.add_patient(patient_id, settings.audit.patient_salt)   # kept as a digest, never the ID
    audit.emit(settings, audit.new_record(settings, INSTANCES_ACCESSED, UPDATE_ACTION, outcome=0,
                                          requestor=Actor(user_id, roles=("admin",)), subjects=subjects,
                                          types=(UPDATE,), description="bulk update"))

``emit`` returns at once: the record goes to a local spool file and the log, and a background thread appends
it to the audit container within a second (:mod:`shared.audit.writer`). Records are read back by
``GET /api/audit`` (admin) and ``python -m tools audit`` (:mod:`shared.audit.query`).

* :mod:`shared.audit.record`: the record and its codes (the one list).
* :mod:`shared.audit.writer`: spool, batching, flush at exit, recovery of what a killed process left.
* :mod:`shared.audit.scope`: what an HTTP request touched, noted by the services as they work.
* :mod:`shared.audit.http`: which event an HTTP route is, and its record.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from shared.audit.record import Actor, AuditRecord, Code, Subjects
from shared.audit.writer import AuditWriter, Sink, writer_name
from shared.config import Settings

__all__ = ["Actor", "AuditRecord", "AuditWriter", "Code", "Subjects", "close_all", "emit", "new_record",
           "service_actor", "spool_folder", "writer"]
log = logging.getLogger(__name__)
_writers: dict[str, AuditWriter] = {}
_lock = threading.Lock()


def _account_key(settings: Settings) -> str:
    s = settings.require_storage()
    return s.connection_string or s.blob_service_uri or ""


def _sink(settings: Settings) -> Sink:
    from azure.storage.blob import BlobServiceClient

    from shared.audit.azure import AppendBlobSink
    from shared.storage.azure import credential

    s = settings.require_storage()
    if s.connection_string:
        return AppendBlobSink(BlobServiceClient.from_connection_string(s.connection_string))
    assert s.blob_service_uri, "require_storage() checks this"
    return AppendBlobSink(BlobServiceClient(s.blob_service_uri, credential=credential(s.client_id)))


def writer(settings: Settings) -> AuditWriter:
    """The process's writer for the storage account of ``settings`` (built on first use, flushed at exit)."""
    key = _account_key(settings)
    got = _writers.get(key)
    if got is not None:
        return got
    with _lock:
        got = _writers.get(key)
        if got is None:
            base = Path(settings.audit.spool_dir or Path(tempfile.gettempdir()) / f"dicomflow-audit-{os.getuid()}")
            spool = spool_folder(base, key)
            got = AuditWriter(_sink(settings), name=writer_name(settings.service_host_name), spool_dir=spool,
                              flush_seconds=settings.audit.flush_seconds, batch=settings.audit.batch)
            atexit.register(got.close)
            _writers[key] = got
    return got


def spool_folder(base: Path, account: str) -> Path | None:
    """The spool folder of one storage account under ``base`` (records of two accounts never mix), created for
    this user only. A folder that is a symbolic link or another user's (the default is under the shared
    temporary folder) is refused: records then wait in memory only (a hard kill loses what was not appended)."""
    folder = base / hashlib.sha256(account.encode()).hexdigest()[:12]
    for path in (base, folder):
        if path.is_symlink() or (path.exists() and path.stat().st_uid != os.getuid()):
            log.error("Audit spool folder %s is a link or belongs to another user: records are kept in memory "
                      "until appended. Set DICOMFLOW_AUDIT_SPOOL_DIR to a folder of this user.", path)
            return None
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def emit(settings: Settings, record: AuditRecord) -> None:
    """Write one record (no storage request on the caller's path)."""
    writer(settings).emit(record)


def new_record(settings: Settings, event: Code, action: str, *, outcome: int, requestor: Actor,
               subjects: Subjects, others: Sequence[Actor] = (), types: Sequence[Code] = (),
               description: str = "", us: Actor | None = None) -> AuditRecord:
    """A record of this service (the audit source), with the requestor and this service (``us``, by default
    :func:`service_actor`) as participants, and ``others`` (a C-MOVE's destination)."""
    return AuditRecord(event=event, action=action, outcome=outcome,
                       participants=(requestor, us or service_actor(settings), *others), subjects=subjects,
                       source=f"dicomflow@{settings.service_host_name}", site=settings.region.key,
                       types=tuple(types), description=description)


def service_actor(settings: Settings, *, ae_title: str | None = None) -> Actor:
    """This service as a participant (not the requestor)."""
    return Actor(user_id=ae_title or settings.service_host_name, requestor=False, alternative="dicomflow")


def close_all() -> None:
    """Flush and stop every writer of this process (tests, and the CLI before it exits)."""
    with _lock:
        writers = list(_writers.values())
        _writers.clear()
    for w in writers:
        w.close()
