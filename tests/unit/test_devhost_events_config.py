"""events.json parsing: the real file loads, and each malformation names its field and the fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from devhost.subscriptions import EventsConfigError, load, parse

ROOT = Path(__file__).resolve().parents[2]
GOOD: dict[str, Any] = {
    "topics": {"storage": {"kind": "systemTopic", "schema": "EventGridSchema"},
               "dicom": {"kind": "customTopic", "schema": "CloudEventSchemaV1_0"}},
    "subscriptions": [
        {"name": "ingest-inbox", "topic": "storage", "function": "ingest", "endpoint": "blobTrigger",
         "filter": {"includedEventTypes": ["Microsoft.Storage.BlobCreated"],
                    "subjectBeginsWith": "/blobServices/default/containers/dicom-inbox/blobs/"},
         "retryPolicy": {"maxDeliveryAttempts": 5}, "deadLetterContainer": "eventgrid-deadletter"},
        {"name": "ct", "topic": "dicom", "function": "route", "endpoint": "eventGridTrigger",
         "filter": {"advancedFilters": [{"operatorType": "NumberInRange", "key": "data.sizeBytes",
                                         "values": [[0, 10]]}]}},
    ],
}


def test_the_repo_events_files_load() -> None:
    cfg = load(ROOT / "infra" / "events.json")
    assert "dicom-inbox" in cfg.watched_containers()
    assert cfg.custom_topic() == "dicom"
    assert load(ROOT / "tests" / "devhost_app" / "events.json").watched_containers() == {
        "dh-inbox": "storage", "dh-inbox2": "storage"}


def test_topic_names_come_from_the_file_only() -> None:
    """No topic name is built in: a system topic called anything is watched, a custom one is published to."""
    doc = json.loads(json.dumps(GOOD))
    doc["topics"] = {"blobs": doc["topics"]["storage"], "app-events": doc["topics"]["dicom"]}
    for sub in doc["subscriptions"]:
        sub["topic"] = {"storage": "blobs", "dicom": "app-events"}[sub["topic"]]
    cfg = parse(doc)
    assert cfg.system_topics() == ["blobs"]
    assert cfg.watched_containers() == {"dicom-inbox": "blobs"}
    assert cfg.custom_topic() == "app-events"


def test_good_document() -> None:
    cfg = parse(GOOD)
    sub = cfg.subscriptions[0]
    assert (sub.max_delivery_attempts, sub.dead_letter_container, sub.watched_container()) == (
        5, "eventgrid-deadletter", "dicom-inbox")
    assert cfg.subscriptions[1].max_delivery_attempts == 30  # Event Grid's default


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    node: Any = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize(("doc", "needles"), [
    (_with(["topics"], []), ['"topics"']),
    (_with(["topics", "dicom", "schema"], "Custom"), ["topics.dicom.schema", "CloudEventSchemaV1_0"]),
    (_with(["subscriptions", 0, "topic"], "nope"), ["subscriptions[ingest-inbox].topic", "storage"]),
    (_with(["subscriptions", 1, "name"], "ingest-inbox"), ["used twice"]),
    (_with(["subscriptions", 0, "endpoint"], "queue"), ["endpoint", "eventGridTrigger"]),
    (_with(["subscriptions", 0, "filter", "subjectBeginsWith"], "/x"), ["subjectBeginsWith", "/containers/"]),
    (_with(["subscriptions", 0, "filter", "includedEventTypes"], "Microsoft.Storage.BlobCreated"),
     ["includedEventTypes", "list"]),
    (_with(["subscriptions", 0, "retryPolicy", "maxDeliveryAttempts"], 31), ["maxDeliveryAttempts", "1 to 30"]),
    (_with(["subscriptions", 0, "deadLetterContainer"], "Bad_Name"), ["deadLetterContainer", "container name"]),
    (_with(["subscriptions", 1, "filter", "advancedFilters", 0, "operatorType"], "StringEq"),
     ["advancedFilters[0].operatorType", "StringIn"]),
    (_with(["subscriptions", 1, "filter", "advancedFilters", 0, "values"], [[0]]), ["values", "[low, high]"]),
    (_with(["subscriptions", 1, "filter", "advancedFilters", 0], {"operatorType": "BoolEquals", "key": "data.x",
                                                                 "value": "yes"}), ["value", "true or false"]),
    (_with(["subscriptions", 1, "filter", "advancedFilters", 0], {"operatorType": "StringIn", "key": "data.x"}),
     ["values", "non-empty list"]),
])
def test_malformed_documents_name_the_field(doc: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(EventsConfigError) as err:
        parse(doc, "events.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith("events.json: ")
    for n in needles:
        assert n in message


def test_invalid_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "e.json"
    bad.write_text(json.dumps(GOOD)[:-3])
    with pytest.raises(EventsConfigError, match="invalid JSON at line 1"):
        load(bad)
    with pytest.raises(EventsConfigError, match="cannot be read"):
        load(tmp_path / "missing.json")
