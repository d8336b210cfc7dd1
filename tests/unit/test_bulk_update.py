"""Bulk update on in-memory fakes: the new version's bytes, the original kept, rows, feed, events, resume.

The fakes behave as the storage service does (conditional writes, pinned reads); the same flows run
against Azurite in tests/integration/test_bulk_update.py and through the HTTP API in the e2e tests.
"""

from __future__ import annotations

import io

import orjson
import pydicom
import pytest

from shared.dicom.header import read_header_bytes
from shared.dicomweb.attributes import Level
from shared.dicomweb.planner import fetch_for
from shared.dicomweb.qido import parse_query
from shared.dicomweb.search import search as qido_search
from shared.events.types import EventType
from shared.index import changefeed
from shared.index.records import Action
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.ops import runner
from shared.ops.store import OperationStore, Status
from shared.storage import layout
from shared.update import service as update
from shared.update.changes import parse_changes
from tests.fakes import Fakes, audit_records, memory_services
from tests.instances import study_of

NEW_NAME = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Roe^Richard"}]},
            "00100020": {"vr": "LO", "Value": ["PID-NEW"]}}


def loaded(n_series: int = 2, n_instances: int = 3, tag: str = "bu", **kw: object) -> tuple[Fakes, list[tuple]]:
    f = memory_services()
    items = study_of(n_series, n_instances, tag, **kw)
    for n, (_, _, _, data) in enumerate(items):
        f.blobs.put(layout.INBOX, f"up/{n}.dcm", data)
        IngestService(f.services).ingest(f.services.blobs.open(layout.INBOX, f"up/{n}.dcm"))
    SettleService(f.services).settle(SettleRequest(items[0][0]))
    return f, items


def run_steps(f: Fakes) -> None:
    """What the operations function does: one step per queue message, until no message is left."""
    while messages := f.queues.drain(layout.OPERATIONS_QUEUE):
        for message, _ in messages:
            runner.run_step(f.services, message)


def run_update(f: Fakes, studies: list[str], change: dict) -> str:
    op = update.submit(f.services, studies, parse_changes(change), actor="tester")
    assert [orjson.loads(m) for m, _ in f.queues.messages[layout.OPERATIONS_QUEUE]] == [{"id": op.id}]
    run_steps(f)
    return op.id


def archived(f: Fakes, path: str) -> bytes:
    return f.blobs.blobs[(layout.ARCHIVE, path)].data


def test_every_instance_gets_a_new_version_with_the_pixel_data_unchanged_and_the_original_kept() -> None:
    f, items = loaded(pixel=7)
    study = items[0][0]
    before = {sop: data for _, _, sop, data in items}
    op_id = run_update(f, [study], NEW_NAME)
    op = OperationStore(f.tables).get(op_id)
    assert op is not None and op.status is Status.COMPLETED and op.type == "update"
    assert op.to_json("")["results"] == {"studyProcessed": 1, "studyUpdated": 1, "studyFailed": 0,
                                         "instanceUpdated": 6}
    assert op.params["actor"] == "tester"
    # One audit record for the study's update: who asked, action U, every instance, the patient as digests only.
    (record,) = [r for r in audit_records() if r["EventIdentification"]["EventActionCode"] == "U"
                 and any(o.get("ParticipantObjectID") == study for o in r["ParticipantObjectIdentification"])]
    assert record["ActiveParticipant"][0]["UserID"] == "tester"
    assert record["EventIdentification"]["EventOutcomeIndicator"] == 0
    (study_object,) = [o for o in record["ParticipantObjectIdentification"] if o.get("ParticipantObjectID") == study]
    assert sorted(study_object["ParticipantObjectDescription"]["SOPClass"][0]["Instance"]) == sorted(before)
    patients = [o["ParticipantObjectID"] for o in record["ParticipantObjectIdentification"]
                if o["ParticipantObjectTypeCode"] == 1]
    assert len(patients) == 2 and all(p.startswith("sha256:") for p in patients)  # PID-1 and PID-NEW
    assert "PID-NEW" not in orjson.dumps(record).decode() and "Roe" not in orjson.dumps(record).decode()
    for s, se, sop, _ in items:
        new = pydicom.dcmread(io.BytesIO(archived(f, layout.instance_path(s, se, sop))))
        old = pydicom.dcmread(io.BytesIO(before[sop]))
        assert str(new.PatientName) == "Roe^Richard" and new.PatientID == "PID-NEW"
        assert new.PixelData == old.PixelData and new.StudyDate == old.StudyDate
        assert new.SOPInstanceUID == sop
        # The original is the very file that was uploaded.
        assert archived(f, layout.original_path(s, se, sop)) == before[sop]
        row = f.services.index.get_instance(s, se, sop)
        assert row is not None and row.record.patient_id == "PID-NEW" and row.record.patient_name == "Roe^Richard"
        assert orjson.loads(row.meta or b"{}")["00100020"]["Value"] == ["PID-NEW"]
        # The row describes the new file exactly where it matters for WADO-RS frames.
        header = read_header_bytes(archived(f, layout.instance_path(s, se, sop)))
        assert row.record.pixel_data_offset == header.pixel_data_offset
        assert row.record.size_bytes == header.size_bytes


