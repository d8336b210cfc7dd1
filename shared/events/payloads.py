"""Event payloads: CloudEvents 1.0 with the fields of the Azure DICOM service's events
(``imageStudyInstanceUid`` ...) plus what subscription filters need. Never patient
data: no name, ID, birth date or accession number — only UIDs and technical fields.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.events.types import EventType
from shared.storage import layout

if TYPE_CHECKING:
    from shared.index.records import InstanceRecord, SeriesRecord, StudyRecord

SOURCE = "/dicomflow"


@dataclass(slots=True)
class DicomEvent:
    type: EventType
    subject: str
    data: dict[str, Any]
    id: str = ""
    time: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"))

    def to_cloud_event(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "type": str(self.type),
            "source": SOURCE,
            "id": self.id or _event_id(self.type, self.subject, self.data),
            "time": self.time,
            "subject": self.subject,
            "datacontenttype": "application/json",
            "data": self.data,
        }


def _event_id(kind: str, subject: str, data: dict[str, Any]) -> str:
    """Deterministic per (type, subject, sequence): a re-sent event keeps its id, so
    subscribers can de-duplicate on it."""
    seq = data.get("sequenceNumber", "")
    return hashlib.sha256(f"{kind}|{subject}|{seq}".encode()).hexdigest()[:32]


def subject_for(study: str, series: str | None = None, sop: str | None = None) -> str:
    subject = f"/studies/{study}"
    if series:
        subject += f"/series/{series}"
        if sop:
            subject += f"/instances/{sop}"
    return subject


def base_data(service_host: str, partition: str, study: str, series: str | None, sop: str | None,
              sequence: int | str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "partitionName": partition,
        "imageStudyInstanceUid": study,
        "serviceHostName": service_host,
        "sequenceNumber": sequence,
    }
    if series:
        data["imageSeriesInstanceUid"] = series
    if sop:
        data["imageSopInstanceUid"] = sop
    return data


def image_event(kind: EventType, rec: InstanceRecord, *, service_host: str, partition: str, archive_path: str,
                sequence: int | str) -> DicomEvent:
    """``Dicom.ImageCreated`` / ``ImageUpdated`` / ``ImageDeleted`` for one instance row."""
    data = base_data(service_host, partition, rec.study_instance_uid, rec.series_instance_uid,
                     rec.sop_instance_uid, sequence)
    data.update({
        "modality": rec.modality,
        "sopClassUid": rec.sop_class_uid,
        "bodyPartExamined": rec.body_part_examined,
        "transferSyntaxUid": rec.transfer_syntax_uid,
        "sizeBytes": rec.size_bytes,
        "derived": bool(rec.derived),
        "archivePath": archive_path,
    })
    return DicomEvent(kind, subject_for(rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid),
                      data)


def ingest_failed_event(*, blob: str, reason: str, message: str, service_host: str, partition: str,
                        quarantine_folder: str, sequence: str) -> DicomEvent:
    """The blob name is the uploader's choice and often names the patient, so the event carries its
    digest (:func:`shared.storage.layout.log_name`) and the quarantine folder of this version, never the
    name; the reason message never contains header values. The uploader finds the outcome by name with
    ``GET /api/ingest/status?blob=<name>``."""
    digest = layout.log_name(blob)
    data = {
        "partitionName": partition,
        "serviceHostName": service_host,
        "sequenceNumber": sequence,
        "blobDigest": digest,
        "reason": reason,
        "message": message,
        "quarantineFolder": quarantine_folder,
    }
    return DicomEvent(EventType.INGEST_FAILED, f"/ingest/{digest.removeprefix('blob#')}", data)


def series_event(kind: EventType, rec: SeriesRecord, *, service_host: str, partition: str, sequence: int | str,
                 extra: dict[str, Any] | None = None) -> DicomEvent:
    """``Dicom.SeriesStable`` (and series-level results such as ``InferenceCompleted``)."""
    data = base_data(service_host, partition, rec.study_instance_uid, rec.series_instance_uid, None, sequence)
    data.update({
        "modality": rec.modality,
        "bodyPartExamined": rec.body_part_examined,
        "numberOfInstances": rec.number_of_series_related_instances,
        "derived": bool(rec.derived),
    })
    if extra:
        data.update(extra)
    return DicomEvent(kind, subject_for(rec.study_instance_uid, rec.series_instance_uid), data)


def study_event(kind: EventType, rec: StudyRecord, *, service_host: str, partition: str, sequence: int | str,
                extra: dict[str, Any] | None = None) -> DicomEvent:
    """``Dicom.StudyStable`` (and study-level results such as routing outcomes)."""
    data = base_data(service_host, partition, rec.study_instance_uid, None, None, sequence)
    data.update({
        "modalitiesInStudy": list(rec.modalities_in_study),
        "numberOfSeries": rec.number_of_study_related_series,
        "numberOfInstances": rec.number_of_study_related_instances,
    })
    if extra:
        data.update(extra)
    return DicomEvent(kind, subject_for(rec.study_instance_uid), data)
