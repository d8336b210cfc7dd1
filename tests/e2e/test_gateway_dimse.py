"""The DIMSE gateway with real peers: dcmtk (storescu, findscu, movescu, getscu, storescp, echoscu) and
Orthanc, against the real app on the devhost (ingest, settle, QIDO-RS). One devhost and one gateway
for the module; the TLS test starts a second, TLS-only gateway for a moment."""

from __future__ import annotations

import io
import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from azure.storage.blob import BlobServiceClient

from devhost.azurite import Azurite, ephemeral, free_port
from devhost.testing import DevHostProcess
from gateway.process import GatewayProcess
from shared.audit.query import AuditQuery, search
from shared.audit.record import studies_of
from shared.gateway.destinations import DestinationsStore
from shared.storage import layout
from shared.storage.azure import AzureBlobStore
from tests.e2e.gateway_peers import CALLING, dataset_bytes, dcmtk, self_signed, start_gateway, suboperations
from tests.e2e.orthanc import OrthancProcess, available
from tests.integration.routing_peers import storescp
from tests.waiting import wait_until
from tools.corpus import CorpusOptions, load_manifest, write_corpus

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """This module's own storage: its C-FIND answers are compared with exact sets (a patient level query
    names one patient), so no other module's studies may be in the index."""
    with ephemeral(tmp_path_factory.mktemp("azurite-gateway")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gw-corpus")
    write_corpus(out, CorpusOptions(patients=2, slices=4, rows=32, cols=32, seed=1411))
    return out


@pytest.fixture(scope="module")
def gateway(devhost: DevHostProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(devhost.azurite.connection_string, tmp_path_factory.mktemp("gateway"),
                       DICOMFLOW_GATEWAY_ALLOWED_AE_TITLES=",".join(CALLING))
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def blob_service(devhost: DevHostProcess) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(devhost.azurite.connection_string)


@pytest.fixture(scope="module")
def destinations(blob_service: BlobServiceClient) -> DestinationsStore:
    return DestinationsStore(AzureBlobStore(blob_service))


def _get(dh: DevHostProcess, path: str, **params: str) -> Any:
    url = f"{dh.base_url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    req = urllib.request.Request(url, headers=dh.bearer("reader"))
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else []


def _qido(dh: DevHostProcess, path: str, **params: str) -> list[dict[str, Any]]:
    # QIDO pages at 100 by default and C-FIND answers up to DICOMFLOW_GATEWAY_MAX_FIND_RESULTS: compare whole
    # answers (the session's Azurite holds every e2e module's studies, so a date range can pass 100).
    return list(_get(dh, f"/dicomweb{path}", **{"limit": "1000", **params}))


def _uid(d: dict[str, Any], tag: str) -> str:
    return str(d[tag]["Value"][0])


def _wait_stable(dh: DevHostProcess, counts: dict[str, int]) -> None:
    """Until each study was announced stable with all its instances (with a stable age of 0 a study is
    announced at every settle run, the first perhaps before all its instances arrived)."""
    for study, n in counts.items():
        dh.wait_for_event(lambda ev, s=study, n=n: ev.get("type") == "Dicom.StudyStable"
                          and ev["data"]["imageStudyInstanceUid"] == s and ev["data"]["numberOfInstances"] == n,
                          timeout=90)


def _store(gw: GatewayProcess, *files: Path, aet: str = "STORESCU") -> Any:
    return dcmtk("storescu", "-aet", aet, "-aec", "DICOMFLOW", "--no-halt", "-R", "-v", "127.0.0.1", str(gw.port),
                 *map(str, files))


def _find(gw: GatewayProcess, out: Path, *keys: str | bytes, model: str = "-S") -> list[pydicom.Dataset]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args: list[str | bytes] = [model, "-aet", "FINDSCU", "-aec", "DICOMFLOW", "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    res = dcmtk("findscu", *args, "127.0.0.1", str(gw.port))
    assert res.returncode == 0, res.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


# -- C-STORE ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stored(devhost: DevHostProcess, gateway: GatewayProcess, corpus: Path) -> dict[str, Any]:
    """storescu sends the study files (CT, MR, SR, DX, a multi-frame DBT) and one broken file."""
    manifest = load_manifest(corpus)
    good = [e for e in manifest["files"] if e["expect"] == "archived" and e["path"].startswith("good/")]
    broken = next(e for e in manifest["files"] if e.get("reason") == "missing-study-uid")
    res = _store(gateway, *[corpus / e["path"] for e in good], corpus / broken["path"])
    studies = {e["study_uid"] for e in good}
    _wait_stable(devhost, {s: len({e["sop_uid"] for e in good if e["study_uid"] == s}) for s in studies})
    return {"manifest": manifest, "good": good, "broken": broken, "studies": studies, "storescu": res}


def test_storescu_study_is_archived_and_found_over_qido(devhost: DevHostProcess, stored: dict[str, Any],
                                                         blob_service: BlobServiceClient, corpus: Path,
                                                         tmp_path: Path) -> None:
    good = stored["good"]
    assert {e["modality"] for e in good} >= {"CT", "SR", "MG"}  # slices, an SR, a multi-frame DBT
    for study in stored["studies"]:
        expected = {e["sop_uid"] for e in good if e["study_uid"] == study}
        found = {_uid(d, "00080018") for d in _qido(devhost, f"/studies/{study}/instances")}
        assert found == expected
    # The archived multi-frame instance is the data set storescu sent.
    sample = next(e for e in good if e["modality"] == "MG")
    archived = tmp_path / "archived.dcm"
    archived.write_bytes(_archived(blob_service, sample))
    assert pydicom.dcmread(archived) == pydicom.dcmread(corpus / sample["path"])
    assert int(pydicom.dcmread(archived, stop_before_pixels=True).NumberOfFrames) > 1


def test_broken_file_gets_a_failure_status_and_a_quarantine_outcome(devhost: DevHostProcess,
                                                                    stored: dict[str, Any]) -> None:
    out = stored["storescu"].stderr + stored["storescu"].stdout
    # storescu -v names the status: 0xC000 Cannot Understand for the broken file, success for the others.
    assert out.count("Received Store Response (Error: CannotUnderstand)") == 1, out[-2000:]
    assert out.count("Received Store Response (Success)") == len(stored["good"]), out[-2000:]

    def quarantined() -> str | None:
        summary = _get(devhost, "/ingest/status")
        return next((f["blob"] for f in summary["recentFailures"]
                     if f["blob"].startswith("dimse/STORESCU/") and f["reason"] == "missing-study-uid"), None)

    blob = wait_until(quarantined, timeout=60, what="the broken file's quarantine outcome")
    # The event names the upload by digest (docs/security.md), as the status API's summary does by name.
    failed = devhost.wait_for_event(lambda e: e.get("type") == "Dicom.IngestFailed"
                                    and e["data"].get("blobDigest") == layout.log_name(blob), timeout=30)
    assert failed["data"]["reason"] == "missing-study-uid"


# -- C-FIND -------------------------------------------------------------------------------------------------

def _text(ds: pydicom.Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "")


def test_findscu_at_each_level_equals_qido(devhost: DevHostProcess, gateway: GatewayProcess,
                                          stored: dict[str, Any], tmp_path: Path) -> None:
    manifest = stored["manifest"]
    names = {p["index"]: p for p in manifest["patients"]}
    cyrillic = next(p for p in names.values() if p["name"].startswith("Иванов"))
    cyr_studies = {e["study_uid"] for e in stored["good"] if e["patient_index"] == cyrillic["index"]}

    # STUDY level, a non-Latin name with a wildcard, UTF-8 request.
    rsp = _find(gateway, tmp_path / "q1", "QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 192",
                "PatientName=иванов*", "StudyInstanceUID", "StudyDate", "ModalitiesInStudy")
    qido = _qido(devhost, "/studies", PatientName="иванов*")
    assert {_text(d, "StudyInstanceUID") for d in rsp} == {_uid(d, "0020000D") for d in qido} == cyr_studies
    assert all(_text(d, "PatientName").startswith("Иванов") for d in rsp)

    # STUDY level, a date range; equal to QIDO for the same range.
    dates = sorted({_text(d, "StudyDate") for d in rsp})
    rsp = _find(gateway, tmp_path / "q2", "QueryRetrieveLevel=STUDY", f"StudyDate={dates[0]}-{dates[-1]}",
                "StudyInstanceUID")
    qido = _qido(devhost, "/studies", StudyDate=f"{dates[0]}-{dates[-1]}")
    assert {_text(d, "StudyInstanceUID") for d in rsp} == {_uid(d, "0020000D") for d in qido} >= cyr_studies

    # SERIES level inside a study, by modality.
    study = next(e["study_uid"] for e in stored["good"] if e["modality"] == "CT")
    rsp = _find(gateway, tmp_path / "q3", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}", "Modality=CT",
                "SeriesInstanceUID", "NumberOfSeriesRelatedInstances")
    qido = _qido(devhost, f"/studies/{study}/series", Modality="CT")
    assert {_text(d, "SeriesInstanceUID") for d in rsp} == {_uid(d, "0020000E") for d in qido}
    assert rsp and all(int(d.NumberOfSeriesRelatedInstances) == 4 for d in rsp)

    # IMAGE level in a series.
    series = _text(rsp[0], "SeriesInstanceUID")
    rsp = _find(gateway, tmp_path / "q4", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}",
                f"SeriesInstanceUID={series}", "SOPInstanceUID", "InstanceNumber")
    qido = _qido(devhost, f"/studies/{study}/series/{series}/instances")
    assert {_text(d, "SOPInstanceUID") for d in rsp} == {_uid(d, "00080018") for d in qido}
    assert len(rsp) == 4

    # PATIENT level (Patient Root), a Latin-1 request: ISO_IR 100 bytes on the wire.
    latin = next(p for p in names.values() if p["charset"] == "ISO_IR 100")
    family = latin["name"].split("^")[0]
    rsp = _find(gateway, tmp_path / "q5", "QueryRetrieveLevel=PATIENT", "SpecificCharacterSet=ISO_IR 100",
                f"PatientName={family[:3]}*".encode("latin-1"), "PatientID", "NumberOfPatientRelatedStudies",
                model="-P")
    assert [_text(d, "PatientID") for d in rsp] == [latin["patient_id"]]
    assert _text(rsp[0], "PatientName").split("^")[0] == family  # decoded through the response's charset
    qido = _qido(devhost, "/studies", PatientName=f"{family[:3]}*")
    assert int(rsp[0].NumberOfPatientRelatedStudies) == len(qido) >= 1


def test_find_with_a_bad_identifier_says_why(gateway: GatewayProcess, tmp_path: Path) -> None:
    res = dcmtk("findscu", "-S", "-aet", "FINDSCU", "-aec", "DICOMFLOW", "-v", "-k", "QueryRetrieveLevel=STUDY",
                "-k", "StudyDate=yesterday", "127.0.0.1", str(gateway.port))
    out = res.stdout + res.stderr
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in out, out[-1500:]  # 0xA900


# -- C-MOVE, C-GET --------------------------------------------------------------------------------------------

def _archived(blob_service: BlobServiceClient, e: dict[str, Any]) -> bytes:
    data = blob_service.get_blob_client(layout.ARCHIVE, layout.instance_path(
        e["study_uid"], e["series_uid"], e["sop_uid"])).download_blob().readall()
    return bytes(data)


def _same_data_sets(received: list[Path], expected: list[dict[str, Any]], blob_service: BlobServiceClient,
                    tmp_path: Path) -> None:
    by_sop = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in received}
    assert set(by_sop) == {e["sop_uid"] for e in expected}
    for e in expected:
        ref = tmp_path / f"{e['sop_uid']}.ref.dcm"
        ref.write_bytes(_archived(blob_service, e))
        got = by_sop[e["sop_uid"]]
        sent_as = pydicom.dcmread(got, stop_before_pixels=True).file_meta.TransferSyntaxUID
        stored_as = pydicom.dcmread(ref, stop_before_pixels=True).file_meta.TransferSyntaxUID
        if sent_as == stored_as:  # byte for byte
            assert dataset_bytes(got) == dataset_bytes(ref), e["path"]
        else:  # the peer accepted the other uncompressed syntax: the same data set, transcoded
            assert pydicom.dcmread(got) == pydicom.dcmread(ref), e["path"]


