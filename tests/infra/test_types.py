"""Every Bicep resource body checked against Azure's resource type definitions (tests/infra/bicep_types.py).

The definitions live outside the repository: ``../shared/bicep-types`` (CI always has them), or wherever
``BICEP_TYPES_DIR`` points. Without them these tests are skipped on a developer's machine, saying how to get
them, and fail in CI (``CI=true``), where a skip would pass unchecked infra; with them, a planted typo in a
property name fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.infra import bicep_types
from tests.infra.bicep_types import TYPES_ENV, Checker, TypeIndex, types_dir
from tests.infra.bicepcheck import INFRA, BicepFile, infra_files

FILES = infra_files()
IDS = [str(p.relative_to(INFRA)) for p in FILES]


@pytest.fixture(scope="module")
def checker() -> Checker:
    root = types_dir()
    if root is None:
        why = (f"No Azure resource type definitions: put a copy of Azure/bicep-types-az's generated/ folder at "
               f"../shared/bicep-types (next to the repository) or set {TYPES_ENV} to the folder that holds generated/")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)
    return Checker(TypeIndex(root))


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_resource_body_fits_its_type(path: Path, checker: Checker) -> None:
    assert checker.check(BicepFile.load(path)) == []


def test_the_definitions_cover_every_resource_type_used(checker: Checker) -> None:
    used = set()
    for path in FILES:
        for res in BicepFile.load(path).doc.get("resources", {}).values():
            used.add(f"{res['type']}@{res['api_version']}")
    assert used, "infra/ declares no resource"
    missing = {u for u in used if checker.index.resource(*u.split("@")) is None
               and u.lower() not in checker.index.functions}
    assert missing == set()


def _problems(checker: Checker, text: str, path: Path = INFRA / "modules" / "snippet.bicep") -> str:
    return "\n".join(checker.check(BicepFile.from_text(text, path)))


def test_a_planted_typo_in_a_property_name_fails(checker: Checker) -> None:
    real = (INFRA / "modules" / "storage.bicep").read_text()
    assert "supportsHttpsTrafficOnly: true" in real
    planted = real.replace("supportsHttpsTrafficOnly: true", "supportsHttpsTraficOnly: true")
    problems = _problems(checker, planted, INFRA / "modules" / "storage.bicep")
    assert "property 'properties.supportsHttpsTraficOnly' is not defined" in problems
    assert "did you mean 'supportsHttpsTrafficOnly'" in problems


def test_a_typo_deep_in_a_loop_body_fails(checker: Checker) -> None:
    real = (INFRA / "modules" / "storage.bicep").read_text()
    planted = real.replace("      enabled: container == immutableContainer",
                           "      enable: container == immutableContainer")
    assert planted != real
    assert "properties.immutableStorageWithVersioning.enable' is not defined" in _problems(
        checker, planted, INFRA / "modules" / "storage.bicep")


SA = "resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'stx'\n  location: 'westeurope'\n"


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(SA + "  kind: 'StorageV2'\n  sku: {\n    name: 'Standard_LRS'\n  }\n  properties: {\n"
                 "    accessTier: 'hot'\n  }\n}\n", "accessTier is 'hot', not one of 'Hot', 'Cool', 'Premium', 'Cold' "
                 "(did you mean 'Hot'?)", id="enum-value"),
    pytest.param(SA + "  kind: 'StorageV2'\n  sku: {\n    name: 'Standard_LRS'\n    tier: 'Standard'\n  }\n}\n",
                 "property 'sku.tier' is read-only", id="read-only-nested"),
    pytest.param(SA + "  kind: 'StorageV2'\n  sku: {\n    name: 'Standard_LRS'\n  }\n  properties: {\n"
                 "    accessTier: tier\n  }\n}\n@allowed([\n  'Hot'\n  'Lukewarm'\n])\nparam tier string\n",
                 "properties.accessTier is 'Lukewarm' (parameter 'tier')", id="allowed-parameter-value"),
    pytest.param(SA + "  kind: 'StorageV2'\n  sku: {\n    name: 'Standard_LRS'\n  }\n  properties: {\n"
                 "    provisioningState: 'Succeeded'\n  }\n}\n", "properties.provisioningState' is read-only",
                 id="read-only"),
    pytest.param(SA + "  kind: 'StorageV2'\n}\n", "required property 'sku' is missing", id="required"),
    pytest.param(SA + "  kind: 'StorageV2'\n  sku: {\n    name: 'Standard_LRS'\n  }\n  properties: {\n"
                 "    supportsHttpsTrafficOnly: 'yes'\n  }\n}\n", "expects bool, got string", id="wrong-kind"),
    pytest.param(SA.replace("'stx'", "'Bad_Name'") + "  kind: 'StorageV2'\n  sku: {\n    name: 'Standard_LRS'\n"
                 "  }\n}\n", "name 'Bad_Name' does not match", id="pattern"),
    pytest.param("resource p 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {\n  name: 'default'\n"
                 "  properties: {\n    deleteRetentionPolicy: {\n      enabled: true\n      days: 400\n    }\n  }\n}\n",
                 "days 400 is outside 1..365", id="integer-range"),
    pytest.param("resource x 'Microsoft.Storage/storageAccounts@2099-01-01' = {\n  name: 'x'\n}\n",
                 "type and API version not in the definitions; known versions:", id="api-version"),
    pytest.param("var tier = true ? 'Hot' : 'Lukewarm'\n" + SA + "  kind: 'StorageV2'\n  sku: {\n"
                 "    name: 'Standard_LRS'\n  }\n  properties: {\n    accessTier: tier\n  }\n}\n",
                 "accessTier is 'Lukewarm'", id="variable-ternary-branch"),
    pytest.param("resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {\n  name: 'x'\n}\n"
                 "output e string = sa.properties.primaryEndpoints.blobs\n",
                 "sa.properties.primaryEndpoints.blobs: Microsoft.Storage/storageAccounts has no such property",
                 id="resource-property-path"),
])
def test_the_check_trips(checker: Checker, text: str, expected: str) -> None:
    problems = _problems(checker, text)
    assert expected in problems, problems


def test_module_output_references_must_exist(checker: Checker) -> None:
    text = ("module st 'storage.bicep' = {\n  name: 's'\n  params: {\n    name: 'x'\n    location: 'l'\n"
            "    containers: []\n    logAnalyticsWorkspaceId: 'w'\n  }\n}\n"
            "output a string = st.outputs.blobEndpoints\n")
    problems = _problems(checker, text)
    assert "module 'st' has no output 'blobEndpoints' (did you mean 'blobEndpoint'?)" in problems


def test_a_good_body_passes(checker: Checker) -> None:
    text = SA + ("  kind: 'StorageV2'\n  sku: {\n    name: 'Standard_RAGZRS'\n  }\n  properties: {\n"
                 "    accessTier: 'Cool'\n    minimumTlsVersion: 'TLS1_2'\n  }\n}\n")
    assert _problems(checker, text) == ""


RULE = """resource rule 'Microsoft.Cdn/profiles/ruleSets/rules@2024-02-01' = {
  name: 'writes'
  properties: {
    order: 1
    conditions: [
      {
        name: 'RequestMethod'
        parameters: {
          typeName: 'DeliveryRuleRequestMethodConditionParameters'
          operator: 'Equal'
          matchValues: [
            'POST'
            'PATCH'
          ]
        }
      }
    ]
    actions: []
  }
}
"""


def test_an_extensible_enumeration_holds_to_its_documented_values(checker: Checker) -> None:
    """Front Door's RequestMethod takes 'GET' | ... | 'TRACE' | string in the definitions; PATCH is not among the
    documented values and the service refuses it at deployment (the type check used to pass it)."""
    problems = _problems(checker, RULE)
    assert ("matchValues[1] is 'PATCH', not one of 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'TRACE'"
            in problems)
    assert "extensible enumeration" in problems
    assert "matchValues[0]" not in problems  # POST is documented
    assert _problems(checker, RULE.replace("'PATCH'", "'DELETE'")) == ""


def test_an_open_enumeration_can_be_named(checker: Checker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bicep_types, "OPEN_ENUMS", frozenset({
        ("Microsoft.Cdn/profiles/ruleSets/rules", "properties.conditions[*].parameters.matchValues[*]")}))
    assert _problems(checker, RULE) == ""


def test_infra_front_door_rule_with_patch_fails(checker: Checker) -> None:
    real = (INFRA / "modules" / "frontDoor.bicep").read_text()
    reads = "            'OPTIONS'\n          ]"
    planted = real.replace(reads, "            'OPTIONS'\n            'PATCH'\n          ]", 1)
    assert planted != real
    assert "is 'PATCH', not one of" in _problems(checker, planted, INFRA / "modules" / "frontDoor.bicep")
