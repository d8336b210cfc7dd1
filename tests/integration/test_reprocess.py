"""Reprocess against Azurite (shared/ingest/reprocess.py): which studies a user's selection finds, and that
the events announced again are the ones settle published (same data, new ids), for stable studies only."""

from __future__ import annotations

import uuid

import pytest

from shared.ingest import reprocess
from shared.ingest.context import Context
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleRequest, SettleService
from shared.storage import layout
from tests.integration.eventsink import EventSink
from tools.corpus import CorpusOptions, load_manifest, write_corpus


@pytest.fixture(scope="module")
def stable(pipeline: Context, event_sink: EventSink, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Two patients' CT and MR studies, ingested and settled (stable at once): study UID -> manifest entry."""
    out = tmp_path_factory.mktemp("reprocess")
    write_corpus(out, CorpusOptions(patients=2, slices=2, rows=16, cols=16, seed=4242, broken=False))
    good = [e for e in load_manifest(out)["files"] if e["kind"] == "good"]
    service = IngestService(pipeline)
    for e in good:
        blob = pipeline.clients.blob.get_blob_client(layout.INBOX, f"rp/{uuid.uuid4().hex}.dcm")
        blob.upload_blob((out / e["path"]).read_bytes())
        service.ingest(blob)
    studies = {e["study_uid"]: e for e in good}
    for study in studies:
        SettleService(pipeline).settle(SettleRequest(study, force=True))
    return studies


def _settled(event_sink: EventSink, kind: str, study: str) -> list[dict]:
    return [e for e in event_sink.of_type(kind) if e["data"]["imageStudyInstanceUid"] == study]


def test_announced_again_as_settle_announced_them(pipeline: Context, event_sink: EventSink,
                                                  stable: dict[str, dict]) -> None:
    study = next(s for s, e in stable.items() if e["modality"] == "CT")
    before_series = _settled(event_sink, "Dicom.SeriesStable", study)
    before_study = _settled(event_sink, "Dicom.StudyStable", study)
    assert before_series and len(before_study) == 1

    plan, published = reprocess.reannounce(pipeline, study)
    assert published == len(before_series) + 1 and plan.skipped is None
    again_series = _settled(event_sink, "Dicom.SeriesStable", study)[len(before_series):]
    again_study = _settled(event_sink, "Dicom.StudyStable", study)[1:]
    assert [e["data"] for e in again_series] == [e["data"] for e in before_series]
    assert [e["data"] for e in again_study] == [e["data"] for e in before_study]
    assert {e["id"] for e in again_series + again_study}.isdisjoint({e["id"] for e in before_series + before_study})

    n = len(event_sink.events)
    assert reprocess.reannounce(pipeline, study, dry_run=True)[1] == 0 and len(event_sink.events) == n
    assert reprocess.reannounce(pipeline, study, levels=("study",))[1] == 1
    assert event_sink.events[-1]["type"] == "Dicom.StudyStable"


def test_selection_by_date_range_and_series(pipeline: Context, stable: dict[str, dict]) -> None:
    dates = {s: str(pipeline.index.get_study(s).study_date) for s in stable}  # type: ignore[union-attr]
    ct_date = next(dates[s] for s, e in stable.items() if e["modality"] == "CT")
    found = list(reprocess.find_studies(pipeline.index, date_from=ct_date, date_to=ct_date))
    mine = {s for s in found if s in stable}
    assert mine == {s for s, d in dates.items() if d == ct_date} and mine
    assert all(str(pipeline.index.get_study(s).study_date) == ct_date for s in found)  # type: ignore[union-attr]
    open_ended = set(reprocess.find_studies(pipeline.index, date_from=f"{ct_date[:4]}-{ct_date[4:6]}-{ct_date[6:]}"))
    assert {s for s, d in dates.items() if d >= ct_date} <= open_ended
    with pytest.raises(ValueError, match="YYYYMMDD"):
        list(reprocess.find_studies(pipeline.index, date_from="last tuesday"))

    entry = next(iter(stable.values()))
    by_series = reprocess.find_series(pipeline.index, [entry["series_uid"], "1.2.3.999"])
    assert by_series == {entry["study_uid"]: {entry["series_uid"]}}
    plan, published = reprocess.reannounce(pipeline, entry["study_uid"], series_uids={entry["series_uid"]})
    assert published == 1 and [s.series_instance_uid for s in plan.series] == [entry["series_uid"]]


def test_only_what_settle_found_stable(pipeline: Context, event_sink: EventSink, stable: dict[str, dict]) -> None:
    assert reprocess.reannounce(pipeline, "1.2.3.4.5.6.7.8")[0].skipped == "not-found"
    study = next(iter(stable))
    entity = pipeline.index.get_study_entity(study)
    assert entity is not None and entity["stable_version"] == entity["version"]
    # A study changed since settle announced it (new arrivals, a settle still to run): not announced again.
    entity["version"] = "changed"
    pipeline.index.studies.upsert_entity(entity)
    for e in pipeline.index.list_series_entities(study):
        e["version"] = "changed"
        pipeline.index.series.upsert_entity(e)
    n = len(event_sink.events)
    plan, published = reprocess.reannounce(pipeline, study)
    assert (plan.skipped, published, len(event_sink.events)) == ("not-stable", 0, n)