def test_movescu_to_storescp_delivers_the_archived_files(gateway: GatewayProcess, stored: dict[str, Any],
                                                        destinations: DestinationsStore,
                                                        blob_service: BlobServiceClient, tmp_path: Path) -> None:
    port = free_port()
    destinations.put(json.dumps({"destinations": [{"ae": "STORESCP", "host": "127.0.0.1", "port": port}]}).encode())
    study = next(iter(stored["studies"]))
    expected = [e for e in stored["good"] if e["study_uid"] == study]
    with storescp(tmp_path / "moved", port, accept_all=True) as out:
        res = dcmtk("movescu", "-S", "-d", "-aet", "MOVESCU", "-aec", "DICOMFLOW", "-aem", "STORESCP",
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1",
                    str(gateway.port))
        assert res.returncode == 0, res.stderr
        wait_until(lambda: len(list(out.iterdir())) >= len(expected), what="the moved files")
        received = sorted(out.iterdir())
    assert suboperations(res.stdout + res.stderr) == {"completed": len(expected), "failed": 0, "warning": 0}
    _same_data_sets(received, expected, blob_service, tmp_path)

    # An AE that is not in destinations.json: Move Destination unknown.
    res = dcmtk("movescu", "-S", "-v", "-aet", "MOVESCU", "-aec", "DICOMFLOW", "-aem", "NOWHERE",
                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(gateway.port))
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in res.stderr, res.stderr[-1500:]


