"""The audit record (PS3.15 A.5 fields, no patient data), the HTTP event mapping, the query's rules, and the
writer's batching over an in-memory sink (spool recovery of a killed process: tests/integration/test_audit.py)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import orjson
import pytest

from shared.audit import new_record
from shared.audit.http import client_address, event_for, record_for
from shared.audit.query import AuditQuery, AuditQueryError, search
from shared.audit.record import (
    INSTANCES_TRANSFERRED,
    QUERY,
    STUDY_DELETED,
    Actor,
    AuditRecord,
    Subjects,
    patient_digest,
    studies_of,
)
from shared.audit.writer import AuditWriter
from shared.config import Settings
from shared.storage import layout
from tests.fakes import MemoryBlobStore

SETTINGS = Settings.from_env({"DicomStorage": "memory", "DICOMFLOW_SERVICE_HOST_NAME": "dicomflow.test",
                              "DICOMFLOW_REGION": "primary"})
STUDY = "1.2.826.0.1.3680043.10.1234.9.1"


class MemorySink:
    def __init__(self, blobs: MemoryBlobStore | None = None, *, fail: int = 0) -> None:
        self.blobs = blobs or MemoryBlobStore()
        self.appends: list[tuple[str, bytes]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def append(self, path: str, data: bytes) -> None:
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise OSError("storage unavailable")
            self.appends.append((path, data))
            old = self.blobs.read(layout.AUDIT, path) or b""
            self.blobs.write(layout.AUDIT, path, old + data)

    def lines(self) -> list[dict]:
        return [orjson.loads(line) for _, data in self.appends for line in data.splitlines()]


def qido_record(status: int = 200) -> AuditRecord:
    subjects = Subjects(query_keys=["PatientID"])
    subjects.add_views([{"StudyInstanceUID": STUDY, "PatientID": "PID-SECRET-42", "PatientName": "Doe^Jane"}],
                       "salty")
    return record_for(SETTINGS, "dicomweb/studies", "GET", status, user="11111111-2222-3333-4444-555555555555",
                      kind="user", roles={"reader"}, address="10.1.2.3", subjects=subjects) or pytest.fail()


def test_a_record_has_the_atna_fields_and_the_patient_only_as_a_digest() -> None:
    doc = qido_record().to_json()
    ident = doc["EventIdentification"]
    assert ident["EventID"] == {"csd-code": "110112", "codeSystemName": "DCM", "originalText": "Query"}
    assert ident["EventActionCode"] == "E" and ident["EventOutcomeIndicator"] == 0
    assert dt.datetime.fromisoformat(ident["EventDateTime"].replace("Z", "+00:00")).tzinfo is not None
    requestor, us = doc["ActiveParticipant"]
    assert requestor == {"UserID": "11111111-2222-3333-4444-555555555555", "UserIsRequestor": True,
                         "AlternativeUserID": "user", "NetworkAccessPointID": "10.1.2.3",
                         "NetworkAccessPointTypeCode": "2",
                         "RoleIDCode": [{"csd-code": "reader", "codeSystemName": "dicomflow-app-role",
                                         "originalText": "reader"}]}
    assert us["UserID"] == "dicomflow.test" and us["UserIsRequestor"] is False
    assert doc["AuditSourceIdentification"] == {"AuditSourceID": "dicomflow@dicomflow.test",
                                                "AuditSourceTypeCode": "4", "AuditEnterpriseSiteID": "primary"}
    objects = doc["ParticipantObjectIdentification"]
    patient = next(o for o in objects if o["ParticipantObjectTypeCode"] == 1)
    assert patient["ParticipantObjectID"] == patient_digest("PID-SECRET-42", "salty") != patient_digest("PID-SECRET-42")
    assert studies_of(doc) == {STUDY}
    query = next(o for o in objects if o["ParticipantObjectTypeCodeRole"] == 24)
    assert query["ParticipantObjectDetail"] == [{"type": "QueryKeys", "value": "PatientID"}]
    text = qido_record().line().decode()
    assert "PID-SECRET-42" not in text and "Doe" not in text


@pytest.mark.parametrize(("route", "method", "event", "action"), [
    ("dicomweb/studies", "GET", "110112", "E"),
    ("dicomweb/studies/{study}/series/{series}/instances", "GET", "110112", "E"),
    ("dicomweb/changefeed", "GET", "110112", "E"),
    ("dicomweb/studies/{study}", "GET", "110104", "R"),
    ("dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", "GET", "110103", "R"),
    ("dicomweb/studies/{study}/metadata", "GET", "110103", "R"),
    ("dicomweb/studies", "POST", "110104", "C"),
    ("dicomweb/studies/{study}", "DELETE", "110105", "D"),
    ("dicomweb/studies/{study}/series/{series}", "DELETE", "110103", "D"),
    ("dicomweb/studies/$bulkUpdate", "POST", "110103", "U"),
    ("dicomweb/extendedquerytags", "POST", "110113", "E"),
    ("dicomweb/extendedquerytags/{tag}", "DELETE", "110113", "E"),
    ("audit", "GET", "110101", "R"),
])
def test_each_route_is_its_event(route: str, method: str, event: str, action: str) -> None:
    got = event_for(route, method)
    assert got is not None and (got.event.code, got.action) == (event, action)


def test_routes_without_patient_data_have_no_record() -> None:
    for route, method in (("dicomweb/extendedquerytags", "GET"), ("dicomweb/operations/{operation}", "GET"),
                          ("ingest/status", "GET"), ("health", "GET")):
        assert event_for(route, method) is None


def test_a_refused_request_is_a_failure_and_the_address_is_only_ever_an_ip() -> None:
    doc = qido_record(403).to_json()
    assert doc["EventIdentification"]["EventOutcomeIndicator"] == 4
    assert qido_record(503).to_json()["EventIdentification"]["EventOutcomeIndicator"] == 8
    assert client_address({"x-forwarded-for": "203.0.113.9, 10.0.0.1"}, "127.0.0.1") == "203.0.113.9"
    assert client_address({"x-azure-clientip": "2001:db8::1"}, None) == "2001:db8::1"
    assert client_address({"x-forwarded-for": "<script>"}, "127.0.0.1") == "127.0.0.1"
    assert client_address({"x-forwarded-for": "evil\nline"}, "not an ip") is None


def test_a_large_access_lists_at_most_the_limit_and_says_so() -> None:
    subjects = Subjects()
    for n in range(1005):
        subjects.add(STUDY, f"{STUDY}.{n % 3}", f"{STUDY}.9.{n}", "1.2.840.10008.5.1.4.1.1.2")
    (study,) = subjects.objects()
    described = study["ParticipantObjectDescription"]
    assert described["Truncated"] is True and described["SOPClass"][0]["NumberOfInstances"] == 1000
    assert len(described["Series"]) == 3


def test_the_query_checks_its_parameters() -> None:
    now = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
    q = AuditQuery.parse({"study": STUDY, "limit": "5"}, now=now)
    assert (q.start, q.end, q.limit) == (now - dt.timedelta(days=1), now, 5)
    for bad in ({"study": "1.2.x"}, {"from": "yesterday"}, {"from": "2026-11-29T12:00:00Z", "to": "2026-11-01T00:00Z"},
                {"from": "2026-01-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, {"limit": "0"}, {"colour": "red"}):
        with pytest.raises(AuditQueryError):
            AuditQuery.parse(bad, now=now)


def writer(sink: MemorySink, spool: Path | None, name: str = "unit-writer", **kw: object) -> AuditWriter:
    return AuditWriter(sink, name=name, spool_dir=spool, flush_seconds=3600, start=False, **kw)  # type: ignore[arg-type]


def test_emit_writes_nothing_to_storage_and_a_flush_appends_one_block_per_hour(tmp_path: Path) -> None:
    sink = MemorySink()
    w = writer(sink, tmp_path)
    for _ in range(50):
        w.emit(qido_record())
    assert sink.appends == []  # the request path made no storage request
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # ... but every record is in the spool
    assert w.flush() == 50
    assert len(sink.appends) == 1 and len(sink.lines()) == 50
    assert list(tmp_path.glob("*.jsonl")) == []  # appended: its spool file is gone
    found = search(sink.blobs, AuditQuery.parse({"study": STUDY, "limit": "1000"}))
    assert len(found.records) == 50 and found.blobs == 1


def test_a_failed_append_keeps_the_records_for_the_next_flush(tmp_path: Path) -> None:
    sink = MemorySink(fail=1)
    w = writer(sink, tmp_path)
    w.emit(qido_record())
    with pytest.raises(OSError):
        w.flush()
    w.emit(qido_record())
    assert w.flush() == 2 and len(sink.lines()) == 2


def test_close_retries_and_a_record_emitted_after_close_is_still_appended(tmp_path: Path) -> None:
    sink = MemorySink(fail=1)
    w = writer(sink, tmp_path)
    w.emit(qido_record())
    w.close()
    assert len(sink.lines()) == 1
    w.emit(qido_record())  # e.g. another exit handler's request
    assert len(sink.lines()) == 2


def test_a_batch_wakes_the_flusher_before_its_interval(tmp_path: Path) -> None:
    sink = MemorySink()
    w = AuditWriter(sink, name="batched", spool_dir=tmp_path, flush_seconds=3600, batch=10)
    try:
        for _ in range(10):
            w.emit(qido_record())
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while len(sink.lines()) < 10 and dt.datetime.now() < deadline:
            threading.Event().wait(0.02)
        assert len(sink.lines()) == 10
    finally:
        w.close()


def test_another_writers_live_spool_is_left_alone_and_a_dead_ones_is_recovered(tmp_path: Path) -> None:
    sink = MemorySink()
    alive = writer(MemorySink(), tmp_path, "alive-host-1-aaaaaaaa")
    alive.emit(qido_record())  # holds the lock of its spool file
    other = writer(sink, tmp_path, "other-host-2-bbbbbbbb")
    assert other.recover() == 0 and sink.appends == []
    assert alive.recover() == 0 and len(list(tmp_path.glob("*.jsonl"))) == 1  # nor does a writer take its own
    (tmp_path / "killed-while-opening.opening").write_bytes(b"")  # created, never named: nothing in it
    other.recover()
    assert not list(tmp_path.glob("*.opening"))
    # A writer whose process died leaves an unlocked file (here: one whose lock was let go).
    dead = tmp_path / "dead-host-1-abcdef12-000001.jsonl"
    lines = [qido_record().line() for _ in range(3)]
    dead.write_bytes(b"".join(lines) + b'{"id": "cut sho')  # the last line was cut by the kill
    assert other.recover() == 3 and not dead.exists()
    assert {d["id"] for d in sink.lines()} == {orjson.loads(x)["id"] for x in lines}


def test_new_record_names_requestor_service_and_others() -> None:
    rec = new_record(SETTINGS, INSTANCES_TRANSFERRED, "R", outcome=0, requestor=Actor("MOVESCU", alternative="ae"),
                     subjects=Subjects(), others=(Actor("PACS", requestor=False),))
    assert [p["UserID"] for p in rec.to_json()["ActiveParticipant"]] == ["MOVESCU", "dicomflow.test", "PACS"]
    assert STUDY_DELETED.code == "110105" and QUERY.system == "DCM"


def test_a_spool_folder_that_is_a_link_is_refused_and_records_wait_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.audit import spool_folder

    mine = spool_folder(tmp_path / "spool", "account-a")
    assert mine is not None and mine.parent == tmp_path / "spool" and oct(mine.stat().st_mode)[-3:] == "700"
    assert spool_folder(tmp_path / "spool", "account-b") != mine  # one folder per storage account
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    assert spool_folder(tmp_path / "link", "account-a") is None
    sink = MemorySink()
    w = writer(sink, None)  # what the app does then: no spool, records in memory until appended

    def no_unlink(self: Path, missing_ok: bool = False) -> None:
        raise AssertionError(f"a writer without a spool removed {self}")  # (it once removed os.devnull)

    monkeypatch.setattr(Path, "unlink", no_unlink)
    w.emit(qido_record())
    assert w.flush() == 1 and not list((tmp_path / "elsewhere").iterdir())
    w.close()
