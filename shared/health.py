"""Health: a cheap anonymous probe, and the deep dependency checks behind the admin role.

``GET /api/health`` (anonymous: Front Door's probe, ``make up --ready-path``) answers from one storage
call (a point read of the index) made at most once per ``DICOMFLOW_HEALTH_CACHE_SECONDS`` per worker and
shared by every probe meanwhile (one call in flight, whatever the number of probes): 200 ``up`` or 503
``down``, nothing else (no dependency names, timings or error types for an anonymous caller). A region
whose storage is gone still answers 503, so Front Door fails over as before.

``GET /api/health/deep`` (role ``admin``) runs every check each time: blob, queue, table, the event
topic, each up or down with its latency, never a crash.
"""

from __future__ import annotations

import threading
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


def _timed(name: str, probe: Callable[[], object]) -> Check:
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
    """The deep checks (``/api/health/deep``): four backend calls, every time."""
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


class Probe:
    """The anonymous probe's one storage call, cached: at most one per ``ttl`` seconds, one in flight."""

    def __init__(self, call: Callable[[], object], ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._call, self._ttl, self._clock = call, ttl, clock
        self._lock = threading.Lock()
        self._up = False
        self._at: float | None = None
        self.calls = 0

    def up(self) -> bool:
        with self._lock:  # probes arriving together share one call
            now = self._clock()
            if self._at is None or now - self._at >= self._ttl:
                self.calls += 1
                self._up = _timed("table", self._call).up
                self._at = self._clock()
            return self._up


_PROBE: Probe | None = None
_PROBE_LOCK = threading.Lock()


def probe(settings: Settings) -> bool:
    """Is this worker's storage answering (cached, see :class:`Probe`)?"""
    global _PROBE
    with _PROBE_LOCK:
        if _PROBE is None:
            svc = get_services(settings)
            _PROBE = Probe(lambda: svc.index.get_study_row("0"), settings.limits.health_cache_seconds)
        return _PROBE.up()