def test_settle_announces_updates_and_queries_find_the_new_values_only() -> None:
    f, items = loaded()
    study = items[0][0]
    f.publisher.events.clear()
    run_update(f, [study], NEW_NAME)
    SettleService(f.services).settle(SettleRequest(study))
    updated = f.publisher.of_type(str(EventType.IMAGE_UPDATED))
    assert sorted(e.data["imageSopInstanceUid"] for e in updated) == sorted(sop for _, _, sop, _ in items)
    feed = list(changefeed.entries(f.services.index, None, None, horizon=0))
    updates = [e for e in feed if e.action == str(Action.UPDATE)]
    assert len(updates) == len(items) and all(e.state == "current" for e in updates)
    assert all(e.state == "replaced" for e in feed if e.action == str(Action.CREATE))

    def studies(params: list[tuple[str, str]]) -> list[dict]:
        reply = qido_search(parse_query(params, Level.STUDY), fetch_for(f.services.index), "http://x")
        return orjson.loads(reply.body)

    assert len(studies([("PatientID", "PID-NEW")])) == 1
    assert studies([("PatientID", "PID-1")]) == []
    assert len(studies([("PatientName", "roe*")])) == 1


def test_a_second_update_keeps_the_first_original() -> None:
    f, items = loaded(n_series=1, n_instances=2)
    s, se, sop, data = items[0]
    run_update(f, [s], NEW_NAME)
    run_update(f, [s], {"00081030": {"vr": "LO", "Value": ["Second"]}})
    assert archived(f, layout.original_path(s, se, sop)) == data
    latest = pydicom.dcmread(io.BytesIO(archived(f, layout.instance_path(s, se, sop))))
    assert latest.PatientID == "PID-NEW" and latest.StudyDescription == "Second"


def test_a_crash_mid_operation_resumes_without_redoing_or_missing_an_instance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    f, items = loaded(n_series=2, n_instances=4)
    study = items[0][0]
    op = update.submit(f.services, [study], parse_changes(NEW_NAME), actor="tester")
    (message, _), = f.queues.drain(layout.OPERATIONS_QUEUE)
    real, calls = update.BulkUpdate.instance, []

    def crash_on_fifth(self: update.BulkUpdate, *args: object) -> str:
        calls.append(args)
        if len(calls) == 5:
            raise ConnectionError("worker lost")
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(update.BulkUpdate, "instance", crash_on_fifth)
    with pytest.raises(ConnectionError):
        runner.run_step(f.services, message)
    midway = OperationStore(f.tables).get(op.id)
    assert midway is not None and midway.status is Status.RUNNING and midway.failures == 1
    monkeypatch.setattr(update.BulkUpdate, "instance", real)
    writes_before = f.blobs.requests["blob PUT"]
    assert runner.run_step(f.services, message) == "done"  # the message, delivered again
    done = OperationStore(f.tables).get(op.id)
    assert done is not None and done.status is Status.COMPLETED and done.results["instanceUpdated"] == 8
    # Only the four instances the first run did not finish got a new version in the second.
    assert f.blobs.requests["blob PUT"] - writes_before == 4
    changes = f.services.index.changes(study)
    assert sum(c.action is Action.UPDATE for c in changes) == 8
    # A third delivery finds the operation ended and changes nothing.
    assert runner.run_step(f.services, message) == "finished"
    assert sum(c.action is Action.UPDATE for c in f.services.index.changes(study)) == 8


