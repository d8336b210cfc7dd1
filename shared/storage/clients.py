"""SDK clients for the app's data account, built once per process from settings.

Connection strings are accepted only for Azurite; in Azure the clients use the
function app's managed identity (``DicomStorage__clientId``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient, TextBase64EncodePolicy

from shared.config import Settings, StorageSettings, get_settings


def credential(client_id: str | None) -> Any:
    """The managed identity (user-assigned when a client id is given)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


@dataclass(frozen=True)
class StorageClients:
    blob: BlobServiceClient
    queue: QueueServiceClient
    table: TableServiceClient

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> StorageClients:
        # Functions queue triggers decode base64 by default. (Queue clients made by
        # get_queue_client do not inherit this: see shared.ingest.context.Context.queue.)
        qkw: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy()}
        if settings.connection_string:
            cs = settings.connection_string
            return cls(
                blob=BlobServiceClient.from_connection_string(cs),
                queue=QueueServiceClient.from_connection_string(cs, **qkw),
                table=TableServiceClient.from_connection_string(cs),
            )
        assert settings.blob_service_uri, "require_storage() checks this"
        cred = credential(settings.client_id)
        account = settings.blob_service_uri.split("//", 1)[-1].split(".", 1)[0]
        return cls(
            blob=BlobServiceClient(settings.blob_service_uri, credential=cred),
            queue=QueueServiceClient(
                settings.queue_service_uri or f"https://{account}.queue.core.windows.net", credential=cred, **qkw
            ),
            table=TableServiceClient(
                settings.table_service_uri or f"https://{account}.table.core.windows.net", credential=cred
            ),
        )


@functools.lru_cache(maxsize=4)
def _clients_for(settings: Settings) -> StorageClients:
    return StorageClients.from_settings(settings.require_storage())


def get_clients(settings: Settings | None = None) -> StorageClients:
    """Process-wide clients (SDK clients are thread-safe and pool connections)."""
    return _clients_for(settings or get_settings())
