"""The ``inference`` and ``routing`` function bodies on Azurite, chained through a captured event.

Series stable → inference writes SEG + SR to the inbox and publishes
``Dicom.InferenceCompleted`` (captured by a small Event Grid-compatible endpoint) →
that event, handed to ``routing``, puts a worklist message for a priority rule.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import azure.functions as func
import orjson
import pytest
from azure.core.exceptions import ResourceExistsError

from devhost.azurite import free_port
from functions import inference, routing
from shared.config import reload_settings
from shared.index.tables import DELIVERIES
from shared.routing import service as routing_service
from shared.storage import layout
from shared.storage.clients import get_clients
from tests.integration.routing_peers import archive
from tests.phantoms import PATIENT_ID, disc_mg


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch, storage_env: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.extend(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for key, value in storage_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DicomEvents__topicEndpointUri", f"http://127.0.0.1:{server.server_port}/api/events")
    monkeypatch.setenv("DICOMFLOW_EVENTS_LOCAL_KEY", "test-key")
    settings = reload_settings()
    clients = get_clients(settings)
    for name in layout.CONTAINERS:
        try:
            clients.blob.create_container(name)
        except ResourceExistsError:
            pass
    try:
        clients.table.create_table(DELIVERIES)
    except ResourceExistsError:
        pass
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        monkeypatch.undo()
        reload_settings()


def grid_event(kind: str, data: dict[str, Any], subject: str) -> func.EventGridEvent:
    return func.EventGridEvent(
        id="t-1",
        data=data,
        topic="dicom",
        subject=subject,
        event_type=kind,
        event_time=dt.datetime.now(dt.UTC),
        data_version="1.0",
    )


def test_series_stable_to_inference_to_priority_worklist(published: list[dict[str, Any]]) -> None:
    clients = get_clients()
    mg = disc_mg(radius_mm=40.0, tag="fn-chain")
    data = archive(clients.blob, [mg])
    config = clients.blob.get_container_client(layout.CONFIG)
    config.upload_blob(
        "inference/models.json", b'{"models": [{"kind": "builtin", "options": {"priorityCm2": 30}}]}', overwrite=True
    )
    rules = {
        "rules": [
            {
                "name": "urgent-mammo",
                "trigger": "Dicom.InferenceCompleted",
                "conditions": {"aiPriority": True, "Modality": "MG"},
                "destinations": [{"type": "worklist", "group": "breast-urgent"}],
            }
        ]
    }
    config.upload_blob(layout.RULES_DOC, orjson.dumps(rules), overwrite=True)
    routing_service._rules_cache.clear()
    try:
        series_data = {**data, "imageSeriesInstanceUid": str(mg.SeriesInstanceUID), "modality": "MG", "derived": False}
        inference.inference._function.get_user_function()(
            grid_event("Dicom.SeriesStable", series_data, f"/studies/{mg.StudyInstanceUID}/series/x")
        )
        (completed,) = published
        assert completed["type"] == "Dicom.InferenceCompleted"
        assert completed["subject"] == f"/studies/{mg.StudyInstanceUID}/series/{mg.SeriesInstanceUID}"
        body = completed["data"]
        assert body["priority"] is True and body["model"] == "dicomflow-body"
        assert {r["sopClassUid"] for r in body["results"]} == {
            "1.2.840.10008.5.1.4.1.1.66.4",
            "1.2.840.10008.5.1.4.1.1.88.34",
        }
        assert PATIENT_ID not in json.dumps(completed)
        inbox = clients.blob.get_container_client(layout.INBOX)
        for r in body["results"]:
            assert inbox.get_blob_client(f"ai/dicomflow-body/{r['sopInstanceUid']}.dcm").exists()

        routing.routing._function.get_user_function()(grid_event(completed["type"], body, completed["subject"]))
        queue = clients.queue.get_queue_client("worklist-breast-urgent")
        (message,) = list(queue.receive_messages(messages_per_page=10, visibility_timeout=1))
        content = orjson.loads(base64.b64decode(message.content))
        assert content["studyInstanceUid"] == str(mg.StudyInstanceUID) and content["priority"] is True
        assert [e["type"] for e in published] == ["Dicom.InferenceCompleted", "Dicom.RoutingCompleted"]
    finally:
        config.delete_blob(layout.RULES_DOC)
        config.delete_blob("inference/models.json")
        routing_service._rules_cache.clear()


def test_derived_series_event_is_ignored_by_the_inference_function(published: list[dict[str, Any]]) -> None:
    mg = disc_mg(tag="fn-derived")
    data = archive(get_clients().blob, [mg])
    series_data = {**data, "imageSeriesInstanceUid": str(mg.SeriesInstanceUID), "modality": "SEG", "derived": True}
    inference.inference._function.get_user_function()(grid_event("Dicom.SeriesStable", series_data, "/studies/x"))
    assert published == []