def test_one_operation_per_study_at_a_time() -> None:
    f, items = loaded(n_series=1, n_instances=1)
    study = items[0][0]
    first = update.submit(f.services, [study], parse_changes(NEW_NAME), actor="a")
    with pytest.raises(update.UpdateRefused) as refused:
        update.submit(f.services, [study], parse_changes(NEW_NAME), actor="b")
    assert refused.value.status == 409 and first.id in refused.value.message
    run_steps(f)
    update.submit(f.services, [study], parse_changes(NEW_NAME), actor="b")  # free again once it ended


@pytest.mark.parametrize(("body", "needle"), [
    ({"studyInstanceUids": [f"1.2.{n}" for n in range(51)], "changeDataset": NEW_NAME}, "at most 50"),
    ({"studyInstanceUids": [], "changeDataset": NEW_NAME}, "non-empty list"),
    ({"studyInstanceUids": ["1.2.x"], "changeDataset": NEW_NAME}, "is not a UID"),
    ({"studyInstanceUids": ["1.2.3"], "changeDataset": {"0020000D": {"vr": "UI", "Value": ["1.2"]}}},
     "StudyInstanceUID (0020000D) is a UID"),
    ({"studyInstanceUids": ["1.2.3"], "changeDataset": {"00080060": {"vr": "CS", "Value": ["MR"]}}},
     "Modality (00080060) is not an updatable attribute"),
    ({"studyInstanceUids": ["1.2.3"], "changeDataset": {"00100040": {"vr": "CS"}}}, "needs a Value"),
    ({"studyInstanceUids": ["1.2.3"], "changeDataset": {"00100010": {"vr": "LO", "Value": ["x"]}}}, "has VR PN"),
    ({"studyInstanceUids": ["1.2.3"]}, "changeDataset must be"),
])
def test_bad_requests_are_refused_naming_what_is_wrong(body: dict, needle: str) -> None:
    with pytest.raises(update.UpdateRefused) as refused:
        update.parse_request(body)
    assert refused.value.status == 400 and needle in refused.value.message


def test_an_unknown_study_fails_the_operation_with_the_azure_error_shape() -> None:
    f, items = loaded(n_series=1, n_instances=1)
    op_id = run_update(f, ["1.2.826.0.1.3680043.10.1234.9.404", items[0][0]], NEW_NAME)
    status = OperationStore(f.tables).get(op_id).to_json("http://h/api/dicomweb")  # type: ignore[union-attr]
    assert status["status"] == "failed" and status["percentComplete"] == 100
    assert status["results"]["studyUpdated"] == 1 and status["results"]["studyFailed"] == 1
    assert "1.2.826.0.1.3680043.10.1234.9.404" in status["results"]["errors"][0]
    assert status["resources"][1] == f"http://h/api/dicomweb/studies/{items[0][0]}"


def test_steps_that_run_out_of_time_resume_the_study_and_count_each_instance_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    f, items = loaded(n_series=1, n_instances=3)
    op = update.submit(f.services, [items[0][0]], parse_changes(NEW_NAME), actor="tester")
    partial = update.step(f.services, op, time.monotonic() - 1)  # its time is up before it starts
    assert not partial.done and partial.cursor == {"done": [], "current": items[0][0], "counted": 0}
    # Steps of two instances each: the study resumes three times, its updated instances counted once each.
    real, calls = update.BulkUpdate.instance, []

    def slow(self: update.BulkUpdate, *args: object) -> str:
        calls.append(args)
        if len(calls) % 2 == 0:
            monkeypatch.setattr(update.time, "monotonic", lambda: float("inf"))  # this step's time is up
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(update.BulkUpdate, "instance", slow)
    clock = time.monotonic
    while messages := f.queues.drain(layout.OPERATIONS_QUEUE):
        for message, _ in messages:
            monkeypatch.setattr(update.time, "monotonic", clock)
            runner.run_step(f.services, message)
    done = OperationStore(f.tables).get(op.id)
    assert done is not None and done.status is Status.COMPLETED and done.results["instanceUpdated"] == 3


