"""The gateway's composition: settings, storage clients, the index and the peers document, built once."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from shared.config import GatewaySettings, Settings
from shared.dicomweb.planner import fetch_for
from shared.gateway.destinations import DestinationsStore
from shared.index.store import IndexStore
from shared.ingest.context import Context
from shared.storage import layout


@dataclass
class Gateway:
    settings: Settings
    context: Context

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        ctx = Context.from_settings(settings)
        if settings.storage.connection_string:
            # Azurite: create containers and tables on first start. In Azure infra creates them, and the
            # gateway's identity may only read tables (roleAssignments.bicep), so it must not try.
            ctx.ensure_ready()
        return cls(settings, ctx)

    @property
    def config(self) -> GatewaySettings:
        return self.settings.gateway

    @property
    def index(self) -> IndexStore:
        return self.context.index

    @property
    def blob(self) -> Any:
        return self.context.clients.blob

    @functools.cached_property
    def destinations(self) -> DestinationsStore:
        return DestinationsStore(self.blob.get_container_client(layout.CONFIG))

    @functools.cached_property
    def fetch(self) -> Any:
        """The QIDO planner's fetch over our index (``shared.dicomweb.search.Fetch``)."""
        return fetch_for(self.index)
