"""The one owner of event type names (CloudEvents ``type``)."""

from __future__ import annotations

import enum


class EventType(enum.StrEnum):
    IMAGE_CREATED = "Dicom.ImageCreated"
    IMAGE_UPDATED = "Dicom.ImageUpdated"
    IMAGE_DELETED = "Dicom.ImageDeleted"
    INGEST_FAILED = "Dicom.IngestFailed"
    SERIES_STABLE = "Dicom.SeriesStable"
    STUDY_STABLE = "Dicom.StudyStable"
    INFERENCE_COMPLETED = "Dicom.InferenceCompleted"
    ROUTING_COMPLETED = "Dicom.RoutingCompleted"
    ROUTING_FAILED = "Dicom.RoutingFailed"


#: Event types the storage account's system topic emits (the blob trigger's source).
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"
STORAGE_EVENT_TYPES = (BLOB_CREATED, BLOB_DELETED)
