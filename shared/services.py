"""The composition root: builds the adapters once per process and hands them to the services.

Everything a service needs is on :class:`Services`: settings, the blob/table/queue ports, the
event publisher, the index over the table port, the change sequencer and the settle scheduler; in a
region of a pair (``DICOMFLOW_REGION``) also the region topology (the blob port then maps logical
container names to this region's physical ones, :mod:`shared.storage.regions`) and the peer region's
index, whose change feed the follower reads.
Functions get it from :func:`get_services`; tests build one over in-memory fakes
(``tests/fakes.py``) or over Azurite with :meth:`Services.from_settings`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.config import Settings, SettingsError, get_settings
from shared.extended.registry import TagCache, TagStore
from shared.index.sequence import Sequencer
from shared.index.store import IndexStore
from shared.ingest.arrivals import Arrivals
from shared.ingest.schedule import SettleScheduler
from shared.ports import BlobStore, Publisher, Queues, TableStore
from shared.storage import layout
from shared.storage.regions import RegionalBlobStore, Topology

if TYPE_CHECKING:
    from shared.storage.azure import RequestCounter


@dataclass
class Services:
    settings: Settings
    blobs: BlobStore
    tables: TableStore
    queues: Queues
    #: Built on first use (tools that never publish need no topic).
    publisher_factory: Callable[[], Publisher] | None = None
    #: Counts every storage HTTP request of these clients (None for fakes, which count their own).
    requests: RequestCounter | None = None
    #: Builds the peer region's table port (None: this region follows no peer).
    peer_tables_factory: Callable[[], TableStore] | None = None
    #: Builds the queue port of the Functions host's account (the blob trigger's poison queue); None: unknown.
    host_queues_factory: Callable[[], Queues] | None = None
    index: IndexStore = field(init=False)
    sequencer: Sequencer = field(default_factory=Sequencer)
    scheduler: SettleScheduler = field(init=False)
    #: The extended query tags as this process sees them (read at most once per TTL; filled at ensure_ready).
    extended_tags: TagCache = field(init=False)
    topology: Topology = field(init=False)
    #: Arrival marks (a region of a pair files what it archives by hour, for the peer's catch-up).
    arrivals: Arrivals = field(init=False)
    _publisher: Publisher | None = None
    _peer_index: IndexStore | None = None
    _host_queues: Queues | None = None
    _ready: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        region = self.settings.region
        self.topology = Topology(region.key, (region.peer,) if region.peer else ())
        if self.topology.region and not isinstance(self.blobs, RegionalBlobStore):
            self.blobs = RegionalBlobStore(self.blobs, self.topology)
        self.index = IndexStore(self.tables)
        self.scheduler = SettleScheduler(self.queues, self.index, settle_delay=self.settings.settle_delay_seconds,
                                         stable_age=self.settings.stable_age_seconds)
        self.arrivals = Arrivals(self.blobs, enabled=self.topology.paired)
        self.extended_tags = TagCache(TagStore(self.tables), self.settings.extended_tags_ttl_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """Azure SDK clients (Azurite or Azure by identity) behind the ports, counted."""
        from azure.data.tables import TableServiceClient
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueServiceClient

        from shared.index.azure import AzureTableStore
        from shared.storage.azure import AzureBlobStore, AzureQueues, RequestCounter, credential

        s = settings.require_storage()
        counter = RequestCounter()
        # The transport reads proxies (and a CA bundle) from the environment per request unless told not to:
        # only where a proxy is set (Settings.http_proxy); else the CA bundle, if any, is given once.
        http: dict[str, Any] = {} if settings.http_proxy else {"use_env_settings": False}
        if not settings.http_proxy and settings.http_ca_bundle:
            http["connection_verify"] = settings.http_ca_bundle

        def kw(service: str) -> dict[str, Any]:
            return {"raw_request_hook": counter.hook(service), **http}

        if s.connection_string:
            blob = BlobServiceClient.from_connection_string(s.connection_string, **kw("blob"))
            queue = QueueServiceClient.from_connection_string(s.connection_string, **kw("queue"))
            table = TableServiceClient.from_connection_string(s.connection_string, **kw("table"))
        else:
            assert s.blob_service_uri, "require_storage() checks this"
            cred = credential(s.client_id)
            account = s.blob_service_uri.split("//", 1)[-1].split(".", 1)[0]
            blob = BlobServiceClient(s.blob_service_uri, credential=cred, **kw("blob"))
            queue = QueueServiceClient(s.queue_service_uri or f"https://{account}.queue.core.windows.net",
                                       credential=cred, **kw("queue"))
            table = TableServiceClient(s.table_service_uri or f"https://{account}.table.core.windows.net",
                                       credential=cred, **kw("table"))

        def publisher() -> Publisher:
            from shared.events.publisher import EventPublisher

            return EventPublisher.from_settings(settings)

        def peer_tables() -> TableStore:
            # Few, short retries: a lost peer region should end a follower run quickly (the next resumes).
            p, quick = settings.region.peer_storage, {"retry_total": 2, "connection_timeout": 5, **kw("peer table")}
            if p.connection_string:
                return AzureTableStore(TableServiceClient.from_connection_string(p.connection_string, **quick))
            assert p.table_service_uri, "RegionSettings.follows_peer checks this"
            return AzureTableStore(TableServiceClient(p.table_service_uri, credential=credential(p.client_id),
                                                      **quick))

        def host_queues() -> Queues:
            h = settings.host_storage
            if h.connection_string:
                return AzureQueues(QueueServiceClient.from_connection_string(h.connection_string, **kw("host queue")))
            assert h.queue_service_uri, "checked below"
            return AzureQueues(QueueServiceClient(h.queue_service_uri, credential=credential(h.client_id),
                                                  **kw("host queue")))

        has_host = bool(settings.host_storage.connection_string or settings.host_storage.queue_service_uri)
        return cls(settings=settings, blobs=AzureBlobStore(blob), tables=AzureTableStore(table),
                   queues=AzureQueues(queue), publisher_factory=publisher, requests=counter,
                   peer_tables_factory=peer_tables if settings.region.follows_peer else None,
                   host_queues_factory=host_queues if has_host else None)

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            if self.publisher_factory is None:
                raise SettingsError("No event topic configured: set DicomEvents__topicEndpointUri.")
            self._publisher = self.publisher_factory()
        return self._publisher

    @property
    def peer_index(self) -> IndexStore | None:
        """The peer region's index (only its change feed is read), or None when no peer is followed."""
        if self._peer_index is None and self.peer_tables_factory is not None:
            self._peer_index = IndexStore(self.peer_tables_factory())
        return self._peer_index

    @property
    def host_queues(self) -> Queues | None:
        """The Functions host account's queues (None when its settings are not known to the app)."""
        if self._host_queues is None and self.host_queues_factory is not None:
            self._host_queues = self.host_queues_factory()
        return self._host_queues

    def ensure_ready(self) -> None:
        """Create containers, tables and queues once per process (infra creates them in Azure;
        this makes a fresh Azurite work without a setup step)."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            self.blobs.ensure_containers(layout.CONTAINERS)
            self.index.ensure_tables()
            self.queues.ensure_queues(layout.QUEUES)
            self.extended_tags.current()  # read now, so ingest and QIDO find it cached
            self._ready = True


@functools.lru_cache(maxsize=4)
def _services_for(settings: Settings) -> Services:
    return Services.from_settings(settings)


def get_services(settings: Settings | None = None) -> Services:
    """The process-wide services (SDK clients pool connections: build them once)."""
    return _services_for(settings or get_settings())
