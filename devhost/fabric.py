"""The local event fabric: an Event Grid-compatible publish endpoint, subscription filters from
``infra/events.json``, at-least-once delivery with retries, and dead-lettering into Azurite.

* ``POST /api/events`` (the custom topic, or ``/api/events/<topic>``): ``aeg-sas-key`` must be the
  local events key (401 otherwise). ``application/cloudevents-batch+json`` (what the
  ``azure-eventgrid`` SDK sends for ``CloudEvent``) or a JSON array in Event Grid schema.
  ``GET /api/events`` answers 200 (health probe).
* Every accepted event is journaled (``<state-dir>/events.jsonl``), then delivered to each matching
  subscription through a :class:`DeliveryTarget` (the in-process host, or Core Tools' webhooks).
  A failed delivery is retried with exponential backoff (0.2 s doubling, capped at 5 s) up to the
  subscription's ``retryPolicy.maxDeliveryAttempts``; then the event is written to the
  subscription's ``deadLetterContainer`` as ``<topic>/<subscription>/<yyyy>/<mm>/<dd>/<hh>/<id>.json``
  (a JSON array holding the event plus ``deadLetterReason``, ``deliveryAttempts``,
  ``lastDeliveryOutcome``, ``publishTime`` and ``lastDeliveryAttemptTime``, as Azure writes it).
  Each finished delivery is journaled too (``delivered``/``deadlettered``), so on start the fabric
  resumes what the previous run left unfinished (at least once across restarts and crashes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import ClientSession, ClientTimeout, web

from devhost.state import Journal
from devhost.subscriptions import EventsConfig, Subscription, event_type, matches

log = logging.getLogger("devhost.fabric")

BACKOFF_START = 0.2
BACKOFF_CAP = 5.0


class DeliveryTarget(Protocol):
    """Where the fabric hands an event for one subscription. Raise to fail the delivery."""

    async def deliver(self, sub: Subscription, event: dict[str, Any]) -> None: ...


class InProcessTarget:
    """Deliver to the devhost's own function host."""

    def __init__(self, host: Any) -> None:
        self.host = host

    async def deliver(self, sub: Subscription, event: dict[str, Any]) -> None:
        if sub.endpoint == "eventGridTrigger":
            await self.host.invoke_event_grid(sub.function, event)
        else:
            await self.host.invoke_blob_event(sub.function, event)


class WebhookTarget:
    """Deliver to Azure Functions Core Tools' webhooks (``func start``)."""

    def __init__(self, base_url: str, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session: ClientSession | None = None

    @staticmethod
    def request_for(sub: Subscription, event: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        """The (path with query, headers, body) Core Tools expects for one event."""
        if sub.endpoint == "eventGridTrigger":
            path = f"/runtime/webhooks/eventgrid?functionName={sub.function}"
        else:
            path = f"/runtime/webhooks/blobs?functionName=Host.Functions.{sub.function}"
        headers = {"aeg-event-type": "Notification", "Content-Type": "application/json"}
        return path, headers, json.dumps([event]).encode()

    async def deliver(self, sub: Subscription, event: dict[str, Any]) -> None:
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=self.timeout))
        path, headers, body = self.request_for(sub, event)
        async with self._session.post(self.base_url + path, data=body, headers=headers) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"webhook answered HTTP {resp.status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


DeadLetterWriter = Callable[[str, str, bytes], Awaitable[None]]


