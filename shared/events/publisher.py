"""Publishing to the custom Event Grid topic (CloudEvents 1.0), in batches.

In Azure the topic is reached with the managed identity (EventGrid Data Sender);
locally the devhost's event fabric takes the key in ``DICOMFLOW_EVENTS_LOCAL_KEY``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from shared.config import Settings, SettingsError
from shared.events.payloads import DicomEvent

log = logging.getLogger(__name__)
MAX_BATCH = 100  # well inside Event Grid's 1 MB per request


class EventPublisher:
    def __init__(self, endpoint: str, credential: Any) -> None:  # Any: a key or any azure-identity credential
        from azure.eventgrid import EventGridPublisherClient

        self.endpoint = endpoint
        self.client = EventGridPublisherClient(endpoint, credential)
        self.requests = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> EventPublisher:
        """The topic of ``settings``: by managed identity in Azure, by the local key in the devhost."""
        if not settings.events_endpoint:
            raise SettingsError("No event topic configured: set DicomEvents__topicEndpointUri.")
        if settings.events_local_key:
            from azure.core.credentials import AzureKeyCredential

            return cls(settings.events_endpoint, AzureKeyCredential(settings.events_local_key))
        from shared.storage.azure import credential

        return cls(settings.events_endpoint, credential(settings.events_client_id))

    def publish(self, events: Sequence[DicomEvent]) -> None:
        """Send events; a failure raises (the trigger retries: delivery is at least once)."""
        from azure.core.messaging import CloudEvent

        batch = []
        for ev in events:
            ce = ev.to_cloud_event()
            batch.append(CloudEvent(source=ce["source"], type=ce["type"], data=ce["data"], subject=ce["subject"],
                                    id=ce["id"], datacontenttype="application/json"))
        for i in range(0, len(batch), MAX_BATCH):
            self.client.send(batch[i:i + MAX_BATCH])
            self.requests += 1
        for ev in events:
            log.info("Published %s %s", ev.type, ev.subject)
