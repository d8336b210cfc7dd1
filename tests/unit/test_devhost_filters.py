"""Event Grid filter evaluation (pure logic): event types, subject, advanced operators, both schemas."""

from __future__ import annotations

from typing import Any

import pytest

from devhost.subscriptions import AdvancedFilter, Filter, matches

CLOUD = {"specversion": "1.0", "id": "1", "source": "/dicomflow", "type": "Dicom.ImageCreated",
         "subject": "/studies/1.2/series/3.4/instances/5.6",
         "data": {"modality": "CT", "sizeBytes": 5000, "derived": False, "bodyPartExamined": "CHEST",
                  "tags": ["a", "B"], "nested": {"level": 3}}}
GRID = {"id": "2", "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2026-01-01T00:00:00Z",
        "subject": "/blobServices/default/containers/dicom-inbox/blobs/a/b.dcm", "dataVersion": "",
        "topic": "/subscriptions/x", "data": {"contentLength": 10, "api": "PutBlob"}}


def adv(op: str, key: str, value: Any = None, values: tuple[Any, ...] = ()) -> Filter:
    return Filter(advanced=(AdvancedFilter(op, key, value, values),))


def test_event_types_are_case_insensitive_and_empty_means_all() -> None:
    assert matches(Filter(), CLOUD) and matches(Filter(), GRID)
    assert matches(Filter(included_event_types=("dicom.imagecreated",)), CLOUD)
    assert not matches(Filter(included_event_types=("Dicom.SeriesStable",)), CLOUD)
    assert matches(Filter(included_event_types=("Microsoft.Storage.BlobCreated",)), GRID)


def test_subject_begins_and_ends_with_case_insensitive() -> None:
    assert matches(Filter(subject_begins_with="/blobServices/default/containers/DICOM-INBOX/"), GRID)
    assert not matches(Filter(subject_begins_with="/blobServices/default/containers/other/"), GRID)
    assert matches(Filter(subject_ends_with=".DCM"), GRID)
    assert not matches(Filter(subject_ends_with=".json"), GRID)


@pytest.mark.parametrize(("f", "expected"), [
    (adv("StringIn", "data.modality", values=("ct", "MR")), True),
    (adv("StringIn", "data.modality", values=("MR",)), False),
    (adv("StringNotIn", "data.modality", values=("MR", "US")), True),
    (adv("StringNotIn", "data.modality", values=("ct",)), False),
    (adv("StringNotIn", "data.missing", values=("x",)), True),
    (adv("StringBeginsWith", "subject", values=("/STUDIES/",)), True),
    (adv("StringBeginsWith", "subject", values=("/series/",)), False),
    (adv("StringEndsWith", "subject", values=("/instances/5.6",)), True),
    (adv("StringContains", "data.bodyPartExamined", values=("hes",)), True),
    (adv("StringContains", "data.bodyPartExamined", values=("head",)), False),
    (adv("StringIn", "data.tags", values=("b",)), True),
    (adv("StringIn", "data.tags", values=("c",)), False),
    (adv("BoolEquals", "data.derived", value=False), True),
    (adv("BoolEquals", "data.derived", value=True), False),
    (adv("BoolEquals", "data.missing", value=False), False),
    (adv("NumberIn", "data.sizeBytes", values=(1, 5000)), True),
    (adv("NumberIn", "data.sizeBytes", values=(1,)), False),
    (adv("NumberNotIn", "data.sizeBytes", values=(1,)), True),
    (adv("NumberLessThan", "data.sizeBytes", value=5001), True),
    (adv("NumberLessThan", "data.sizeBytes", value=5000), False),
    (adv("NumberGreaterThan", "data.sizeBytes", value=4999.5), True),
    (adv("NumberGreaterThan", "data.sizeBytes", value=5000), False),
    (adv("NumberGreaterThanOrEquals", "data.sizeBytes", value=5000), True),
    (adv("NumberLessThanOrEquals", "data.sizeBytes", value=4999), False),
    (adv("NumberInRange", "data.sizeBytes", values=((0, 10), (4000, 6000))), True),
    (adv("NumberNotInRange", "data.sizeBytes", values=((4000, 6000),)), False),
    (adv("NumberGreaterThan", "data.modality", value=1), False),
    (adv("NumberGreaterThan", "data.missing", value=1), False),
    (adv("NumberIn", "data.nested.level", values=(3,)), True),
    (adv("IsNullOrUndefined", "data.missing"), True),
    (adv("IsNullOrUndefined", "data.modality"), False),
    (adv("IsNotNull", "data.modality"), True),
    (adv("StringIn", "type", values=("dicom.imagecreated",)), True),
    (adv("StringIn", "source", values=("/dicomflow",)), True),
])
def test_advanced_operators_on_cloud_events(f: Filter, expected: bool) -> None:
    assert matches(f, CLOUD) is expected


def test_advanced_filters_on_event_grid_schema() -> None:
    assert matches(adv("StringIn", "eventType", values=("Microsoft.Storage.BlobCreated",)), GRID)
    assert matches(adv("NumberLessThan", "data.contentLength", value=11), GRID)
    assert matches(adv("StringIn", "data.api", values=("putblob",)), GRID)


def test_all_parts_must_match() -> None:
    both = Filter(included_event_types=("Dicom.ImageCreated",), subject_begins_with="/studies/",
                  advanced=(AdvancedFilter("StringIn", "data.modality", values=("CT",)),
                            AdvancedFilter("BoolEquals", "data.derived", value=True)))
    assert not matches(both, CLOUD)
    assert matches(Filter(advanced=both.advanced[:1]), CLOUD)
