"""AI and routing end to end on the devhost with the real app.

Upload a CT series to the inbox → ingest → settle → ``Dicom.SeriesStable`` → inference writes a
SEG and an SR back to the inbox → ingest indexes them as derived → ``Dicom.StudyStable`` → the
routing rule sends the source CT instances to dcmtk's storescp, once, even though the study
becomes stable again when the AI results arrive. Derived series never run inference again.
"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from pydicom import dcmread

from devhost.azurite import free_port
from devhost.testing import DevHostProcess
from shared.config import Settings
from shared.inference.registry import ENABLE_BUILTIN
from shared.services import Services
from shared.storage import layout
from tests.integration.routing_peers import storescp
from tests.phantoms import PATIENT_ID, ellipsoid_ct
from tests.waiting import wait_until

pytestmark = pytest.mark.peers
INSTITUTION = "E2E Routing Hospital"  # the rule matches only this test's study (Azurite is shared)


def test_series_gets_ai_results_and_the_study_is_routed_once(devhost: DevHostProcess, tmp_path: Path) -> None:
    azure = BlobServiceClient.from_connection_string(devhost.azurite.connection_string)
    try:
        azure.create_container(layout.CONFIG)
    except ResourceExistsError:
        pass
    config = azure.get_container_client(layout.CONFIG)
    port = free_port()
    rules = {
        "rules": [
            {
                "name": "e2e-ct-to-pacs",
                "trigger": "Dicom.StudyStable",
                "conditions": {"Modality": "CT", "derived": False, "InstitutionName": INSTITUTION},
                "destinations": [{"type": "dicom", "aeTitle": "STORESCP", "host": "127.0.0.1", "port": port}],
                "retry": {"maxAttempts": 3, "backoffSeconds": 0},
            }
        ]
    }
    config.upload_blob(layout.RULES_DOC, orjson.dumps(rules), overwrite=True)
    config.upload_blob(layout.MODELS_DOC, ENABLE_BUILTIN, overwrite=True)  # inference is opt-in
    series = ellipsoid_ct(tag="e2e-ai", size=48, pixel_mm=3.5, slice_mm=12.0)
    for ds in series:
        ds.InstitutionName = INSTITUTION
    study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
    try:
        with storescp(tmp_path / "pacs", port) as received:
            inbox = azure.get_container_client(layout.INBOX)
            for k, ds in enumerate(series):
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                inbox.upload_blob(f"e2e-ai/{k:03d}.dcm", buf.getvalue(), overwrite=True)

            completed = devhost.wait_for_event(
                lambda e: (
                    e.get("type") == "Dicom.InferenceCompleted" and e["data"]["imageSeriesInstanceUid"] == series_uid
                ),
                timeout=120,
            )
            results = {r["sopInstanceUid"]: r for r in completed["data"]["results"]}
            assert {r["sopClassUid"] for r in results.values()} == {
                "1.2.840.10008.5.1.4.1.1.66.4",
                "1.2.840.10008.5.1.4.1.1.88.34",
            }

            # The results come back through ingest: archived, indexed as derived, announced.
            for sop in results:
                devhost.wait_for_event(
                    lambda e, sop=sop: (
                        e.get("type") == "Dicom.ImageCreated" and e["data"].get("imageSopInstanceUid") == sop
                    ),
                    timeout=120,
                )
            index = devhost_services(devhost).index
            for sop, r in results.items():
                stored = index.get_instance(study, r["seriesInstanceUid"], sop)
                assert stored is not None and stored.record.derived, sop

            # ...and queryable over QIDO-RS like any series of the study (once settle has run for it).
            seg_uids = {r["seriesInstanceUid"] for r in results.values() if r["sopClassUid"].endswith("66.4")}

            def seg_series_in_qido() -> bool:
                qido = requests.get(
                    f"{devhost.base_url}/dicomweb/studies/{study}/series",
                    params={"Modality": "SEG"},
                    headers={**devhost.bearer("reader"), "Accept": "application/dicom+json"},
                    timeout=30,
                )
                assert qido.status_code in (200, 204), qido.text[:500]
                found = qido.json() if qido.status_code == 200 else []
                return {item["0020000E"]["Value"][0] for item in found} == seg_uids

            wait_until(seg_series_in_qido, timeout=120, what="the SEG series in QIDO-RS")

            devhost.wait_for_event(
                lambda e: e.get("type") == "Dicom.RoutingCompleted" and e["data"]["imageStudyInstanceUid"] == study,
                timeout=120,
            )
            wait_until(lambda: len(list(received.iterdir())) >= len(series), timeout=30, what="storescp files")
            # The study becomes stable again once the SEG and SR are in: routing runs again, sends nothing new.
            seg_series = next(r["seriesInstanceUid"] for r in results.values() if r["sopClassUid"].endswith("66.4"))
            devhost.wait_for_event(
                lambda e: (
                    e.get("type") == "Dicom.SeriesStable" and e["data"].get("imageSeriesInstanceUid") == seg_series
                ),
                timeout=120,
            )
            stable_again = [
                e
                for e in devhost.published_events(type="Dicom.StudyStable")
                if e["data"]["imageStudyInstanceUid"] == study
            ]
            got = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in received.iterdir())
            assert got == sorted(str(ds.SOPInstanceUID) for ds in series)
            assert len(stable_again) >= 1
    finally:
        for name in (layout.RULES_DOC, layout.RULES_LAST_GOOD, layout.RULES_STATUS, layout.MODELS_DOC):
            try:
                config.delete_blob(name)
            except ResourceNotFoundError:
                pass

    # Derived series never run inference again; a series that became stable again (more slices
    # arrived) was re-run and its results replaced: the same result UIDs every time.
    inferred = [
        e
        for e in devhost.published_events(type="Dicom.InferenceCompleted")
        if e["data"]["imageStudyInstanceUid"] == study
    ]
    assert {e["data"]["imageSeriesInstanceUid"] for e in inferred} == {series_uid}
    assert all({r["sopInstanceUid"] for r in e["data"]["results"]} == set(results) for e in inferred)
    text = devhost.logs() + orjson.dumps(devhost.published_events()).decode()
    assert PATIENT_ID not in text and "Phantom^Ellipsoid" not in text


def devhost_services(devhost: DevHostProcess) -> Services:
    return Services.from_settings(Settings.from_env({"DicomStorage": devhost.azurite.connection_string}))
