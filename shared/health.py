"""Dependency checks for ``GET /api/health``: each one up or down, never a crash."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from shared.config import Settings
from shared.services import get_services
from shared.storage import layout


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
    svc = get_services(settings)

    def blob() -> None:
        svc.blobs.properties(layout.CONFIG, layout.MODELS_DOC)  # any answer, found or not, is "up"

    def queue() -> None:
        svc.queues.ensure_queues([layout.SETTLE_QUEUE])

    def table() -> None:
        svc.index.get_study_row("0")

    return [
        _timed("blob", blob),
        _timed("queue", queue),
        _timed("table", table),
        _timed("events", lambda: _event_fabric(settings)),
    ]