def test_dimse_store_find_and_move_are_audited(gateway: GatewayProcess, stored: dict[str, Any],
                                                blob_service: BlobServiceClient) -> None:
    """The gateway writes one audit record per C-STORE, C-FIND and C-MOVE (after the moves above), naming the
    calling AE and its address, the Move Destination, and the study, series and instance UIDs."""
    trail = AzureBlobStore(blob_service)
    study = next(iter(stored["studies"]))
    expected = {e["sop_uid"] for e in stored["good"] if e["study_uid"] == study}

    def moves() -> list[dict[str, Any]]:
        found = search(trail, AuditQuery.parse({"actor": "MOVESCU", "limit": "1000"})).records
        return [r for r in found if r["EventIdentification"]["EventID"]["csd-code"] == "110104"]

    records = wait_until(lambda: len(moves()) >= 2 and moves(), timeout=30, what="the C-MOVE audit records")
    done = next(r for r in records if r["EventIdentification"]["EventOutcomeIndicator"] == 0)
    assert done["EventIdentification"]["EventActionCode"] == "R"
    parts = {p["UserID"]: p for p in done["ActiveParticipant"]}
    assert parts["MOVESCU"]["UserIsRequestor"] and parts["MOVESCU"]["NetworkAccessPointID"] == "127.0.0.1"
    assert parts["STORESCP"]["RoleIDCode"][0]["originalText"] == "Destination Role ID"
    assert parts["DICOMFLOW"]["UserIsRequestor"] is False
    (obj,) = [o for o in done["ParticipantObjectIdentification"] if o["ParticipantObjectID"] == study]
    listed = {i for c in obj["ParticipantObjectDescription"]["SOPClass"] for i in c["Instance"]}
    assert listed == expected
    assert any(r["EventIdentification"]["EventOutcomeIndicator"] == 4 for r in records)  # to NOWHERE: refused
    stores = search(trail, AuditQuery.parse({"actor": "STORESCU", "limit": "1000"})).records
    assert {r["EventIdentification"]["EventActionCode"] for r in stores} == {"C"}
    assert {s for r in stores for s in studies_of(r)} == stored["studies"]
    finds = search(trail, AuditQuery.parse({"actor": "FINDSCU", "limit": "1000"})).records
    assert finds and {r["EventIdentification"]["EventID"]["csd-code"] for r in finds} == {"110112"}


