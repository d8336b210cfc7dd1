"""Bulk update, patient merge and IOCM rejection end to end: the real app on the devhost, driven as a
client would (plain HTTP like curl, ``dicomweb-client`` for DICOMweb, dcmtk for DIMSE).

One devhost for the module (queue messages leased for 3 s, so a killed host's operation comes back
quickly); the last test kills it in the middle of a bulk update and starts it again.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from devhost.testing import DevHostProcess
from gateway.process import GatewayProcess
from shared.config import Settings
from shared.index.records import Action
from shared.ops.store import OperationStore
from shared.rejection.codes import RejectionCode
from shared.rejection.notes import Reference, build_note
from shared.services import Services
from tests.e2e.conftest import REAL_APP_ENV, REAL_APP_EVENTS, REAL_APP_SETTINGS
from tests.e2e.gateway_peers import dcmtk, start_gateway
from tests.instances import instance, uid
from tests.waiting import wait_until

CT = "1.2.840.10008.5.1.4.1.1.2"
NEW = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Roe^Richard"}]},
       "00100020": {"vr": "LO", "Value": ["PID-NEW"]}}


@pytest.fixture(scope="module")
def dh(azurite: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostProcess]:
    # A settle delay of 1 s (not 0): a bulk update writes many rows of one study quickly, and each write
    # would otherwise queue its own settle run of the whole study.
    # A killed host's operation resumes once the queue message's lease (3 s) and the runner's hold (4 s) end.
    env = {**REAL_APP_ENV, "DEVHOST_QUEUE_LEASE_SECONDS": "3", "DICOMFLOW_SETTLE_DELAY_SECONDS": "1",
           "DICOMFLOW_OPERATIONS_LEASE_SECONDS": "4"}
    proc = DevHostProcess(app="function_app:app", events=REAL_APP_EVENTS, azurite=azurite, env=env,
                          settings=REAL_APP_SETTINGS, state_dir=tmp_path_factory.mktemp("devhost-update"),
                          watch_from_now=True)
    with proc:
        yield proc


@pytest.fixture(scope="module")
def storage(dh: DevHostProcess) -> Services:
    return Services.from_settings(Settings.from_env({"DicomStorage": dh.azurite.connection_string}))


@pytest.fixture(scope="module")
def client(dh: DevHostProcess) -> DICOMwebClient:
    return DICOMwebClient(url=f"{dh.base_url}/dicomweb", headers=dh.bearer("admin"))


def stow(client: DICOMwebClient, files: list[bytes]) -> None:
    response = client.store_instances([pydicom.dcmread(io.BytesIO(f)) for f in files])
    assert "FailedSOPSequence" not in response, response


def study_files(tag: str, n: int, **kw: Any) -> tuple[str, str, list[tuple[str, bytes]]]:
    study, series = uid(tag, "study"), uid(tag, "series")
    return study, series, [(sop := uid(tag, "sop", k), instance(study, series, sop, number=k + 1, pixel=k, **kw))
                           for k in range(n)]


def post(dh: DevHostProcess, path: str, body: Any, role: str = "admin") -> requests.Response:
    return requests.post(f"{dh.base_url}/dicomweb/{path}", json=body, headers=dh.bearer(role), timeout=30)


def wait_operation(dh: DevHostProcess, href: str, timeout: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        r = requests.get(href, headers=dh.bearer("reader"), timeout=10)
        assert r.status_code in (200, 202), r.text
        return r.json() if r.status_code == 200 else None
    return wait_until(ended, timeout, "the operation to end", interval=0.2)


def found(client: DICOMwebClient, **filters: str) -> set[str]:
    return {r["0020000D"]["Value"][0] for r in client.search_for_studies(search_filters=filters)}


def test_bulk_update_through_the_api(dh: DevHostProcess, client: DICOMwebClient, storage: Services) -> None:
    run = uuid.uuid4().hex[:8]
    study, series, files = study_files(f"bu-{run}", 3, patient_id=f"OLD-{run}")
    stow(client, [f for _, f in files])
    wait_until(lambda: found(client, PatientID=f"OLD-{run}") == {study}, 30, "the study to be found")

    body = {"studyInstanceUids": [study], "changeDataset": NEW}
    # The change feed from here on (the session's Azurite holds other modules' entries before ours).
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    assert post(dh, "studies/$bulkUpdate", body, role="writer").status_code == 403  # it changes patient data
    r = post(dh, "studies/$bulkUpdate", body)
    assert r.status_code == 202, r.text
    ref = r.json()
    assert set(ref) == {"id", "href"} and ref["href"].endswith(f"/api/dicomweb/operations/{ref['id']}")
    status = wait_operation(dh, ref["href"])
    assert status["status"] == "completed" and status["percentComplete"] == 100 and status["type"] == "update"
    assert status["operationId"] == ref["id"]
    assert status["results"] == {"studyProcessed": 1, "studyUpdated": 1, "studyFailed": 0, "instanceUpdated": 3}
    record = OperationStore(storage.tables).get(ref["id"])
    assert record is not None and record.params["actor"] and not record.params["actor"].startswith("cli:")

    # QIDO: found by the new values only (once settle rewrote the lookup rows).
    wait_until(lambda: found(client, PatientID="PID-NEW") >= {study} and not found(client, PatientID=f"OLD-{run}"),
               30, "QIDO to see the new PatientID")
    # WADO-RS: metadata and the Part 10 file carry the new values; the pixel data is the same.
    meta = client.retrieve_instance_metadata(study, series, files[0][0])
    assert meta["00100010"]["Value"][0]["Alphabetic"] == "Roe^Richard"
    new = client.retrieve_instance(study, series, files[0][0])
    assert new.PatientID == "PID-NEW" and new.PixelData == pydicom.dcmread(io.BytesIO(files[0][1])).PixelData
    # The original, as uploaded: a client sends the Azure service's header, nothing else changes.
    originals = DICOMwebClient(url=f"{dh.base_url}/dicomweb",
                               headers={**dh.bearer("reader"), "msdicom-request-original": "true"})
    for sop, data in files:
        first = originals.retrieve_instance(study, series, sop)
        assert first == pydicom.dcmread(io.BytesIO(data)) and first.PatientID == f"OLD-{run}"
    assert originals.retrieve_instance_metadata(study, series, files[0][0])["00100020"]["Value"] == [f"OLD-{run}"]
    assert {m["00100020"]["Value"][0] for m in originals.retrieve_series_metadata(study, series)} == {f"OLD-{run}"}
    assert {ds.PatientID for ds in originals.retrieve_series(study, series)} == {f"OLD-{run}"}
    # Change feed and events: an update per instance.
    sops = {sop for sop, _ in files}

    def updates() -> set[str]:
        feed = requests.get(f"{dh.base_url}/dicomweb/changefeed", headers=dh.bearer("reader"),
                            params={"includemetadata": "false", "limit": "200", "startTime": since}, timeout=30).json()
        return {e["SOPInstanceUID"] for e in feed if e["Action"] == "update" and e["StudyInstanceUID"] == study}
    wait_until(lambda: updates() == sops, 30, "update entries in the change feed")
    for sop in sops:
        dh.wait_for_event(lambda e, s=sop: e.get("type") == "Dicom.ImageUpdated"
                          and e["data"]["imageSopInstanceUid"] == s)


def test_bulk_update_refuses_bad_input_and_a_study_already_being_updated(dh: DevHostProcess,
                                                                           client: DICOMwebClient) -> None:
    run = uuid.uuid4().hex[:8]
    study, _, files = study_files(f"bad-{run}", 2)
    stow(client, [f for _, f in files])
    r = post(dh, "studies/$bulkUpdate", {"studyInstanceUids": [study],
                                         "changeDataset": {"0020000D": {"vr": "UI", "Value": ["1.2.3"]},
                                                           "00080060": {"vr": "CS", "Value": ["MR"]}}})
    assert r.status_code == 400
    assert "StudyInstanceUID (0020000D) is a UID" in r.json()["error"] and "Modality (00080060)" in r.json()["error"]
    r = post(dh, "studies/$bulkUpdate", {"studyInstanceUids": [f"1.2.{n}" for n in range(51)], "changeDataset": NEW})
    assert r.status_code == 400 and "at most 50" in r.json()["error"]
    first = post(dh, "studies/$bulkUpdate", {"studyInstanceUids": [study], "changeDataset": NEW})
    second = post(dh, "studies/$bulkUpdate", {"studyInstanceUids": [study], "changeDataset": NEW})
    assert first.status_code == 202 and second.status_code == 409, second.text
    assert first.json()["id"] in second.json()["error"]
    wait_operation(dh, first.json()["href"])
    assert requests.get(f"{dh.base_url}/dicomweb/operations/{'0' * 32}", headers=dh.bearer("reader"),
                        timeout=10).status_code == 404


def test_patient_merge(dh: DevHostProcess, client: DICOMwebClient) -> None:
    run = uuid.uuid4().hex[:8]
    a, _, fa = study_files(f"mg-a-{run}", 2, patient_id=f"DUP-{run}", name="Smith^Jon")
    b, _, fb = study_files(f"mg-b-{run}", 1, patient_id=f"DUP-{run}", name="Smith^Jon")
    keep, _, fk = study_files(f"mg-k-{run}", 1, patient_id=f"MRN-{run}", name="Smith^John")
    stow(client, [f for _, f in fa + fb + fk])
    wait_until(lambda: found(client, PatientID=f"DUP-{run}") == {a, b}, 30, "the duplicate patient's studies")
    wait_until(lambda: found(client, PatientID=f"MRN-{run}") == {keep}, 30, "the surviving patient's study")
    r = post(dh, "patients/$merge", {"sourcePatientId": f"DUP-{run}", "targetPatientId": f"MRN-{run}"})
    assert r.status_code == 202, r.text
    assert r.json()["studies"] == 2
    for ref in r.json()["operations"]:
        assert wait_operation(dh, ref["href"])["status"] == "completed"
    wait_until(lambda: found(client, PatientID=f"MRN-{run}") == {a, b, keep} and not found(
        client, PatientID=f"DUP-{run}"), 30, "the merged studies under the surviving ID")
    names = {r["00100010"]["Value"][0]["Alphabetic"]
             for r in client.search_for_studies(search_filters={"PatientID": f"MRN-{run}"})}
    assert names == {"Smith^John"}
    assert post(dh, "patients/$merge", {"sourcePatientId": f"DUP-{run}",
                                        "targetPatientId": f"MRN-{run}"}).status_code == 404  # nothing left


def note_file(code: RejectionCode, study: str, series: str, sops: list[str], tag: str) -> bytes:
    ds = build_note(code, [Reference(study, series, s, CT) for s in sops], series=uid(tag, "ko"), sop=uid(tag, "note"),
                    patient={"PatientID": "PID-1"})
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_a_rejection_note_stored_with_stow_hides_the_instances(dh: DevHostProcess, client: DICOMwebClient) -> None:
    run = uuid.uuid4().hex[:8]
    study, series, files = study_files(f"rj-{run}", 3)
    stow(client, [f for _, f in files])
    rejected, kept = files[0][0], {files[1][0], files[2][0]}
    unknown = uid(f"rj-{run}", "never-stored")
    stow(client, [note_file(RejectionCode.QUALITY, study, series, [rejected, unknown], f"rj-{run}")])

    def instances() -> set[str]:
        return {r["00080018"]["Value"][0] for r in client.search_for_instances(
            study_instance_uid=study, search_filters={"Modality": "CT"})}
    wait_until(lambda: instances() == kept, 30, "QIDO to hide the rejected instance")
    url = f"{dh.base_url}/dicomweb/studies/{study}/series/{series}/instances/{rejected}"
    gone = requests.get(url, headers={**dh.bearer("reader"), "Accept": 'multipart/related; type="application/dicom"'},
                        timeout=30)
    assert gone.status_code == 410 and "113001" in gone.json()["error"]
    event = dh.wait_for_event(lambda e: e.get("type") == "Dicom.ImageDeleted"
                              and e["data"]["imageSopInstanceUid"] == rejected)
    assert event["data"]["rejectionCode"] == "113001"
    assert requests.get(f"{dh.base_url}/rejected", headers=dh.bearer("reader"), timeout=10).status_code == 403
    listed = requests.get(f"{dh.base_url}/rejected", params={"study": study}, headers=dh.bearer("admin"),
                          timeout=10).json()
    assert [(r["sop"], r["code"]) for r in listed["instances"]] == [(rejected, "113001")]
    (report,) = listed["notes"]
    assert [u["sop"] for u in report["unknownReferences"]] == [unknown]


@pytest.fixture(scope="module")
def gateway(dh: DevHostProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(dh.azurite.connection_string, tmp_path_factory.mktemp("gateway-reject"))
    try:
        yield gw
    finally:
        gw.stop()


@pytest.mark.peers
def test_a_rejection_note_sent_with_c_store_hides_the_instances_from_c_find_and_c_get(
        dh: DevHostProcess, client: DICOMwebClient, gateway: GatewayProcess, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    study, series, files = study_files(f"rjd-{run}", 2)
    stow(client, [f for _, f in files])
    note = tmp_path / "note.dcm"
    note.write_bytes(note_file(RejectionCode.PATIENT_SAFETY, study, series, [files[0][0]], f"rjd-{run}"))
    sent = dcmtk("storescu", "-aec", "DICOMFLOW", "-R", "127.0.0.1", str(gateway.port), str(note))
    assert sent.returncode == 0, sent.stderr

    def c_find() -> set[str]:
        out = tmp_path / "find"
        out.mkdir(exist_ok=True)
        for p in out.glob("*.dcm"):
            p.unlink()
        res = dcmtk("findscu", "-S", "-aec", "DICOMFLOW", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=IMAGE",
                    "-k", f"StudyInstanceUID={study}", "-k", "SOPInstanceUID", "-k", "Modality=CT", "127.0.0.1",
                    str(gateway.port))
        assert res.returncode == 0, res.stderr
        return {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.glob("rsp*.dcm")}
    wait_until(lambda: c_find() == {files[1][0]}, 30, "C-FIND to hide the rejected instance")
    got = tmp_path / "got"
    got.mkdir()
    res = dcmtk("getscu", "-S", "-aec", "DICOMFLOW", "-od", str(got), "-k", "QueryRetrieveLevel=STUDY", "-k",
                f"StudyInstanceUID={study}", "127.0.0.1", str(gateway.port))
    assert res.returncode == 0, res.stderr
    assert {str(pydicom.dcmread(p).SOPInstanceUID) for p in got.iterdir()} == {files[1][0], uid(f"rjd-{run}", "note")}


def test_a_crash_in_the_middle_of_a_bulk_update_is_resumed(dh: DevHostProcess, client: DICOMwebClient,
                                                           storage: Services) -> None:
    run = uuid.uuid4().hex[:8]
    study, series, files = study_files(f"crash-{run}", 30)
    stow(client, [f for _, f in files])
    r = post(dh, "studies/$bulkUpdate", {"studyInstanceUids": [study], "changeDataset": NEW})
    assert r.status_code == 202, r.text
    op_id = r.json()["id"]
    store = OperationStore(storage.tables)

    def updated() -> int:
        return sum(1 for rec in storage.index.list_study_instances(study) if rec.source == f"update:{op_id}")
    wait_until(lambda: updated() >= 3, 60, "the operation to update a few instances", interval=0.02)
    dh.kill()
    op = store.get(op_id)
    assert op is not None and not op.done and updated() < len(files), "it ended before the kill: make it harder"
    dh.start()
    status = wait_operation(dh, r.json()["href"], timeout=90)
    assert status["status"] == "completed" and status["results"]["instanceUpdated"] == 30
    changes = storage.index.changes(study)
    assert sorted(c.sop for c in changes if c.action is Action.UPDATE) == sorted(sop for sop, _ in files)
    for sop, _ in files[::10]:
        row = storage.index.get_instance(study, series, sop)
        assert row is not None and row.record.patient_id == "PID-NEW"
