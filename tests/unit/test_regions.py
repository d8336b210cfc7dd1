"""Two regions on in-memory fakes: per-region containers, version stamps, the peer follower, conflicts,
deletes and reindex. Object replication between the fake accounts is :func:`tests.fakes.replicate` (one
pass = what Azure does asynchronously); the follower reads the peer's fake tables as it reads the peer's
table endpoint in Azure."""

from __future__ import annotations

import pytest

from shared.config import Settings, SettingsError
from shared.events.types import EventType
from shared.index import changefeed, keys
from shared.ingest import follow
from shared.ingest.reindex import reindex
from shared.ingest.service import IngestService
from shared.ingest.states import IngestState
from shared.storage import layout
from shared.storage.regions import STAMP, Topology, stamp, stamp_region
from tests.instances import instance, study_of
from tests.pair import A_ARCHIVE, B_ARCHIVE, Pair, sops_found

# -- names and settings ------------------------------------------------------------------------------

def test_each_region_writes_its_own_regional_containers_and_holds_the_peers_replicas() -> None:
    t = Topology("primary", ("secondary",))
    assert t.own(layout.ARCHIVE) == "dicom-archive-primary"
    assert t.replicas(layout.CONFIG) == ("dicomflow-config-secondary",)
    assert t.own(layout.METADATA) == layout.METADATA and t.replicas(layout.INBOX) == ()
    assert t.writer_of("dicom-quarantine-secondary") == "secondary" and t.writer_of(layout.INBOX) == ""
    assert set(t.containers()) == {"dicom-inbox", "dicom-metadata", "eventgrid-deadletter", "dicom-audit",
                                   "dicom-cache", "dicom-archive-primary",
                                   "dicom-quarantine-primary", "dicomflow-config-primary"}
    assert set(layout.region_containers("primary", ["secondary"])) == set(t.containers()) | {
        "dicom-archive-secondary", "dicom-quarantine-secondary", "dicomflow-config-secondary"}
    assert Topology().containers() == layout.CONTAINERS  # one region on its own: the plain names
    with pytest.raises(ValueError, match="not a regional container"):
        layout.regional(layout.INBOX, "primary")


@pytest.mark.parametrize(("env", "message"), [
    ({"DICOMFLOW_REGION": "West-Europe"}, "lowercase letters and digits"),
    ({"DICOMFLOW_PEER_REGION": "b"}, "DICOMFLOW_REGION is not"),
    ({"DICOMFLOW_REGION": "a", "DICOMFLOW_PEER_REGION": "a"}, "must differ"),
    ({"DICOMFLOW_FOLLOW_WORKERS": "0"}, "DICOMFLOW_FOLLOW_WORKERS must be from 1 to 64"),
    ({"DICOMFLOW_FAILBACK_MAX_LAG_SECONDS": "-5"}, "DICOMFLOW_FAILBACK_MAX_LAG_SECONDS must not be negative"),
])
def test_region_settings_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_stamps_sort_by_time_then_region() -> None:
    assert stamp("a", 1.0) < stamp("b", 1.0) < stamp("a", 1.001)
    assert stamp_region(stamp("secondary", 5.0)) == "secondary"


# -- writing in a region -----------------------------------------------------------------------------

def test_ingest_in_a_region_archives_into_its_own_container_stamped_at_three_requests() -> None:
    pair = Pair(DICOMFLOW_STABLE_AGE_SECONDS="60", DICOMFLOW_SETTLE_DELAY_SECONDS="5")
    items = study_of(1, 4, tag="own")
    for _, _, sop, data in items:
        pair.a.blobs.put(layout.INBOX, f"{sop}.dcm", data)
    before = pair.a.requests()
    for _, _, sop, _ in items:
        svc = pair.a.services
        assert IngestService(svc).ingest(svc.blobs.open(layout.INBOX, f"{sop}.dcm")).state is IngestState.ARCHIVED
    # Per instance as one region on its own: header read, archive copy, row + change; per series a pending row,
    # per study a settle message, and (a region of a pair) the study's arrival mark for this hour.
    assert pair.a.requests() - before == 4 * 3 + 1 + 1 + 1
    marks = [n for n in pair.a.blobs.names(A_ARCHIVE) if n.startswith(layout.ARRIVALS_PREFIX)]
    assert len(marks) == 1 and marks[0].endswith(f"/{items[0][0]}")
    study, series, sop, _ = items[0]
    archived = pair.a.blobs.blobs[(A_ARCHIVE, layout.instance_path(study, series, sop))]
    row = pair.a.services.index.get_instance(study, series, sop)
    assert row is not None and archived.metadata[STAMP] == row.record.stamp
    assert stamp_region(row.record.stamp) == "a"
    assert not [k for k in pair.a.blobs.blobs if k[0] in (layout.ARCHIVE, B_ARCHIVE)]


