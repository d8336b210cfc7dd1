"""Routing rules: schema errors name the rule's index and field; conditions match as documented."""

from __future__ import annotations

import orjson
import pytest

from shared.errors import BadInput, Reason
from shared.routing.rules import parse

DICOM = {"type": "dicom", "aeTitle": "PACS", "host": "127.0.0.1", "port": 104}


def doc(*rules: dict) -> bytes:
    return orjson.dumps({"rules": list(rules)})


def rule(**kw: object) -> dict:
    return {"name": "r", "destinations": [DICOM], **kw}


def test_defaults_route_a_stable_study_with_five_attempts() -> None:
    (r,) = parse(doc(rule()))
    assert r.triggers == ("Dicom.StudyStable",)
    assert r.fires_on("Dicom.StudyStable") and not r.fires_on("Dicom.ImageCreated")
    assert (r.max_attempts, r.backoff_seconds) == (5, 30.0)
    assert r.destinations[0].id == "dicom:PACS@127.0.0.1:104"


def test_immediate_rule_fires_on_image_created() -> None:
    (r,) = parse(doc(rule(trigger=["Dicom.ImageCreated"])))
    assert r.fires_on("Dicom.ImageCreated")


@pytest.mark.parametrize(
    ("conditions", "facts", "expected"),
    [
        ({"Modality": "CT"}, {"Modality": "CT"}, True),
        ({"Modality": "CT"}, {"Modality": "MR"}, False),
        ({"Modality": ["MR", "CT"]}, {"Modality": "CT"}, True),
        ({"BodyPartExamined": "HEAD*"}, {"BodyPartExamined": "HEADNECK"}, True),
        ({"BodyPartExamined": "HEAD*"}, {"BodyPartExamined": "CHEST"}, False),
        ({"StationName": "CT?"}, {"StationName": "CT1"}, True),
        ({"StationName": "CT?"}, {"StationName": "CT12"}, False),
        ({"InstitutionName": "*General*"}, {"InstitutionName": "Phantom General Hospital"}, True),
        ({"InstitutionName": "*"}, {}, True),
        ({"InstitutionName": "?*"}, {}, False),
        ({"derived": False}, {"derived": True}, False),
        ({"derived": True}, {"derived": True}, True),
        ({"aiPriority": True}, {"aiPriority": False}, False),
        ({"Modality": "CT", "derived": False}, {"Modality": "CT", "derived": False}, True),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, True),
        ({"Modality": "ct"}, {"Modality": "CT"}, False),  # CS values are case-sensitive, as in PS3.4
    ],
)
def test_conditions(conditions: dict, facts: dict, expected: bool) -> None:
    (r,) = parse(doc(rule(conditions=conditions)))
    assert r.matches(facts) is expected


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([rule(), {"name": "b", "destinations": [{**DICOM, "port": "x"}]}], "rule 1 ('b') field destinations[0].port"),
        ([rule(destinations=[{"type": "dicomweb"}])], "rule 0 ('r') field destinations[0]: 'url' is a required"),
        ([rule(conditions={"Modalty": "CT"})], "rule 0 ('r') field conditions: Additional properties"),
        ([rule(conditions={"Modality": 5})], "rule 0 ('r') field conditions.Modality"),
        ([rule(trigger="Dicom.Nope")], "rule 0 ('r') field trigger"),
        ([rule(destinations=[{"type": "ftp"}])], "rule 0 ('r') field destinations[0].type"),
        ([rule(destinations=[{"type": "worklist", "group": "Bad Group"}])], "field destinations[0].group"),
        ([rule(retry={"maxAttempts": 0})], "rule 0 ('r') field retry.maxAttempts"),
        ([rule(retry={"maxAttempts": 40})], "rule 0 ('r') field retry.maxAttempts: 40 is greater"),
        ([rule(), rule()], "rule 1 field name: 'r' is used twice"),
        ([{"destinations": [DICOM]}], "rule 0 field (rule): 'name' is a required property"),
    ],
)
def test_bad_documents_name_the_rule_index_and_field(rules: list, expected: str) -> None:
    with pytest.raises(BadInput) as info:
        parse(doc(*rules))
    assert info.value.reason == Reason.ROUTING_BAD_RULES
    assert expected in info.value.message, info.value.message


def test_not_json_is_rejected() -> None:
    with pytest.raises(BadInput, match="not JSON"):
        parse(b"{rules: ")


@pytest.mark.parametrize("container", ["dicom-archive", "dicom-archive-secondary", "dicom-inbox", "dicomflow-config",
                                       "dicomflow-config-primary", "dicom-quarantine-eu2", "dicom-metadata",
                                       "eventgrid-deadletter"])
def test_an_export_into_the_apps_own_containers_is_refused(container: str) -> None:
    with pytest.raises(BadInput) as info:
        parse(doc(rule(destinations=[{"type": "export", "container": container}])))
    assert "rule 0 ('r') field destinations[0].container" in info.value.message
    assert "one of the app's own containers" in info.value.message
    (ok,) = parse(doc(rule(destinations=[{"type": "export", "container": "research-archive"}])))
    assert ok.destinations[0].options["container"] == "research-archive"


@pytest.mark.parametrize(("url", "accepted"), [
    ("https://pacs.example/dicom-web", True), ("HTTPS://pacs.example/dicom-web", True),
    ("http://127.0.0.1:8042/dicom-web", True), ("http://localhost/dicom-web", True), ("http://[::1]:80", True),
    ("http://pacs.example/dicom-web", False), ("http://127.0.0.1.evil.example/dicom-web", False),
    ("http://localhost.evil.example", False), ("ftp://pacs.example", False),
])
def test_stow_destinations_are_https_or_this_machine(url: str, accepted: bool) -> None:
    document = doc(rule(destinations=[{"type": "dicomweb", "url": url}]))
    if accepted:
        assert parse(document)[0].destinations[0].options["url"] == url
        return
    with pytest.raises(BadInput) as info:
        parse(document)
    assert "field destinations[0].url" in info.value.message


def test_the_schema_names_exactly_the_apps_containers() -> None:
    import re

    from shared.routing.rules import SCHEMA
    from shared.storage.layout import CONTAINERS

    export = next(b["then"]["properties"]["container"] for b in SCHEMA["$defs"]["destination"]["allOf"]
                  if b["if"]["properties"]["type"]["const"] == "export")
    names = re.fullmatch(r"\^\(\?:(.*)\)\(\?:-\|\$\)", export["not"]["pattern"])
    assert names is not None and set(names.group(1).split("|")) == set(CONTAINERS)


def test_a_dicom_destination_may_ask_for_tls_and_holds_no_secret() -> None:
    (r,) = parse(doc(rule(destinations=[{**DICOM, "tls": True}])))
    assert r.destinations[0].options["tls"] is True
    with pytest.raises(BadInput):
        parse(doc(rule(destinations=[{**DICOM, "password": "s3cret"}])))
