"""A test-only function app: one function per trigger kind, each recording what it received as a
blob in ``dh-records`` (read by tests/e2e/test_devhost_contract.py). Not deployed."""

from __future__ import annotations

import asyncio
import json
import os
import time

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob
from azure.storage.blob import BlobServiceClient
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, StreamingResponse

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
RECORDS = "dh-records"
_release = asyncio.Event()


def record(path: str, value: object) -> None:
    conn = os.environ["DicomStorage"]  # noqa: SIM112 - the app setting's name
    service = BlobServiceClient.from_connection_string(conn)
    container = service.get_container_client(RECORDS)
    if not container.exists():
        try:
            container.create_container()
        except Exception:  # created concurrently
            pass
    container.upload_blob(path, json.dumps(value), overwrite=True)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse('{"status": "up"}', mimetype="application/json")


@app.route(route="hello/{name}", methods=["GET", "POST"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    body = {"name": req.route_params.get("name"), "q": req.params.get("q"), "method": req.method,
            "body": req.get_body().decode()}
    return func.HttpResponse(json.dumps(body), mimetype="application/json", headers={"X-Test": "yes"})


@app.route(route="items/{id:int}/{label?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def items(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(dict(req.route_params)), mimetype="application/json")


@app.route(route="files/{*rest}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def files(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.route_params.get("rest", ""), status_code=202)


@app.route(route="stream/{n:int}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def stream(req: Request) -> StreamingResponse:
    n = int(req.path_params["n"])

    async def body():  # the first chunk goes out before the rest is even produced
        yield b"first\n"
        await asyncio.wait_for(_release.wait(), 30)
        for i in range(n):
            yield (f"{i:08d}" * 8192).encode()  # 64 KiB per chunk

    return StreamingResponse(body(), media_type="application/octet-stream")


@app.route(route="echo/{word}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def fastapi_echo(req: Request) -> JSONResponse:
    return JSONResponse({"word": req.path_params["word"], "q": req.query_params.get("q")})


@app.route(route="stream-release", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def stream_release(req: func.HttpRequest) -> func.HttpResponse:
    _release.set()
    return func.HttpResponse("released")


@app.blob_trigger(arg_name="client", path="dh-inbox/{name}", connection="DicomStorage",
                  source=func.BlobSource.EVENT_GRID)
def blob_sdk(client: blob.BlobClient) -> None:
    if client.blob_name.startswith("fail-"):
        raise RuntimeError("this blob always fails")
    data = client.download_blob().readall()
    record(f"blob_sdk/{client.blob_name}", {"type": type(client).__module__ + "." + type(client).__name__,
                                            "content": data.decode()})


@app.blob_trigger(arg_name="stream", path="dh-inbox2/{name}", connection="DicomStorage",
                  source=func.BlobSource.EVENT_GRID)
def blob_stream(stream: func.InputStream) -> None:
    record(f"blob_stream/{stream.name.rsplit('/', 1)[-1]}", {"name": stream.name, "length": stream.length,
                                                             "content": stream.read().decode()})


def _eg(name: str, event: func.EventGridEvent) -> None:
    # The converter gives a CloudEvent for CloudEvents 1.0 and an EventGridEvent for Event Grid schema.
    kind = getattr(event, "event_type", None) or getattr(event, "type", None)
    record(f"{name}/{event.id}", {"id": event.id, "subject": event.subject, "type": kind,
                                  "data": event.get_json()})


@app.event_grid_trigger(arg_name="event")
def eg_storage(event: func.EventGridEvent) -> None:
    _eg("eg_storage", event)


@app.event_grid_trigger(arg_name="event")
def eg_ct(event: func.EventGridEvent) -> None:
    _eg("eg_ct", event)


@app.event_grid_trigger(arg_name="event")
def eg_big(event: func.EventGridEvent) -> None:
    _eg("eg_big", event)


@app.event_grid_trigger(arg_name="event")
async def eg_derived(event: func.EventGridEvent) -> None:
    await asyncio.to_thread(_eg, "eg_derived", event)


@app.event_grid_trigger(arg_name="event")
def eg_fail(event: func.EventGridEvent) -> None:
    raise RuntimeError("this handler always fails")


@app.event_grid_trigger(arg_name="event")
def eg_gate(event: func.EventGridEvent) -> None:
    """Fails until the test opens the gate (a blob), to leave a delivery unfinished across a crash."""
    conn = os.environ["DicomStorage"]  # noqa: SIM112 - the app setting's name
    if not BlobServiceClient.from_connection_string(conn).get_blob_client(RECORDS, "gate/open").exists():
        raise RuntimeError("the gate is closed")
    _eg("eg_gate", event)


@app.queue_trigger(arg_name="msg", queue_name="dh-work", connection="DicomStorage")
def queue_work(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    if body.startswith("fail:"):
        raise RuntimeError("this message always fails")
    if body.startswith("slow:"):  # outlives the message's lease: the host must renew it
        time.sleep(2.5)
        record(f"queue_work/{body}/{msg.dequeue_count}", {"body": body})
        return
    record(f"queue_work/{body}", {"body": body, "dequeue_count": msg.dequeue_count, "id": msg.id})


@app.timer_trigger(arg_name="timer", schedule="* * * * * *", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    record("tick/last", {"past_due": timer.past_due})
