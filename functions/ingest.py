"""Ingest: a blob in dicom-inbox (Event Grid-sourced blob trigger) → shared.ingest."""

from __future__ import annotations

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

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
