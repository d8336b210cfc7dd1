"""A study whose settle trigger was lost (its writer stopped before the group's message named it) is settled by
the pending sweep, once, and its pending rows go; against Azurite (an account of its own: the sweep reads the
whole pending table)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from devhost.azurite import Azurite, ephemeral
from shared.config import Settings
from shared.index import keys
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.ingest.sweep import SWEEP_MARGIN_SECONDS, PendingSweep
from shared.ports import SentMessage
from shared.services import Services
from shared.storage import layout
from tests.integration.eventsink import EventSink
from tools.corpus import load_manifest, write_small_mix


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Azurite]:
    az = ephemeral(tmp_path / "azurite")
    az.start()
    yield az
    az.stop()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Sent:
    """What the services put on the settle queue, as its run would read it (sends, and rewrites of them)."""

    def __init__(self, svc: Services) -> None:
        self.texts: dict[str, str] = {}
        send, update = svc.queues.send, svc.queues.update

        def sent(queue: str, text: str, *, delay_seconds: float = 0.0) -> SentMessage | None:
            handle = send(queue, text, delay_seconds=delay_seconds)
            if queue == layout.SETTLE_QUEUE and handle is not None:
                self.texts[handle.id] = text
            return handle

        def updated(queue: str, message: SentMessage, text: str, *, delay_seconds: float) -> SentMessage | None:
            handle = update(queue, message, text, delay_seconds=delay_seconds)
            if queue == layout.SETTLE_QUEUE and handle is not None:
                self.texts[message.id] = text
            return handle

        svc.queues.send, svc.queues.update = sent, updated  # type: ignore[method-assign]

    def take(self) -> list[SettleRequest]:
        out = [SettleRequest.from_message(t) for t in self.texts.values()]
        self.texts.clear()
        return out


def test_a_study_whose_trigger_was_lost_is_settled_by_the_sweep_once(account: Azurite, event_sink: EventSink,
                                                                     tmp_path: Path) -> None:
    env = {"DicomStorage": account.connection_string, "DicomEvents__topicEndpointUri": event_sink.endpoint,
           "DICOMFLOW_EVENTS_LOCAL_KEY": event_sink.key}
    settings = dataclasses.replace(Settings.from_env(env), settle_delay_seconds=5.0, stable_age_seconds=60.0)
    svc, clock = Services.from_settings(settings), Clock()
    svc.ensure_ready()
    svc.scheduler.clock = clock
    svc.scheduler.flush_seconds = 3600.0  # the timer never names the second study: the process "stops" first
    queue = Sent(svc)
    write_small_mix(tmp_path / "mix", studies=2, seed=5, variant="sweep")
    files = load_manifest(tmp_path / "mix")["files"]
    first, lost = sorted({e["study_uid"] for e in files})
    ingest = IngestService(svc)
    for e in sorted(files, key=lambda e: e["study_uid"]):  # the first study opens the group, the other joins
        name = f"sweep/{uuid.uuid4().hex}.dcm"
        svc.blobs.write(layout.INBOX, name, (tmp_path / "mix" / e["path"]).read_bytes())
        ingest.ingest(svc.blobs.open(layout.INBOX, name))
    (group,) = queue.take()
    assert group.studies == (first,)  # the join was never written into the message
    svc.scheduler._group = None  # the process is gone (nor does its exit name the study)

    settle = SettleService(svc)
    clock.now += settings.stable_age_seconds + 1
    settle.settle(group)
    assert PendingSweep(svc).run().studies == ()  # nothing is overdue yet
    assert svc.index.pending_of(lost) and not svc.index.pending_of(first)

    clock.now += SWEEP_MARGIN_SECONDS
    report = PendingSweep(svc).run()
    assert report.studies == (lost,)
    assert PendingSweep(svc).run().studies == ()  # swept once: a second pass sends nothing
    (request,) = queue.take()
    assert request.studies == (lost,) and request.hold and set(request.pending[lost]) == {
        e["series_uid"] for e in files if e["study_uid"] == lost}
    states = {r.study: r.state for r in settle.settle_group(request.studies, pending=request.pending,
                                                            hold=request.hold)}
    assert states == {lost: "stable"}
    assert not svc.index.pending_of(lost)
    path = tmp_path / "mix" / next(e for e in files if e["study_uid"] == lost)["path"]
    patient_id = str(pydicom.dcmread(path, stop_before_pixels=True).PatientID)  # found by it now
    [(pk, rk_range)] = keys.value_lookup_ranges(keys.Lookup.PATIENT_ID, patient_id)
    assert lost in {keys.study_of_value_row(r["RowKey"]) for r in svc.index.lookup(pk=pk, rk_range=rk_range)}
