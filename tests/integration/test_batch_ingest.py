"""The batched ingest path (shared/ingest/batch.py) against Azurite: what the writer archives and what it leaves
to ingest, a chunk handled twice, a writer that dies before its manifest, and the one settle run per study."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom
import pytest

from shared.config import Settings
from shared.ingest.batch import BatchIngest, BatchRequest, BatchWriter
from shared.ingest.schedule import SettleRequest
from shared.ingest.settle import SettleService
from shared.ingest.states import IngestState
from shared.services import Services
from shared.storage import layout
from tests.integration.eventsink import EventSink
from tools.corpus import load_manifest, write_small_mix

STABLE_AGE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def side(storage_env: dict[str, str], event_sink: EventSink) -> Any:
    """The app's services and a gateway's (separate clients), on one quiet-period clock, the messages they send
    recorded (and sent)."""
    clock = Clock()
    env = {**storage_env, "DicomEvents__topicEndpointUri": event_sink.endpoint,
           "DICOMFLOW_EVENTS_LOCAL_KEY": event_sink.key}
    made = []
    for _ in range(2):
        svc = Services.from_settings(dataclasses.replace(Settings.from_env(env), stable_age_seconds=STABLE_AGE,
                                                         settle_delay_seconds=5.0))
        svc.ensure_ready()
        svc.scheduler.clock = clock
        sent: list[tuple[str, str, float]] = []
        real = svc.queues.send

        def send(queue: str, text: str, *, delay_seconds: float = 0.0, _real: Any = real,
                 _sent: list[tuple[str, str, float]] = sent) -> None:
            _sent.append((queue, text, delay_seconds))
            _real(queue, text, delay_seconds=delay_seconds)

        svc.queues.send = send  # type: ignore[method-assign]
        made.append((svc, sent))
    (app, app_sent), (gw, gw_sent) = made
    return dataclasses.make_dataclass("Side", ["app", "app_sent", "gw", "gw_sent", "clock"])(
        app, app_sent, gw, gw_sent, clock)


def files_of(tmp_path: Path, variant: str) -> list[dict[str, Any]]:
    write_small_mix(tmp_path / "mix", studies=3, seed=7, variant=variant)
    return [{**e, "file": tmp_path / "mix" / e["path"]} for e in load_manifest(tmp_path / "mix")["files"]]


def run_messages(app: Services, sent: list[tuple[str, str, float]]) -> list[Any]:
    outcomes = []
    for queue, text, _ in sorted(sent, key=lambda m: m[2]):
        assert queue == layout.BATCH_QUEUE
        outcomes += BatchIngest(app).run(BatchRequest.from_message(text))
    return outcomes


def test_a_chunk_is_archived_by_its_writer_and_indexed_from_its_manifest(side: Any, tmp_path: Path,
                                                                       event_sink: EventSink) -> None:
    files = files_of(tmp_path, "manifest")
    studies = sorted({e["study_uid"] for e in files})
    # Already archived before (a study moved again): ingest must judge it, from the inbox.
    again = files[0]
    # A file ingest will refuse: its Study Instance UID removed.
    broken = pydicom.dcmread(files[1]["file"])
    del broken.StudyInstanceUID
    broken_path = tmp_path / "broken.dcm"
    broken.save_as(broken_path, enforce_file_format=False)
    writer = BatchWriter(side.gw, "LEGACY", window=600)
    assert writer.write(again["file"]).refused is None
    writer.close()
    run_messages(side.app, side.gw_sent)
    side.gw_sent.clear()
    side.app_sent.clear()

    written = [writer.write(e["file"]) for e in files] + [writer.write(broken_path, sop_hint=broken.SOPInstanceUID)]
    writer.close()
    assert written[-1].refused is not None and written[-1].refused.reason == "missing-study-uid"
    assert written[0].name.startswith(layout.BATCH_PREFIX)  # the archived one went to the inbox, not the archive
    assert all(w.name == layout.instance_path(e["study_uid"], e["series_uid"], e["sop_uid"])
               for w, e in zip(written[1:-1], files[1:], strict=True))  # straight to the archive
    # The chunk's message was sent before anything was written, due later (the safety net); the close sent one
    # to ingest it now.
    assert [d > 0 for _, _, d in side.gw_sent] == [True, False]
    outcomes = run_messages(side.app, side.gw_sent)
    states = Counter(str(o.state) for o in outcomes)
    assert states == Counter({"archived": len(files) - 1, "duplicate": 1, "quarantined": 1}), states
    assert [o.reason for o in outcomes if o.state is IngestState.QUARANTINED] == ["missing-study-uid"]
    for e in files:
        got = side.app.index.get_instance(e["study_uid"], e["series_uid"], e["sop_uid"])
        assert got is not None and got.record.sop_class_uid == e["sop_class_uid"]
        assert got.meta is not None and e["sop_uid"].encode() in got.meta  # its DICOM JSON, as ingest makes it
    # Queryable at once: every series is pending until its study settles.
    assert {(p.study_instance_uid, p.series_instance_uid) for p in side.app.index.list_pending()} >= {
        (e["study_uid"], e["series_uid"]) for e in files}
    # One settle message for the chunk's studies (those new to it), due after the stable age.
    groups = [SettleRequest.from_message(t) for q, t, d in side.app_sent if q == layout.SETTLE_QUEUE]
    assert len(groups) == 1 and set(groups[0].studies) <= set(studies) and side.app_sent[0][2] > STABLE_AGE
    assert groups[0].pending  # the ETags its pending rows were written with

    # The second message of the same chunk (its safety net, or a redelivery) finds nothing to redo.
    assert BatchIngest(side.app).run(BatchRequest.from_message(side.gw_sent[0][1])) == []

    # One run per study, at the stable age: images and stability together, the pending rows gone.
    side.clock.now += STABLE_AGE + 3
    published = len(event_sink.events)
    results = SettleService(side.app).settle_group(groups[0].studies, pending=groups[0].pending)
    assert {r.state for r in results} == {"stable"}
    new = event_sink.events[published:]
    kinds = Counter(e["type"] for e in new)
    assert kinds["Dicom.StudyStable"] == len(groups[0].studies)
    assert kinds["Dicom.ImageCreated"] == sum(1 for e in files[1:] if e["study_uid"] in groups[0].studies)
    assert not [p for p in side.app.index.list_pending() if p.study_instance_uid in groups[0].studies]


def test_a_writer_that_dies_before_its_manifest_leaves_files_a_second_move_indexes(side: Any,
                                                                                   tmp_path: Path) -> None:
    files = files_of(tmp_path, "dies")
    writer = BatchWriter(side.gw, "LEGACY", window=600)
    for e in files:
        writer.write(e["file"])
    # The writer dies: no manifest. Its chunk's first message (the safety net) comes due and finds nothing.
    assert run_messages(side.app, side.gw_sent) == []
    assert all(side.app.index.get_instance(e["study_uid"], e["series_uid"], e["sop_uid"]) is None for e in files)
    # tools migrate does not find them in the index and moves them again: archived already, so ingest judges them.
    side.gw_sent.clear()
    again = BatchWriter(side.gw, "LEGACY", window=600)
    assert all(again.write(e["file"]).name.startswith(layout.BATCH_PREFIX) for e in files)
    again.close()
    outcomes = run_messages(side.app, side.gw_sent)
    assert Counter(str(o.state) for o in outcomes) == Counter({"archived": len(files)})
    assert all(side.app.index.get_instance(e["study_uid"], e["series_uid"], e["sop_uid"]) is not None for e in files)
