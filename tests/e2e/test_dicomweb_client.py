"""DICOMweb end to end: ``dicomweb-client`` (a real client nobody here wrote) against the devhost.

One module-scoped devhost runs the real app. A small synthetic corpus (pydicom's own
files with fresh UIDs and chosen patients: accents, Japanese groups, an OData-looking
PatientID, native / RLE / JPEG multi-frame pixel data) is stored with STOW-RS, then
searched, retrieved (instances, metadata, frames, bulk data) and deleted through the
client. Frames are compared with pydicom's decoding of the original files.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from devhost.testing import DevHostProcess
from shared.dicomweb.attributes import Level
from tests.e2e.conftest import AUTH_ENV, ROOT

pytestmark = pytest.mark.slow
STOW_LIMIT = 8 * 1024 * 1024


def _uid() -> str:
    return generate_uid(prefix="1.2.826.0.1.3680043.10.1341.")


@dataclass
class Study:
    uid: str
    patient_name: str
    patient_id: str
    accession: str
    date: str
    run: str = ""
    instances: list[Dataset] = field(default_factory=list)


def _instance(name: str, study: Study, series_uid: str, number: int, modality: str | None = None) -> Dataset:
    path = get_testdata_file(name)
    assert path, name
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = _uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.AccessionNumber = study.accession
    ds.StudyDate = study.date
    ds.StudyTime = "101500"
    ds.InstanceNumber = number
    if modality:
        ds.Modality = modality
    return ds


def build_corpus() -> list[Study]:
    """Four studies; their PatientIDs and accession numbers carry a token unique to this call."""
    run = uuid.uuid4().hex[:8]
    a = Study(_uid(), "Müller^Jürgen", f"PA-{run}", f"ACA{run}", "20240315", run)
    b = Study(_uid(), "Yamada^Tarou=山田^太郎=やまだ^たろう", f"Q{run}' or ''eq''", f"ACB{run}", "20231201", run)
    c = Study(_uid(), "Öberg", f"PC-{run}", f"ACC{run}", "20240101", run)
    d = Study(_uid(), "Smith", f"PD-{run}", f"ACD{run}", "20240320", run)
    se = _uid()
    a.instances = [_instance("CT_small.dcm", a, se, n) for n in (1, 2, 3)]
    se = _uid()
    b.instances = [_instance("MR_small.dcm", b, se, n) for n in (1, 2)]
    c.instances = [_instance("rtdose.dcm", c, _uid(), 1), _instance("rtdose_rle.dcm", c, _uid(), 1)]
    d.instances = [_instance("examples_ybr_color.dcm", d, _uid(), 1, modality="US")]
    return [a, b, c, d]


def to_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def corpus() -> list[Study]:
    return build_corpus()


@pytest.fixture(scope="module")
def dh(azurite, tmp_path_factory) -> DevHostProcess:
    env = {**AUTH_ENV, "DICOMFLOW_STABLE_AGE_SECONDS": "0", "DICOMFLOW_SETTLE_DELAY_SECONDS": "0",
           "DICOMFLOW_STOW_MAX_BYTES": str(STOW_LIMIT), "DICOMFLOW_STOW_WAIT_SECONDS": "20"}
    folder = tmp_path_factory.mktemp("devhost-dicomweb")
    # Only the subscriptions DICOMweb needs (the ingest path): other consumers are not under test here.
    events = json.loads((ROOT / "infra" / "events.json").read_text())
    events["subscriptions"] = [s for s in events["subscriptions"] if s["function"] == "ingest"]
    (folder / "events.json").write_text(json.dumps(events))
    proc = DevHostProcess(app="function_app:app", events=folder / "events.json", azurite=azurite, env=env,
                          settings=ROOT / "local.settings.example.json", state_dir=folder / "state",
                          watch_from_now=True)
    with proc:
        yield proc


@pytest.fixture(scope="module")
def client(dh: DevHostProcess) -> DICOMwebClient:
    """A client with an admin token (the data owner: stores, reads and deletes)."""
    return DICOMwebClient(url=f"{dh.base_url}/dicomweb", headers=dh.bearer("admin"))


@pytest.fixture(scope="module")
def stored(client: DICOMwebClient, corpus: list[Study]) -> list[Study]:
    """The corpus stored with STOW-RS (one request per study) and settled (study rows queryable)."""
    for study in corpus:
        # Reload from bytes: what the client sends is exactly what a file on disk holds.
        datasets = [pydicom.dcmread(io.BytesIO(to_bytes(ds))) for ds in study.instances]
        response = client.store_instances(datasets, study_instance_uid=study.uid)
        refs = response.get("ReferencedSOPSequence", [])
        assert {r.ReferencedSOPInstanceUID for r in refs} == {ds.SOPInstanceUID for ds in study.instances}
        assert "FailedSOPSequence" not in response
        assert all(r.RetrieveURL.endswith(r.ReferencedSOPInstanceUID) for r in refs)
    uids = [s.uid for s in corpus]
    expected = {s.uid: len(s.instances) for s in corpus}
    deadline = time.monotonic() + 60
    while True:  # settle computes the study rows (aggregates, lookups) after ingest: bounded wait
        found = client.search_for_studies(search_filters={"StudyInstanceUID": uids})
        counts = {f["0020000D"]["Value"][0]: f.get("00201208", {}).get("Value", [0])[0] for f in found}
        lookups_ready = client.search_for_studies(search_filters={"PatientID": corpus[0].patient_id})
        if counts == expected and lookups_ready:
            return corpus
        assert time.monotonic() < deadline, f"studies not settled: {counts} != {expected}"
        time.sleep(0.3)


def uids(results: list[dict], tag: str = "0020000D") -> set[str]:
    return {r[tag]["Value"][0] for r in results}


# -- QIDO-RS ---------------------------------------------------------------------------------------
def test_search_studies_by_keys(client: DICOMwebClient, stored: list[Study]) -> None:
    a, _, c, d = stored
    assert uids(client.search_for_studies(search_filters={"PatientID": a.patient_id})) == {a.uid}
    assert uids(client.search_for_studies(search_filters={"AccessionNumber": c.accession})) == {c.uid}
    assert uids(client.search_for_studies(search_filters={"00100020": d.patient_id})) == {d.uid}  # by tag
    found = client.search_for_studies(search_filters={"StudyInstanceUID": a.uid})
    (obj,) = found
    assert obj["00080005"]["Value"] == ["ISO_IR 192"]
    assert obj["00201206"]["Value"] == [1] and obj["00201208"]["Value"] == [3]
    assert obj["00080061"]["Value"] == ["CT"]
    assert obj["00100010"]["Value"][0]["Alphabetic"] == "Müller^Jürgen"


def test_search_wildcards_ranges_and_names(client: DICOMwebClient, stored: list[Study]) -> None:
    a, b, c, d = stored
    mine = {s.uid for s in stored}

    def studies(fuzzy: bool = False, **filters: object) -> set[str]:
        return uids(client.search_for_studies(search_filters=filters, fuzzymatching=fuzzy or None)) & mine

    assert studies(PatientID=f"P?-{a.run}") == {a.uid, c.uid, d.uid}
    assert studies(AccessionNumber=f"AC*{a.run}") == mine
    assert studies(PatientID=a.patient_id, StudyDate="20240301-20240331") == {a.uid}
    assert studies(PatientID=d.patient_id, StudyDate="20240316-") == {d.uid}
    assert studies(PatientID=c.patient_id, StudyDate="-20231231") == set()
    assert studies(PatientID=a.patient_id, PatientName="muller^jurgen") == {a.uid}  # PN_CASE_ACCENT_INSENSITIVE
    assert studies(PatientID=b.patient_id, PatientName="YAMADA^tarou") == {b.uid}
    # Non-ASCII query values ("jürg", "山田^太郎": rule PN_ANY_GROUP) are covered by the unit tests: the
    # devhost does not yet pass them through (devhost/host.py _asgi_scope re-encodes the decoded query).
    assert studies(PatientName="jurg", fuzzy=True) >= {a.uid}  # PN_FUZZY_PREFIX (+ accent-insensitive)
    assert studies(PatientID=a.patient_id, PatientName="jurg") == set()  # no fuzzy: exact


def test_non_latin_and_accented_queries_through_the_service(azurite, stored: list[Study]) -> None:
    """The same QIDO service the HTTP functions call, with UTF-8 values the devhost cannot pass through yet."""
    from shared.config import Settings
    from shared.dicomweb import service

    a, b = stored[0], stored[1]
    settings = Settings.from_env({"DicomStorage": azurite.connection_string})

    def studies(*params: tuple[str, str]) -> set[str]:
        reply = service.search(service.Call(settings=settings, base_url="http://h/api/dicomweb",
                                            params=list(params)), Level.STUDY)
        return uids(json.loads(reply.body)) & {s.uid for s in stored}  # Azurite is shared with other tests

    assert studies(("PatientName", "山田^太郎")) == {b.uid}  # rule PN_ANY_GROUP (ideographic group)
    assert studies(("PatientName", "やまだ*")) == {b.uid}  # phonetic group, wildcard
    assert studies(("PatientName", "MÜLLER^JÜRGEN")) == {a.uid}
    assert studies(("PatientName", "jürg"), ("fuzzymatching", "true")) >= {a.uid}  # rule PN_FUZZY_PREFIX


def test_odata_injection_matches_literally(client: DICOMwebClient, stored: list[Study]) -> None:
    b = stored[1]
    assert uids(client.search_for_studies(search_filters={"PatientID": b.patient_id})) == {b.uid}
    for attack in (f"Q{b.run}' or PatientID ne '", "' or '1' eq '1", f"Q{b.run}' or ''eq''x"):
        assert client.search_for_studies(search_filters={"PatientID": attack}) == []


def test_search_series_and_instances_at_every_nesting(client: DICOMwebClient, stored: list[Study]) -> None:
    a, b, c, d = stored
    series = client.search_for_series(study_instance_uid=c.uid)
    assert len(series) == 2 and all(s["00080060"]["Value"] == ["RTDOSE"] for s in series)
    assert uids(client.search_for_series(search_filters={"PatientID": d.patient_id, "Modality": "US"}),
                "0020000E") == {d.instances[0].SeriesInstanceUID}
    inst = client.search_for_instances(study_instance_uid=a.uid)
    assert uids(inst, "00080018") == {ds.SOPInstanceUID for ds in a.instances}
    se = a.instances[0].SeriesInstanceUID
    one = client.search_for_instances(study_instance_uid=a.uid, series_instance_uid=se,
                                      search_filters={"InstanceNumber": "2"})
    assert uids(one, "00080018") == {a.instances[1].SOPInstanceUID}
    assert uids(client.search_for_instances(search_filters={"PatientID": b.patient_id}), "00080018") == {
        ds.SOPInstanceUID for ds in b.instances}
    page1 = client.search_for_instances(study_instance_uid=a.uid, limit=2)
    page2 = client.search_for_instances(study_instance_uid=a.uid, limit=2, offset=2)
    assert len(page1) == 2 and len(page2) == 1
    assert uids(page1 + page2, "00080018") == {ds.SOPInstanceUID for ds in a.instances}


def test_plan_is_named_and_keyed_queries_do_not_scan(dh: DevHostProcess, stored: list[Study]) -> None:
    a = stored[0]
    base, key = f"{dh.base_url}/dicomweb", dh.bearer("reader")
    for params, plan in (({"PatientID": a.patient_id}, "lookup:PatientID"),
                         ({"AccessionNumber": a.accession}, "lookup:AccessionNumber"),
                         ({"StudyInstanceUID": a.uid}, "key:StudyInstanceUID"),
                         ({"StudyDate": "20240315"}, "lookup:StudyDate")):
        r = requests.get(f"{base}/studies", params=params, headers=key, timeout=30)
        assert r.status_code == 200 and r.headers["X-Dicomflow-Plan"] == plan, (params, r.headers)
        assert r.headers["Content-Type"].startswith("application/dicom+json")


# -- WADO-RS ---------------------------------------------------------------------------------------
def test_retrieve_instance_series_and_study(client: DICOMwebClient, stored: list[Study]) -> None:
    a = stored[0]
    ds = a.instances[1]
    got = client.retrieve_instance(a.uid, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert to_bytes(got) == to_bytes(ds)
    series = client.retrieve_series(a.uid, ds.SeriesInstanceUID)
    assert {x.SOPInstanceUID for x in series} == {x.SOPInstanceUID for x in a.instances}
    study = client.retrieve_study(stored[2].uid)
    assert len(study) == 2


def test_metadata_at_each_level_with_resolving_bulk_data(client: DICOMwebClient, stored: list[Study]) -> None:
    a = stored[0]
    ds = a.instances[0]
    meta = client.retrieve_instance_metadata(a.uid, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert meta["00080018"]["Value"] == [ds.SOPInstanceUID]
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri.startswith(client.base_url)
    (pixels,) = client.retrieve_bulkdata(uri)
    assert pixels == ds.PixelData
    series_meta = client.retrieve_series_metadata(a.uid, ds.SeriesInstanceUID)
    assert {m["00080018"]["Value"][0] for m in series_meta} == {x.SOPInstanceUID for x in a.instances}
    study_meta = client.retrieve_study_metadata(stored[2].uid)
    assert len(study_meta) == 2


def test_series_metadata_is_one_storage_read(azurite, stored: list[Study]) -> None:
    """A small series' metadata is its instance rows (they hold the DICOM JSON): one table query, no blob
    (a series of 20 or more instances is served from its settled bundle instead: tests/integration/
    test_settle_bundle.py pins that cost)."""
    from shared.config import Settings
    from shared.dicomweb.wado import Wado
    from shared.services import Services

    a = stored[0]
    svc = Services.from_settings(Settings.from_env({"DicomStorage": azurite.connection_string}))
    reply = Wado(svc.blobs, svc.index).series_metadata(None, "http://h/api/dicomweb", a.uid,
                                                       a.instances[0].SeriesInstanceUID)
    assert len(a.instances) < 20
    assert svc.requests.snapshot() == {"table GET": 1}
    assert len(json.loads(reply.body)) == len(a.instances)


def test_every_bulk_data_uri_in_the_metadata_resolves(client: DICOMwebClient, corpus: list[Study]) -> None:
    """Top-level and nested binary values (a private blob, an icon inside a sequence) come back byte-exact."""
    extra = Study(_uid(), "Bulk^Data", f"PB-{corpus[0].run}", f"ACF{corpus[0].run}", "20240105", corpus[0].run)
    ds = _instance("CT_small.dcm", extra, _uid(), 1)
    ds.add_new(0x00090010, "LO", "DICOMFLOW TEST")
    ds.add_new(0x00091001, "OB", bytes(range(256)) * 8)  # 2 KiB: above the inline threshold
    icon = Dataset()
    icon.Rows, icon.Columns, icon.BitsAllocated, icon.BitsStored, icon.HighBit = 64, 64, 8, 8, 7
    icon.SamplesPerPixel, icon.PhotometricInterpretation, icon.PixelRepresentation = 1, "MONOCHROME2", 0
    icon.PixelData = bytes(reversed(range(256))) * 16
    icon["PixelData"].VR = "OB"
    ds.IconImageSequence = [icon]
    client.store_instances([pydicom.dcmread(io.BytesIO(to_bytes(ds)))])
    meta = client.retrieve_instance_metadata(extra.uid, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    uris = {"private": meta["00091001"]["BulkDataURI"], "pixels": meta["7FE00010"]["BulkDataURI"],
            "icon": meta["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]}
    got = {k: b"".join(bytes(p) for p in client.retrieve_bulkdata(u)) for k, u in uris.items()}
    assert got == {"private": ds[0x00091001].value, "pixels": ds.PixelData, "icon": icon.PixelData}


def _single_frame_pixels(original: Dataset, frame: bytes, encapsulated: bool) -> np.ndarray:
    one = pydicom.dcmread(io.BytesIO(to_bytes(original)))
    frame = bytes(frame)  # dicomweb-client hands out bytearrays
    one.PixelData = encapsulate([frame]) if encapsulated else frame
    one.NumberOfFrames = 1
    return one.pixel_array


def test_frames_equal_pydicoms_decoding(client: DICOMwebClient, stored: list[Study]) -> None:
    c, d = stored[2], stored[3]
    native, rle = (pydicom.dcmread(io.BytesIO(to_bytes(x))) for x in c.instances)  # the originals as stored
    for ds, encapsulated in ((native, False), (rle, True)):
        frames = client.retrieve_instance_frames(c.uid, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                                 frame_numbers=[1, 3, 15])
        assert len(frames) == 3, frames
        for n, frame in zip((1, 3, 15), frames, strict=True):
            np.testing.assert_array_equal(_single_frame_pixels(ds, frame, encapsulated), ds.pixel_array[n - 1])
    jpeg = pydicom.dcmread(io.BytesIO(to_bytes(d.instances[0])))
    frames = client.retrieve_instance_frames(d.uid, jpeg.SeriesInstanceUID, jpeg.SOPInstanceUID,
                                             frame_numbers=[2, 30])
    theirs = list(generate_frames(jpeg.PixelData, number_of_frames=30))
    assert [bytes(f) for f in frames] == [theirs[1], theirs[29]]


def test_frames_for_a_viewer_asking_any_syntax(dh: DevHostProcess, stored: list[Study]) -> None:
    """OHIF asks type="application/octet-stream"; transfer-syntax=*: compressed frames come labelled as stored."""
    d = stored[3]
    jpeg = d.instances[0]
    url = (f"{dh.base_url}/dicomweb/studies/{d.uid}/series/{jpeg.SeriesInstanceUID}/instances/"
           f"{jpeg.SOPInstanceUID}/frames/1")
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    r = requests.get(url, headers={**dh.bearer("reader"), "Accept": accept}, timeout=30)
    assert r.status_code == 200
    assert 'type="image/jpeg"' in r.headers["Content-Type"]
    assert b"Content-Type: image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50" in r.content[:300]


def test_transcoding_on_retrieve_with_dicomweb_client(client: DICOMwebClient, stored: list[Study]) -> None:
    """A client that decodes nothing: the JPEG ultrasound's frames and the RLE dose as Explicit VR Little Endian
    (octet-stream frames, a Part 10 instance), equal to pydicom's decoding of the stored files."""
    d, c = stored[3], stored[2]
    us = d.instances[0]
    ele = "1.2.840.10008.1.2.1"
    frames = client.retrieve_instance_frames(d.uid, us.SeriesInstanceUID, us.SOPInstanceUID, frame_numbers=[2],
                                             media_types=(("application/octet-stream", ele),))
    expected = us.pixel_array[1]
    assert np.frombuffer(frames[0], np.uint8).reshape(expected.shape).tolist() == expected.tolist()
    rle = c.instances[1]
    got = client.retrieve_instance(c.uid, rle.SeriesInstanceUID, rle.SOPInstanceUID,
                                   media_types=(("application/dicom", ele),))
    assert got.file_meta.TransferSyntaxUID == ele
    np.testing.assert_array_equal(got.pixel_array, rle.pixel_array)


