"""infra/events.json: which events reach ``inference`` and ``routing`` (Event Grid filter semantics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devhost.subscriptions import Subscription, load, matches

ROOT = Path(__file__).resolve().parents[2]


def subs(function: str) -> list[Subscription]:
    return [s for s in load(ROOT / "infra" / "events.json").subscriptions if s.function == function]


def event(kind: str, **data: object) -> dict:
    return {"specversion": "1.0", "type": kind, "subject": "/studies/1/series/2", "data": data}


def reaches(function: str, ev: dict) -> bool:
    return any(matches(s, ev) for s in subs(function))


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        (event("Dicom.SeriesStable", modality="CT", derived=False), True),
        (event("Dicom.SeriesStable", modality="MG", derived=False), True),
        (event("Dicom.SeriesStable", modality="SEG", derived=True), False),
        (event("Dicom.SeriesStable", modality="CT", derived=True), False),
        (event("Dicom.SeriesStable", modality="US", derived=False), False),
        (event("Dicom.StudyStable", modality="CT", derived=False), False),
        (event("Dicom.ImageCreated", modality="CT", derived=False), False),
    ],
)
def test_inference_gets_stable_source_series_only(ev: dict, expected: bool) -> None:
    assert reaches("inference", ev) is expected


@pytest.mark.parametrize(
    "kind",
    ["Dicom.StudyStable", "Dicom.SeriesStable", "Dicom.ImageCreated", "Dicom.ImageUpdated", "Dicom.InferenceCompleted"],
)
def test_routing_gets_every_trigger_a_rule_may_name(kind: str) -> None:
    assert reaches("routing", event(kind, derived=True))


def test_routing_never_gets_its_own_outcomes() -> None:
    assert not reaches("routing", event("Dicom.RoutingCompleted"))
    assert not reaches("routing", event("Dicom.RoutingFailed"))


def test_routing_delivers_often_enough_for_the_ledger_to_give_up_first() -> None:
    from shared.routing.rules import SCHEMA

    most = SCHEMA["$defs"]["rule"]["properties"]["retry"]["properties"]["maxAttempts"]["maximum"]
    assert all(s.max_delivery_attempts > most for s in subs("routing"))


def test_the_published_rules_schema_names_exactly_the_triggers_routing_receives() -> None:
    """The trigger enum lives in shared/routing/rules.schema.json; events.json must deliver each of them."""
    from shared.events.types import EventType
    from shared.routing.rules import SCHEMA

    enum = SCHEMA["$defs"]["rule"]["properties"]["trigger"]["oneOf"][0]["enum"]
    assert set(enum) <= {str(t) for t in EventType}
    received = {t for s in subs("routing") for t in s.filter.included_event_types}
    assert set(enum) == received
