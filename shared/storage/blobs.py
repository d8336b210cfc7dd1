"""Archive, sidecars and quarantine: every blob write the pipeline makes.

Server-side copies only: the archive copy never passes the file's bytes through the
function. Every write is idempotent (same path, same content) so a retry completes
what a crash interrupted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings

from shared.errors import Transient
from shared.storage import layout

log = logging.getLogger(__name__)
COPY_WAIT_SECONDS = 60.0


def ensure_containers(service: BlobServiceClient) -> None:
    for name in layout.CONTAINERS:
        try:
            service.create_container(name)
        except ResourceExistsError:
            pass


def server_copy(service: BlobServiceClient, source: BlobClient, container: str, path: str,
                metadata: dict[str, str] | None = None) -> BlobClient:
    """Copy ``source`` to ``container/path`` inside the account and wait (bounded) until done."""
    dest = service.get_blob_client(container, path)
    props = dest.start_copy_from_url(source.url, metadata=metadata)
    status = props.get("copy_status")
    deadline = time.monotonic() + COPY_WAIT_SECONDS
    delay = 0.05
    while status == "pending":
        if time.monotonic() > deadline:
            raise Transient(f"Copy to {container}/{path} still pending after {COPY_WAIT_SECONDS:.0f} s; will retry.")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
        status = dest.get_blob_properties().copy.status
    if status not in ("success", None):
        raise Transient(f"Copy to {container}/{path} ended with status {status}; will retry.")
    return dest


def put_json(service: BlobServiceClient, container: str, path: str, obj: Any) -> None:
    service.get_blob_client(container, path).upload_blob(
        orjson.dumps(obj), overwrite=True,
        content_settings=ContentSettings(content_type="application/dicom+json"),
    )


def get_json(service: BlobServiceClient, container: str, path: str) -> Any | None:
    try:
        return orjson.loads(service.get_blob_client(container, path).download_blob().read())
    except ResourceNotFoundError:
        return None


def delete_if_unchanged(blob: BlobClient, etag: str | None) -> bool:
    """Delete the inbox blob only if it is still the version we processed."""
    try:
        if etag:
            blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        else:
            blob.delete_blob()
    except ResourceNotFoundError:
        return False
    except Exception as exc:
        if getattr(exc, "status_code", None) == 412:
            log.info("Inbox blob %s changed since it was read; leaving it for its own event", blob.blob_name)
            return False
        raise
    return True


def delete_prefix(service: BlobServiceClient, container: str, prefix: str) -> int:
    """Delete every blob under a prefix (DELETE study/series). Returns the count."""
    client = service.get_container_client(container)
    n = 0
    for item in client.list_blobs(name_starts_with=prefix):
        try:
            client.delete_blob(item.name)
            n += 1
        except ResourceNotFoundError:
            pass
    return n


def ascii_metadata(value: str, limit: int = 1024) -> str:
    """Blob metadata values must be ASCII: replace anything else."""
    return value.encode("ascii", "replace").decode("ascii")[:limit]


__all__ = [
    "COPY_WAIT_SECONDS", "ascii_metadata", "delete_if_unchanged", "delete_prefix", "ensure_containers",
    "get_json", "put_json", "server_copy",
]