def test_merge_moves_every_study_of_a_patient_under_the_target_with_its_demographics() -> None:
    from shared.update import merge

    f = memory_services()
    olds = [study_of(1, 2, f"mg-old{n}", patient_id="OLD-7", name="Smith^Jon") for n in range(3)]
    target = study_of(1, 1, "mg-target", patient_id="KEEP-1", name="Smith^John=スミス^ジョン", study_date="20250101")
    bystander = study_of(1, 1, "mg-other", patient_id="OLD-70", name="Other^One")
    for n, (*_, data) in enumerate(i for items in (*olds, target, bystander) for i in items):
        f.blobs.put(layout.INBOX, f"mg/{n}.dcm", data)
        IngestService(f.services).ingest(f.services.blobs.open(layout.INBOX, f"mg/{n}.dcm"))
    for items in (*olds, target, bystander):
        SettleService(f.services).settle(SettleRequest(items[0][0]))
    plan, ops = merge.merge(f.services, "OLD-7", "KEEP-1", actor="tester")
    assert sorted(plan.studies) == sorted(items[0][0] for items in olds) and len(ops) == 1
    assert plan.change["00100010"]["Value"] == [{"Alphabetic": "Smith^John", "Ideographic": "スミス^ジョン"}]
    run_steps(f)
    for items in olds:
        for s, se, sop, _ in items:
            row = f.services.index.get_instance(s, se, sop)
            assert row is not None and row.record.patient_id == "KEEP-1"
            assert row.record.patient_name == "Smith^John=スミス^ジョン"
    other = f.services.index.get_instance(*bystander[0][:3])
    assert other is not None and other.record.patient_id == "OLD-70"  # a prefix of the ID is another patient
    # Sent again before settle rewrote the lookup rows: nothing gets a second version.
    writes = f.blobs.requests["blob PUT"]
    merge.merge(f.services, "OLD-7", "KEEP-1", actor="tester")
    run_steps(f)
    assert f.blobs.requests["blob PUT"] == writes
    for items in olds:
        SettleService(f.services).settle(SettleRequest(items[0][0]))
    with pytest.raises(update.UpdateRefused) as nothing:
        merge.merge(f.services, "OLD-7", "KEEP-1", actor="tester")  # all moved already
    assert nothing.value.status == 404
    with pytest.raises(update.UpdateRefused) as same:
        merge.plan(f.services, "KEEP-1", "KEEP-1")
    assert same.value.status == 400


def test_routing_sends_an_updated_instance_again_only_where_a_rule_asks_for_it() -> None:
    from shared.routing.ledger import Ledger
    from shared.routing.rules import RuleSet, parse
    from shared.routing.service import route_event

    f, items = loaded(n_series=1, n_instances=1)
    s, se, sop, _ = items[0]
    triggers = ["Dicom.ImageCreated", "Dicom.ImageUpdated"]
    rules = RuleSet(parse(orjson.dumps({"rules": [
        {"name": "once", "trigger": triggers, "destinations": [{"type": "export", "container": "exp-once"}]},
        {"name": "again", "trigger": triggers, "resendUpdates": True,
         "destinations": [{"type": "export", "container": "exp-again"}]}]})), "current")
    data = {"imageStudyInstanceUid": s, "imageSeriesInstanceUid": se, "imageSopInstanceUid": sop}
    route_event("Dicom.ImageCreated", data, svc=f.services, rules=rules)
    run_update(f, [s], NEW_NAME)
    route_event("Dicom.ImageUpdated", data, svc=f.services, rules=rules)
    route_event("Dicom.ImageUpdated", data, svc=f.services, rules=rules)  # delivered at least once: sent once

    def exported(container: str) -> pydicom.Dataset:
        return pydicom.dcmread(io.BytesIO(f.blobs.blobs[(container, layout.instance_path(s, se, sop))].data))

    assert exported("exp-once").PatientID == "PID-1"  # this destination got the instance once, as created
    assert exported("exp-again").PatientID == "PID-NEW"
    units = sorted((r.rule, r.unit.split("~")[0], "~" in r.unit) for r in Ledger(f.tables).rows(s))
    assert units == [("again", sop, False), ("again", sop, True), ("once", sop, False)]
