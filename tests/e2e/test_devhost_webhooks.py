"""Core Tools mode: the fabric delivers to ``func start``'s webhooks. Core Tools cannot be installed
here, so a tiny aiohttp server stands in for it and records the requests; the test checks their
shapes (path, query, headers, body) as Core Tools expects them."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient
from azure.storage.blob import BlobServiceClient

from devhost import state
from devhost.azurite import ROOT, Azurite, free_port, port_open
from devhost.fabric import WebhookTarget
from devhost.subscriptions import Filter, Subscription

EG_SUB = Subscription("s1", "dicom", "eventGridTrigger", "route_images", Filter())
BLOB_SUB = Subscription("s2", "storage", "blobTrigger", "ingest", Filter())
EVENT = {"id": "e1", "eventType": "Microsoft.Storage.BlobCreated", "subject": "/blobServices/default/containers/"
         "dicom-inbox/blobs/a.dcm", "eventTime": "2026-01-01T00:00:00Z", "dataVersion": "", "data": {"api": "PutBlob"}}


async def _record_webhooks(status: int, calls: list[dict[str, Any]]) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.Response:
        calls.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers),
                      "body": json.loads(await request.read())})
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/runtime/webhooks/{kind}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def test_webhook_request_shapes() -> None:
    async def scenario() -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []
        runner, port = await _record_webhooks(200, calls)
        target = WebhookTarget(f"http://127.0.0.1:{port}")
        try:
            await target.deliver(EG_SUB, EVENT)
            await target.deliver(BLOB_SUB, EVENT)
        finally:
            await target.close()
            await runner.cleanup()
        return calls

    eg, blob = asyncio.run(scenario())
    assert eg["path"] == "/runtime/webhooks/eventgrid" and eg["query"] == {"functionName": "route_images"}
    assert blob["path"] == "/runtime/webhooks/blobs" and blob["query"] == {"functionName": "Host.Functions.ingest"}
    for call in (eg, blob):
        assert call["headers"]["aeg-event-type"] == "Notification"
        assert call["headers"]["Content-Type"] == "application/json"
        assert call["body"] == [EVENT]


def test_webhook_error_status_fails_the_delivery() -> None:
    async def scenario() -> None:
        calls: list[dict[str, Any]] = []
        runner, port = await _record_webhooks(500, calls)
        target = WebhookTarget(f"http://127.0.0.1:{port}")
        try:
            await target.deliver(EG_SUB, EVENT)
        finally:
            await target.close()
            await runner.cleanup()

    with pytest.raises(RuntimeError, match="HTTP 500"):
        asyncio.run(scenario())


FAKE_FUNC = '''#!{python}
"""A stand-in for 'func start': answers /api/health and records webhook calls as JSON lines."""
import json, sys
from aiohttp import web

port = int(sys.argv[sys.argv.index("--port") + 1])
out = {out!r}

async def hook(request):
    with open(out, "a") as fh:
        fh.write(json.dumps({{"path": request.path_qs, "type": request.headers.get("aeg-event-type"),
                             "body": json.loads(await request.read())}}) + "\\n")
    return web.Response(status=202)

async def health(request):
    return web.json_response({{"status": "up"}})

app = web.Application()
app.router.add_post("/runtime/webhooks/{{kind}}", hook)
app.router.add_get("/api/health", health)
web.run_app(app, host="127.0.0.1", port=port, print=None)
'''


def test_core_tools_mode_delivers_to_func_webhooks(tmp_path: Path, azurite: Azurite) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    fake = bin_dir / "func"
    fake.write_text(FAKE_FUNC.format(python=sys.executable, out=str(calls)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    http, fabric = free_port(), free_port()
    state_dir = tmp_path / "state"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "devhost", "up", "--detach", "--core-tools", "--app",
           "tests.devhost_app.function_app:app", "--events", str(ROOT / "tests" / "devhost_app" / "events.json"),
           "--http-port", str(http), "--fabric-port", str(fabric), "--azurite-ports",
           ",".join(map(str, azurite.ports)), "--state-dir", str(state_dir), "--watch-from-now"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode == 0, r.stderr
        st = state.read_json(state.state_path(state_dir))
        func_pid = st["func_pid"]
        assert st["mode"] == "core-tools" and state.pid_alive(func_pid)
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        blobs.get_blob_client("dh-inbox", "via-core-tools.txt").upload_blob(b"x", overwrite=True)
        keys = state.load_keys(state_dir)
        event = CloudEvent(source="/t", type="Dicom.ImageCreated", subject="/studies/1/series/2/instances/3",
                           data={"modality": "CT", "sizeBytes": 1})
        EventGridPublisherClient(f"http://127.0.0.1:{fabric}/api/events",
                                 AzureKeyCredential(keys["events"])).send([event])

        def seen() -> list[dict[str, Any]]:
            try:
                return [json.loads(line) for line in calls.read_text().splitlines()]
            except OSError:
                return []

        deadline = time.monotonic() + 20
        wanted = {"/runtime/webhooks/blobs?functionName=Host.Functions.blob_sdk",
                  "/runtime/webhooks/eventgrid?functionName=eg_storage",
                  "/runtime/webhooks/eventgrid?functionName=eg_ct"}
        while not wanted <= {c["path"] for c in seen()} and time.monotonic() < deadline:
            time.sleep(0.1)
        by_path = {c["path"]: c for c in seen()}
        assert wanted <= set(by_path)
        blob_call = by_path["/runtime/webhooks/blobs?functionName=Host.Functions.blob_sdk"]
        assert blob_call["type"] == "Notification"
        assert blob_call["body"][0]["subject"].endswith("/dh-inbox/blobs/via-core-tools.txt")
        assert by_path["/runtime/webhooks/eventgrid?functionName=eg_ct"]["body"][0]["id"] == event.id
    finally:
        down = subprocess.run([sys.executable, "-m", "devhost", "down", "--state-dir", str(state_dir)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert down.returncode == 0
    assert not state.pid_alive(func_pid) and not port_open(http) and not port_open(fabric)
