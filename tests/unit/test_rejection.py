"""IOCM rejection notes on in-memory fakes: what ingest does with a note, what is hidden, what is kept,
what is reported, and retention."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import orjson
import pytest

from shared.dicom.header import read_header_bytes
from shared.dicomweb.attributes import Level
from shared.dicomweb.errors import HttpProblem
from shared.dicomweb.planner import fetch_for
from shared.dicomweb.qido import parse_query
from shared.dicomweb.search import search as qido_search
from shared.dicomweb.wado import Wado
from shared.events.types import EventType
from shared.index import changefeed
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.ingest.states import IngestState
from shared.rejection import service as rejection
from shared.rejection.codes import RejectionCode
from shared.rejection.notes import Reference, build_note, code_of
from shared.storage import layout
from tests.fakes import Fakes, audit_records, memory_services
from tests.instances import study_of, uid

CT = "1.2.840.10008.5.1.4.1.1.2"


def loaded(f: Fakes, tag: str, n: int = 4) -> list[tuple[str, str, str, bytes]]:
    items = study_of(1, n, tag)
    for k, (*_, data) in enumerate(items):
        ingest(f, f"{tag}/{k}.dcm", data)
    SettleService(f.services).settle(SettleRequest(items[0][0]))
    return items


def ingest(f: Fakes, name: str, data: bytes) -> IngestState:
    f.blobs.put(layout.INBOX, name, data)
    return IngestService(f.services).ingest(f.services.blobs.open(layout.INBOX, name)).state


def note_bytes(code: RejectionCode, refs: list[Reference], tag: str) -> tuple[str, bytes]:
    sop = uid(tag, "note")
    ds = build_note(code, refs, series=uid(tag, "note-series"), sop=sop, patient={"PatientID": "PID-1"})
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return sop, buf.getvalue()


def instances_found(f: Fakes, study: str) -> set[str]:
    reply = qido_search(parse_query([], Level.INSTANCE, scope={"StudyInstanceUID": study}), fetch_for(f.services.index),
                        "http://x")
    return {o["00080018"]["Value"][0] for o in orjson.loads(reply.body)}


def test_a_note_hides_what_it_names_keeps_the_files_and_announces_it() -> None:
    f = memory_services()
    items = loaded(f, "rj1")
    study, series = items[0][0], items[0][1]
    rejected = [Reference(study, series, sop, CT) for _, _, sop, _ in items[:2]]
    note_sop, note = note_bytes(RejectionCode.QUALITY, rejected, "rj1")
    assert code_of(read_header_bytes(note)) is RejectionCode.QUALITY
    f.publisher.events.clear()
    assert ingest(f, "rj1/note.dcm", note) is IngestState.ARCHIVED
    SettleService(f.services).settle(SettleRequest(study, force=True))
    # Hidden from QIDO (the note itself is an ordinary instance) ...
    assert instances_found(f, study) == {items[2][2], items[3][2], note_sop}
    # ... and from WADO-RS, with 410 while the file is kept.
    wado = Wado(f.services.blobs, f.services.index)
    with pytest.raises(HttpProblem) as gone:
        wado.retrieve(None, study, series, items[0][2])
    assert gone.value.status == 410 and "113001" in gone.value.message
    assert {a.sop for a in wado.list_instances(study, series)} == {items[2][2], items[3][2]}
    # The files are kept, marked.
    for _, _, sop, data in items[:2]:
        kept = f.blobs.blobs[(layout.ARCHIVE, layout.rejected_path(study, series, sop))]
        assert kept.data == data and kept.metadata[rejection.CODE] == "113001"
        assert kept.metadata[rejection.NOTE] == note_sop
    # Events and change feed: a delete per withdrawn instance, saying why.
    deleted = f.publisher.of_type(str(EventType.IMAGE_DELETED))
    assert sorted(e.data["imageSopInstanceUid"] for e in deleted) == sorted(r.sop for r in rejected)
    assert {(e.data["rejectionCode"], e.data["rejectionNote"]) for e in deleted} == {("113001", note_sop)}
    feed = list(changefeed.entries(f.services.index, None, None, horizon=0))
    assert {e.sop for e in feed if e.action == "delete"} == {r.sop for r in rejected}
    # The admin's listing.
    listed = [r.to_json() for r in rejection.rejected(f.services, study)]
    assert sorted(r["sop"] for r in listed) == sorted(r.sop for r in rejected)
    assert all(r["code"] == "113001" and r["meaning"] == "Rejected for Quality Reasons" for r in listed)
    # One audit record: action D, type rejection, the note as requestor, the withdrawn instances.
    (record,) = [r for r in audit_records() if r["ActiveParticipant"][0]["UserID"] == f"note:{note_sop}"]
    assert record["EventIdentification"]["EventActionCode"] == "D"
    assert record["EventIdentification"]["EventTypeCode"][0]["csd-code"] == "rejection"
    (obj,) = [o for o in record["ParticipantObjectIdentification"] if o.get("ParticipantObjectID") == study]
    assert sorted(obj["ParticipantObjectDescription"]["SOPClass"][0]["Instance"]) == sorted(r.sop for r in rejected)


def test_unknown_references_are_reported_and_nothing_else_is_hidden() -> None:
    f = memory_services()
    items = loaded(f, "rj2", n=2)
    other = loaded(f, "rj2-other", n=1)
    study, series = items[0][0], items[0][1]
    refs = [Reference(study, series, items[0][2], CT), Reference(study, series, uid("rj2", "never-stored"), CT),
            Reference(study, uid("rj2", "no-series"), uid("rj2", "x"), CT)]
    note_sop, note = note_bytes(RejectionCode.PATIENT_SAFETY, refs, "rj2")
    assert ingest(f, "rj2/note.dcm", note) is IngestState.ARCHIVED
    report = next(rejection.reports(f.services, study))
    assert [r["sop"] for r in report["rejected"]] == [items[0][2]]
    assert sorted(r["sop"] for r in report["unknownReferences"]) == sorted(r.sop for r in refs[1:])
    assert all(r["reason"] == "not in the archive" for r in report["unknownReferences"])
    assert instances_found(f, study) == {items[1][2], note_sop}
    assert instances_found(f, other[0][0]) == {other[0][2]}


def test_a_reference_into_another_study_is_not_applied() -> None:
    f = memory_services()
    items, other = loaded(f, "rj3", n=1), loaded(f, "rj3-other", n=1)
    note_sop = uid("rj3", "note")
    ds = build_note(RejectionCode.QUALITY, [Reference(items[0][0], items[0][1], items[0][2], CT)],
                    series=uid("rj3", "ns"), sop=note_sop)
    ev = ds.CurrentRequestedProcedureEvidenceSequence
    extra = ev[0].__class__()
    extra.StudyInstanceUID = other[0][0]
    ser = ev[0].ReferencedSeriesSequence[0].__class__()
    ser.SeriesInstanceUID = other[0][1]
    ref = ev[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0].__class__()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CT, other[0][2]
    ser.ReferencedSOPSequence = [ref]
    extra.ReferencedSeriesSequence = [ser]
    ev.append(extra)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    ingest(f, "rj3/note.dcm", buf.getvalue())
    report = next(rejection.reports(f.services, items[0][0]))
    assert [r["sop"] for r in report["rejected"]] == [items[0][2]]
    assert report["unknownReferences"] == [{"study": other[0][0], "series": other[0][1], "sop": other[0][2],
                                            "reason": "another study than the note's"}]
    assert instances_found(f, other[0][0]) == {other[0][2]}


def test_applying_a_note_again_changes_nothing() -> None:
    f = memory_services()
    items = loaded(f, "rj4", n=2)
    refs = [Reference(items[0][0], items[0][1], items[0][2], CT)]
    _, note = note_bytes(RejectionCode.QUALITY, refs, "rj4")
    ingest(f, "rj4/note.dcm", note)
    changes = len(f.services.index.changes(items[0][0]))
    assert ingest(f, "rj4/note-again.dcm", note) is IngestState.DUPLICATE  # re-sent: applied again, idempotent
    assert len(f.services.index.changes(items[0][0])) == changes
    report = next(rejection.reports(f.services, items[0][0]))
    assert [r["sop"] for r in report["alreadyRejected"]] == [items[0][2]] and report["rejected"] == []


def test_113039_deletes_at_once_and_retention_removes_the_others_when_due() -> None:
    f = memory_services(DICOMFLOW_REJECTION_RETENTION_DAYS="113001=2")
    items = loaded(f, "rj5", n=3)
    study, series = items[0][0], items[0][1]
    _, expired = note_bytes(RejectionCode.RETENTION_EXPIRED, [Reference(study, series, items[0][2], CT)], "rj5a")
    _, quality = note_bytes(RejectionCode.QUALITY, [Reference(study, series, items[1][2], CT)], "rj5b")
    ingest(f, "rj5/expired.dcm", expired)
    ingest(f, "rj5/quality.dcm", quality)
    archive = set(f.blobs.names(layout.ARCHIVE))
    assert layout.instance_path(study, series, items[0][2]) not in archive
    assert layout.rejected_path(study, series, items[0][2]) not in archive  # gone, not kept
    assert layout.rejected_path(study, series, items[1][2]) in archive
    now = dt.datetime.now(dt.UTC)
    assert rejection.purge(f.services, now + dt.timedelta(days=1)) == 0
    assert rejection.purge(f.services, now + dt.timedelta(days=2, minutes=1)) == 1
    assert layout.rejected_path(study, series, items[1][2]) not in set(f.blobs.names(layout.ARCHIVE))


def test_a_key_object_selection_that_is_not_a_rejection_changes_nothing() -> None:
    f = memory_services()
    items = loaded(f, "rj6", n=1)
    ds = build_note(RejectionCode.QUALITY, [Reference(items[0][0], items[0][1], items[0][2], CT)],
                    series=uid("rj6", "ns"), sop=uid("rj6", "note"))
    ds.ConceptNameCodeSequence[0].CodeValue = "113000"  # "Of Interest": a key image note
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert ingest(f, "rj6/ko.dcm", buf.getvalue()) is IngestState.ARCHIVED
    assert items[0][2] in instances_found(f, items[0][0])
    assert list(rejection.reports(f.services)) == []


@pytest.mark.peers
def test_the_note_the_tool_writes_is_a_valid_key_object_selection_document(tmp_path: Path) -> None:
    import subprocess

    from tests.integration.routing_peers import need

    ds = build_note(RejectionCode.PATIENT_SAFETY, [Reference(uid("v", "s"), uid("v", "se"), uid("v", "i"), CT)],
                    series=uid("v", "ko"), sop=uid("v", "note"), patient={"PatientID": "PID-1"})
    path = tmp_path / "note.dcm"
    ds.save_as(path, enforce_file_format=True)
    out = subprocess.run([need("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    assert "Error" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert "KeyObjectSelectionDocument" in out.stdout + out.stderr


def test_the_admin_routes_of_this_feature_are_audited() -> None:
    from shared.audit.http import event_for

    merge = event_for("dicomweb/patients/$merge", "POST")
    assert merge is not None and (merge.event.code, merge.action) == ("110103", "U")
    bulk = event_for("dicomweb/studies/$bulkUpdate", "POST")
    assert bulk is not None and (bulk.event.code, bulk.action) == ("110103", "U")
    listed = event_for("rejected", "GET")
    assert listed is not None and listed.event.code == "110112"