def test_a_region_reads_the_peers_replica_and_never_writes_it() -> None:
    pair = Pair()
    (study, series, sop, data), = study_of(1, 1, tag="read")
    pair.ingest("a", data, "x.dcm")
    pair.replicate("a")
    b = pair.b.services.blobs
    path = layout.instance_path(study, series, sop)
    assert b.read(layout.ARCHIVE, path) == data
    assert b.open(layout.ARCHIVE, path).read_range(0, 4)[0] == data[:4]
    assert [i.name for i in b.list(layout.ARCHIVE, layout.study_prefix(study))] == [path]
    b.write(layout.QUARANTINE, "note.txt", b"x")
    assert ("dicom-quarantine-b", "note.txt") in pair.b.blobs.blobs
    assert not [k for k in pair.b.blobs.blobs if k[0].endswith("-a") and k[1] == "note.txt"]


def test_configuration_is_read_from_the_newest_copy_in_either_region() -> None:
    pair = Pair()
    pair.a.services.blobs.write(layout.CONFIG, layout.RULES_DOC, b"from-a")
    pair.replicate("a")
    assert pair.b.services.blobs.read(layout.CONFIG, layout.RULES_DOC) == b"from-a"
    pair.b.services.blobs.write(layout.CONFIG, layout.RULES_DOC, b"from-b")  # newer, written in b
    pair.replicate("b")
    assert pair.a.services.blobs.read(layout.CONFIG, layout.RULES_DOC) == b"from-b"
    assert pair.b.services.blobs.read(layout.CONFIG, layout.RULES_DOC) == b"from-b"


# -- following the peer ------------------------------------------------------------------------------

def test_the_follower_indexes_what_replication_brought_and_waits_for_the_rest() -> None:
    pair = Pair()
    items = study_of(2, 3, tag="follow")
    study = items[0][0]
    for _, _, sop, data in items:
        pair.ingest("a", data, f"{sop}.dcm")
    pair.settle("a", study)  # a's change feed lists them
    assert pair.follow("b") == {"waiting": 6}  # replication has not run yet
    assert sops_found(pair.b, study) == set()
    pair.replicate("a")
    assert pair.follow("b") == {}  # each waits its turn: a file that has not come is not read on every run
    pair.later(follow.BACKOFF_FIRST_SECONDS)
    assert pair.follow("b") == {"archived": 6}
    assert sops_found(pair.b, study) == {sop for _, _, sop, _ in items}  # at once, before b settles
    assert pair.follow("b") == {}  # the cursor moved on; nothing is left waiting
    assert pair.b.services.index.sync_rows(keys.follow_wait_partition("a")) == []

    # b derives everything for them but announces nothing: a did, and its subscribers ran there.
    pair.settle("b", study)
    assert pair.b.publisher.events == []
    feed = list(changefeed.entries(pair.b.services.index, None, None, horizon=0))
    assert len(feed) == 6 and {e.origin for e in feed} == {"a"}
    # a, following b, skips what b indexed from a's own archive.
    assert pair.follow("a") == {"skipped": 6}
    kinds = {str(e.type) for e in pair.a.publisher.events}
    assert {EventType.IMAGE_CREATED, EventType.STUDY_STABLE} <= kinds


def test_the_same_sop_written_in_both_regions_ends_in_the_newer_version_everywhere() -> None:
    pair = Pair()
    (study, series, sop, v1), = study_of(1, 1, tag="conflict")
    v2 = instance(study, series, sop, pixel=99)
    path = layout.instance_path(study, series, sop)
    assert pair.ingest("a", v1, "v1.dcm") is IngestState.ARCHIVED
    pair.settle("a", study)
    pair.replicate("a")
    pair.follow("b")
    # Region a is lost; the same SOP arrives in b with new content.
    assert pair.ingest("b", v2, "v2.dcm") is IngestState.UPDATED
    pair.settle("b", study)
    # a returns: replication of b's archive catches up, a follows b's feed.
    pair.replicate("b")
    assert pair.follow("a")["updated"] == 1
    pair.settle("a", study)
    pair.replicate("a")  # the newer version, now also in a's own archive, reaches b's replica of it
    pair.follow("b")
    for f in (pair.a, pair.b):
        row = f.services.index.get_instance(study, series, sop)
        assert row is not None and stamp_region(row.record.stamp) == "b"
        assert f.services.blobs.read(layout.ARCHIVE, path) == v2  # what reads serve: the newer version
    rows = [f.services.index.get_instance(study, series, sop) for f in (pair.a, pair.b)]
    assert rows[0].record.digest == rows[1].record.digest and rows[0].record.stamp == rows[1].record.stamp
    # Both versions are kept (b's own copy and a's previous one, a version under blob versioning in Azure).
    assert pair.a.blobs.blobs[(B_ARCHIVE, path)].data == v2


