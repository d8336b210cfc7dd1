"""Reprocess (shared/ingest/reprocess.py) on in-memory fakes of the ports: which studies a user's selection
finds, and that what is announced again is what settle published (same data, new ids), stable studies only."""

from __future__ import annotations

import pytest

from shared.events.types import EventType
from shared.ingest import reprocess
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.storage import layout
from tests.fakes import Fakes, memory_services
from tests.instances import study_of


def stored(f: Fakes, items: list[tuple[str, str, str, bytes]]) -> str:
    """Ingest and settle one study; its UID."""
    for _, _, sop, data in items:
        f.blobs.put(layout.INBOX, f"{sop}.dcm", data)
        IngestService(f.services).ingest(f.services.blobs.open(layout.INBOX, f"{sop}.dcm"))
    study = items[0][0]
    SettleService(f.services).settle(SettleRequest(study))
    return study


def of(f: Fakes, kind: EventType, study: str) -> list[dict]:
    return [e.to_cloud_event() for e in f.publisher.of_type(str(kind))
            if e.data["imageStudyInstanceUid"] == study]


def test_announced_again_as_settle_announced_them() -> None:
    f = memory_services()
    study = stored(f, study_of(2, 2, tag="rp"))
    series_before, study_before = of(f, EventType.SERIES_STABLE, study), of(f, EventType.STUDY_STABLE, study)
    assert len(series_before) == 2 and len(study_before) == 1

    plan, published = reprocess.reannounce(f.services, study)
    assert (plan.skipped, published) == (None, 3)
    series_again = of(f, EventType.SERIES_STABLE, study)[2:]
    study_again = of(f, EventType.STUDY_STABLE, study)[1:]
    key = sorted  # the order of series is not part of the contract
    assert key(e["data"]["imageSeriesInstanceUid"] + str(e["data"]) for e in series_again) == \
        key(e["data"]["imageSeriesInstanceUid"] + str(e["data"]) for e in series_before)
    assert [e["data"] for e in study_again] == [e["data"] for e in study_before]
    assert [e["subject"] for e in study_again] == [e["subject"] for e in study_before]
    old_ids = {e["id"] for e in series_before + study_before}
    assert not old_ids & {e["id"] for e in series_again + study_again}  # new events, not redeliveries

    n = len(f.publisher.events)
    assert reprocess.reannounce(f.services, study, dry_run=True)[1] == 0 and len(f.publisher.events) == n
    assert reprocess.reannounce(f.services, study, levels=("study",))[1] == 1
    assert [str(e.type) for e in f.publisher.events[n:]] == [EventType.STUDY_STABLE]
    series = series_before[0]["data"]["imageSeriesInstanceUid"]
    plan, published = reprocess.reannounce(f.services, study, series_uids={series})
    assert published == 1 and [s.series_instance_uid for s in plan.series] == [series]
    assert str(f.publisher.events[-1].type) == EventType.SERIES_STABLE


def test_selection_by_study_date_and_by_series() -> None:
    f = memory_services()
    january = stored(f, study_of(1, 1, tag="jan", study_date="20260115"))
    march = stored(f, study_of(1, 1, tag="mar", study_date="20260301"))
    index = f.services.index
    assert list(reprocess.find_studies(index, date_from="2026-01-01", date_to="20260131")) == [january]
    assert list(reprocess.find_studies(index, date_from="20260201")) == [march]  # open end
    assert set(reprocess.find_studies(index, date_to="2026-12-31")) == {january, march}
    assert list(reprocess.find_studies(index, study_uids=[march, march], date_to="20260131")) == [march, january]
    with pytest.raises(ValueError, match="YYYYMMDD"):
        list(reprocess.find_studies(index, date_from="last tuesday"))
    series = index.list_series(march)[0].series_instance_uid
    assert reprocess.find_series(index, [series, "1.2.3.999"]) == {march: {series}}


def test_only_a_study_settle_found_stable_and_unchanged() -> None:
    f = memory_services(DICOMFLOW_STABLE_AGE_SECONDS="60")  # instances may still arrive
    study = stored(f, study_of(1, 2, tag="busy"))
    assert of(f, EventType.STUDY_STABLE, study) == []
    n = len(f.publisher.events)
    plan, published = reprocess.reannounce(f.services, study)
    assert (plan.skipped, published, len(f.publisher.events)) == ("not-stable", 0, n)
    assert reprocess.reannounce(f.services, "1.2.3.4.5.6.7.8")[0].skipped == "not-found"
