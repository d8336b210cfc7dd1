"""Azure object replication between two local storage accounts (Azurite), emulated for the DR drill.

What Azure does (docs/deploy.md cites the sources), and how the emulator does the same:

* **Asynchronous, per policy and container.** Azure reads the source account's change feed and copies
  each blob's content, metadata and properties to the destination container, with no SLA on the delay.
  :class:`Replicator` lists each source container every ``interval`` seconds (Azurite has no change
  feed), and copies what changed since it last copied it; the destination assigns its own ETag and
  Last-Modified, as Azure's does. Deletes replicate too.
* **Destination containers are read-only.** "After you create the replication policy, write operations
  to the destination container are not permitted ... fail with error code 409 (Conflict) ... Read and
  delete operations to the destination container are permitted." :class:`ReadOnlyProxy` sits in front
  of a region's blob endpoint (the app's ``DicomStorage`` points at it) and answers every write of a
  blob in a destination container with 409; everything else passes through unchanged (SharedKey
  signatures do not cover the host and port). The Azure docs name the status only; the proxy's error
  code, ``ObjectReplicationDestinationReadOnly``, is its own, and nothing may depend on it.
* **No events.** Event Grid's blob events are raised for clients' Blob REST calls (PutBlob,
  PutBlockList, CopyBlob); replication raises none at the destination. The emulator writes straight
  into Azurite (not through the proxy), and the devhost's blob watcher only watches containers that
  have Event Grid subscriptions (the inbox), so replicated blobs raise none here either.
* **A region down.** A pass whose source or destination does not answer fails as a whole and the next
  pass retries: what was written meanwhile is copied once both answer again (Azure catches up after an
  outage the same way, from the source's change feed).

Versions: Azurite has no blob versioning, so only current versions are copied (in Azure the previous
versions replicate too). This is test and tool code, not part of the devhost runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from tools.stack import free_port

log = logging.getLogger(__name__)

READ_ONLY_CODE: Final = "ObjectReplicationDestinationReadOnly"
#: Methods that write a blob (Put Blob/Block/Block List, Copy Blob, Set Blob Metadata/Properties/Tier...).
WRITE_METHODS: Final = frozenset({"PUT", "POST", "PATCH"})
_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                                "proxy-authorization", "proxy-authenticate", "host", "content-length"})


@dataclass(frozen=True)
class Policy:
    """One object replication policy: containers of ``source`` copied to the same names in ``destination``
    (both Azurite connection strings, straight to Azurite: replication is the service's own doing)."""

    name: str
    source: str
    destination: str
    containers: tuple[str, ...]


@dataclass
class _State:
    copied: dict[tuple[str, str], str] = field(default_factory=dict)  # (container, name) -> source ETag
    passes: int = 0
    failures: int = 0
    last_error: str | None = None
    pending: int = 0  # what the last successful pass found to do (0: caught up)


class Replicator:
    """Runs the policies in a background thread until :meth:`stop`."""

    def __init__(self, policies: Sequence[Policy], *, interval: float = 0.5) -> None:
        self.policies = list(policies)
        self.interval = interval
        self.state = {p.name: _State() for p in self.policies}
        self.copies = 0
        self.deletes = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> Replicator:
        self._thread = threading.Thread(target=self._loop, name="object-replication", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> Replicator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for policy in self.policies:
                self.run_once(policy)
            self._stop.wait(self.interval)

    def run_once(self, policy: Policy) -> int:
        """One pass of one policy; returns how many blobs it copied or deleted (-1: a region did not answer)."""
        from azure.core.exceptions import AzureError
        from azure.storage.blob import BlobServiceClient, ContentSettings

        st = self.state[policy.name]
        quick: dict[str, Any] = {"retry_total": 0, "connection_timeout": 3, "read_timeout": 30}
        try:
            src = BlobServiceClient.from_connection_string(policy.source, **quick)
            dst = BlobServiceClient.from_connection_string(policy.destination, **quick)
            done = 0
            todo: list[tuple[str, Any]] = []
            gone: list[tuple[str, str]] = []
            for container in policy.containers:
                present = set()
                for b in src.get_container_client(container).list_blobs(include=["metadata"]):
                    present.add(b.name)
                    if st.copied.get((container, b.name)) != b.etag:
                        todo.append((container, b))
                gone += [(c, n) for (c, n) in st.copied if c == container and n not in present]
            st.pending = len(todo) + len(gone)
            for container, b in todo:
                source = src.get_blob_client(container, b.name)
                downloader = source.download_blob()
                # Changed since listed? Then the newer content goes now and the next pass (seeing a new ETag
                # in the listing) copies it again: idempotent.
                data, props = downloader.readall(), downloader.properties
                settings = props.content_settings
                dst.get_blob_client(container, b.name).upload_blob(
                    data, overwrite=True, metadata=dict(props.metadata or {}),
                    content_settings=ContentSettings(content_type=settings.content_type,
                                                     content_md5=settings.content_md5,
                                                     content_encoding=settings.content_encoding,
                                                     cache_control=settings.cache_control))
                st.copied[(container, b.name)] = b.etag
                done += 1
            for container, name in gone:
                with contextlib.suppress(Exception):
                    dst.get_blob_client(container, name).delete_blob()
                st.copied.pop((container, name), None)
                done += 1
            st.passes += 1
            st.pending = 0
            st.last_error = None
            with self._lock:
                self.copies += len(todo)
                self.deletes += len(gone)
            return done
        except (AzureError, OSError) as exc:
            st.failures += 1
            st.last_error = type(exc).__name__
            return -1

    def caught_up(self, policy: str, *, passes_after: int = 0) -> bool:
        """The policy's last pass found nothing to do (and at least ``passes_after`` passes ran)."""
        st = self.state[policy]
        return st.passes > passes_after and st.pending == 0 and st.last_error is None

    def wait_source_lost(self, policy: str, timeout: float) -> bool:
        """Wait (bounded) until a pass of ``policy`` fails after this call: whatever the pass in progress
        was copying when a region went down has landed, and nothing more will until it returns."""
        start = self.state[policy].failures
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state[policy].failures > start:
                return True
            time.sleep(0.1)
        return False

    def wait_caught_up(self, policy: str, timeout: float) -> bool:
        """Wait (bounded) until a complete pass of ``policy`` that started after this call found nothing to do."""
        start = self.state[policy].passes + 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.caught_up(policy, passes_after=start):
                return True
            time.sleep(0.2)
        return False


class ReadOnlyProxy:
    """An HTTP proxy in front of an Azurite blob endpoint that refuses writes to replication destinations.

    ``port`` (after :meth:`start`) is what the app's connection string names as its BlobEndpoint."""

    def __init__(self, upstream_port: int, read_only: Sequence[str], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream = f"http://{host}:{upstream_port}"
        self.read_only = frozenset(read_only)
        self.host = host
        self.port = port
        self.refused = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: Any = None
        self._error: OSError | None = None

    def blocked(self, method: str, path: str) -> bool:
        """``/account/container/blob...``: a blob write in a destination container."""
        parts = urlsplit(path).path.lstrip("/").split("/", 2)
        return method.upper() in WRITE_METHODS and len(parts) == 3 and bool(parts[2]) and parts[1] in self.read_only

    def start(self) -> ReadOnlyProxy:
        self._thread = threading.Thread(target=self._serve, name="read-only-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the read-only proxy did not start on port {self.port}: {self._error}")
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._start())
        except OSError as exc:  # the port is taken
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        import aiohttp
        from aiohttp import web

        session = aiohttp.ClientSession(auto_decompress=False, skip_auto_headers={"User-Agent", "Accept-Encoding",
                                                                                 "Content-Type", "Accept"})

        async def handle(request: web.Request) -> web.StreamResponse:
            if self.blocked(request.method, request.path_qs):
                self.refused += 1
                body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{READ_ONLY_CODE}</Code><Message>'
                        "This container is an object replication destination: writes are not permitted."
                        "</Message></Error>").encode()
                return web.Response(status=409, body=body, content_type="application/xml",
                                    headers={"x-ms-error-code": READ_ONLY_CODE})
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
            data = await request.read()
            try:
                async with session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                           data=data if data else None, allow_redirects=False) as up:
                    body = await up.read()
                    out = web.Response(status=up.status, body=body)
                    for k, v in up.headers.items():
                        if k.lower() not in _HOP_BY_HOP:
                            out.headers.add(k, v)
                    return out
            except aiohttp.ClientError:
                return web.Response(status=503, text="the storage account does not answer")

        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = (runner, session)

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            runner, session = self._runner
            await session.close()
            await runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> ReadOnlyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Link:
    """A TCP link from one region to an endpoint of the other (the drill puts the secondary's reads of the
    primary's change feed through one), which the drill can cut and restore: cut, every open connection is
    closed and new ones are closed as soon as they arrive, as when the network to a region fails.

    ``port`` (after :meth:`start`) is what the reading region's connection string names."""

    def __init__(self, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.host = host
        self.port = port
        self.up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> Link:
        self._thread = threading.Thread(target=self._serve, name="region-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._server is None:
            raise RuntimeError(f"the link did not start on port {self.port}")
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._client, self.host, self.port or free_port()))
            self.port = int(self._server.sockets[0].getsockname()[1])
        except OSError:
            self._server = None
        self._ready.set()
        if self._server is not None:
            self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Close every connection through the link and refuse new ones until :meth:`restore`."""
        self.up = False
        if self._loop is not None:
            async def close_all() -> None:
                for w in list(self._writers):
                    w.close()
                self._writers.clear()

            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)

    def restore(self) -> None:
        self.up = True

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()
            for w in list(self._writers):
                w.close()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None