def test_rendered_and_thumbnails_at_every_level(dh: DevHostProcess, client: DICOMwebClient,
                                               stored: list[Study]) -> None:
    """JPEG/PNG pictures for a worklist or a web page: instance and frame through dicomweb-client, series and
    study rendered (one part per image) and thumbnails at every level over HTTP; bad input answered 4xx."""
    from PIL import Image

    a = stored[0]
    ct = a.instances[0]
    jpeg = client.retrieve_instance_rendered(a.uid, ct.SeriesInstanceUID, ct.SOPInstanceUID,
                                             media_types=("image/jpeg",), params={"window": "40,400"})
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (ct.Columns, ct.Rows)
    png = client.retrieve_instance_frames_rendered(a.uid, ct.SeriesInstanceUID, ct.SOPInstanceUID,
                                                   frame_numbers=[1], media_types=("image/png",))
    assert Image.open(io.BytesIO(png)).format == "PNG"
    base, key = f"{dh.base_url}/dicomweb/studies/{a.uid}", dh.bearer("reader")
    series = f"{base}/series/{ct.SeriesInstanceUID}"
    inst = f"{series}/instances/{ct.SOPInstanceUID}"
    for url in (f"{base}/thumbnail", f"{series}/thumbnail", f"{inst}/thumbnail", f"{inst}/frames/1/thumbnail"):
        r = requests.get(url, headers={**key, "Accept": "image/png"}, timeout=30)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", (url, r.text[:200])
        assert max(Image.open(io.BytesIO(r.content)).size) == 128
    r = requests.get(f"{series}/rendered", headers={**key, "Accept": "image/jpeg"}, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith('multipart/related; type="image/jpeg"')
    assert r.content.count(b"Content-Type: image/jpeg") == len(a.instances)
    for url, status, word in ((f"{inst}/rendered?window=soft", 400, "numbers"),
                              (f"{inst}/frames/2/rendered", 404, "1 frame"),
                              (f"{inst}/frames/1,2/rendered", 400, "one frame")):
        r = requests.get(url, headers=key, timeout=30)
        assert r.status_code == status and word in r.json()["error"], (url, r.status_code, r.text)


def test_frames_follow_a_replaced_instance(client: DICOMwebClient, stored: list[Study]) -> None:
    """Storing a new version of an instance (same UIDs, other pixels) must not serve stale frame ranges."""
    c = stored[2]
    native = pydicom.dcmread(io.BytesIO(to_bytes(c.instances[0])))
    ids = (c.uid, native.SeriesInstanceUID, native.SOPInstanceUID)
    before = client.retrieve_instance_frames(*ids, frame_numbers=[2])  # the frame index exists now
    native.PixelData = native.PixelData[::-1]
    native.ContentDescription = "x" * 33  # shifts the pixel data offset too
    response = client.store_instances([native])
    assert "FailedSOPSequence" not in response
    (after,) = client.retrieve_instance_frames(*ids, frame_numbers=[2])
    flen = len(native.PixelData) // 15
    assert bytes(after) == native.PixelData[flen:2 * flen] != bytes(before[0])


DONE = ("archived", "duplicate", "updated")


def test_files_archived_without_file_meta_are_retrieved_as_part10(dh: DevHostProcess, azurite,
                                                                   client: DICOMwebClient) -> None:
    """pydicom's bare data sets (no preamble, no File Meta Information) come back as valid Part 10 files."""
    from azure.storage.blob import BlobServiceClient

    inbox = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("dicom-inbox")
    # One after the other: the two ExplVR files are one instance (same UIDs) in two encodings.
    for name in ("ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "rtstruct.dcm"):
        with open(get_testdata_file(name), "rb") as f:
            data = f.read()
        blob = f"no-meta/{uuid.uuid4().hex[:8]}/{name}"
        inbox.upload_blob(blob, data)
        bare = pydicom.dcmread(io.BytesIO(data), force=True)
        deadline = time.monotonic() + 60
        while (state := requests.get(f"{dh.base_url}/ingest/status", params={"blob": blob}, timeout=30,
                                     headers=dh.bearer("reader")).json().get("state")) not in DONE:
            assert time.monotonic() < deadline, (name, state)
            time.sleep(0.2)
        got = client.retrieve_instance(bare.StudyInstanceUID, bare.SeriesInstanceUID, bare.SOPInstanceUID)
        assert got.file_meta.MediaStorageSOPInstanceUID == bare.SOPInstanceUID, name
        assert got == bare, name
        url = (f"{dh.base_url}/dicomweb/studies/{bare.StudyInstanceUID}/series/{bare.SeriesInstanceUID}/"
               f"instances/{bare.SOPInstanceUID}")
        r = requests.get(url, timeout=30,
                         headers={**dh.bearer("reader"), "Accept": 'multipart/related; type="application/dicom"'})
        part = r.content.split(b"\r\n\r\n", 1)[1]
        assert part.startswith(b"\0" * 128 + b"DICM") and data in part  # framed; the data set's bytes unchanged


def test_big_endian_frames_are_served_little_endian(dh: DevHostProcess, azurite, client: DICOMwebClient) -> None:
    """application/octet-stream frames are little endian (PS3.18 8.7.3): a big-endian file's samples are swapped."""
    from azure.storage.blob import BlobServiceClient
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRBigEndian

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = ds.pixel_array.copy()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = _uid(), _uid(), _uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    blob = f"big-endian/{ds.SOPInstanceUID}.dcm"
    BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        "dicom-inbox", blob).upload_blob(buf.getvalue())
    deadline = time.monotonic() + 60
    while requests.get(f"{dh.base_url}/ingest/status", params={"blob": blob}, headers=dh.bearer("reader"),
                       timeout=30).json().get("state") != "archived":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    (frame,) = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                               frame_numbers=[1])
    assert bytes(frame) == pixels.astype("<i2").tobytes()