def test_an_older_version_arriving_late_does_not_replace_a_newer_one() -> None:
    pair = Pair()
    (study, series, sop, v1), = study_of(1, 1, tag="late")
    v2 = instance(study, series, sop, pixel=42)
    pair.ingest("a", v1, "old.dcm")  # written in a, not yet replicated when a is lost
    pair.settle("a", study)
    pair.ingest("b", v2, "new.dcm")  # later, in b
    pair.replicate("a")  # a's older version finally arrives in b
    assert pair.follow("b") == {"superseded": 1}
    row = pair.b.services.index.get_instance(study, series, sop)
    assert row is not None and stamp_region(row.record.stamp) == "b"
    assert pair.b.services.blobs.read(layout.ARCHIVE, layout.instance_path(study, series, sop)) == v2


def test_a_delete_in_one_region_is_applied_in_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.dicomweb import service
    from shared.dicomweb.delete import delete

    pair = Pair()
    monkeypatch.setattr(service, "services", lambda call: pair.a.services)
    items = study_of(1, 2, tag="del")
    study, series, sop, _ = items[0]
    for _, _, s, data in items:
        pair.ingest("a", data, f"{s}.dcm")
    pair.settle("a", study)
    pair.replicate("a")
    pair.follow("b")
    call = service.Call(pair.a.services.settings, method="DELETE", study=study, series=series, sop=sop)
    assert delete(call).status == 204
    pair.settle("a", study)
    pair.replicate("a")
    assert pair.follow("b").get("deleted") == 1
    assert sops_found(pair.b, study) == {items[1][2]}
    assert pair.b.services.blobs.read(layout.ARCHIVE, layout.instance_path(study, series, sop)) is None


# -- reindex -----------------------------------------------------------------------------------------

def test_reindex_builds_a_regions_index_from_its_archive_and_resumes() -> None:
    pair = Pair()
    items = study_of(2, 4, tag="reindex")
    study = items[0][0]
    for _, _, sop, data in items:
        pair.ingest("a", data, f"{sop}.dcm")
    pair.replicate("a")  # b holds the replica but never followed a's feed (say, it was deployed later)
    assert sops_found(pair.b, study) == set()
    first = reindex(pair.b.services).total()
    assert first == {"archived": 8}
    assert sops_found(pair.b, study) == {sop for _, _, sop, _ in items}
    before = pair.b.requests()
    assert reindex(pair.b.services).total() == {"current": 8}  # idempotent: a row read per file, no writes
    assert pair.b.requests() - before == 8 + 2 + 2 + 2  # rows; listings of own and replica; position get/delete
    # An interrupted run resumes after its saved position.
    names = sorted(n for c, n in pair.b.blobs.blobs if c == A_ARCHIVE and n.endswith(".dcm"))
    pair.b.services.index.put_sync(keys.reindex_keys(A_ARCHIVE), {"after": names[4]})
    resumed = reindex(pair.b.services)
    assert resumed.resumed == {A_ARCHIVE: names[4]} and resumed.total() == {"current": 3}
    assert pair.b.services.index.get_sync(keys.reindex_keys(A_ARCHIVE)) is None


def test_a_replicated_instance_costs_the_secondary_two_requests_and_the_primary_none_per_instance() -> None:
    pair = Pair(DICOMFLOW_STABLE_AGE_SECONDS="60", DICOMFLOW_SETTLE_DELAY_SECONDS="5")
    items = study_of(2, 25, tag="cost")
    for _, _, sop, data in items:
        pair.ingest("a", data, f"{sop}.dcm")
    pair.settle("a", items[0][0])
    pair.replicate("a")
    b_before, a_before = pair.b.requests(), pair.a.requests()
    assert pair.follow("b") == {"archived": 50}
    spent = pair.b.requests() - b_before
    # Per instance: the header read of the replica and one table transaction (row + change entry), as ingest
    # without the copy. Per series a pending row, per study a settle message; per run the follower's cursor
    # (read, saved) and its list of entries still waiting for their file.
    assert pair.b.blobs.requests["blob GET range"] == 50
    assert pair.b.tables.requests["table POST batch dicominstances"] == 50
    assert spent == 50 * 2 + 2 + 1 + 3
    # The primary pays only the reads of its change feed (a few queries per run, whatever the count).
    assert pair.a.requests() - a_before <= 8
