"""Routing to Orthanc (STOW-RS), a worklist queue and a de-identified export; the rules store on Azurite."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset

from shared.config import Settings
from shared.routing.rules import RuleSet, RulesStore, parse
from shared.routing.service import route_event
from shared.storage import layout
from shared.storage.clients import StorageClients
from tests.e2e.orthanc import OrthancProcess
from tests.integration.routing_peers import archive
from tests.phantoms import PATIENT_ID, PATIENT_NAME, ellipsoid_ct


@pytest.fixture(scope="module")
def clients(ready_clients: StorageClients) -> StorageClients:
    return ready_clients


def one_rule(*destinations: dict[str, Any], **extra: Any) -> RuleSet:
    doc = {"rules": [{"name": "r1", "destinations": list(destinations), **extra}]}
    return RuleSet(parse(orjson.dumps(doc)), "current")


def small_study(tag: str) -> list[Dataset]:
    return ellipsoid_ct(tag=tag, size=32, pixel_mm=4.0, slice_mm=15.0)


@pytest.mark.peers
def test_stow_rs_to_orthanc_stores_every_instance(clients: StorageClients, settings: Settings, tmp_path: Path) -> None:
    originals = small_study("route-stow")
    data = archive(clients.blob, originals)
    study = data["imageStudyInstanceUid"]
    with OrthancProcess(tmp_path / "orthanc") as peer:  # the DICOMweb engineer's helper
        root = peer.dicomweb_url
        rules = one_rule({"type": "dicomweb", "url": root})
        outcome = route_event("Dicom.StudyStable", data, settings=settings, clients=clients, rules=rules, publish=list)
        assert outcome.destinations[0].delivered_now == len(originals)
        found = requests.get(f"{root}/studies/{study}/instances", timeout=10).json()
        assert sorted(i["00080018"]["Value"][0] for i in found) == sorted(str(d.SOPInstanceUID) for d in originals)
        sop = str(originals[0].SOPInstanceUID)
        series = str(originals[0].SeriesInstanceUID)
        url = f"{root}/studies/{study}/series/{series}/instances/{sop}"
        got = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'}, timeout=10)
        assert got.status_code == 200 and originals[0].PixelData in got.content
        # Delivered twice: Orthanc is not asked again.
        again = route_event("Dicom.StudyStable", data, settings=settings, clients=clients, rules=rules, publish=list)
        assert again.destinations[0].already == len(originals) and again.destinations[0].delivered_now == 0


def test_stow_rs_to_a_closed_port_is_recorded_as_a_failure(clients: StorageClients, settings: Settings) -> None:
    from devhost.azurite import free_port
    from shared.routing.service import RoutingPending

    data = archive(clients.blob, small_study("route-stow-down")[:1])
    rules = one_rule({"type": "dicomweb", "url": f"http://127.0.0.1:{free_port()}/dicom-web"})
    with pytest.raises(RoutingPending) as info:
        route_event("Dicom.StudyStable", data, settings=settings, clients=clients, rules=rules, publish=list)
    assert info.value.outcome.destinations[0].pending == 1


def _queue_messages(clients: StorageClients, queue: str) -> list[dict[str, Any]]:
    client = clients.queue.get_queue_client(queue)
    out = []
    for m in client.receive_messages(messages_per_page=32, visibility_timeout=1):
        out.append(orjson.loads(base64.b64decode(m.content, validate=True)))
    return out


def test_worklist_gets_one_message_per_study_with_the_ai_priority(clients: StorageClients, settings: Settings) -> None:
    originals = small_study("route-worklist")
    data = archive(clients.blob, originals)
    rules = one_rule(
        {"type": "worklist", "group": "neuro-urgent"},
        trigger="Dicom.InferenceCompleted",
        conditions={"aiPriority": True, "derived": False},
    )
    event = {**data, "priority": True}
    for _ in range(2):  # delivered twice: one message
        route_event("Dicom.InferenceCompleted", event, settings=settings, clients=clients, rules=rules, publish=list)
    not_urgent = {**data, "priority": False}
    assert (
        route_event(
            "Dicom.InferenceCompleted", not_urgent, settings=settings, clients=clients, rules=rules, publish=list
        ).destinations
        == []
    )
    messages = [
        m
        for m in _queue_messages(clients, "worklist-neuro-urgent")
        if m["studyInstanceUid"] == data["imageStudyInstanceUid"]
    ]
    assert len(messages) == 1
    (message,) = messages
    assert message["priority"] is True and message["modalities"] == ["CT"]
    assert message["numberOfInstances"] == len(originals) and message["rule"] == "r1"
    assert PATIENT_ID not in orjson.dumps(message).decode()


def _walk_values(ds: Dataset) -> Iterator[str]:
    for element in [*ds.file_meta, *ds] if hasattr(ds, "file_meta") else ds:
        if element.VR == "SQ":
            for item in element.value:
                yield from _walk_values(item)
        elif element.VR not in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            values = element.value if isinstance(element.value, list | tuple) else [element.value]
            yield from (str(v) for v in values)


def test_export_deidentified_leaves_no_patient_identity_anywhere(clients: StorageClients, settings: Settings) -> None:
    originals = small_study("route-export")
    for ds in originals:  # identity hidden in places a naive profile misses
        ds.add_new(0x00091010, "LO", f"{PATIENT_NAME} {PATIENT_ID}")  # private
        ds.ImageComments = f"patient {PATIENT_ID}"
        nested = Dataset()
        nested.PatientID = PATIENT_ID
        nested.IssuerOfPatientID = "HOSP"
        ds.OtherPatientIDsSequence = [nested]
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        ref.PatientName = PATIENT_NAME  # not where it belongs, but a walk must find it
        ds.SourceImageSequence = [ref]
    data = archive(clients.blob, originals)
    rules = one_rule({"type": "export", "container": "research-export", "prefix": "trial-7", "deidentify": True})
    route_event("Dicom.StudyStable", data, settings=settings, clients=clients, rules=rules, publish=list)
    container = clients.blob.get_container_client("research-export")
    names = [b.name for b in container.list_blobs(name_starts_with="trial-7/")]
    exported = {n: container.download_blob(n).readall() for n in names}
    forbidden = {
        *(part for part in PATIENT_NAME.split("^") if len(part) > 3),
        PATIENT_ID,
        "19700101",
        "ACC-PHANTOM-7",
        "Referrer",
        str(originals[0].StudyInstanceUID),
        str(originals[0].SeriesInstanceUID),
        "Phantom General Hospital",
        "CTSTATION1",
    }
    datasets = []
    for raw in exported.values():
        for word in forbidden:
            assert word.encode() not in raw
        ds = dcmread(io.BytesIO(raw))
        datasets.append(ds)
        for value in _walk_values(ds):
            assert not any(word.lower() in value.lower() for word in forbidden), value
        assert ds.PatientIdentityRemoved == "YES"
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]
        assert not any(e.tag.is_private for e in ds)
    # Relationships survive: one new study and series, every instance, pixel data untouched.
    assert len(datasets) == len(originals)
    assert len({d.StudyInstanceUID for d in datasets}) == 1 and len({d.SeriesInstanceUID for d in datasets}) == 1
    assert sorted(d.PixelData for d in datasets) == sorted(d.PixelData for d in originals)
    # Re-delivery of the event writes nothing new (same pseudonyms, ledger says done).
    route_event("Dicom.StudyStable", data, settings=settings, clients=clients, rules=rules, publish=list)
    assert sorted(b.name for b in container.list_blobs(name_starts_with="trial-7/")) == sorted(names)


def test_bad_rules_document_is_rejected_and_the_previous_rules_stay(clients: StorageClients) -> None:
    config = clients.blob.get_container_client(layout.CONFIG)
    for name in (layout.RULES_DOC, layout.RULES_LAST_GOOD, layout.RULES_STATUS):
        try:
            config.delete_blob(name)
        except Exception:
            pass
    assert RulesStore(config).current().rules == ()
    good = {"rules": [{"name": "keep-me", "destinations": [{"type": "worklist", "group": "body"}]}]}
    RulesStore(config).put(orjson.dumps(good))
    assert [r.name for r in RulesStore(config).current().rules] == ["keep-me"]
    bad = {"rules": [good["rules"][0], {"name": "broken", "destinations": [{"type": "dicom", "host": "x"}]}]}
    with pytest.raises(Exception, match="rule 1"):
        RulesStore(config).put(orjson.dumps(bad))  # a tool's put never lands a bad document
    config.upload_blob(layout.RULES_DOC, orjson.dumps(bad), overwrite=True)  # someone uploads it anyway
    current = RulesStore(config).current()  # a fresh store: as a new worker would see it
    assert [r.name for r in current.rules] == ["keep-me"] and current.source == "last-good"
    assert current.rejected is not None and "rule 1 ('broken') field destinations[0]" in current.rejected
    status = orjson.loads(config.download_blob(layout.RULES_STATUS).readall())
    assert status["state"] == "rejected" and "rule 1" in status["message"]
    for name in (layout.RULES_DOC, layout.RULES_LAST_GOOD, layout.RULES_STATUS):
        config.delete_blob(name)