# -- bad input -------------------------------------------------------------------------------------
def test_bad_requests(dh: DevHostProcess, stored: list[Study]) -> None:
    a = stored[0]
    base, key = f"{dh.base_url}/dicomweb", dh.bearer("reader", "writer")
    ds = a.instances[0]
    inst = f"{base}/studies/{a.uid}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    cases = [
        ("GET", f"{base}/studies?limit=ten", {}, None, 400, "limit"),
        ("GET", f"{base}/studies?Frobnicate=1", {}, None, 400, "Frobnicate"),
        ("GET", f"{base}/studies/1.2.abc/series", {}, None, 400, "study"),
        ("GET", f"{base}/studies/{a.uid}/series/{ds.SeriesInstanceUID}/instances/1..2", {}, None, 400, "sop"),
        ("GET", f"{base}/studies/1.2.3.999999{int(a.run, 16)}", {}, None, 404, "no instances"),
        ("GET", f"{base}/studies/1.2.3.4/metadata", {}, None, 404, "metadata"),
        ("GET", f"{inst}/frames/0", {}, None, 400, "start at 1"),
        ("GET", f"{inst}/frames/99", {}, None, 404, "1 frame"),
        ("GET", inst, {"Accept": "application/dicom+xml"}, None, 406, "multipart/related"),
        ("GET", f"{inst}/metadata", {"Accept": "application/dicom+xml"}, None, 406, "dicom+json"),
        ("POST", f"{base}/studies", {"Content-Type": "application/json"}, b"{}", 415, "multipart/related"),
        ("POST", f"{base}/studies", {"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'},
         b"--B\r\nContent-Type: application/dicom\r\n\r\nabc", 400, "closing boundary"),
    ]
    for method, url, headers, body, status, word in cases:
        r = requests.request(method, url, headers={**key, **headers}, data=body, timeout=30)
        assert r.status_code == status, (url, r.status_code, r.text)
        assert word in r.json()["error"], (url, r.text)
    r = requests.get(f"{base}/studies", timeout=30)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


