"""What every pipeline service needs, built once per process from settings."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import TextBase64EncodePolicy

from shared.config import Settings, get_settings
from shared.events.publisher import EventPublisher
from shared.index.store import IndexStore
from shared.storage import blobs, layout
from shared.storage.clients import StorageClients


@dataclass
class Context:
    settings: Settings
    clients: StorageClients
    index: IndexStore
    _publisher: EventPublisher | None = None
    _ready: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        clients = StorageClients.from_settings(settings.require_storage())
        return cls(settings=settings, clients=clients, index=IndexStore(clients.table))

    @property
    def publisher(self) -> EventPublisher:
        if self._publisher is None:
            self._publisher = EventPublisher.from_settings(self.settings)
        return self._publisher

    def ensure_ready(self) -> None:
        """Create containers, tables and queues once per process (infra creates them in
        Azure; this makes a fresh Azurite work without a setup step)."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            blobs.ensure_containers(self.clients.blob)
            self.index.ensure_tables()
            for q in layout.QUEUES:
                try:
                    self.clients.queue.create_queue(q)
                except ResourceExistsError:
                    pass
            self._ready = True

    def queue(self, name: str) -> Any:
        """A queue client that base64-encodes (the Functions queue trigger's default); the
        service client's encode policy is not inherited by its queue clients."""
        return self.clients.queue.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())


@functools.lru_cache(maxsize=4)
def _context_for(settings: Settings) -> Context:
    return Context.from_settings(settings)


def get_context(settings: Settings | None = None) -> Context:
    """The process-wide context (clients pool connections; build them once)."""
    return _context_for(settings or get_settings())
