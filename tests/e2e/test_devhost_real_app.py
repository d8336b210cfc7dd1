"""The real ``function_app:app`` on the devhost (the ``devhost`` fixture): an upload to the inbox is
ingested through the blob watcher + event fabric, announced as Dicom.ImageCreated, and reported by
GET /api/ingest/status. Proves the fixture others' end-to-end tests build on."""

from __future__ import annotations

import io
import time
import uuid

import pydicom
import requests
from azure.storage.blob import BlobServiceClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from devhost.azurite import Azurite
from devhost.testing import DevHostProcess


def test_upload_is_ingested_and_announced(devhost: DevHostProcess, azurite: Azurite) -> None:
    name = f"devhost-e2e/{uuid.uuid4().hex}.dcm"
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    # Fresh UIDs: the session's Azurite is shared, and another module may have stored CT_small already.
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    blobs.get_blob_client("dicom-inbox", name).upload_blob(buf.getvalue(), overwrite=True)
    created = devhost.wait_for_event(lambda e: e.get("eventType") == "Microsoft.Storage.BlobCreated"
                                     and e["subject"].endswith(name), topic="storage")
    assert created["data"]["url"].endswith(name)
    deadline = time.monotonic() + 30
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        r = requests.get(f"{devhost.base_url}/ingest/status", params={"blob": name},
                         headers=devhost.bearer("reader"), timeout=10)
        assert r.status_code == 200
        body = r.json()
        if body.get("state") not in (None, "pending", "unknown"):
            break
        time.sleep(0.2)
    assert body.get("state") in ("archived", "duplicate"), body
    sop = body["sop"]
    event = devhost.wait_for_event(lambda e: e.get("type") in ("Dicom.ImageCreated", "Dicom.ImageUpdated")
                                   and e.get("data", {}).get("imageSopInstanceUid") == sop, topic="dicom")
    assert event["subject"].endswith(f"/instances/{sop}")
    assert "Executed 'Functions.ingest' (Succeeded" in devhost.logs()
    assert requests.get(f"{devhost.base_url}/ingest/status", timeout=10).status_code == 401
