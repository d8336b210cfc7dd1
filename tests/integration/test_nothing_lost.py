"""Nothing lost, against Azurite: poison queues are re-driven with backoff and given up loudly, and the inbox
sweep removes only uploads whose outcome is recorded (ingesting again those that have none).

This module has its own Azurite: it reads poison queues, which other modules' tests fill and watch.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from devhost.azurite import Azurite, ephemeral
from shared.config import Settings
from shared.ingest.redrive import BLOB_POISON, EXHAUSTED, REDRIVE_DELAYS, SETTLE_POISON, Redriver
from shared.ingest.retention import InboxSweeper
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.states import IngestState
from shared.ingest.status import blob_status
from shared.services import Services
from shared.storage import layout
from tests.fakes import MemoryPublisher
from tests.instances import instance, uid


@pytest.fixture(scope="module")
def own_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with ephemeral(tmp_path_factory.mktemp("azurite-lost")) as emulator:
        yield emulator


@pytest.fixture
def svc(own_azurite: Azurite) -> Services:
    conn = own_azurite.connection_string
    s = Services.from_settings(Settings.from_env({"DicomStorage": conn, "AzureWebJobsStorage": conn,
                                                  "DICOMFLOW_INBOX_RETENTION_DAYS": "7"}))
    s.publisher_factory = MemoryPublisher
    s.ensure_ready()
    return s


def _queue(azurite: Azurite, name: str) -> QueueClient:
    q = QueueClient.from_connection_string(azurite.connection_string, name)
    with contextlib.suppress(ResourceExistsError):
        q.create_queue()
    return q


def _visible(q: QueueClient) -> list[str]:
    return [base64.b64decode(m.content).decode() for m in q.peek_messages(max_messages=32)]


def test_settle_poison_goes_back_with_backoff_and_is_given_up_loudly(
        svc: Services, own_azurite: Azurite, caplog: pytest.LogCaptureFixture) -> None:
    poison, settle = _queue(own_azurite, SETTLE_POISON), _queue(own_azurite, layout.SETTLE_QUEUE)
    settle.clear_messages()
    first, last = SettleRequest("1.2.3.4"), SettleRequest("1.2.3.5", redrives=len(REDRIVE_DELAYS))
    for req in (first, last):
        poison.send_message(base64.b64encode(req.to_message().encode()).decode())
    poison.send_message(base64.b64encode(b"not a settle message").decode())
    with caplog.at_level(logging.INFO, logger="shared.ingest.redrive"):
        report = Redriver(svc).run()
    assert report.settle_redriven == 1 and len(report.given_up) == 1 and report.skipped == 1
    # Re-driven, delayed by the first backoff step: on the settle queue, not visible yet.
    assert settle.get_queue_properties().approximate_message_count == 1 and _visible(settle) == []
    # Given up: a record and the line the alert watches; the foreign message stays for whoever owns it.
    (record,) = report.given_up
    body = orjson.loads(svc.blobs.read(layout.EVENTS_DEADLETTER, record) or b"{}")
    assert body["study"] == "1.2.3.5" and body["queue"] == SETTLE_POISON
    assert any(EXHAUSTED in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert poison.get_queue_properties().approximate_message_count == 1  # the foreign one


def test_a_poisoned_inbox_blob_is_ingested_again(svc: Services, own_azurite: Azurite) -> None:
    study, series, sop = uid("lost", "st"), uid("lost", "se"), uid("lost", "sop")
    name = "lost/poisoned.dcm"
    svc.blobs.write(layout.INBOX, name, instance(study, series, sop))
    poison = _queue(own_azurite, BLOB_POISON)
    poison.clear_messages()
    message = {"Type": "BlobTrigger", "FunctionId": "Host.Functions.ingest", "BlobType": "BlockBlob",
               "ContainerName": layout.INBOX, "BlobName": name, "ETag": "x"}
    other = {**message, "FunctionId": "Host.Functions.someone_else"}
    for m in (message, other):
        poison.send_message(base64.b64encode(orjson.dumps(m)).decode())
    assert blob_status(svc, name).state is IngestState.PENDING
    report = Redriver(svc).run()
    assert report.blobs_ingested == 1 and report.skipped == 1
    assert blob_status(svc, name).state is IngestState.ARCHIVED


def test_the_inbox_sweep_removes_only_uploads_with_an_outcome(svc: Services) -> None:
    prefix = "sweep/"
    st, se = uid("sweep", "st"), uid("sweep", "se")
    archived, broken, lost = f"{prefix}archived.dcm", f"{prefix}broken.dcm", f"{prefix}event-lost.dcm"
    svc.blobs.write(layout.INBOX, archived, instance(st, se, uid("sweep", 1)))
    svc.blobs.write(layout.INBOX, broken, b"not DICOM")
    svc.blobs.write(layout.INBOX, lost, instance(st, se, uid("sweep", 2)))
    for name in (archived, broken):  # ingested as their BlobCreated events would have it; `lost` never was
        IngestService(svc).ingest(svc.blobs.open(layout.INBOX, name))
    states = {n: blob_status(svc, n).state for n in (archived, broken, lost)}
    assert states == {archived: IngestState.ARCHIVED, broken: IngestState.QUARANTINED, lost: IngestState.PENDING}

    young = InboxSweeper(svc).run(prefix=prefix)  # nothing is past the retention yet
    assert (young.listed, young.deleted, young.reingested) == (3, 0, 0)

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    assert svc.requests is not None
    before = svc.requests.total()
    first = InboxSweeper(svc).run(now=later, prefix=prefix)
    cost = svc.requests.total() - before
    assert (first.deleted, first.reingested, first.kept) == (2, 1, [])
    left = [i.name for i in svc.blobs.list(layout.INBOX, prefix)]
    assert left == [lost]  # its outcome is recorded now; the next sweep removes it
    assert blob_status(svc, lost).state is IngestState.ARCHIVED
    # The quarantine copy and the archived instance stay: only the inbox copy went.
    assert svc.blobs.properties(layout.ARCHIVE, layout.instance_path(st, se, uid("sweep", 1))) is not None
    second = InboxSweeper(svc).run(now=later, prefix=prefix)
    assert (second.deleted, second.reingested) == (1, 0)
    assert list(svc.blobs.list(layout.INBOX, prefix)) == []
    # What the sweep costs, counted from the client side: one listing, then per upload the outcome read
    # (header range, quarantine properties, instance row) and a delete; plus the re-ingest of the lost one.
    print(f"inbox sweep: {cost} requests for 3 uploads past retention ({svc.requests.snapshot()})")
    assert cost <= 1 + 2 * 4 + (3 + 4 + 3), cost


def test_the_host_settings_name_the_poison_queue_account(tmp_path: Path) -> None:
    s = Settings.from_env({"DicomStorage": "UseDevelopmentStorage=true",
                           "AzureWebJobsStorage__queueServiceUri": "https://host.queue.core.windows.net"})
    assert s.host_storage.queue_service_uri == "https://host.queue.core.windows.net"
    assert Settings.from_env({}).inbox_retention_days == 7.0
