"""The audit sink over Azure Blob Storage: one append blob per writer and hour in the audit container.

Blobs are created only if absent (``If-None-Match: *``), so a writer never replaces a blob; in Azure the
container's time-based retention policy allows appends and nothing else (infra/modules/storage.bicep).
"""

from __future__ import annotations

import threading
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.audit.writer import MAX_BLOCK
from shared.storage import layout


class AppendBlobSink:
    def __init__(self, service: Any) -> None:  # Any: the SDK's BlobServiceClient
        self.container = service.get_container_client(layout.AUDIT)
        self._created: set[str] = set()
        self._lock = threading.Lock()

    def append(self, path: str, data: bytes) -> None:
        blob = self.container.get_blob_client(path)
        if path not in self._created:
            self._create(blob)
            with self._lock:
                self._created.add(path)
                if len(self._created) > 1000:  # one per hour is current; forget the old ones
                    self._created = {path}
        for i in range(0, len(data), MAX_BLOCK):
            blob.append_block(data[i:i + MAX_BLOCK])

    def _create(self, blob: Any) -> None:
        try:
            blob.create_append_blob(match_condition=MatchConditions.IfMissing)
        except (ResourceExistsError, ResourceModifiedError):
            return  # it exists: append to it
        except ResourceNotFoundError:  # no container yet (a fresh Azurite; infra creates it in Azure)
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass
            try:
                blob.create_append_blob(match_condition=MatchConditions.IfMissing)
            except (ResourceExistsError, ResourceModifiedError):
                return
