"""Names shared by the Bicep, infra/events.json and the code: read from the code at test time."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from shared.events.types import EventType
from shared.index.tables import TABLES
from shared.storage.layout import CONTAINERS, LOCAL, QUEUES, REGIONAL
from tests.infra.bicepcheck import (
    INFRA,
    ROOT,
    BicepFile,
    app_settings,
    check_app_settings,
    check_bindings,
    check_events,
    check_storage_names,
    storage_names,
)

CODE_NAMES = {"localContainers": set(LOCAL), "regionalContainers": set(REGIONAL), "appQueues": set(QUEUES),
              "appTables": set(TABLES)}
EVENT_TYPES = {str(t) for t in EventType}
CONFIG_SOURCE = (ROOT / "shared" / "config.py").read_text(encoding="utf-8")


def _check(events: dict[str, Any], functions: dict[str, list[dict]]) -> list[str]:
    return check_events(events, functions, event_types=EVENT_TYPES, containers=set(CONTAINERS))


def test_events_json_matches_the_app(events: dict[str, Any], functions: dict[str, list[dict]]) -> None:
    assert events["subscriptions"], "infra/events.json has no subscriptions"
    assert _check(events, functions) == []


def test_storage_names_equal_the_code(bicep_files: dict[str, BicepFile]) -> None:
    assert check_storage_names(bicep_files["main.bicep"], CODE_NAMES) == []


def test_functions_bind_only_what_infra_creates(bicep_files: dict[str, BicepFile],
                                                functions: dict[str, list[dict]]) -> None:
    assert check_bindings(functions, storage_names(bicep_files["main.bicep"])) == []


def test_app_settings_are_what_the_app_reads(bicep_files: dict[str, BicepFile],
                                             functions: dict[str, list[dict]]) -> None:
    names = set(app_settings(bicep_files["modules/functionApp.bicep"]))
    assert check_app_settings(names, functions, CONFIG_SOURCE) == []


def test_front_door_probes_the_health_route(bicep_files: dict[str, BicepFile],
                                            functions: dict[str, list[dict]]) -> None:
    fd = bicep_files["modules/frontDoor.bicep"]
    probes = {group["properties"]["healthProbeSettings"]["probePath"]
              for _s, group in fd.resources("Microsoft.Cdn/profiles/originGroups")
              if "healthProbeSettings" in group["properties"]}
    probe, = probes  # the API's groups; the hooks and inbox groups have one origin each, or no health route
    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    anonymous_get = {f"/{prefix}/{b['route']}" for bindings in functions.values() for b in bindings
                     if b.get("type") == "httpTrigger" and str(b.get("authLevel")).upper() == "ANONYMOUS"
                     and "GET" in [m.upper() for m in b.get("methods") or ["GET"]]}
    assert probe in anonymous_get, f"Front Door probes {probe}; anonymous GET routes are {sorted(anonymous_get)}"


def test_no_function_name_is_retyped_in_bicep(bicep_files: dict[str, BicepFile]) -> None:
    """Function names reach Bicep only through infra/events.json (stage 2 loads it)."""
    for name, f in bicep_files.items():
        code = f.code_without_comments()
        assert not re.search(r"Host\.Functions\.[A-Za-z_]", code), f"{name} hard-codes a blob trigger function"
        assert not re.search(r"/functions/[A-Za-z_]", code), f"{name} hard-codes an Event Grid function"


# --- negative tests ----------------------------------------------------------------------------------------

SUB = {
    "name": "ingest-inbox", "topic": "storage", "function": "ingest", "endpoint": "blobTrigger",
    "filter": {"includedEventTypes": ["Microsoft.Storage.BlobCreated"],
               "subjectBeginsWith": "/blobServices/default/containers/dicom-inbox/blobs/"},
    "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440},
    "deadLetterContainer": "eventgrid-deadletter",
}
TOPICS = {"storage": {"kind": "systemTopic", "schema": "EventGridSchema"},
          "dicom": {"kind": "customTopic", "schema": "CloudEventSchemaV1_0"}}
FAKE_FUNCTIONS = {
    "ingest": [{"type": "blobTrigger", "path": "dicom-inbox/{name}", "connection": "DicomStorage",
                "source": "EventGrid"}],
    "route": [{"type": "eventGridTrigger", "name": "event"}],
    "settle": [{"type": "queueTrigger", "queueName": "dicom-settle", "connection": "DicomStorage"}],
}


def _events(**changes: Any) -> dict[str, Any]:
    sub = copy.deepcopy(SUB)
    sub.update(changes)
    return {"topics": copy.deepcopy(TOPICS), "subscriptions": [sub]}


def test_fake_events_pass() -> None:
    assert _check(_events(), FAKE_FUNCTIONS) == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"function": "ingest_v2"}, "function 'ingest_v2' is not in function_app.app.get_functions()"),
    ({"function": "route"}, "needs 'route' to be a blob trigger with source=EventGrid"),
    ({"endpoint": "eventGridTrigger"}, "needs 'ingest' to have an eventGridTrigger binding"),
    ({"endpoint": "webhook"}, "endpoint must be 'blobTrigger' or 'eventGridTrigger'"),
    ({"topic": "blobs"}, "topic 'blobs' is not in topics"),
    ({"filter": {"includedEventTypes": ["Dicom.ImageExploded"]}}, "'Dicom.ImageExploded' is not in shared/events"),
    ({"filter": {"includedEventTypes": ["Dicom.ImageCreated"]}}, "is never published on topic 'storage'"),
    ({"filter": {"includedEventType": ["Microsoft.Storage.BlobCreated"]}}, "'includedEventType' is not an Event Grid"),
    ({"filter": {"subjectBeginsWith": "/blobServices/default/containers/inbox/blobs/"}}, "must name a container"),
    ({"filter": {"advancedFilters": [{"key": "data.modality", "values": ["CT"]}]}}, "needs operatorType and key"),
    ({"retryPolicy": {"maxRetries": 3}}, "'maxRetries' is not an Event Grid retry field"),
    ({"deadLetterContainer": "deadletters"}, "deadLetterContainer 'deadletters' is not a container"),
    ({"name": "x"}, "name must be 3-64 letters"),
])
def test_events_rule_trips(changes: dict[str, Any], expected: str) -> None:
    problems = "\n".join(_check(_events(**changes), FAKE_FUNCTIONS))
    assert expected in problems, problems


def test_events_rule_trips_on_topic_schema_and_duplicates() -> None:
    events = _events()
    events["topics"]["dicom"]["schema"] = "EventGridSchema"
    events["subscriptions"].append(copy.deepcopy(SUB))
    problems = "\n".join(_check(events, FAKE_FUNCTIONS))
    assert "a customTopic delivers CloudEventSchemaV1_0" in problems
    assert "'ingest-inbox' is used twice" in problems


def test_storage_names_rule_trips() -> None:
    main = BicepFile.from_text(
        "var localContainers = [\n  'dicom-inbox'\n  'dicom-extra'\n]\nvar appQueues = [\n  'dicom-settle'\n]\n"
        "module r 'modules/region.bicep' = {\n  name: 'r'\n  params: {\n    localContainers: [\n      'dicom-inbox'\n"
        "    ]\n  }\n}\n", INFRA / "main.bicep")
    problems = "\n".join(check_storage_names(main, CODE_NAMES))
    assert "missing ['dicom-audit', 'dicom-cache', 'dicom-metadata'" in problems and "extra ['dicom-extra']" in problems
    assert "var regionalContainers must equal shared/storage/layout.py REGIONAL" in problems
    assert "var appTables must equal shared/index/tables.py TABLES" in problems
    assert "must pass localContainers: localContainers" in problems


def test_bindings_rule_trips() -> None:
    fns = {"settle": [{"type": "queueTrigger", "queueName": "dicom-settle-v2", "connection": "DicomStorage"}],
           "ingest": [{"type": "blobTrigger", "path": "uploads/{name}", "connection": "DicomStorage"}],
           "archived": [{"type": "blobTrigger", "path": "dicom-archive/{name}", "connection": "DicomStorage"}]}
    problems = "\n".join(check_bindings(fns, {k: set(v) for k, v in CODE_NAMES.items()}))
    assert "queue 'dicom-settle-v2'" in problems and "container 'uploads'" in problems
    assert "binds regional container 'dicom-archive'" in problems


def test_app_settings_rule_trips(bicep_files: dict[str, BicepFile]) -> None:
    names = set(app_settings(bicep_files["modules/functionApp.bicep"]))
    broken = (names - {"DicomStorage__queueServiceUri", "DicomEvents__clientId", "AzureWebJobsStorage__credential",
                       "DICOMFLOW_AUDIT_PATIENT_SALT"}) | {"DICOMFLOW_STABLE_AGE_SECOND", "DicomStorage"}
    problems = "\n".join(check_app_settings(broken, FAKE_FUNCTIONS, CONFIG_SOURCE))
    assert "storage.queue_service_uri unset" in problems
    assert "lack DicomEvents__clientId" in problems
    assert "patient salt unset (DICOMFLOW_AUDIT_PATIENT_SALT)" in problems
    assert "'DICOMFLOW_STABLE_AGE_SECOND' is not read by shared/config.py" in problems
    assert "'DicomStorage' is a connection string" in problems
    assert "'AzureWebJobsStorage' lacks AzureWebJobsStorage__credential" in problems
    assert "(queue binding) lacks DicomStorage__queueServiceUri" in problems


def _container_refs(main: BicepFile, value: object) -> dict[str, str]:
    """Container names behind '${var}/' (a local container) and '${var}-' (every region's copy of a regional
    one) prefixes in main.bicep: name -> the separator."""
    return {main.resolve(var): sep for var, sep in re.findall(r"\$\{(\w+)\}([/-])", str(value))}


def test_lifecycle_rules_name_app_containers(bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    prefixed = _container_refs(main, main.variable("lifecycleRules"))
    assert prefixed == {"dicom-archive": "-", "dicom-inbox": "/", "eventgrid-deadletter": "/", "dicom-cache": "/"}
    assert set(prefixed) <= set(CONTAINERS)
    assert all((sep == "-") == (name in REGIONAL) for name, sep in prefixed.items())


def test_each_region_replicates_exactly_its_own_regional_containers(bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    mods = {sym: body["params"] for sym, path, body in main.modules() if path.endswith("objectReplication.bicep")}
    for sym, params in mods.items():
        writer = "primaryWrites" if "Secondary" in sym else "secondaryWrites"
        assert params["containers"] == writer, f"{sym} replicates {params['containers']}"
    for key, var in (("primary", "primaryWrites"), ("secondary", "secondaryWrites")):
        loop = main.variable(var)
        assert loop["loop_type"]["detail"]["array_name"] == "regionalContainers"
        assert loop["config"] == "${c}-${" + key + "Key}" and main.variable(key + "Key") == key