class Fabric:
    def __init__(self, config: EventsConfig, key: str, journal: Journal, target: DeliveryTarget,
                 dead_letter: DeadLetterWriter) -> None:
        self.config = config
        self.key = key
        self.journal = journal
        self.target = target
        self.dead_letter = dead_letter
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- publish endpoint ---------------------------------------------------------------------
    def http_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/api/events", self._probe)
        app.router.add_post("/api/events", self._publish)
        app.router.add_post("/api/events/{topic}", self._publish)
        return app

    async def _probe(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "up", "topics": list(self.config.topics)})

    async def _publish(self, request: web.Request) -> web.Response:
        given = request.headers.get("aeg-sas-key", "")
        if not secrets.compare_digest(given.encode(), self.key.encode()):
            return web.json_response({"error": {"code": "Unauthorized",
                                                "message": "aeg-sas-key is missing or wrong: use the key printed "
                                                           "by 'python -m devhost key --events'"}}, status=401)
        topic = request.match_info.get("topic") or self.config.custom_topic()
        if topic not in self.config.topics:
            return _bad(f"topic {topic!r} is not declared in events.json")
        try:
            doc = json.loads(await request.read())
        except ValueError:
            return _bad("the body is not JSON")
        events = doc if isinstance(doc, list) else [doc]
        cloud = "cloudevents" in (request.content_type or "")
        for i, e in enumerate(events):
            problem = _check_event(e, cloud)
            if problem:
                return _bad(f"event [{i}]: {problem}")
        self.publish(topic, events)
        return web.Response(status=200)

    # -- delivery -----------------------------------------------------------------------------
    def publish(self, topic: str, events: list[dict[str, Any]]) -> None:
        """Journal and fan out events (called by the endpoint and the blob watcher)."""
        now = _now()
        for event in events:
            targets = [sub for sub in self.config.for_topic(topic) if matches(sub, event)]
            self.journal.append({"kind": "published", "at": now, "topic": topic, "event": event,
                                 "subscriptions": [sub.name for sub in targets]})
            self.stats[f"published:{topic}"] += 1
            for sub in targets:
                self._schedule(sub, event, now)

    def _schedule(self, sub: Subscription, event: dict[str, Any], published: str) -> None:
        task = asyncio.ensure_future(self._deliver(sub, event, published))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def resume(self, records: list[dict[str, Any]]) -> int:
        """Deliver again what a previous run journaled as published but never finished (delivered or
        dead-lettered): at least once across restarts. Returns how many deliveries were resumed."""
        finished = {(r.get("id"), r.get("subscription")) for r in records
                    if r.get("kind") in ("delivered", "deadlettered")}
        by_name = {sub.name: sub for sub in self.config.subscriptions}
        resumed = 0
        for r in records:
            if r.get("kind") != "published":
                continue
            event = r["event"]
            # Only the subscriptions that matched at publish time (a subscription added since does not
            # receive old events, as in Azure) and that still exist.
            for name in r.get("subscriptions") or []:
                sub = by_name.get(name)
                if sub is not None and (event.get("id"), name) not in finished:
                    self._schedule(sub, event, str(r.get("at", "")))
                    resumed += 1
        if resumed:
            log.info("Resuming %d event deliveries left unfinished by the last run", resumed)
        return resumed

    async def _deliver(self, sub: Subscription, event: dict[str, Any], published: str) -> None:
        delay = BACKOFF_START
        outcome = ""
        for attempt in range(1, sub.max_delivery_attempts + 1):
            try:
                await self.target.deliver(sub, event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is a failed delivery attempt
                outcome = type(exc).__name__
                log.warning("Delivery of event %s to %r failed (attempt %d of %d, %s)", event.get("id"),
                            sub.name, attempt, sub.max_delivery_attempts, outcome)
                if attempt < sub.max_delivery_attempts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_CAP)
                continue
            self.stats[f"delivered:{sub.name}"] += 1
            self.journal.append({"kind": "delivered", "at": _now(), "topic": sub.topic, "subscription": sub.name,
                                 "id": event.get("id"), "attempts": attempt})
            return
        self.stats[f"deadlettered:{sub.name}"] += 1
        await self._dead_letter(sub, event, published, sub.max_delivery_attempts, outcome)

    async def _dead_letter(self, sub: Subscription, event: dict[str, Any], published: str, attempts: int,
                           outcome: str) -> None:
        now = dt.datetime.now(dt.UTC)
        record = {**event, "deadLetterReason": "MaxDeliveryAttemptsExceeded", "deliveryAttempts": attempts,
                  "lastDeliveryOutcome": outcome or "Failed", "publishTime": published,
                  "lastDeliveryAttemptTime": now.isoformat()}
        eid = str(event.get("id", "event")).replace("/", "_")
        name = f"{sub.topic}/{sub.name}/{now:%Y/%m/%d/%H}/{eid}.json"
        self.journal.append({"kind": "deadlettered", "at": now.isoformat(), "topic": sub.topic,
                             "subscription": sub.name, "id": event.get("id"), "blob": name,
                             "type": event_type(event)})
        if not sub.dead_letter_container:
            log.error("Event %s to %r dropped after %d attempts (no deadLetterContainer)", event.get("id"),
                      sub.name, attempts)
            return
        try:
            await self.dead_letter(sub.dead_letter_container, name, json.dumps([record]).encode())
        except Exception as exc:  # noqa: BLE001 - log and keep the fabric running
            log.error("Dead-lettering event %s for %r failed (%s)", event.get("id"), sub.name, type(exc).__name__)
            return
        log.error("Event %s to %r dead-lettered after %d attempts: %s/%s", event.get("id"), sub.name, attempts,
                  sub.dead_letter_container, name)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        close = getattr(self.target, "close", None)
        if close is not None:
            await close()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _bad(message: str) -> web.Response:
    return web.json_response({"error": {"code": "BadRequest", "message": message}}, status=400)


def _check_event(e: Any, cloud: bool) -> str | None:
    if not isinstance(e, dict):
        return "is not a JSON object"
    required = ("id", "source", "type", "specversion") if cloud else ("id", "subject", "eventType", "eventTime",
                                                                       "dataVersion")
    missing = [k for k in required if k not in e]
    if missing:
        schema = "CloudEvents 1.0" if cloud else "Event Grid schema"
        return f"missing {', '.join(missing)} ({schema})"
    if not cloud and "data" not in e:
        return "missing data (Event Grid schema)"
    return None
