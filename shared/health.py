"""Dependency checks for ``GET /api/health``: each one up or down, never a crash."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from shared.config import Settings
from shared.storage.clients import get_clients


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    up: bool
    ms: float
    detail: str = ""


def _timed(name: str, probe: Callable[[], None]) -> Check:
    t0 = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - health reports any failure as "down"
        return Check(name, False, (time.perf_counter() - t0) * 1000, type(exc).__name__)
    return Check(name, True, (time.perf_counter() - t0) * 1000)


def _event_fabric(settings: Settings) -> None:
    if not settings.events_endpoint:
        raise RuntimeError("DicomEvents__topicEndpointUri is not set")
    # Any HTTP answer means the endpoint is reachable (Event Grid answers 4xx to a bare GET).
    try:
        urllib.request.urlopen(settings.events_endpoint, timeout=3).close()  # noqa: S310 - our own endpoint
    except urllib.error.HTTPError:
        return


def check_all(settings: Settings) -> list[Check]:
    def blob() -> None:
        next(iter(get_clients(settings).blob.list_containers(results_per_page=1)), None)

    def queue() -> None:
        next(iter(get_clients(settings).queue.list_queues(results_per_page=1)), None)

    def table() -> None:
        next(iter(get_clients(settings).table.list_tables(results_per_page=1)), None)

    return [
        _timed("blob", blob),
        _timed("queue", queue),
        _timed("table", table),
        _timed("events", lambda: _event_fabric(settings)),
    ]