def test_getscu_series_receives_the_archived_files(gateway: GatewayProcess, stored: dict[str, Any],
                                                  blob_service: BlobServiceClient, tmp_path: Path) -> None:
    sample = next(e for e in stored["good"] if e["modality"] == "MR")
    expected = [e for e in stored["good"] if e["series_uid"] == sample["series_uid"]]
    out = tmp_path / "got"
    out.mkdir()
    res = dcmtk("getscu", "-S", "-d", "-aet", "GETSCU", "-aec", "DICOMFLOW", "-od", str(out),
                "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={sample['study_uid']}",
                "-k", f"SeriesInstanceUID={sample['series_uid']}", "127.0.0.1", str(gateway.port))
    assert res.returncode == 0, res.stderr
    assert suboperations(res.stdout + res.stderr).get("completed") == len(expected), res.stdout[-1500:]
    _same_data_sets(sorted(out.iterdir()), expected, blob_service, tmp_path)


@pytest.fixture(scope="module")
def stored_other_syntaxes(devhost: DevHostProcess, blob_service: BlobServiceClient) -> dict[str, Any]:
    """One MR series stored big endian, JPEG-LS, JPEG 2000 and RLE (pydicom's MR_small in each), uploaded to the
    inbox: what an old workstation that takes Implicit VR Little Endian only cannot take as stored."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    names = ["MR_small_bigendian.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
             "MR_small_RLE.dcm"]
    sops = []
    for n, name in enumerate(names, 1):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blob_service.get_blob_client(layout.INBOX, f"gw-syntaxes/{study}/{name}").upload_blob(buf.getvalue())
        sops.append(str(ds.SOPInstanceUID))
    _wait_stable(devhost, {study: len(names)})
    return {"study": study, "series": series, "sops": sops,
            "pixels": pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array}


def test_move_and_get_to_an_implicit_only_peer_transcode(gateway: GatewayProcess, destinations: DestinationsStore,
                                                        stored_other_syntaxes: dict[str, Any],
                                                        tmp_path: Path) -> None:
    """C-MOVE to a storescp that accepts Implicit VR Little Endian only, and C-GET with getscu (which proposes
    uncompressed syntaxes): every instance arrives, transcoded, with the stored pixels; none fails."""
    import numpy as np

    s = stored_other_syntaxes
    port = free_port()
    destinations.put(json.dumps({"destinations": [{"ae": "OLDWS", "host": "127.0.0.1", "port": port}]}).encode())
    with storescp(tmp_path / "moved", port, ae_title="OLDWS", implicit_only=True) as out:
        res = dcmtk("movescu", "-S", "-d", "-aet", "MOVESCU", "-aec", "DICOMFLOW", "-aem", "OLDWS",
                    "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={s['study']}",
                    "-k", f"SeriesInstanceUID={s['series']}", "127.0.0.1", str(gateway.port))
        assert res.returncode == 0, res.stderr
        wait_until(lambda: len(list(out.iterdir())) >= len(s["sops"]), what="the moved files")
        moved = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    assert suboperations(res.stdout + res.stderr) == {"completed": len(s["sops"]), "failed": 0, "warning": 0}
    got = tmp_path / "got"
    got.mkdir()
    res = dcmtk("getscu", "-S", "-d", "-aet", "GETSCU", "-aec", "DICOMFLOW", "-od", str(got),
                "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={s['study']}",
                "-k", f"SeriesInstanceUID={s['series']}", "127.0.0.1", str(gateway.port))
    assert res.returncode == 0, res.stderr
    assert suboperations(res.stdout + res.stderr).get("completed") == len(s["sops"]), res.stdout[-1500:]
    fetched = [pydicom.dcmread(p) for p in sorted(got.iterdir())]
    for files, allowed in ((moved, {"1.2.840.10008.1.2"}),
                           (fetched, {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})):
        assert sorted(str(ds.SOPInstanceUID) for ds in files) == sorted(s["sops"])
        for ds in files:
            assert ds.file_meta.TransferSyntaxUID in allowed, ds.file_meta.TransferSyntaxUID
            np.testing.assert_array_equal(ds.pixel_array, s["pixels"])


# -- Orthanc as a remote modality ----------------------------------------------------------------------------

class OrthancPeer(OrthancProcess):
    def __init__(self, folder: Path, gateway_port: int) -> None:
        super().__init__(folder)
        self.gateway_port = gateway_port

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update({"DicomAet": "ORTHANC", "DicomModalities": {"dicomflow": ["DICOMFLOW", "127.0.0.1",
                                                                              self.gateway_port]},
                    "DicomScpTimeout": 30})
        return cfg


@pytest.fixture(scope="module")
def orthanc(gateway: GatewayProcess, destinations: DestinationsStore,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    if not available():
        pytest.fail("Orthanc or its DICOMweb plugin is missing: install the test peers ('make peers')")
    with OrthancPeer(tmp_path_factory.mktemp("orthanc"), gateway.port) as peer:
        destinations.put(json.dumps({"destinations": [
            {"ae": "ORTHANC", "host": "127.0.0.1", "port": peer.dicom_port}]}).encode())
        yield peer


def test_orthanc_moves_a_study_from_us(orthanc: OrthancPeer, stored: dict[str, Any]) -> None:
    study = sorted(stored["studies"])[-1]
    n = sum(1 for e in stored["good"] if e["study_uid"] == study)
    r = requests.post(f"{orthanc.url}/modalities/dicomflow/move", timeout=120, json={
        "Level": "Study", "Resources": [{"StudyInstanceUID": study}], "TargetAet": "ORTHANC"})
    assert r.ok, r.text
    found = requests.post(f"{orthanc.url}/tools/find", timeout=10, json={
        "Level": "Instance", "Query": {"StudyInstanceUID": study}}).json()
    assert len(found) == n


def test_orthanc_stores_a_study_to_us(orthanc: OrthancPeer, devhost: DevHostProcess, tmp_path: Path) -> None:
    out = tmp_path / "fromorthanc"
    write_corpus(out, CorpusOptions(patients=1, slices=3, rows=16, cols=16, seed=777, broken=False))
    files = [e for e in load_manifest(out)["files"] if e["modality"] == "CT"]
    ids = [orthanc.upload(out / e["path"])["ParentStudy"] for e in files]
    r = requests.post(f"{orthanc.url}/modalities/dicomflow/store", json={"Resources": [ids[0]]}, timeout=60)
    assert r.ok, r.text
    study = files[0]["study_uid"]
    _wait_stable(devhost, {study: len(files)})
    assert {_uid(d, "00080018") for d in _qido(devhost, f"/studies/{study}/instances")} == {
        e["sop_uid"] for e in files}


def test_storage_commitment_for_stored_and_unknown_instances(orthanc: OrthancPeer, stored: dict[str, Any]) -> None:
    known = stored["good"][:2]
    unknown = ("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.8.498.999999999")
    instances = [[e["sop_class_uid"], e["sop_uid"]] for e in known] + [list(unknown)]
    r = requests.post(f"{orthanc.url}/modalities/dicomflow/storage-commitment", timeout=30,
                      json={"DicomInstances": instances, "Timeout": 30})
    assert r.ok, r.text
    path = r.json()["Path"]

    def report() -> dict[str, Any] | None:
        got = requests.get(f"{orthanc.url}{path}", timeout=10).json()
        return got if got.get("Status") != "Pending" else None

    wait_until(lambda: report() is not None, timeout=60, what="the storage commitment report")
    got = report()
    assert got is not None
    assert got["Status"] == "Failure"  # one instance is unknown
    assert {s["SOPInstanceUID"] for s in got["Success"]} == {e["sop_uid"] for e in known}
    assert [f["SOPInstanceUID"] for f in got["Failures"]] == [unknown[1]]
    assert got["Failures"][0]["FailureReason"] == 0x0112


# -- who may talk to it -------------------------------------------------------------------------------------

def test_calling_ae_not_on_the_allow_list_and_wrong_called_ae_are_rejected(gateway: GatewayProcess) -> None:
    ok = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "DICOMFLOW", "127.0.0.1", str(gateway.port))
    assert ok.returncode == 0, ok.stderr
    intruder = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "DICOMFLOW", "127.0.0.1", str(gateway.port))
    assert intruder.returncode != 0 and "reject" in (intruder.stderr + intruder.stdout).lower()
    wrong = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "SOMEPACS", "127.0.0.1", str(gateway.port))
    assert wrong.returncode != 0 and "reject" in (wrong.stderr + wrong.stdout).lower()


def test_tls_works_and_plain_tcp_is_refused_when_tls_is_required(devhost: DevHostProcess, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    gw = start_gateway(devhost.azurite.connection_string, tmp_path, DICOMFLOW_GATEWAY_TLS_CERT_FILE=str(cert),
                       DICOMFLOW_GATEWAY_TLS_KEY_FILE=str(key))
    try:
        secure = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "DICOMFLOW", "+tla", "+cf", str(cert), "127.0.0.1",
                       str(gw.port), timeout=30)
        assert secure.returncode == 0, secure.stderr
        plain = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "DICOMFLOW", "-to", "5", "-ta", "5", "127.0.0.1",
                      str(gw.port), timeout=30)
        assert plain.returncode != 0
        wait_until(lambda: "TLS handshake" in gw.logs(), timeout=10, what="the refused handshake in the log")
    finally:
        gw.stop()


# -- a PHI sentinel through every path ----------------------------------------------------------------------

#: Values nobody else uses: if any part of them reaches a log line or an event, the test names it.
SENTINEL_NAME, SENTINEL_ID, SENTINEL_ACCESSION = "Sentinelxq^Zorblat", "SNTL-7731-PHI", "SNTLACC991"
SENTINEL_PARTS = ("sentinelxq", "zorblat", "sntl-7731", "sntlacc991")


def test_a_phi_sentinel_leaves_no_trace_in_logs_or_events(devhost: DevHostProcess, gateway: GatewayProcess,
                                                          blob_service: BlobServiceClient, tmp_path: Path) -> None:
    """A patient whose name and ID are a sentinel goes through every door: an inbox upload named after the
    patient (and a broken one, quarantined), STOW-RS, QIDO-RS with the sentinel in the query string and in
    a path, ingest status by that blob name, DIMSE C-STORE and C-FIND. Afterwards no part of the sentinel
    is in the devhost's log (host and app), the gateway's log or any Dicom.* event."""
    from shared.storage.layout import log_name
    from tests.instances import instance, uid

    study = uid("sentinel", "study")
    series = uid("sentinel", "series")
    sops = [uid("sentinel", "sop", n) for n in range(3)]
    files = [instance(study, series, sop, name=SENTINEL_NAME, patient_id=SENTINEL_ID, accession=SENTINEL_ACCESSION,
                      number=n + 1) for n, sop in enumerate(sops)]
    # 1. The inbox, under the kind of name a modality gives: the patient's.
    inbox = blob_service.get_container_client(layout.INBOX)
    named, broken = f"{SENTINEL_NAME} {SENTINEL_ID}/CT 1.dcm", f"{SENTINEL_NAME}/broken.dcm"
    inbox.upload_blob(named, files[0], overwrite=True)
    inbox.upload_blob(broken, b"not a DICOM file at all", overwrite=True)
    # 2. STOW-RS.
    boundary = "sentinelboundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + files[1]
            + f"\r\n--{boundary}--\r\n".encode())
    stow = requests.post(f"{devhost.base_url}/dicomweb/studies", data=body, timeout=60, headers={
        **devhost.bearer("writer"), "Accept": "application/dicom+json",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert stow.status_code == 200, stow.text
    # 3. DIMSE C-STORE.
    dimse_file = tmp_path / "sentinel.dcm"
    dimse_file.write_bytes(files[2])
    assert _store(gateway, dimse_file).returncode == 0
    for sop in sops:
        devhost.wait_for_event(lambda ev, sop=sop: ev.get("type") == "Dicom.ImageCreated"
                               and ev["data"]["imageSopInstanceUid"] == sop, timeout=60)
    failed = devhost.wait_for_event(lambda ev: ev.get("type") == "Dicom.IngestFailed"
                                    and ev["data"].get("blobDigest") == log_name(broken), timeout=60)
    assert failed["data"]["reason"] == "not-dicom"
    # 4. QIDO-RS with the sentinel in the query string, ingest status by blob name, and a path value.
    found = _qido(devhost, "/studies", PatientName="sentinelxq*", PatientID=SENTINEL_ID)
    assert [_uid(d, "0020000D") for d in found] == [study]
    assert _get(devhost, "/ingest/status", blob=named)["state"] == "archived"
    bad = requests.get(f"{devhost.base_url}/dicomweb/studies/{SENTINEL_NAME}/series", headers=devhost.bearer("reader"),
                       timeout=30)
    assert bad.status_code == 400
    # 5. DIMSE C-FIND.
    (match,) = _find(gateway, tmp_path / "find", "QueryRetrieveLevel=STUDY", "PatientName=Sentinelxq*",
                     "StudyInstanceUID")
    assert match.StudyInstanceUID == study

    host_log, gateway_log = devhost.logs(), gateway.logs()
    events = [e for e in devhost.published_events() if str(e.get("type", "")).startswith("Dicom.")]
    # The traffic was logged, by digest and UIDs:
    assert log_name(named) in host_log and "study=invalid" in host_log and "audit" in host_log
    assert "C-FIND" in gateway_log and sops[2] in gateway_log
    text = (host_log + gateway_log + json.dumps(events)).lower()
    leaked = [part for part in SENTINEL_PARTS if part in text]
    assert not leaked, f"the sentinel {leaked} reached a log or an event"


# -- last: what the module's traffic left in the logs ----------------------------------------------------

def test_logs_and_events_carry_no_patient_data(devhost: DevHostProcess, gateway: GatewayProcess,
                                               stored: dict[str, Any]) -> None:
    text = gateway.logs() + json.dumps(devhost.published_events())
    assert "C-STORE" in gateway.logs() and "C-FIND" in gateway.logs()
    for p in stored["manifest"]["patients"]:
        for value in (p["name"].split("^")[0], p["name"].split("^")[0].upper(), p["patient_id"]):
            assert value not in text
