"""The change feed and read-your-writes, end to end on the devhost with a real HTTP client.

* What ingest reports ``archived`` is found by QIDO at every level in the same step, before any settle
  run (a settle delay of 60 s keeps settle out of the way; only aggregates wait for it).
* The change feed (Azure DICOM v2 shape) lists what was ingested, updated and deleted, in sequence order,
  paged with offset/limit inside a [startTime, endTime) window, with states and metadata.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Callable
from typing import Any

import pydicom
import requests
from azure.storage.blob import BlobServiceClient
from pydicom.data import get_testdata_file

from devhost.testing import DevHostProcess
from shared.storage import layout
from tests.e2e.conftest import AUTH_ENV
from tests.instances import instance, uid
from tests.waiting import wait_until


def put(dh: DevHostProcess, name: str, data: bytes) -> None:
    BlobServiceClient.from_connection_string(dh.azurite.connection_string).get_blob_client(
        layout.INBOX, name).upload_blob(data, overwrite=True)


def status(dh: DevHostProcess, name: str) -> dict[str, Any]:
    r = requests.get(f"{dh.base_url}/ingest/status", params={"blob": name}, headers=dh.bearer("reader"),
                     timeout=30)
    r.raise_for_status()
    return dict(r.json())


def get(dh: DevHostProcess, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{dh.base_url}/dicomweb/{path}", params=params, headers=dh.bearer("reader"), timeout=30)


def uids(found: list[dict[str, Any]], tag: str) -> set[str]:
    return {o[tag]["Value"][0] for o in found}


def test_what_ingest_archived_is_found_at_every_level_before_settle(
        devhost_factory: Callable[..., DevHostProcess]) -> None:
    dh = devhost_factory(env={**AUTH_ENV, "DICOMFLOW_SETTLE_DELAY_SECONDS": "60",
                              "DICOMFLOW_STABLE_AGE_SECONDS": "120"})
    tag = uuid.uuid4().hex[:8]
    study, pid = uid(tag, "study"), f"RYW-{tag}"
    items = [(uid(tag, "se", s), uid(tag, "sop", s, i)) for s in range(2) for i in range(3)]
    for k, (series, sop) in enumerate(items):
        name = f"ryw/{tag}/{k}.dcm"
        put(dh, name, instance(study, series, sop, patient_id=pid, name="Ryw^Test", modality="MR" if k < 3 else "CT",
                               number=k + 1))
        wait_until(lambda n=name: status(dh, n)["state"] == "archived", timeout=60, what=f"{name} archived")
        # The same step: every level finds it, by a lookup key and by its UIDs.
        assert study in uids(get(dh, "studies", PatientID=pid).json(), "0020000D")
        assert series in uids(get(dh, "series", PatientID=pid).json(), "0020000E")
        assert sop in uids(get(dh, "instances", SOPInstanceUID=sop).json(), "00080018")
        assert sop in uids(get(dh, f"studies/{study}/series/{series}/instances").json(), "00080018")
    assert uids(get(dh, "series", Modality="CT", PatientID=pid).json(), "0020000E") == {s for s, _ in items[3:]}
    assert uids(get(dh, f"studies/{study}/series").json(), "0020000E") == {s for s, _ in items}
    # Nothing has settled (60 s): aggregates are not there yet, the study is.
    (found,) = get(dh, "studies", PatientID=pid, includefield="NumberOfStudyRelatedInstances").json()
    assert "Value" not in found.get("00201208", {})
    assert not [e for e in dh.published_events(type="Dicom.ImageCreated")
                if e["data"]["imageStudyInstanceUid"] == study]


def feed(dh: DevHostProcess, **params: Any) -> list[dict[str, Any]]:
    r = get(dh, "changefeed", **params)
    assert r.status_code == 200, r.text
    return list(r.json())


def test_the_change_feed_lists_creates_updates_and_deletes_in_order(devhost: DevHostProcess) -> None:
    dh = devhost
    start = dt.datetime.now(dt.UTC).isoformat()
    tag = uuid.uuid4().hex[:8]
    study = uid(tag, "study")
    series = uid(tag, "series")
    sops = [uid(tag, "sop", i) for i in range(4)]
    for i, sop in enumerate(sops):
        put(dh, f"feed/{tag}/{i}.dcm", instance(study, series, sop, number=i + 1, patient_id=f"FEED-{tag}"))
    put(dh, f"feed/{tag}/0-v2.dcm", instance(study, series, sops[0], number=1, patient_id=f"FEED-{tag}", pixel=9))
    for name in [f"feed/{tag}/{i}.dcm" for i in range(4)] + [f"feed/{tag}/0-v2.dcm"]:
        wait_until(lambda n=name: status(dh, n)["state"] in ("archived", "updated"), timeout=60, what=name)

    def mine() -> list[dict[str, Any]]:
        return [e for e in feed(dh, startTime=start, limit=200, includemetadata="false")
                if e["StudyInstanceUID"] == study]

    wait_until(lambda: len(mine()) == 5, timeout=60, what="5 feed entries")
    r = requests.delete(f"{dh.base_url}/dicomweb/studies/{study}/series/{series}/instances/{sops[3]}",
                        headers=dh.bearer("admin"), timeout=30)
    assert r.status_code == 204, r.text
    wait_until(lambda: len(mine()) == 6, timeout=60, what="the delete's feed entry")

    entries = mine()
    assert [e["Sequence"] for e in entries] == sorted(e["Sequence"] for e in entries)
    assert len({e["Sequence"] for e in entries}) == 6
    by_sop: dict[str, list[tuple[str, str]]] = {}
    for e in entries:
        by_sop.setdefault(e["SOPInstanceUID"], []).append((e["Action"], e["State"]))
    assert by_sop[sops[0]] == [("create", "replaced"), ("update", "current")]
    assert by_sop[sops[1]] == [("create", "current")] and by_sop[sops[2]] == [("create", "current")]
    assert by_sop[sops[3]] == [("create", "deleted"), ("delete", "deleted")]
    assert all(e["SeriesInstanceUID"] == series and e["Timestamp"].endswith("Z") for e in entries)

    # Paging: offset/limit walk the same window in the same order.
    window = feed(dh, startTime=start, limit=200, includemetadata="false")
    paged: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = feed(dh, startTime=start, offset=offset, limit=2, includemetadata="false")
        assert len(page) <= 2
        if not page:
            break
        paged += page
        offset += len(page)
    assert [e["Sequence"] for e in paged] == [e["Sequence"] for e in window]
    # endTime is exclusive: the window up to the last entry's own time leaves it (and its millisecond) out.
    last = entries[-1]
    before = feed(dh, startTime=start, endTime=last["Timestamp"], limit=200, includemetadata="false")
    assert last["Sequence"] not in {e["Sequence"] for e in before}
    # Metadata comes with current entries: the instance's DICOM JSON.
    with_meta = {e["SOPInstanceUID"]: e for e in feed(dh, startTime=start, limit=200)
                 if e["StudyInstanceUID"] == study and e["State"] == "current"}
    assert with_meta[sops[1]]["Metadata"]["00080018"]["Value"] == [sops[1]]
    latest = get(dh, "changefeed/latest", includemetadata="false").json()
    assert latest["Sequence"] >= entries[-1]["Sequence"]
    assert get(dh, "changefeed", limit="500").status_code == 400
    assert get(dh, "changefeed", startTime="yesterday").status_code == 400
    assert requests.get(f"{dh.base_url}/dicomweb/changefeed", timeout=30).status_code == 401


def test_stow_acknowledged_is_queryable_at_once(devhost: DevHostProcess) -> None:
    """What a STOW-RS 200 acknowledged is found by QIDO in the next request."""
    from dicomweb_client.api import DICOMwebClient

    dh = devhost
    client = DICOMwebClient(f"{dh.base_url}/dicomweb", headers=dh.bearer("reader", "writer"))
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (uid("stow", uuid.uuid4().hex, n) for n in range(3))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = f"STOW-{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    client.store_instances([pydicom.dcmread(io.BytesIO(buf.getvalue()))])
    found = client.search_for_instances(search_filters={"PatientID": ds.PatientID})
    assert uids(found, "00080018") == {ds.SOPInstanceUID}
