"""Routing to dcmtk's storescp over C-STORE: files arrive equal, once, with retries in the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from devhost.azurite import free_port
from shared.config import Settings
from shared.events.payloads import DicomEvent
from shared.routing.ledger import DeliveryState as State
from shared.routing.ledger import Ledger
from shared.routing.rules import RuleSet, parse
from shared.routing.service import RoutingPending, route_event
from shared.services import Services as StorageClients
from shared.storage import layout
from tests.fakes import MemoryPublisher
from tests.integration.routing_peers import archive, storescp
from tests.phantoms import ellipsoid_ct

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def clients(storage: StorageClients) -> StorageClients:
    return storage


def rules_to(port: int, **extra: Any) -> RuleSet:
    doc = {
        "rules": [
            {
                "name": "ct-to-pacs",
                "conditions": {"Modality": "CT"},
                "destinations": [{"type": "dicom", "aeTitle": "STORESCP", "host": "127.0.0.1", "port": port}],
                "retry": {"maxAttempts": 3, "backoffSeconds": 0},
                **extra,
            }
        ]
    }
    return RuleSet(parse(orjson.dumps(doc)), "current")


def received(folder: Path) -> dict[str, Any]:
    return {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in sorted(folder.iterdir()) if p.is_file())}


def small_study(tag: str) -> list:
    # Eight slices of the phantom keep the test quick; geometry does not matter here.
    return ellipsoid_ct(tag=tag, size=32, pixel_mm=4.0, slice_mm=15.0)


def test_stable_study_arrives_equal_to_the_originals(
    clients: StorageClients, settings: Settings, tmp_path: Path
) -> None:
    originals = small_study("route-equal")
    data = archive(clients.blobs, originals)
    published: list[DicomEvent] = []
    port = free_port()
    with storescp(tmp_path / "in", port) as folder:
        outcome = route_event(
            "Dicom.StudyStable",
            data,
            svc=clients,
            rules=rules_to(port),
            publisher=MemoryPublisher(published),
        )
    got = received(folder)
    assert set(got) == {str(ds.SOPInstanceUID) for ds in originals}
    for ds in originals:
        copy = got[str(ds.SOPInstanceUID)]
        assert copy.PixelData == ds.PixelData
        assert {e.tag for e in copy} == {e.tag for e in ds}
        assert all(copy[e.tag].value == e.value for e in ds), ds.SOPInstanceUID
    (dest,) = outcome.destinations
    assert dest.delivered_now == len(originals)
    assert [str(e.type) for e in published] == ["Dicom.RoutingCompleted"]
    assert published[0].data["delivered"] == len(originals)
    assert "PHANTOM" not in orjson.dumps(published[0].to_cloud_event()).decode().upper()


def test_event_delivered_twice_sends_once(clients: StorageClients, settings: Settings, tmp_path: Path) -> None:
    originals = small_study("route-twice")
    data = archive(clients.blobs, originals)
    port = free_port()
    events: list[DicomEvent] = []
    with storescp(tmp_path / "in", port) as folder:
        for _ in range(2):
            route_event(
                "Dicom.StudyStable",
                data,
                svc=clients,
                rules=rules_to(port),
                publisher=MemoryPublisher(events),
            )
        assert len(list(folder.iterdir())) == len(originals)
    assert [str(e.type) for e in events] == ["Dicom.RoutingCompleted"]  # the second run delivered nothing new


def test_peer_down_then_back_every_instance_arrives_once(
    clients: StorageClients, settings: Settings, tmp_path: Path
) -> None:
    originals = small_study("route-down")
    data = archive(clients.blobs, originals)
    port = free_port()
    rules = rules_to(port)
    with pytest.raises(RoutingPending) as first:  # nothing listens on the port yet
        route_event("Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher())
    assert first.value.outcome.destinations[0].pending == len(originals)
    ledger = Ledger(clients.tables)
    study = data["imageStudyInstanceUid"]
    rows = ledger.rows(study)
    assert {(r.state, r.attempts) for r in rows} == {(State.FAILED, 1)}
    assert all("STORESCP@127.0.0.1" in r.last_error for r in rows)
    with storescp(tmp_path / "in", port) as folder:
        route_event("Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher())
        route_event("Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher())
        assert sorted(received(folder)) == sorted(str(ds.SOPInstanceUID) for ds in originals)
        assert len(list(folder.iterdir())) == len(originals)
    rows = ledger.rows(study)
    assert {(r.state, r.attempts, r.last_error) for r in rows} == {(State.DELIVERED, 2, "")}


def test_retries_exhausted_dead_letter_and_routing_failed(clients: StorageClients, settings: Settings) -> None:
    originals = small_study("route-dead")[:2]
    data = archive(clients.blobs, originals)
    rules = rules_to(free_port())  # never comes up
    events: list[DicomEvent] = []
    for _ in range(2):
        with pytest.raises(RoutingPending):
            route_event(
                "Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher(events)
            )
    outcome = route_event(
        "Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher(events)
    )
    assert len(outcome.destinations[0].dead_now) == 2
    assert [str(e.type) for e in events] == ["Dicom.RoutingFailed"]
    assert events[0].data["failed"] == 2 and events[0].data["attempts"] == 3
    box = clients.blobs.service.get_container_client(layout.EVENTS_DEADLETTER)
    records = [
        orjson.loads(box.download_blob(b.name).readall())
        for b in box.list_blobs(name_starts_with=f"routing/{data['imageStudyInstanceUid']}/")
    ]
    assert sorted(r["unit"] for r in records) == sorted(str(ds.SOPInstanceUID) for ds in originals)
    assert all(r["attempts"] == 3 for r in records)
    # Dead stays dead: a later delivery of the event neither retries nor re-announces.
    later = route_event(
        "Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher(events)
    )
    assert later.destinations[0].dead_before == 2 and len(events) == 1


def test_conditions_filter_instances_and_immediate_rules_route_one_instance(
    clients: StorageClients, settings: Settings, tmp_path: Path
) -> None:
    originals = small_study("route-immediate")
    archive(clients.blobs, originals)
    port = free_port()
    rules = rules_to(port, trigger="Dicom.ImageCreated")
    target = originals[3]
    event = {
        "imageStudyInstanceUid": target.StudyInstanceUID,
        "imageSeriesInstanceUid": target.SeriesInstanceUID,
        "imageSopInstanceUid": target.SOPInstanceUID,
    }
    with storescp(tmp_path / "in", port) as folder:
        # A StudyStable event does not fire an immediate rule.
        assert (
            route_event(
                "Dicom.StudyStable", event, svc=clients, rules=rules, publisher=MemoryPublisher()
            ).destinations
            == []
        )
        route_event("Dicom.ImageCreated", event, svc=clients, rules=rules, publisher=MemoryPublisher())
        assert list(received(folder)) == [str(target.SOPInstanceUID)]
        mr_only = rules_to(port, conditions={"Modality": "MR"})
        assert (
            route_event(
                "Dicom.StudyStable", event, svc=clients, rules=mr_only, publisher=MemoryPublisher()
            ).destinations
            == []
        )


def test_compressed_file_is_decompressed_when_the_peer_refuses_its_syntax(
    clients: StorageClients, settings: Settings, tmp_path: Path
) -> None:
    source = dcmread(get_testdata_file("MR_small_RLE.dcm"))
    reference = dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    data = archive(clients.blobs, [source])
    port = free_port()
    doc = {
        "rules": [
            {
                "name": "mr",
                "destinations": [{"type": "dicom", "aeTitle": "STORESCP", "host": "127.0.0.1", "port": port}],
            }
        ]
    }
    with storescp(tmp_path / "in", port) as folder:  # storescp's default: uncompressed only
        route_event(
            "Dicom.StudyStable",
            data,
            svc=clients,
            rules=RuleSet(parse(orjson.dumps(doc))),
            publisher=MemoryPublisher(),
        )
        (copy,) = received(folder).values()
    assert not copy.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(copy.pixel_array, reference)


def test_concurrent_deliveries_of_one_event_send_each_instance_once(
    clients: StorageClients, settings: Settings, tmp_path: Path
) -> None:
    import threading

    originals = small_study("route-concurrent")
    data = archive(clients.blobs, originals)
    port = free_port()
    rules = rules_to(port)
    events: list[DicomEvent] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            route_event(
                "Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher(events)
            )
        except RoutingPending as exc:  # the other worker held some instances: Event Grid would retry
            errors.append(exc)

    with storescp(tmp_path / "in", port) as folder:
        workers = [threading.Thread(target=run) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
        run()  # the redelivery that follows a pending run
        assert sorted(received(folder)) == sorted(str(ds.SOPInstanceUID) for ds in originals)
        assert len(list(folder.iterdir())) == len(originals)
    ledger = Ledger(clients.tables)
    assert {(r.state, r.attempts) for r in ledger.rows(data["imageStudyInstanceUid"])} == {(State.DELIVERED, 1)}
    assert 1 <= [str(e.type) for e in events].count("Dicom.RoutingCompleted") <= 2


def test_tls_destination_checks_the_peer_and_shows_our_client_certificate(
    clients: StorageClients, tmp_path: Path
) -> None:
    """storescp speaking DICOM TLS only and requiring a client certificate it trusts: with the routing TLS
    settings (its certificate as our CA, given as PEM text; our certificate and key as a file) the study
    arrives; without our client certificate the association fails and nothing arrives."""
    from dataclasses import replace

    from tests.e2e.gateway_peers import self_signed

    (tmp_path / "peer").mkdir()
    (tmp_path / "us").mkdir()
    peer_cert, peer_key = self_signed(tmp_path / "peer")
    our_cert, our_key = self_signed(tmp_path / "us")
    ours = tmp_path / "us" / "client.pem"
    ours.write_text(our_cert.read_text() + our_key.read_text())
    originals = small_study("route-tls")[:3]
    data = archive(clients.blobs, originals)
    port = free_port()
    rules = RuleSet(parse(orjson.dumps({"rules": [{
        "name": "ct-to-pacs-tls", "conditions": {"Modality": "CT"}, "retry": {"maxAttempts": 1},
        "destinations": [{"type": "dicom", "aeTitle": "STORESCP", "host": "127.0.0.1", "port": port, "tls": True}],
    }]})), "current")

    def with_tls(**tls: str) -> StorageClients:
        return StorageClients(settings=replace(clients.settings, **tls), blobs=clients.blobs, tables=clients.tables,
                              queues=clients.queues)

    tls_peer = ["+tls", str(peer_key), str(peer_cert), "+cf", str(our_cert), "-rc"]
    with storescp(tmp_path / "in", port, extra=tls_peer) as folder:
        anonymous = with_tls(routing_tls_ca=peer_cert.read_text())
        refused = route_event("Dicom.StudyStable", data, svc=anonymous, rules=rules, publisher=MemoryPublisher())
        assert len(refused.destinations[0].dead_now) == len(originals) and not received(folder)
    data2 = archive(clients.blobs, small_study("route-tls-2")[:3])
    with storescp(tmp_path / "in2", port, extra=tls_peer) as folder:
        mutual = with_tls(routing_tls_ca=peer_cert.read_text(), routing_tls_client_cert=str(ours))
        outcome = route_event("Dicom.StudyStable", data2, svc=mutual, rules=rules, publisher=MemoryPublisher())
        assert outcome.destinations[0].delivered_now == 3
        assert len(received(folder)) == 3


def _as(ds: Any, syntax: str, tag: str) -> Any:
    """``ds`` with fresh instance UIDs, stored in ``syntax`` (pydicom's own encoders and writers)."""
    import copy as copying

    from pydicom.uid import UID, generate_uid

    out = copying.deepcopy(ds)
    out.SOPInstanceUID = generate_uid(prefix=None, entropy_srcs=[tag, syntax])
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    uid = UID(syntax)
    if uid.is_compressed:
        out.compress(uid, encoding_plugin="pylibjpeg" if uid == "1.2.840.10008.1.2.5" else "")
    else:
        if not uid.is_little_endian:  # pydicom writes OW bytes as they are: give it big-endian samples
            out.PixelData = out.pixel_array.astype(out.pixel_array.dtype.newbyteorder(">")).tobytes()
        out.file_meta.TransferSyntaxUID = uid
    return out


def test_every_stored_syntax_reaches_an_implicit_only_peer(
    clients: StorageClients, settings: Settings, tmp_path: Path
) -> None:
    """An old workstation that takes Implicit VR Little Endian only gets big endian, deflated and compressed
    instances all the same (transcoded), with the pixels they hold; one RoutingCompleted."""
    base = small_study("route-implicit")[4]
    syntaxes = ["1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.5",
                "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1"]
    originals = [_as(base, s, "route-implicit") for s in syntaxes]
    reference = base.pixel_array
    data = archive(clients.blobs, originals)
    events: list[DicomEvent] = []
    port = free_port()
    with storescp(tmp_path / "in", port, implicit_only=True) as folder:
        outcome = route_event("Dicom.StudyStable", data, svc=clients, rules=rules_to(port),
                              publisher=MemoryPublisher(events))
        got = received(folder)
    assert outcome.destinations[0].delivered_now == len(originals), outcome
    assert set(got) == {str(ds.SOPInstanceUID) for ds in originals}
    for copy in got.values():
        assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        np.testing.assert_array_equal(copy.pixel_array, reference)
    assert [str(e.type) for e in events] == ["Dicom.RoutingCompleted"]


def test_an_instance_that_cannot_be_converted_fails_once_with_what_to_change(
    clients: StorageClients, settings: Settings, tmp_path: Path
) -> None:
    """A corrupt JPEG-LS instance for an implicit-only peer: the ledger's error names the SOP class, the
    stored and accepted syntaxes and what to change; one RoutingFailed although the two instances die in
    different runs (one waited for its backoff), where there used to be two events with one id."""
    import datetime as dt
    from dataclasses import replace

    from pydicom.encaps import encapsulate, generate_frames

    base = small_study("route-corrupt")[4]
    bad = [_as(base, "1.2.840.10008.1.2.4.80", f"route-corrupt-{n}") for n in range(2)]
    for ds in bad:
        (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
        ds.PixelData = encapsulate([bytes(frame)[:4] + b"\0" * 40])  # the start of a frame, then zeros
    data = archive(clients.blobs, bad)
    study = data["imageStudyInstanceUid"]
    port = free_port()
    rules = rules_to(port, retry={"maxAttempts": 2, "backoffSeconds": 0})
    ledger = Ledger(clients.tables)
    events: list[DicomEvent] = []
    with storescp(tmp_path / "in", port, implicit_only=True) as folder:
        with pytest.raises(RoutingPending):  # attempt 1 of each fails
            route_event("Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher(events))
        _, second = sorted(ledger.rows(study), key=lambda r: r.unit)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        ledger._write(replace(second, next_attempt_at=later))  # the second still waits for its backoff
        with pytest.raises(RoutingPending):  # the first dies now, the second waits: nothing announced yet
            route_event("Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher(events))
        assert events == []
        waiting = next(r for r in ledger.rows(study) if r.unit == second.unit)
        ledger._write(replace(waiting, next_attempt_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        outcome = route_event("Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher(events))
        route_event("Dicom.StudyStable", data, svc=clients, rules=rules, publisher=MemoryPublisher(events))
        assert list(folder.iterdir()) == []
    assert outcome.destinations[0].dead_before == 1 and len(outcome.destinations[0].dead_now) == 1
    assert [str(e.type) for e in events] == ["Dicom.RoutingFailed"]
    assert events[0].data["failed"] == 2
    error = events[0].data["lastError"]
    for words in ("CT Image Storage", "JPEG-LS Lossless", "Implicit VR Little Endian", "configure the peer"):
        assert words in error, error
    assert {r.state for r in ledger.rows(study)} == {State.DEAD}
