"""The devhost contract, proven with the test-only app in tests/devhost_app (one function per
trigger kind, each recording what it received as a blob in ``dh-records``)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devhost.azurite import Azurite
from devhost.testing import DevHostProcess
from tests.waiting import wait_until

APP_DIR = Path(__file__).resolve().parents[1] / "devhost_app"
RECORDS = "dh-records"


@pytest.fixture(scope="module")
def dh(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostProcess]:
    host = DevHostProcess(app="tests.devhost_app.function_app:app", events=APP_DIR / "events.json",
                          azurite=azurite, state_dir=tmp_path_factory.mktemp("devhost-contract"),
                          extra_args=["--cors", "http://viewer.test"], env={"DEVHOST_QUEUE_LEASE_SECONDS": "1"})
    with host:
        yield host


@pytest.fixture(scope="module")
def blobs(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def record(blobs: BlobServiceClient, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(blobs.get_blob_client(RECORDS, path).download_blob().readall())
    except ResourceNotFoundError:  # no such blob (or no records container yet)
        return None


def records(blobs: BlobServiceClient, prefix: str) -> list[dict[str, Any]]:
    container = blobs.get_container_client(RECORDS)
    if not container.exists():
        return []
    return [json.loads(container.download_blob(b.name).readall())
            for b in container.list_blobs(name_starts_with=prefix)]


def publisher(dh: DevHostProcess, key: str | None = None) -> EventGridPublisherClient:
    return EventGridPublisherClient(dh.events_endpoint, AzureKeyCredential(key or dh.events_key))


# --- HTTP ------------------------------------------------------------------------------------------

def test_http_function_auth(dh: DevHostProcess) -> None:
    url = f"{dh.base_url}/hello/world"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"x-functions-key": "wrong"}, timeout=10).status_code == 401
    r = requests.get(url, params={"q": "1"}, headers={"x-functions-key": dh.key}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"name": "world", "q": "1", "method": "GET", "body": ""}
    assert r.headers["X-Test"] == "yes"
    assert r.headers["Content-Type"].startswith("application/json")
    r = requests.get(url, params={"code": dh.key}, timeout=10)
    assert r.status_code == 200
    r = requests.post(url, params={"code": dh.key}, data=b"payload", timeout=10)
    assert r.json()["body"] == "payload"
    assert requests.delete(url, params={"code": dh.key}, timeout=10).status_code in (404, 405)
    assert requests.get(f"{dh.base_url}/health", timeout=10).status_code == 200


def test_http_route_templates(dh: DevHostProcess) -> None:
    assert requests.get(f"{dh.base_url}/items/42/abc", timeout=10).json() == {"id": "42", "label": "abc"}
    assert requests.get(f"{dh.base_url}/items/42", timeout=10).json() == {"id": "42"}
    assert requests.get(f"{dh.base_url}/ITEMS/7", timeout=10).json() == {"id": "7"}
    assert requests.get(f"{dh.base_url}/items/abc", timeout=10).status_code == 404
    r = requests.get(f"{dh.base_url}/files/a/b/c%20d.txt", timeout=10)
    assert (r.status_code, r.text) == (202, "a/b/c d.txt")
    assert requests.get(f"http://127.0.0.1:{dh.http_port}/items/42", timeout=10).status_code == 404


def test_cors_for_browser_viewers(dh: DevHostProcess) -> None:
    viewer = {"Origin": "http://viewer.test"}
    pre = requests.options(f"{dh.base_url}/hello/x", timeout=10,
                           headers={**viewer, "Access-Control-Request-Method": "GET",
                                    "Access-Control-Request-Headers": "x-functions-key"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "http://viewer.test"
    assert "x-functions-key" in pre.headers["Access-Control-Allow-Headers"]
    r = requests.get(f"{dh.base_url}/items/1", headers=viewer, timeout=10)
    assert r.headers["Access-Control-Allow-Origin"] == "http://viewer.test"
    other = requests.get(f"{dh.base_url}/items/1", headers={"Origin": "http://evil.test"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in other.headers


def test_fastapi_functions_and_the_http_v2_warning(dh: DevHostProcess, azurite: Azurite, tmp_path: Path) -> None:
    r = requests.get(f"{dh.base_url}/echo/hi", params={"q": "2"}, timeout=10)
    assert r.json() == {"word": "hi", "q": "2"}
    # The app imports the FastAPI extension, so in Azure its func.HttpRequest functions would break: warned.
    warning = next(ln for ln in dh.logs().splitlines() if "will fail there" in ln)
    assert "hello" in warning and "items" in warning and "echo" not in warning
    # --http-v2-strict behaves like the worker: every HTTP function gets the FastAPI request.
    with DevHostProcess(app="tests.devhost_app.function_app:app", events=APP_DIR / "events.json", azurite=azurite,
                        state_dir=tmp_path, extra_args=["--http-v2-strict"]) as strict:
        assert requests.get(f"{strict.base_url}/echo/x", timeout=10).json() == {"word": "x", "q": None}
        assert requests.get(f"{strict.base_url}/items/1", timeout=10).status_code == 500


def test_http_streaming_sends_chunks_before_the_body_is_complete(dh: DevHostProcess) -> None:
    n = 32
    with requests.get(f"{dh.base_url}/stream/{n}", stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers.get("Transfer-Encoding") == "chunked"
        chunks = r.iter_content(chunk_size=None)
        # The function waits for /stream-release before producing the rest: a buffering host
        # would never send this first chunk and the read would time out.
        first = next(chunks)
        assert first.startswith(b"first\n")
        assert requests.post(f"{dh.base_url}/stream-release", timeout=10).text == "released"
        total = len(first) + sum(len(c) for c in chunks)
    assert total == len(b"first\n") + n * 65536


def test_http_streaming_does_not_buffer_the_body(dh: DevHostProcess) -> None:
    import psutil

    host = psutil.Process(dh.pid)
    before = host.memory_info().rss
    requests.post(f"{dh.base_url}/stream-release", timeout=10)
    n = 4096  # 256 MiB
    total, peak = 0, before
    with requests.get(f"{dh.base_url}/stream/{n}", stream=True, timeout=30) as r:
        for i, chunk in enumerate(r.iter_content(chunk_size=1 << 20)):
            total += len(chunk)
            if i % 16 == 0:
                peak = max(peak, host.memory_info().rss)
    assert total == len(b"first\n") + n * 65536
    assert peak - before < 64 * 2**20, f"host grew by {(peak - before) / 2**20:.0f} MiB while streaming 256 MiB"


# --- blob triggers -----------------------------------------------------------------------------------

def test_blob_upload_fires_blob_trigger_with_working_blob_client(dh: DevHostProcess, blobs: BlobServiceClient
                                                                 ) -> None:
    blobs.get_blob_client("dh-inbox", "hello.txt").upload_blob(b"hi there", overwrite=True)
    rec = wait_until(lambda: record(blobs, "blob_sdk/hello.txt"), what="blob_sdk record")
    assert rec == {"type": "azure.storage.blob._blob_client.BlobClient", "content": "hi there"}
    # The same upload reached the Event Grid-triggered storage subscription with Azure's event shape.
    ev = wait_until(lambda: [r for r in records(blobs, "eg_storage/")
                             if r["subject"].endswith("/blobs/hello.txt")], what="eg_storage record")[0]
    assert ev["type"] == "Microsoft.Storage.BlobCreated"
    assert ev["subject"] == "/blobServices/default/containers/dh-inbox/blobs/hello.txt"
    data = ev["data"]
    assert data["contentLength"] == 8 and data["blobType"] == "BlockBlob" and data["api"] == "PutBlob"
    assert data["url"].endswith("/dh-inbox/hello.txt") and data["eTag"].startswith("0x")
    blobs.get_blob_client("dh-inbox", "hello.txt").delete_blob()
    deleted = dh.wait_for_event(lambda e: e["eventType"] == "Microsoft.Storage.BlobDeleted"
                                and e["subject"].endswith("/blobs/hello.txt"), topic="storage")
    assert deleted["data"]["api"] == "DeleteBlob"


def test_blob_trigger_with_input_stream_and_subject_filter(dh: DevHostProcess, blobs: BlobServiceClient) -> None:
    blobs.get_blob_client("dh-inbox2", "skip.txt").upload_blob(b"not for me", overwrite=True)
    blobs.get_blob_client("dh-inbox2", "x.bin").upload_blob(b"abc", overwrite=True)
    rec = wait_until(lambda: record(blobs, "blob_stream/x.bin"), what="blob_stream record")
    assert rec == {"name": "dh-inbox2/x.bin", "length": 3, "content": "abc"}
    dh.wait_for_event(lambda e: e["subject"].endswith("/skip.txt"), topic="storage")
    assert record(blobs, "blob_stream/skip.txt") is None  # subjectEndsWith ".bin" kept it out


def test_failing_blob_trigger_lands_in_poison_queue(dh: DevHostProcess, azurite: Azurite) -> None:
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    blobs.get_blob_client("dh-inbox", "fail-1.txt").upload_blob(b"x", overwrite=True)
    poison = QueueClient.from_connection_string(azurite.connection_string, "webjobs-blobtrigger-poison")

    msgs = wait_until(lambda: [m for m in _peek(poison) if m.get("BlobName") == "fail-1.txt"],
                      what="poison message")
    assert msgs[0] == {"Type": "BlobTrigger", "FunctionId": "Host.Functions.blob_sdk", "BlobType": "BlockBlob",
                       "ContainerName": "dh-inbox", "BlobName": "fail-1.txt", "ETag": msgs[0]["ETag"]}
    assert msgs[0]["ETag"]
    assert dh.logs().count("Executed 'Functions.blob_sdk' (Failed") == 2  # poisonBlobThreshold in host.json


def _peek(q: QueueClient) -> list[dict[str, Any]]:
    try:
        raw = q.peek_messages(max_messages=32)
    except HttpResponseError:
        return []
    return [json.loads(base64.b64decode(m.content)) for m in raw]


# --- Event Grid ----------------------------------------------------------------------------------------

def _cloud(type_: str, subject: str, **data: Any) -> CloudEvent:
    return CloudEvent(source="/devhost-test", type=type_, subject=subject, data=data)


def test_sdk_publish_reaches_only_matching_subscriptions(dh: DevHostProcess, blobs: BlobServiceClient) -> None:
    events = {
        "ct": _cloud("Dicom.ImageCreated", "/studies/1/series/2/instances/3", modality="CT", sizeBytes=5000,
                     derived=False),
        "mr": _cloud("Dicom.ImageCreated", "/studies/1/series/2/instances/4", modality="MR", sizeBytes=5000,
                     derived=True),
        "small": _cloud("Dicom.SeriesStable", "/studies/1/series/2", modality="CT", sizeBytes=10, derived=False),
        "nomod": _cloud("Dicom.ImageCreated", "/studies/1/series/2/instances/5", sizeBytes=2000),
    }
    publisher(dh).send(list(events.values()))
    ids = {k: e.id for k, e in events.items()}
    expected = {"eg_ct": {ids["ct"]}, "eg_big": {ids["ct"], ids["nomod"]}, "eg_derived": {ids["mr"]}}

    def delivered() -> dict[str, set[str]]:
        return {fn: {r["id"] for r in records(blobs, f"{fn}/") if r["id"] in ids.values()} for fn in expected}

    got = wait_until(lambda: (d := delivered()) and all(d[f] >= expected[f] for f in expected) and d,
                     what="deliveries")
    # Filtering happens at publish time; give any wrong delivery the time the right ones took.
    time.sleep(0.5)
    assert delivered() == expected, got
    journal = {e["id"] for e in dh.published_events(topic="dicom")}
    assert set(ids.values()) <= journal


def test_publish_with_wrong_key_is_401(dh: DevHostProcess) -> None:
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as err:
        publisher(dh, key="not-the-key").send([_cloud("Dicom.ImageCreated", "/studies/9")])
    assert getattr(err.value, "status_code", None) == 401
    grid = EventGridEvent(subject="/studies/8", event_type="Dicom.ImageCreated", data={"modality": "CT"},
                          data_version="1.0")
    publisher(dh).send([grid])  # Event Grid schema is accepted too
    got = dh.wait_for_event(lambda e: e.get("id") == str(grid.id), topic="dicom")  # the SDK id is a UUID
    assert got["eventType"] == "Dicom.ImageCreated"
    r = requests.post(dh.events_endpoint, json=[], timeout=10)
    assert r.status_code == 401
    assert requests.get(dh.events_endpoint, timeout=10).status_code == 200


def test_failing_event_grid_handler_is_retried_then_dead_lettered(dh: DevHostProcess, blobs: BlobServiceClient
                                                                  ) -> None:
    event = _cloud("Test.Fail", "/studies/1")
    publisher(dh).send([event])
    container = blobs.get_container_client("dh-deadletter")

    def found() -> list[str]:
        if not container.exists():
            return []
        return [b.name for b in container.list_blobs(name_starts_with="dicom/always-fails/")
                if b.name.endswith(f"/{event.id}.json")]

    name = wait_until(found, what="dead-letter blob")[0]
    parts = name.split("/")
    assert len(parts) == 7 and all(p.isdigit() for p in parts[2:6])
    body = json.loads(container.download_blob(name).readall())
    assert body[0]["id"] == event.id and body[0]["type"] == "Test.Fail"
    assert body[0]["deadLetterReason"] == "MaxDeliveryAttemptsExceeded" and body[0]["deliveryAttempts"] == 3
    assert dh.logs().count("Executed 'Functions.eg_fail' (Failed") == 3
    assert any(r["id"] == event.id for r in dh.dead_lettered())


# --- queues and timers ---------------------------------------------------------------------------------

def test_queue_trigger_and_poison_queue(dh: DevHostProcess, azurite: Azurite, blobs: BlobServiceClient) -> None:
    q = QueueClient.from_connection_string(azurite.connection_string, "dh-work",
                                           message_encode_policy=TextBase64EncodePolicy())
    q.send_message("ok:1")
    q.send_message("fail:1")
    rec = wait_until(lambda: record(blobs, "queue_work/ok:1"), what="queue record")
    assert rec["body"] == "ok:1" and rec["dequeue_count"] == 1 and rec["id"]
    poison = QueueClient.from_connection_string(azurite.connection_string, "dh-work-poison")

    def poisoned() -> list[str]:
        try:
            return [base64.b64decode(m.content).decode() for m in poison.peek_messages(max_messages=32)]
        except HttpResponseError:
            return []

    assert "fail:1" in wait_until(poisoned, what="poison queue message")
    assert dh.logs().count("Executed 'Functions.queue_work' (Failed") == 2  # maxDequeueCount in host.json


def test_queue_lease_is_renewed_while_the_function_runs(dh: DevHostProcess, azurite: Azurite,
                                                        blobs: BlobServiceClient) -> None:
    q = QueueClient.from_connection_string(azurite.connection_string, "dh-work",
                                           message_encode_policy=TextBase64EncodePolicy())
    q.send_message("slow:1")  # the function takes 2.5 s; the lease is 1 s (DEVHOST_QUEUE_LEASE_SECONDS)
    wait_until(lambda: record(blobs, "queue_work/slow:1/1"), what="the slow message's record")
    # Without renewal the message would have reappeared at 1 s and run again (dequeue count 2),
    # finishing 2.5 s later: give such a second run the time to show up.
    time.sleep(3)
    assert record(blobs, "queue_work/slow:1/2") is None
    assert "lease renewal failed" not in dh.logs()


def test_timer_trigger_fires(dh: DevHostProcess, blobs: BlobServiceClient) -> None:
    assert wait_until(lambda: record(blobs, "tick/last"), what="timer record") == {"past_due": False}
    assert "Reason='Timer fired at" in dh.logs()


# --- logs and restarts ----------------------------------------------------------------------------------

def test_logs_are_core_tools_style_without_bodies(dh: DevHostProcess) -> None:
    logs = dh.logs()
    reason = "Reason='This function was programmatically called via the host APIs.'"
    assert f"Executing 'Functions.hello' ({reason}, Id=" in logs
    assert "Executed 'Functions.hello' (Succeeded, Id=" in logs
    assert "payload" not in logs and "hi there" not in logs


def test_restart_announces_only_what_changed_while_down(dh: DevHostProcess, blobs: BlobServiceClient) -> None:
    blobs.get_blob_client("dh-inbox", "before.txt").upload_blob(b"1", overwrite=True)
    wait_until(lambda: record(blobs, "blob_sdk/before.txt"), what="first record")
    dh.kill()  # a crash: no graceful shutdown
    blobs.get_blob_client("dh-inbox", "while-down.txt").upload_blob(b"2", overwrite=True)
    dh.start()
    assert wait_until(lambda: record(blobs, "blob_sdk/while-down.txt"), what="record of the blob uploaded while down")
    created = [e for e in dh.published_events(topic="storage", type="Microsoft.Storage.BlobCreated")
               if e["subject"].endswith("/blobs/before.txt")]
    assert len(created) == 1


def test_unfinished_deliveries_resume_after_a_crash(dh: DevHostProcess, blobs: BlobServiceClient) -> None:
    event = _cloud("Test.Gated", "/studies/1")
    publisher(dh).send([event])
    wait_until(lambda: "Executed 'Functions.eg_gate' (Failed" in dh.logs(), what="a failed delivery")
    dh.kill()  # mid-retry: the delivery is journaled as published, not as delivered
    if not blobs.get_container_client(RECORDS).exists():
        blobs.create_container(RECORDS)
    blobs.get_blob_client(RECORDS, "gate/open").upload_blob(b"1", overwrite=True)
    dh.start()
    assert wait_until(lambda: record(blobs, f"eg_gate/{event.id}"), what="the resumed delivery")
    assert "event deliveries left unfinished by the last run" in dh.logs()
