"""The in-process function host: runs a ``func.FunctionApp`` the way the Functions host + Python
worker would, without Core Tools.

Everything is discovered from ``app.get_functions()`` and each function's
``get_function_json()``: adding a function to the app needs no change here. Trigger payloads are
decoded with ``azure.functions``' own converters (``EventGridEventInConverter``,
``QueueMessageInConverter``, ``BlobConverter``, ``TimerRequestConverter``) and the SDK-type blob
binding with ``azurefunctions-extensions-bindings-blob``'s converter, so the function receives the
very objects the real worker builds.

Supported: HTTP (routes, methods, auth levels, ``routePrefix``; HTTP streaming with
``azurefunctions-extensions-http-fastapi`` as the worker does it: the function gets a
FastAPI/Starlette ``Request`` and its Starlette ``Response`` is sent through ASGI chunk by chunk),
blob triggers with ``source=EventGrid`` (invoked by the event fabric; retried, then poisoned into
``webjobs-blobtrigger-poison``), Event Grid triggers (an exception is a failed delivery), queue
triggers (visibility timeout, dequeue count, ``<queue>-poison``), timer triggers (NCRONTAB with
seconds, via croniter). Sync functions run on a thread pool, async ones on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import importlib
import inspect
import json
import logging
import re
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.functions import meta
from azure.functions.blob import BlobConverter
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.queue import QueueMessageInConverter
from azure.functions.timer import TimerRequestConverter

from devhost.routes import Route, RouteError, join_prefix

log = logging.getLogger("devhost.host")
POISON_BLOB_QUEUE = "webjobs-blobtrigger-poison"
#: A dequeued message stays invisible this long and is renewed while its function runs (the real
#: host uses 10 minutes; shorter here so a crashed devhost's messages come back soon). The app
#: setting DEVHOST_QUEUE_LEASE_SECONDS overrides it (tests).
QUEUE_LEASE_SECONDS = 30.0


class HostError(RuntimeError):
    """The app cannot be hosted as configured; the message says what to do (one line)."""


# --- host.json -----------------------------------------------------------------------------------

def log_name(blob: str) -> str:
    """How the host names a blob in its log lines: ``blob#<12 hex of its SHA-256>``, never the name itself.

    Blob names are chosen by whoever uploads, and imaging uploads often carry a patient's name or ID in
    them; Core Tools would print them, a runtime for such apps should not. Apps that log the same
    form can be followed across both logs (dicomflow's ``shared/storage/layout.py`` does)."""
    import hashlib

    return "blob#" + hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _timespan(value: Any, default: float) -> float:
    """Seconds from a host.json TimeSpan (``hh:mm:ss[.fff]`` or ``d.hh:mm:ss``)."""
    if value is None:
        return default
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", str(value))
    if not m:
        raise HostError(f"host.json: TimeSpan {value!r} is not hh:mm:ss: fix it (e.g. \"00:00:05\")")
    days, h, mi, s = m.groups()
    return int(days or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + float(s)


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queue_max_polling: float = 2.0
    queue_visibility_timeout: float = 0.0
    queue_batch_size: int = 16
    queue_max_dequeue: int = 5
    poison_blob_threshold: int = 5

    @classmethod
    def load(cls, app_dir: Path) -> HostConfig:
        path = app_dir / "host.json"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except ValueError as exc:
            raise HostError(f"{path}: invalid JSON ({exc}): fix the syntax") from None
        ext = doc.get("extensions") or {}
        http = ext.get("http") or {}
        queues = ext.get("queues") or {}
        blobs = ext.get("blobs") or {}
        return cls(
            route_prefix=str(http.get("routePrefix", "api")),
            queue_max_polling=_timespan(queues.get("maxPollingInterval"), 2.0),
            queue_visibility_timeout=_timespan(queues.get("visibilityTimeout"), 0.0),
            queue_batch_size=int(queues.get("batchSize", 16)),
            queue_max_dequeue=int(queues.get("maxDequeueCount", 5)),
            poison_blob_threshold=int(blobs.get("poisonBlobThreshold", 5)),
        )


# --- discovery -----------------------------------------------------------------------------------

@dataclass
class FunctionSpec:
    name: str
    user_function: Callable[..., Any]
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    is_async: bool
    annotations: dict[str, Any] = field(default_factory=dict)
    wants_context: bool = False
    route: Route | None = None

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def trigger_arg(self) -> str:
        return str(self.trigger["name"])

    @property
    def streaming(self) -> bool:
        ann = self.annotations.get(self.trigger_arg)
        return _is_starlette_request(ann)

    def describe(self) -> str:
        t = self.trigger
        detail = {
            "httpTrigger": lambda: f"{','.join(t.get('methods') or ['*'])} {t.get('route') or self.name} "
                                   f"[{t.get('authLevel', 'FUNCTION')}]",
            "blobTrigger": lambda: f"{t.get('path')} (source={t.get('source', 'LogsAndContainerScan')})",
            "eventGridTrigger": lambda: "event fabric",
            "queueTrigger": lambda: f"queue {t.get('queueName')}",
            "timerTrigger": lambda: f"schedule {t.get('schedule')}",
        }.get(self.trigger_type, lambda: "")()
        return f"{self.trigger_type}: {detail}"


def _is_starlette_request(ann: Any) -> bool:
    if not isinstance(ann, type):
        return False
    try:
        from starlette.requests import Request as StarletteRequest
    except ImportError:  # the extension is not installed: no streaming functions either
        return False
    return issubclass(ann, StarletteRequest)


def http_v2_enabled(env: Mapping[str, str]) -> bool:
    """Whether the Python worker would run this app in HTTP streaming mode ("HTTP v2").

    The worker enables it as soon as a web extension (``azurefunctions-extensions-http-fastapi``) has been
    imported by the app, unless ``PYTHON_ENABLE_INIT_INDEXING`` is false; from then on EVERY HTTP function
    receives the FastAPI ``Request`` (whatever its annotation) and must return a FastAPI/Starlette response.
    """
    if str(env.get("PYTHON_ENABLE_INIT_INDEXING", "")).lower() in ("false", "0"):
        return False
    try:
        from azurefunctions.extensions.base import HttpV2FeatureChecker
    except ImportError:
        return False
    return bool(HttpV2FeatureChecker.http_v2_enabled())


def classic_http_functions(specs: Mapping[str, FunctionSpec]) -> list[str]:
    """HTTP functions written for ``func.HttpRequest`` (they break in Azure once HTTP v2 is enabled)."""
    return [s.name for s in specs.values() if s.trigger_type == "httpTrigger" and not s.streaming]


def load_app(spec: str) -> tuple[Any, Path]:
    """Import ``module:attr`` (from the current directory or the repo root); return the app and its folder."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    for p in (str(Path.cwd()), str(Path(__file__).resolve().parent.parent)):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HostError(f"Cannot import the app module {module_name!r} ({exc}): pass --app module:attr") from None
    app = getattr(module, attr, None)
    if app is None or not hasattr(app, "get_functions"):
        raise HostError(f"{module_name}.{attr} is not a func.FunctionApp: pass --app module:attr")
    return app, Path(module.__file__ or ".").resolve().parent


def discover(app: Any, config: HostConfig) -> dict[str, FunctionSpec]:
    """Every function of ``app`` (a FunctionApp, or the list its ``get_functions()`` returned: azure.functions
    lets an app build that list only once)."""
    specs: dict[str, FunctionSpec] = {}
    functions = app.get_functions() if hasattr(app, "get_functions") else app
    for fn in functions:
        doc = json.loads(fn.get_function_json())
        bindings = doc["bindings"]
        trigger = next((b for b in bindings if str(b["type"]).endswith("Trigger")), None)
        if trigger is None:
            raise HostError(f"Function {fn.get_function_name()!r} has no trigger binding: add one")
        user = fn.get_user_function()
        try:
            hints = inspect.get_annotations(user, eval_str=True)
        except Exception:  # noqa: BLE001 - string annotations that do not resolve: fall back to raw ones
            hints = dict(getattr(user, "__annotations__", {}))
        params = inspect.signature(user).parameters
        names = {b["name"] for b in bindings}
        spec = FunctionSpec(
            name=fn.get_function_name(), user_function=user, trigger=trigger, bindings=bindings,
            is_async=inspect.iscoroutinefunction(user), annotations=hints,
            wants_context="context" in params and "context" not in names,
        )
        if spec.trigger_type == "httpTrigger":
            try:
                spec.route = Route.parse(join_prefix(config.route_prefix, trigger.get("route") or spec.name))
            except RouteError as exc:
                raise HostError(f"Function {spec.name!r}: {exc}") from None
        for b in bindings:
            if b is trigger or (b["name"] == "$return" and b["type"] == "http"):
                continue
            log.warning("Function %r: binding %r (%s) is not supported by devhost; it will receive None",
                        spec.name, b["name"], b["type"])
        if spec.trigger_type == "timerTrigger" and len(str(trigger.get("schedule", "")).split()) != 6:
            raise HostError(f"Function {spec.name!r}: schedule {trigger.get('schedule')!r} is not a 6-field NCRONTAB "
                            "('sec min hour day month weekday'); TimeSpan schedules are not supported by devhost")
        if spec.trigger_type == "blobTrigger" and trigger.get("source") != "EventGrid":
            log.warning("Function %r: blob trigger without source=EventGrid does not fire under devhost; "
                        "use source=func.BlobSource.EVENT_GRID", spec.name)
        specs[spec.name] = spec
    return specs


# --- connections ---------------------------------------------------------------------------------

def connection_string(env: Mapping[str, str], connection: str | None) -> str:
    """The connection string behind a binding's ``connection`` setting (devhost runs on Azurite only)."""
    name = connection or "AzureWebJobsStorage"
    value = env.get(name)
    if not value:
        raise HostError(f"Setting {name!r} (a binding's connection) is not set: add it to local.settings.json "
                        "or pass --env {name}=<connection string>")
    return value


class Context:
    """The ``context`` parameter the Python worker injects (the attributes apps use)."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self.invocation_id = invocation_id
        self.function_name = function_name
        self.function_directory = function_directory
        self.trace_context = SimpleNamespace(trace_parent="", trace_state="", attributes={})
        self.retry_context = SimpleNamespace(retry_count=0, max_retry_count=0, exception=None)
        self.thread_local_storage = None


class InvocationFailed(Exception):
    """A function raised; the cause is chained."""


# --- the host ------------------------------------------------------------------------------------

class FunctionHost:
    """Invokes the app's functions; one per ``up``."""

    def __init__(self, specs: dict[str, FunctionSpec], config: HostConfig, env: Mapping[str, str],
                 function_key: str, app_dir: Path, *, max_workers: int | None = None,
                 cors: list[str] | None = None, strict_http_v2: bool = False) -> None:
        self.specs = specs
        # With strict_http_v2 every HTTP function gets the FastAPI request when the app enabled HTTP v2,
        # exactly as the worker does; otherwise only the functions annotated for it (see runtime's warning).
        self.all_http_asgi = strict_http_v2 and http_v2_enabled(env)
        self.cors = [c.strip().rstrip("/") for c in (cors or []) if c.strip()]
        self.config = config
        self.env = dict(env)
        self.function_key = function_key
        self.app_dir = app_dir
        # The Python worker's setting; unset means min(32, cpus + 4) as in the worker.
        threads = max_workers or int(self.env.get("PYTHON_THREADPOOL_THREAD_COUNT") or 0) or None
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fn")
        # The host's own storage calls (watcher, queue polling, poison, dead letters) get their own
        # threads, so busy functions never starve the plumbing that feeds them.
        self.io_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="devhost-io")
        self.queue_lease = int(float(self.env.get("DEVHOST_QUEUE_LEASE_SECONDS") or QUEUE_LEASE_SECONDS))
        self.counts: dict[str, dict[str, int]] = {n: {"succeeded": 0, "failed": 0} for n in specs}
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._http_routes = sorted(
            (s for s in specs.values() if s.route is not None), key=lambda s: s.route.specificity  # type: ignore[union-attr]
        )

    # -- invocation ---------------------------------------------------------------------------
    async def invoke(self, spec: FunctionSpec, kwargs: dict[str, Any], reason: str) -> Any:
        """Run one function with Core Tools-style logs; raise :class:`InvocationFailed` if it raises."""
        inv = str(uuid.uuid4())
        if spec.wants_context:
            kwargs = {**kwargs, "context": Context(inv, spec.name, str(self.app_dir))}
        for b in spec.bindings:
            if b["name"] != "$return" and b["name"] not in kwargs and b is not spec.trigger:
                kwargs[b["name"]] = None
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, inv)
        t0 = time.perf_counter()
        try:
            if spec.is_async:
                result = await spec.user_function(**kwargs)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self.executor, lambda: spec.user_function(**kwargs))
        except Exception as exc:
            ms = round((time.perf_counter() - t0) * 1000)
            self.counts[spec.name]["failed"] += 1
            # The exception type only: messages can carry values (PHI) the app put there.
            log.error("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms): %s at %s", spec.name, inv, ms,
                      type(exc).__name__, _where(exc))
            raise InvocationFailed(f"{spec.name} raised {type(exc).__name__}") from exc
        ms = round((time.perf_counter() - t0) * 1000)
        self.counts[spec.name]["succeeded"] += 1
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", spec.name, inv, ms)
        return result

    async def to_thread(self, fn: Callable[[], Any]) -> Any:
        """Run a blocking storage call of the host itself (not a function) on the I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(self.io_executor, fn)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- HTTP ---------------------------------------------------------------------------------
    def http_app(self) -> web.Application:
        app = web.Application(client_max_size=1024**4)
        app.router.add_route("*", "/{tail:.*}", self._handle_http)
        if self.cors:
            app.on_response_prepare.append(self._add_cors)
        return app

    def _cors_origin(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if not origin or not self.cors:
            return None
        if "*" in self.cors:
            return "*"
        return origin if origin.rstrip("/") in self.cors else None

    async def _add_cors(self, request: web.Request, response: web.StreamResponse) -> None:
        """CORS like the Functions host's ``Host.CORS`` setting (browser viewers such as OHIF need it)."""
        allowed = self._cors_origin(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = allowed
            if allowed != "*":
                response.headers.add("Vary", "Origin")

    def _authorized(self, spec: FunctionSpec, request: web.Request) -> bool:
        level = str(spec.trigger.get("authLevel", "FUNCTION")).upper()
        if level == "ANONYMOUS":
            return True
        given = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return secrets.compare_digest(given.encode(), self.function_key.encode())

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        method = request.method.upper()
        if method == "OPTIONS" and "Access-Control-Request-Method" in request.headers and self._cors_origin(request):
            return web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
                "Access-Control-Max-Age": "3600",
            })
        matched_path = False
        for spec in self._http_routes:
            assert spec.route is not None
            params = spec.route.match(path)
            if params is None:
                continue
            matched_path = True
            methods = [m.upper() for m in (spec.trigger.get("methods") or [])]
            if methods and method not in methods:
                continue
            if not self._authorized(spec, request):
                return web.Response(status=401)
            if spec.streaming or self.all_http_asgi:
                return await self._invoke_streaming(spec, request, params)
            return await self._invoke_http(spec, request, params)
        return web.Response(status=405 if matched_path else 404)

    async def _invoke_http(self, spec: FunctionSpec, request: web.Request, params: dict[str, str]
                           ) -> web.StreamResponse:
        body = await request.read()
        req = func.HttpRequest(
            method=request.method, url=str(request.url), headers=dict(request.headers),
            params=dict(request.query), route_params=params, body=body,
        )
        try:
            result = await self.invoke(spec, {spec.trigger_arg: req},
                                       "This function was programmatically called via the host APIs.")
        except InvocationFailed:
            return web.Response(status=500)
        return _to_aiohttp(result)

    async def _invoke_streaming(self, spec: FunctionSpec, request: web.Request, params: dict[str, str]
                                ) -> web.StreamResponse:
        from starlette.requests import Request as StarletteRequest
        from starlette.responses import JSONResponse, PlainTextResponse
        from starlette.responses import Response as StarletteResponse

        scope = _asgi_scope(request, params)
        receive = _asgi_receive(request)
        req_cls = self.annotations_request_class(spec) or StarletteRequest
        req = req_cls(scope, receive)
        try:
            result = await self.invoke(spec, {spec.trigger_arg: req},
                                       "This function was programmatically called via the host APIs.")
        except InvocationFailed:
            return web.Response(status=500)
        if not isinstance(result, StarletteResponse):
            if isinstance(result, str | bytes):
                result = PlainTextResponse(result)
            elif hasattr(result, "model_dump"):
                result = JSONResponse(result.model_dump(mode="json"))
            else:
                result = JSONResponse(result)
        out: dict[str, web.StreamResponse] = {}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                resp = web.StreamResponse(status=message["status"])
                for k, v in message.get("headers", []):
                    resp.headers.add(k.decode("latin-1"), v.decode("latin-1"))
                await resp.prepare(request)
                out["resp"] = resp
            elif message["type"] == "http.response.body":
                resp = out["resp"]
                chunk = message.get("body", b"")
                if chunk:
                    await resp.write(chunk)
                if not message.get("more_body", False):
                    await resp.write_eof()

        try:
            await result(scope, receive, send)
        except (ConnectionError, asyncio.CancelledError):
            log.info("Function %r: the client went away while streaming", spec.name)
            raise
        return out.get("resp") or web.Response(status=500)

    @staticmethod
    def annotations_request_class(spec: FunctionSpec) -> Any:
        ann = spec.annotations.get(spec.trigger_arg)
        return ann if _is_starlette_request(ann) else None

    # -- Event Grid trigger -------------------------------------------------------------------
    async def invoke_event_grid(self, name: str, event: dict[str, Any]) -> None:
        spec = self._spec(name, "eventGridTrigger")
        value = EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata={})
        when = dt.datetime.now(dt.UTC).isoformat()
        await self.invoke(spec, {spec.trigger_arg: value}, f"EventGrid trigger fired at {when}")

    def _spec(self, name: str, trigger_type: str) -> FunctionSpec:
        spec = self.specs.get(name)
        if spec is None or spec.trigger_type != trigger_type:
            raise HostError(f"No {trigger_type} function named {name!r} in the app")
        return spec

    # -- blob trigger (source=EventGrid) --------------------------------------------------------
    async def invoke_blob_event(self, name: str, event: dict[str, Any]) -> None:
        """Handle a BlobCreated delivery: retries, then the poison queue, like the blob extension."""
        spec = self._spec(name, "blobTrigger")
        if str(event.get("eventType", event.get("type"))) != "Microsoft.Storage.BlobCreated":
            return
        m = re.match(r"^/blobServices/default/containers/([^/]+)/blobs/(.+)$", str(event.get("subject", "")))
        if not m:
            return
        container, blob = m.groups()
        path = str(spec.trigger.get("path", ""))
        want_container, _, pattern = path.partition("/")
        if want_container != container or not _blob_path_matches(pattern, blob):
            return
        etag = str((event.get("data") or {}).get("eTag", ""))
        # Awaited, not spawned: the fabric records the delivery only once the blob is processed or
        # poisoned, so a devhost stopped mid-way delivers it again on start (as the real host's
        # internal blob-trigger queue would).
        await self._run_blob(spec, container, blob, etag)

    async def _run_blob(self, spec: FunctionSpec, container: str, blob: str, etag: str) -> None:
        threshold = max(1, self.config.poison_blob_threshold)
        delay = 0.2
        for attempt in range(1, threshold + 1):
            try:
                arg = await self._blob_argument(spec, container, blob)
                await self.invoke(spec, {spec.trigger_arg: arg},
                                  f"New blob detected(EventGrid): {container}/{log_name(blob)}")
                return
            except Exception as exc:  # noqa: BLE001 - any failure counts toward the poison threshold
                if attempt < threshold:
                    log.warning("Function %r: blob %s/%s failed (attempt %d of %d, %s); retrying",
                                spec.name, container, log_name(blob), attempt, threshold, type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        await self.to_thread(lambda: self._poison_blob(spec, container, blob, etag))

    def _poison_blob(self, spec: FunctionSpec, container: str, blob: str, etag: str) -> None:
        from azure.storage.queue import QueueClient, TextBase64EncodePolicy

        message = {"Type": "BlobTrigger", "FunctionId": f"Host.Functions.{spec.name}", "BlobType": "BlockBlob",
                   "ContainerName": container, "BlobName": blob, "ETag": etag}
        conn = connection_string(self.env, "AzureWebJobsStorage")
        q = QueueClient.from_connection_string(conn, POISON_BLOB_QUEUE, message_encode_policy=TextBase64EncodePolicy())
        with contextlib.suppress(Exception):
            q.create_queue()
        q.send_message(json.dumps(message))
        log.error("Function %r: blob %s/%s moved to %s after %d attempts", spec.name, container, log_name(blob),
                  POISON_BLOB_QUEUE, self.config.poison_blob_threshold)

    async def _blob_argument(self, spec: FunctionSpec, container: str, blob: str) -> Any:
        ann = spec.annotations.get(spec.trigger_arg)
        connection = spec.trigger.get("connection") or "AzureWebJobsStorage"
        if _is_sdk_type(ann):
            from azurefunctions.extensions.bindings.blob.blobClientConverter import BlobClientConverter

            content = json.dumps({"Connection": connection, "ContainerName": container, "BlobName": blob})
            value = SimpleNamespace(version="1.0", source="AzureStorageBlobs", content_type="application/json",
                                    content=content)
            return await self.to_thread(lambda: BlobClientConverter.decode(
                meta.Datum(value, "model_binding_data"), trigger_metadata={}, pytype=ann))
        from azure.storage.blob import BlobClient

        conn = connection_string(self.env, connection)

        def download() -> Any:
            client = BlobClient.from_connection_string(conn, container, blob)
            data = client.download_blob().readall()
            props = {"ContentLength": len(data), "Length": len(data)}
            meta_ = {
                "BlobTrigger": meta.Datum(f"{container}/{blob}", "string"),
                "Uri": meta.Datum(client.url, "string"),
                "Properties": meta.Datum(json.dumps(props), "json"),
            }
            return BlobConverter.decode(meta.Datum(data, "bytes"), trigger_metadata=meta_)

        return await self.to_thread(download)

    # -- queue triggers -----------------------------------------------------------------------
    async def run_queue(self, spec: FunctionSpec) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import QueueClient

        queue = str(spec.trigger["queueName"])
        conn = connection_string(self.env, spec.trigger.get("connection"))
        client = QueueClient.from_connection_string(conn, queue)
        poison = QueueClient.from_connection_string(conn, f"{queue}-poison")
        with contextlib.suppress(ResourceExistsError):
            await self.to_thread(client.create_queue)
        cfg = self.config
        # Like the real host: fetch a new batch once in-flight messages drop to newBatchThreshold
        # (batchSize / 2), so a slow message does not hold up the queue.
        threshold = max(0, cfg.queue_batch_size // 2)
        inflight: set[asyncio.Task[Any]] = set()

        def settled(task: asyncio.Task[Any]) -> None:
            inflight.discard(task)
            if not task.cancelled() and task.exception() is not None:  # it reappears after its lease
                log.warning("Queue %r: settling a message failed (%s)", queue, type(task.exception()).__name__)

        idle, delay = 0.1, 0.1
        while not self._stopping.is_set():
            if len(inflight) > threshold:
                await asyncio.wait(set(inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await self.to_thread(lambda: list(client.receive_messages(
                    messages_per_page=cfg.queue_batch_size, max_messages=cfg.queue_batch_size,
                    visibility_timeout=self.queue_lease)))
            except Exception as exc:  # noqa: BLE001 - the storage may blink; keep polling
                log.warning("Queue %r: polling failed (%s); retrying", queue, type(exc).__name__)
                msgs = []
            if not msgs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, max(idle, cfg.queue_max_polling))
                continue
            delay = idle
            for m in msgs:
                task = self.spawn(self._queue_message(spec, client, poison, m))
                inflight.add(task)
                task.add_done_callback(settled)

    async def _queue_message(self, spec: FunctionSpec, client: Any, poison: Any, m: Any) -> None:
        queue = str(spec.trigger["queueName"])
        raw: str = m.content
        try:
            body: bytes = base64.b64decode(raw, validate=True)
        except ValueError:
            body = b""
            failed_decode = True
        else:
            failed_decode = False
        value: Any = None
        if not failed_decode:
            try:
                datum = meta.Datum(body.decode("utf-8"), "string")
            except UnicodeDecodeError:
                datum = meta.Datum(body, "bytes")

            def iso(t: Any) -> meta.Datum | None:
                return meta.Datum(t.isoformat(), "string") if t else None

            md = {k: v for k, v in {
                "Id": meta.Datum(m.id, "string"), "DequeueCount": meta.Datum(m.dequeue_count, "int"),
                "PopReceipt": meta.Datum(m.pop_receipt, "string"), "InsertionTime": iso(m.inserted_on),
                "ExpirationTime": iso(m.expires_on), "NextVisibleTime": iso(m.next_visible_on),
            }.items() if v is not None}
            value = QueueMessageInConverter.decode(datum, trigger_metadata=md)
        try:
            if failed_decode:
                raise InvocationFailed(f"queue {queue!r}: message is not base64 (Functions' default encoding)")
            done = asyncio.Event()
            renew = asyncio.ensure_future(self._renew_lease(client, m, done))
            try:
                await self.invoke(spec, {spec.trigger_arg: value}, f"New queue message detected on '{queue}'.")
            finally:
                done.set()
                await renew  # lets an in-flight renewal finish, so the pop receipt below is current
        except InvocationFailed:
            if m.dequeue_count >= self.config.queue_max_dequeue:
                def to_poison() -> None:
                    from azure.core.exceptions import ResourceExistsError

                    with contextlib.suppress(ResourceExistsError):
                        poison.create_queue()
                    poison.send_message(raw)
                    client.delete_message(m)

                await self.to_thread(to_poison)
                log.error("Queue %r: message %s moved to %s-poison after %d attempts", queue, m.id, queue,
                          m.dequeue_count)
            else:
                vis = int(self.config.queue_visibility_timeout)
                await self.to_thread(lambda: client.update_message(m, visibility_timeout=vis))
            return
        await self.to_thread(lambda: client.delete_message(m))

    async def _renew_lease(self, client: Any, m: Any, done: asyncio.Event) -> None:
        """Keep a message invisible while its function runs (pop receipts change on each update)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.queue_lease / 3)
            if done.is_set():
                return
            try:
                updated = await self.to_thread(
                    lambda: client.update_message(m, visibility_timeout=self.queue_lease))
            except Exception as exc:  # noqa: BLE001 - the next renewal or the final update will tell
                log.warning("Queue message %s: lease renewal failed (%s)", m.id, type(exc).__name__)
                continue
            m.pop_receipt = updated.pop_receipt
            m.next_visible_on = updated.next_visible_on

    # -- timer triggers -----------------------------------------------------------------------
    async def run_timer(self, spec: FunctionSpec) -> None:
        from croniter import croniter

        schedule = str(spec.trigger["schedule"])  # checked by discover(): 6-field NCRONTAB

        async def fire(past_due: bool) -> None:
            info = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": None, "IsPastDue": past_due}
            value = TimerRequestConverter.decode(meta.Datum(json.dumps(info), "json"), trigger_metadata={})
            with contextlib.suppress(InvocationFailed):
                await self.invoke(spec, {spec.trigger_arg: value},
                                  f"Timer fired at {dt.datetime.now(dt.UTC).isoformat()}")

        if spec.trigger.get("runOnStartup"):
            await fire(False)
        it = croniter(schedule, dt.datetime.now(dt.UTC), second_at_beginning=True)
        while not self._stopping.is_set():
            nxt = it.get_next(dt.datetime)
            wait = (nxt - dt.datetime.now(dt.UTC)).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
                if self._stopping.is_set():
                    return
            await fire(wait < -1.0)

    # -- lifecycle ----------------------------------------------------------------------------
    def start_listeners(self) -> list[asyncio.Task[Any]]:
        tasks = []
        for spec in self.specs.values():
            if spec.trigger_type == "queueTrigger":
                tasks.append(self.spawn(self.run_queue(spec)))
            elif spec.trigger_type == "timerTrigger":
                tasks.append(self.spawn(self.run_timer(spec)))
        return tasks

    async def stop(self) -> None:
        self._stopping.set()
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.io_executor.shutdown(wait=False, cancel_futures=True)


def _where(exc: BaseException) -> str:
    """``file:line`` where an exception was raised (its message may hold values, so it is not logged)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"


def _blob_path_matches(pattern: str, blob: str) -> bool:
    """``{name}``-style blob path patterns after the container (``{name}``, ``in/{name}.dcm``...)."""
    if not pattern:
        return True
    rx = re.escape(pattern)
    rx = re.sub(r"\\\{[^}]+\\\}", ".+", rx)
    return re.fullmatch(rx, blob) is not None


def _is_sdk_type(ann: Any) -> bool:
    try:
        from azurefunctions.extensions.base import SdkType
    except ImportError:
        return False
    return isinstance(ann, type) and issubclass(ann, SdkType)


def _to_aiohttp(result: Any) -> web.StreamResponse:
    if result is None:
        return web.Response(status=204)
    if isinstance(result, str | bytes):
        return web.Response(body=result.encode() if isinstance(result, str) else result)
    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items() if k.lower() not in ("content-length",)}
        if not any(k.lower() == "content-type" for k in headers) and result.mimetype:
            ct = result.mimetype
            if result.charset and (ct.startswith("text/") or ct.endswith("json")):
                ct = f"{ct}; charset={result.charset}"
            headers["Content-Type"] = ct
        return web.Response(status=result.status_code, body=result.get_body(), headers=headers)
    log.error("An HTTP function returned %s; return a func.HttpResponse", type(result).__name__)
    return web.Response(status=500)


def _asgi_scope(request: web.Request, params: dict[str, str]) -> dict[str, Any]:
    raw_path = request.raw_path.split("?", 1)[0]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": raw_path.encode("latin-1"),
        "root_path": "",
        # ASGI wants the query as sent (percent-encoded); aiohttp's query_string is already decoded.
        "query_string": request.rel_url.raw_query_string.encode("latin-1"),
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": request.transport.get_extra_info("peername") if request.transport else None,
        "server": request.transport.get_extra_info("sockname") if request.transport else None,
        "path_params": dict(params),
    }


def _asgi_receive(request: web.Request) -> Callable[[], Awaitable[dict[str, Any]]]:
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if not done:
            chunk = await request.content.readany()
            if chunk:
                return {"type": "http.request", "body": chunk, "more_body": True}
            done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # until cancelled: the client has nothing more to say
        return {"type": "http.disconnect"}

    return receive
