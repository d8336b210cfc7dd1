"""Ingest: a blob in dicom-inbox (Event Grid-sourced blob trigger), or a chunk of the inbox's batch area (queue
trigger, the backfill path) → shared.ingest."""

from __future__ import annotations

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from shared.ingest.batch import BatchIngest, BatchRequest
from shared.ingest.service import IngestService
from shared.services import get_services
from shared.storage import layout
from shared.storage.azure import AzureBlob

bp = func.Blueprint()


@bp.function_name("ingest")
@bp.blob_trigger(arg_name="client", path=layout.INBOX + "/{name}", connection="DicomStorage",
                 source=func.BlobSource.EVENT_GRID)
def ingest(client: blob.BlobClient) -> None:
    IngestService(get_services()).ingest(AzureBlob(client))


@bp.function_name("ingest_batch")
@bp.queue_trigger(arg_name="msg", queue_name=layout.BATCH_QUEUE, connection="DicomStorage")
def ingest_batch(msg: func.QueueMessage) -> None:
    BatchIngest(get_services()).run(BatchRequest.from_message(msg.get_body()))
