"""The gateway's composition: settings, storage clients, the index and the peers document, built once."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

from shared.config import GatewaySettings, Settings
from shared.dicomweb.planner import fetch_for
from shared.gateway.destinations import DestinationsStore
from shared.index.store import IndexStore
from shared.ingest.batch import BatchWriter
from shared.ports import BlobStore
from shared.services import Services


@dataclass
class Gateway:
    settings: Settings
    services: Services
    _writers: dict[str, BatchWriter] = field(default_factory=dict)
    _writers_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        svc = Services.from_settings(settings)
        if settings.storage.connection_string:
            # Azurite: create containers and tables on first start. In Azure infra creates them, and the
            # gateway's identity may only read tables (roleAssignments.bicep), so it must not try.
            svc.ensure_ready()
        return cls(settings, svc)

    @property
    def config(self) -> GatewaySettings:
        return self.settings.gateway

    @property
    def index(self) -> IndexStore:
        return self.services.index

    @property
    def blobs(self) -> BlobStore:
        return self.services.blobs

    @functools.cached_property
    def destinations(self) -> DestinationsStore:
        return DestinationsStore(self.blobs)

    @functools.cached_property
    def fetch(self) -> Any:
        """The QIDO planner's fetch over our index (``shared.dicomweb.search.Fetch``)."""
        return fetch_for(self.index)

    def batch_writer(self, source: str) -> BatchWriter:
        """The batch area's writer for one sending AE (shared by its associations: a chunk can hold
        several small studies moved side by side)."""
        with self._writers_lock:
            writer = self._writers.get(source)
            if writer is None:
                writer = self._writers[source] = BatchWriter(self.services, source,
                                                             window=self.settings.batch_window_seconds)
            return writer

    def close(self) -> None:
        """Write what the batch writers hold (their open chunks' manifests)."""
        with self._writers_lock:
            writers = list(self._writers.values())
        for writer in writers:
            writer.close()