def _multipart(parts: list[bytes], boundary: str = "dicomflowtest") -> tuple[bytes, str]:
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_stow_failures_and_partial_success(dh: DevHostProcess, corpus: list[Study]) -> None:
    base, key = f"{dh.base_url}/dicomweb", {**dh.bearer("writer"), "Accept": "application/dicom+json"}
    run = corpus[0].run
    extra = Study(_uid(), "Partial^Pat", f"PE-{run}", f"ACE{run}", "20240102", run)
    good = _instance("MR_small.dcm", extra, _uid(), 1)
    body, ctype = _multipart([to_bytes(good), b"this is not DICOM at all"])
    r = requests.post(f"{base}/studies", data=body, headers={**key, "Content-Type": ctype}, timeout=60)
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["00081199"]["Value"][0]["00081155"]["Value"] == [good.SOPInstanceUID]
    assert out["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    # Every part of another study than the URL's: nothing stored -> 409 with 0xA900.
    other = _instance("MR_small.dcm", extra, _uid(), 2)
    body, ctype = _multipart([to_bytes(other)])
    r = requests.post(f"{base}/studies/{corpus[0].uid}", data=body, headers={**key, "Content-Type": ctype},
                      timeout=60)
    assert r.status_code == 409, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    # Storing the same instance again succeeds (rule STOW_IDEMPOTENT).
    body, ctype = _multipart([to_bytes(good)])
    r = requests.post(f"{base}/studies", data=body, headers={**key, "Content-Type": ctype}, timeout=60)
    assert r.status_code == 200, r.text


def test_oversized_stow_names_the_alternative(dh: DevHostProcess) -> None:
    body, ctype = _multipart([b"\0" * (STOW_LIMIT + 1)])
    r = requests.post(f"{dh.base_url}/dicomweb/studies", data=body, timeout=60,
                      headers={**dh.bearer("writer"), "Content-Type": ctype})
    assert r.status_code == 413
    assert "tools upload" in r.json()["error"] and "dicom-inbox" in r.json()["error"]


# -- DELETE (last: it changes the corpus) ----------------------------------------------------------
def test_delete_instance_series_and_study(client: DICOMwebClient, dh: DevHostProcess, stored: list[Study]) -> None:
    a, b = stored[0], stored[1]
    gone = a.instances[2]
    client.delete_instance(a.uid, gone.SeriesInstanceUID, gone.SOPInstanceUID)
    with pytest.raises(requests.HTTPError) as err:
        client.retrieve_instance(a.uid, gone.SeriesInstanceUID, gone.SOPInstanceUID)
    assert err.value.response.status_code == 404
    left = uids(client.search_for_instances(study_instance_uid=a.uid), "00080018")
    assert left == {a.instances[0].SOPInstanceUID, a.instances[1].SOPInstanceUID}
    dh.wait_for_event(lambda e: e.get("type") == "Dicom.ImageDeleted"
                      and e.get("subject", "").endswith(gone.SOPInstanceUID))
    client.delete_study(b.uid)
    with pytest.raises(requests.HTTPError):
        client.retrieve_study_metadata(b.uid)
    deadline = time.monotonic() + 30
    while client.search_for_studies(search_filters={"PatientID": b.patient_id}):  # settle removes lookups
        assert time.monotonic() < deadline, "study B still found by PatientID after DELETE"
        time.sleep(0.3)
    deleted = {e["subject"].rsplit("/", 1)[1] for e in dh.published_events(type="Dicom.ImageDeleted")}
    assert {ds.SOPInstanceUID for ds in b.instances} <= deleted
    with pytest.raises(requests.HTTPError) as err:
        client.delete_study(b.uid)
    assert err.value.response.status_code == 404


# -- streaming (large instance) --------------------------------------------------------------------
def test_large_instance_is_streamed_not_buffered(dh: DevHostProcess, azurite, client: DICOMwebClient) -> None:
    """A 48 MB multi-frame instance goes out chunk by chunk: the host's memory grows far less than the file."""
    import psutil
    from azure.storage.blob import BlobServiceClient

    frames, rows, cols = 48, 1024, 512  # 1 MiB per 16-bit frame
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = _uid(), _uid(), _uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    pixels = (np.arange(frames * rows * cols, dtype=np.uint32) % 65521).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    data = to_bytes(ds)
    name = f"big/{ds.SOPInstanceUID}.dcm"
    BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        "dicom-inbox", name).upload_blob(data, overwrite=True)
    key = dh.bearer("reader")
    deadline = time.monotonic() + 60
    while requests.get(f"{dh.base_url}/ingest/status", params={"blob": name}, headers=key,
                       timeout=30).json().get("state") != "archived":
        assert time.monotonic() < deadline, "the large instance was not archived"
        time.sleep(0.2)
    # Frames first (ranged reads via the frame index); this also warms the host's code paths up.
    got = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                          frame_numbers=[1, 48])
    frame_bytes = rows * cols * 2
    assert [bytes(f) for f in got] == [ds.PixelData[:frame_bytes], ds.PixelData[-frame_bytes:]]
    host = psutil.Process(dh.pid)
    baseline = host.memory_info().rss
    url = f"{dh.base_url}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/" \
          f"{ds.SOPInstanceUID}"
    peak, received = 0, bytearray()
    with requests.get(url, headers={**key, "Accept": 'multipart/related; type="application/dicom"'}, stream=True,
                      timeout=60) as r:
        assert r.status_code == 200 and "content-length" not in {k.lower() for k in r.headers}
        for chunk in r.iter_content(1024 * 1024):
            received += chunk
            peak = max(peak, host.memory_info().rss - baseline)
    assert len(received) > len(data) and data in received  # the whole file, inside one part
    # Buffering the response would grow the host by at least the file (48 MiB; measured: 164 MiB).
    assert peak < 32 * 1024 * 1024, f"host memory grew {peak >> 20} MiB while streaming a {len(data) >> 20} MiB file"
