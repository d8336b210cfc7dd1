"""Ingest, settle and status on in-memory fakes of the ports: outcomes, idempotence, costs.

The fakes count one request per storage call, as Azure Storage would; the request budget of
ingest is pinned here (and against Azurite in tests/integration/test_request_budget.py).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import orjson
import pydicom
import pytest

from shared.dicom.header import read_header_bytes
from shared.dicomweb.attributes import Level
from shared.dicomweb.planner import fetch_for
from shared.dicomweb.qido import parse_query
from shared.dicomweb.search import level_from_path
from shared.dicomweb.search import search as qido_search
from shared.errors import Reason
from shared.events.types import EventType
from shared.index import changefeed, keys, tables
from shared.index.records import Action, ChangeEntry
from shared.index.store import utcnow
from shared.ingest import status
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.ingest.states import IngestState, Outcome
from shared.storage import layout
from tests.fakes import Fakes, memory_services
from tests.instances import instance, study_of, uid

PRODUCTION = {"DICOMFLOW_STABLE_AGE_SECONDS": "60", "DICOMFLOW_SETTLE_DELAY_SECONDS": "5"}


def upload(f: Fakes, name: str, data: bytes) -> None:
    f.blobs.put(layout.INBOX, name, data)


def ingest(f: Fakes, name: str) -> Outcome:
    return IngestService(f.services).ingest(f.services.blobs.open(layout.INBOX, name))


def settle(f: Fakes, study: str, *, force: bool = False) -> str:
    return SettleService(f.services).settle(SettleRequest(study, force=force)).state


def qido(f: Fakes, level: Level, params: list[tuple[str, str]], study: str | None = None) -> list[dict]:
    _, scope = level_from_path(study, None, level)
    reply = qido_search(parse_query(params, level, scope=scope), fetch_for(f.services.index), "http://x")
    return orjson.loads(reply.body)


def uids_of(found: list[dict], tag: str) -> set[str]:
    return {o[tag]["Value"][0] for o in found}


# -- costs --------------------------------------------------------------------------------------

def test_a_new_instance_costs_three_requests_and_its_series_and_study_one_each_per_quiet_period() -> None:
    f = memory_services(**PRODUCTION)
    items = study_of(2, 5)
    for _, _, sop, data in items:
        upload(f, f"up/{sop}.dcm", data)
    # Once per process, not per instance: containers and tables made, the extended query tag list read
    # (re-read once per DICOMFLOW_EXTENDED_TAGS_TTL_SECONDS, on use).
    f.services.ensure_ready()
    before = f.requests()
    outcomes = [ingest(f, f"up/{sop}.dcm") for _, _, sop, _ in items]
    assert {o.state for o in outcomes} == {IngestState.ARCHIVED}
    # Per instance: the header (one ranged read), the archive copy, the row + change transaction.
    assert f.blobs.requests["blob GET range"] == 10 and f.blobs.requests["blob PUT copy"] == 10
    assert f.tables.requests["table POST batch dicominstances"] == 10
    # Per series: one pending row; per study: one settle message. Nothing else.
    assert f.tables.requests["table PUT dicompending"] == 2
    assert f.queues.requests["queue POST dicom-settle"] == 1
    assert f.requests() - before == 10 * 3 + 2 + 1
    assert f.publisher.calls == 0  # events go out in one batch when the study settles
    assert all(o.bytes_read <= 64 * 1024 and o.requests == 1 for o in outcomes)


def test_an_identical_resend_is_a_duplicate_and_writes_nothing() -> None:
    f = memory_services(**PRODUCTION)
    (study, _series, _sop, data), = study_of(1, 1)
    upload(f, "a.dcm", data)
    upload(f, "b.dcm", data)
    assert ingest(f, "a.dcm").state is IngestState.ARCHIVED
    writes_before = f.tables.requests.copy()
    out = ingest(f, "b.dcm")
    assert out.state is IngestState.DUPLICATE
    assert f.tables.requests - writes_before == {"table GET dicominstances": 1}
    assert len(f.services.index.changes(study)) == 1


def test_new_content_under_a_known_sop_is_an_update_and_replaces_the_archive() -> None:
    f = memory_services(**PRODUCTION)
    (study, series, sop, data), = study_of(1, 1)
    upload(f, "v1.dcm", data)
    upload(f, "v2.dcm", instance(study, series, sop, pixel=7))
    assert ingest(f, "v1.dcm").state is IngestState.ARCHIVED
    assert ingest(f, "v2.dcm").state is IngestState.UPDATED
    assert f.blobs.blobs[(layout.ARCHIVE, layout.instance_path(study, series, sop))].data == \
        f.blobs.blobs[(layout.INBOX, "v2.dcm")].data
    assert [c.action for c in f.services.index.changes(study)] == [Action.CREATE, Action.UPDATE]


def _large(study: str, series: str, sop: str, last: int) -> bytes:
    """An instance with 128 KiB of pixel data (past the header read's first 64 KiB) ending in ``last``."""
    ds = pydicom.dcmread(io.BytesIO(instance(study, series, sop)))
    ds.Rows = ds.Columns = 256
    ds.PixelData = b"\0" * (256 * 256 * 2 - 1) + bytes([last])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_new_pixel_data_past_the_header_read_is_an_update_by_the_uploads_content_md5() -> None:
    f = memory_services(**PRODUCTION)
    (study, series, sop, _), = study_of(1, 1)
    upload(f, "v1.dcm", _large(study, series, sop, 1))
    upload(f, "v2.dcm", _large(study, series, sop, 2))  # same size, same first 64 KiB
    upload(f, "v3.dcm", _large(study, series, sop, 2))
    assert ingest(f, "v1.dcm").state is IngestState.ARCHIVED
    out = ingest(f, "v2.dcm")
    assert out.state is IngestState.UPDATED
    assert out.requests == 1  # the header read never fetched the changed byte: the Content-MD5 tells
    assert ingest(f, "v3.dcm").state is IngestState.DUPLICATE
    assert [c.action for c in f.services.index.changes(study)] == [Action.CREATE, Action.UPDATE]


def test_without_content_md5_the_bytes_the_header_read_fetched_tell_an_update() -> None:
    f = memory_services(**PRODUCTION)
    (study, series, sop, data), = study_of(1, 1)
    f.blobs.put(layout.INBOX, "v1.dcm", data, md5=False)
    f.blobs.put(layout.INBOX, "v2.dcm", instance(study, series, sop, pixel=7), md5=False)  # pixels only
    f.blobs.put(layout.INBOX, "v3.dcm", instance(study, series, sop, pixel=7), md5=False)
    assert [ingest(f, n).state for n in ("v1.dcm", "v2.dcm", "v3.dcm")] == [
        IngestState.ARCHIVED, IngestState.UPDATED, IngestState.DUPLICATE]


def test_a_row_digested_the_old_way_still_recognises_a_re_sent_file() -> None:
    """Rows written before the Content-MD5-only digest hashed the first range read as well; the same
    file sent again after the upgrade is a duplicate (and its status says so), not an update."""
    f = memory_services(**PRODUCTION)
    (study, series, sop, data), = study_of(1, 1)
    upload(f, "old.dcm", data)
    assert ingest(f, "old.dcm").state is IngestState.ARCHIVED
    header = read_header_bytes(data)
    size, md5 = len(data).to_bytes(8, "little"), hashlib.md5(data).digest()
    old_way = hashlib.sha256(header.digest.encode() + size + md5).hexdigest()
    pk, rk = keys.instance_keys(study, series, sop)
    assert f.tables.merge(tables.INSTANCES, {"PartitionKey": pk, "RowKey": rk, "digest": old_way})
    assert f.services.index.get_instance(study, series, sop).record.digest == old_way  # type: ignore[union-attr]

    upload(f, "again.dcm", data)
    assert status.blob_status(f.services, "again.dcm").state is IngestState.DUPLICATE
    assert ingest(f, "again.dcm").state is IngestState.DUPLICATE
    assert [c.action for c in f.services.index.changes(study)] == [Action.CREATE]
    upload(f, "changed.dcm", instance(study, series, sop, pixel=9))  # and a real change is still an update
    assert ingest(f, "changed.dcm").state is IngestState.UPDATED


def test_a_retry_of_a_finished_ingest_recognises_its_own_work() -> None:
    f = memory_services(**PRODUCTION)
    (study, _, _sop, data), = study_of(1, 1)
    upload(f, "x.dcm", data)
    first = ingest(f, "x.dcm")
    again = ingest(f, "x.dcm")  # the event delivered twice
    assert first.state is again.state is IngestState.ARCHIVED
    assert len(f.services.index.changes(study)) == 1


def test_a_crash_between_archive_copy_and_row_is_completed_by_the_retry() -> None:
    f = memory_services(**PRODUCTION)
    (study, series, sop, data), = study_of(1, 1)
    upload(f, "c.dcm", data)
    f.blobs.put(layout.ARCHIVE, layout.instance_path(study, series, sop), data)  # the copy happened, then a crash
    assert ingest(f, "c.dcm").state is IngestState.ARCHIVED
    assert f.services.index.get_instance(study, series, sop) is not None


@pytest.mark.parametrize(("payload", "reason"), [(b"", Reason.EMPTY), (b"not dicom" * 50, Reason.NOT_DICOM)])
def test_bad_input_is_quarantined_with_its_reason_and_announced(payload: bytes, reason: Reason) -> None:
    f = memory_services()
    upload(f, "bad.dcm", payload)
    out = ingest(f, "bad.dcm")
    assert out.state is IngestState.QUARANTINED and out.reason == reason
    etag = f.blobs.blobs[(layout.INBOX, "bad.dcm")].etag
    assert f.blobs.blobs[(layout.QUARANTINE, layout.quarantine_path("bad.dcm", etag))].metadata["reason"] == reason
    (event,) = f.publisher.of_type(EventType.INGEST_FAILED)
    assert event.data["reason"] == reason
    # The upload by digest, never by name; the folder holds its quarantine copy.
    assert event.data["blobDigest"] == layout.log_name("bad.dcm") and "bad.dcm" not in str(event.to_cloud_event())
    folder = event.data["quarantineFolder"].removeprefix(f"{layout.QUARANTINE}/")
    assert (layout.QUARANTINE, f"{folder}bad.dcm") in f.blobs.blobs
    got = status.blob_status(f.services, "bad.dcm")
    assert got.state is IngestState.QUARANTINED and got.reason == reason


def test_a_blob_replaced_while_it_is_read_is_left_to_its_own_event() -> None:
    f = memory_services()
    (_, _, _, data), = study_of(1, 1)
    upload(f, "r.dcm", data)
    blob = f.services.blobs.open(layout.INBOX, "r.dcm")
    blob.read_range(0, 10)  # the version is pinned by the first read
    upload(f, "r.dcm", data + b"")  # a new upload of the same name
    assert IngestService(f.services).ingest(blob).state is IngestState.GONE


# -- status ---------------------------------------------------------------------------------------

def test_status_tells_pending_archived_duplicate_and_unknown_apart() -> None:
    f = memory_services()
    (study, series, sop, data), = study_of(1, 1)
    upload(f, "one.dcm", data)
    assert status.blob_status(f.services, "one.dcm").state is IngestState.PENDING
    ingest(f, "one.dcm")
    got = status.blob_status(f.services, "one.dcm")
    assert (got.state, got.study, got.series, got.sop) == (IngestState.ARCHIVED, study, series, sop)
    upload(f, "two.dcm", data)
    ingest(f, "two.dcm")
    assert status.blob_status(f.services, "two.dcm").state is IngestState.DUPLICATE
    assert status.blob_status(f.services, "never.dcm").state is IngestState.UNKNOWN
    upload(f, "three.dcm", instance(study, series, sop, pixel=9))
    ingest(f, "three.dcm")
    assert status.blob_status(f.services, "three.dcm").state is IngestState.UPDATED
    # The first upload was archived, then replaced: its history says so.
    assert status.blob_status(f.services, "one.dcm").state is IngestState.ARCHIVED


# -- read your writes -------------------------------------------------------------------------------

def test_what_ingest_archived_is_found_at_every_level_before_any_settle() -> None:
    f = memory_services(**PRODUCTION)
    items = study_of(2, 2, tag="ryw", name="Müller^Jürgen", patient_id="RYW-1", modality="MR")
    for _, _, sop, data in items:
        upload(f, f"{sop}.dcm", data)
        ingest(f, f"{sop}.dcm")
    study = items[0][0]
    series = {se for _, se, _, _ in items}
    sops = {sop for _, _, sop, _ in items}
    assert uids_of(qido(f, Level.STUDY, [("PatientName", "muller*")]), "0020000D") == {study}
    assert uids_of(qido(f, Level.STUDY, [("PatientID", "RYW-1")]), "0020000D") == {study}
    assert uids_of(qido(f, Level.STUDY, [("StudyDate", "20261101-20261130")]), "0020000D") == {study}
    assert uids_of(qido(f, Level.STUDY, [("StudyInstanceUID", study)]), "0020000D") == {study}
    assert uids_of(qido(f, Level.SERIES, [("Modality", "MR")]), "0020000E") == series
    assert uids_of(qido(f, Level.SERIES, [], study=study), "0020000E") == series
    assert uids_of(qido(f, Level.INSTANCE, [("PatientID", "RYW-1")]), "00080018") == sops
    one = sorted(sops)[0]
    assert uids_of(qido(f, Level.INSTANCE, [("SOPInstanceUID", one)]), "00080018") == {one}
    # Settled or not, the answers are the same; only aggregates are added.
    settle(f, study, force=True)
    found = qido(f, Level.STUDY, [("PatientID", "RYW-1")])
    assert uids_of(found, "0020000D") == {study}
    assert found[0]["00201208"]["Value"] == [4]  # NumberOfStudyRelatedInstances


# -- settle --------------------------------------------------------------------------------------

def test_settle_announces_in_one_call_and_a_second_run_changes_nothing() -> None:
    f = memory_services()
    items = study_of(2, 3, tag="st")
    for _, _, sop, data in items:
        upload(f, f"{sop}.dcm", data)
        ingest(f, f"{sop}.dcm")
    study = items[0][0]
    assert settle(f, study) == "stable"
    assert f.publisher.calls == 1
    kinds = [str(e.type) for e in f.publisher.events]
    assert kinds.count(EventType.IMAGE_CREATED) == 6 and kinds.count(EventType.SERIES_STABLE) == 2
    assert kinds.count(EventType.STUDY_STABLE) == 1
    feed = list(changefeed.entries(f.services.index, None, None, horizon=0))
    assert sorted(e.sop for e in feed) == sorted(sop for _, _, sop, _ in items)
    assert [e.seq for e in feed] == sorted(e.seq for e in feed) and {e.state for e in feed} == {"current"}
    # A series of 3 has no bundle: its rows are its metadata (WADO-RS reads them in one query).
    assert (layout.METADATA, layout.series_metadata_path(study, items[0][1])) not in f.blobs.blobs
    assert f.services.index.pending_of(study) == []
    writes = f.requests()
    assert settle(f, study) == "unchanged"
    assert f.publisher.calls == 1
    assert f.requests() - writes == 1  # the partition (with the settle state): nothing to hold, nothing to write


def test_updates_and_deletes_reach_events_and_the_feed_with_states() -> None:
    f = memory_services()
    (study, series, sop, data), (_, _, sop2, data2) = study_of(1, 2, tag="ud")
    for name, blob in (("a.dcm", data), ("b.dcm", data2)):
        upload(f, name, blob)
        ingest(f, name)
    settle(f, study)
    upload(f, "a2.dcm", instance(study, series, sop, pixel=3))
    ingest(f, "a2.dcm")
    settle(f, study)
    idx = f.services.index
    idx.remove_instances(study, [(series, sop2)],
                         [ChangeEntry(study, series, sop2, Action.DELETE, f.services.sequencer.next(), utcnow())])
    settle(f, study)
    kinds = [(str(e.type), e.data["imageSopInstanceUid"]) for e in f.publisher.events
             if str(e.type).startswith("Dicom.Image")]
    assert kinds == [(EventType.IMAGE_CREATED, sop), (EventType.IMAGE_CREATED, sop2),
                     (EventType.IMAGE_UPDATED, sop), (EventType.IMAGE_DELETED, sop2)]
    feed = [(e.sop, e.action, e.state) for e in changefeed.entries(idx, None, None, horizon=0)]
    assert feed == [(sop, "create", "replaced"), (sop2, "create", "deleted"), (sop, "update", "current"),
                    (sop2, "delete", "deleted")]
    # A study emptied by deletes loses its aggregates and lookups.
    idx.remove_instances(study, [(series, sop)],
                         [ChangeEntry(study, series, sop, Action.DELETE, f.services.sequencer.next(), utcnow())])
    assert settle(f, study) == "deleted"
    assert idx.get_study(study) is None and idx.list_series(study) == []
    assert qido(f, Level.STUDY, [("PatientID", "PID-1")]) == []


def test_a_settle_run_that_loses_the_race_for_the_settle_state_settles_again() -> None:
    f = memory_services()
    items = study_of(1, 2, tag="race")
    for _, _, sop, data in items:
        upload(f, f"{sop}.dcm", data)
        ingest(f, f"{sop}.dcm")
    study = items[0][0]
    settle(f, study)
    f.queues.drain(layout.SETTLE_QUEUE)
    idx = f.services.index
    assert idx.get_settle_state(study) is not None
    real_hold = idx.hold_settle_state

    def overtaken(s: str, state: Any, seconds: float) -> Any:  # another run writes the state right after
        got = real_hold(s, state, seconds)
        idx.t.upsert("dicominstances", {**dict(idx.get_settle_state(s) or {}), "touched": True})
        return got

    idx.hold_settle_state = overtaken  # type: ignore[method-assign]
    assert SettleService(f.services).settle(SettleRequest(study, force=True)).state == "raced"
    assert [orjson.loads(m) for m, _ in f.queues.drain(layout.SETTLE_QUEUE)] == [{"study": study, "force": True}]


def test_one_settle_run_at_a_time_per_study() -> None:
    f = memory_services()
    items = study_of(1, 2, tag="lease")
    for _, _, sop, data in items:
        upload(f, f"{sop}.dcm", data)
        ingest(f, f"{sop}.dcm")
    study = items[0][0]
    f.queues.drain(layout.SETTLE_QUEUE)
    idx = f.services.index
    held, _ = idx.hold_settle_state(study, idx.get_settle_state(study), 30)
    assert held is not None
    assert settle(f, study) == "busy"  # another run holds it: nothing announced twice
    assert f.publisher.calls == 0 and len(f.queues.drain(layout.SETTLE_QUEUE)) == 1  # it tries again later
    idx.release_settle_state(study, {}, held)
    assert settle(f, study) == "stable" and f.publisher.calls == 1


def test_an_arrival_group_settles_its_studies_in_one_run_holding_each_it_announces() -> None:
    """The per-file path's group message (every study one process wrote first in a window): one run, one
    publish call, each study held while its images are announced; a study another run holds is left to it
    and looked at again later on its own."""
    f = memory_services(**PRODUCTION)
    studies = [study_of(1, 2, tag=f"grp{k}") for k in range(3)]
    for items in studies:
        for _, _, sop, data in items:
            upload(f, f"{sop}.dcm", data)
            ingest(f, f"{sop}.dcm")
    uids = [items[0][0] for items in studies]
    f.services.scheduler.flush()  # what the group's timer does within a second of the joins
    ((text, _),) = f.queues.drain(layout.SETTLE_QUEUE)
    request = SettleRequest.from_message(text)
    assert request.studies == tuple(uids) and request.hold
    idx = f.services.index
    other, _ = idx.hold_settle_state(uids[2], None, 30)  # another process's run works on the third
    holds = []
    real_hold = idx.hold_settle_state

    def hold(study: str, state: Any, seconds: float) -> Any:
        holds.append(study)
        return real_hold(study, state, seconds)

    idx.hold_settle_state = hold  # type: ignore[method-assign]
    f.services.scheduler.clock = lambda: 1e12  # long quiet: stable at once
    results = SettleService(f.services).settle_group(request.studies, hold=True)
    assert {r.study: r.state for r in results} == {uids[0]: "stable", uids[1]: "stable", uids[2]: "busy"}
    assert sorted(holds) == sorted(uids[:2]) and f.publisher.calls == 1
    assert [orjson.loads(m) for m, _ in f.queues.drain(layout.SETTLE_QUEUE)] == [{"study": uids[2]}]
    # A run with nothing new to announce takes no hold: one read, nothing written.
    holds.clear()
    before = f.requests()
    assert [r.state for r in SettleService(f.services).settle_group(uids[:2], hold=True)] == ["unchanged"] * 2
    assert holds == [] and f.requests() - before == 2
    idx.release_settle_state(uids[2], {}, other or "")


def test_settle_message_round_trips_and_refuses_what_is_not_ours() -> None:
    req = SettleRequest(uid("m"), force=True)
    assert SettleRequest.from_message(req.to_message()) == req
    with pytest.raises(ValueError, match="study"):
        SettleRequest.from_message(b'{"nope": 1}')
