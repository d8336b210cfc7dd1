"""Deployment faults the type check passed: Bicep Azure refuses, or that fails on a first or a later deployment.

Each check runs on the real files, and trips on the fault as it once was (planted back into a copy): the archive
tier on RA-GZRS accounts, VNet peerings racing on a first deployment, version-level immutability turned on for an
existing container, Flex Consumption without zone redundancy by default. (A Front Door rule matching PATCH is
test_types.py's: the type check now holds extensible enumerations to their documented values.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.bicepcheck import (
    INFRA,
    BicepFile,
    check_immutability_from_creation,
    check_peering_order,
    check_zone_redundancy,
    dependencies,
    infra_files,
    rule_no_archive_tier,
)

FILES = infra_files()
IDS = [str(p.relative_to(INFRA)) for p in FILES]


def _planted(f: BicepFile, old: str, new: str) -> BicepFile:
    assert old in f.text, f"the fault's anchor is gone from {f.name}: {old!r}"
    return BicepFile.from_text(f.text.replace(old, new, 1), f.path)


# --- the archive tier on Standard_RAGZRS accounts -------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_no_lifecycle_rule_moves_blobs_to_the_archive_tier(path: Path, bicep_files: dict[str, BicepFile]) -> None:
    assert rule_no_archive_tier(bicep_files[str(path.relative_to(INFRA))]) == []


def test_the_archive_tier_fault_trips(bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    planted = _planted(main, "    tierToCold: {\n      daysAfterCreationGreaterThan: versionColdAfterDays",
                       "    tierToArchive: {\n      daysAfterCreationGreaterThan: versionColdAfterDays")
    problems = "\n".join(rule_no_archive_tier(planted))
    assert "variable 'archiveActions' moves blobs to the archive tier" in problems
    assert "Standard_RAGZRS accounts do not support" in problems


# --- VNet peerings racing on a first deployment ---------------------------------------------------------------------


def test_peerings_wait_for_both_networks_both_regions_and_each_other(bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    assert check_peering_order(main) == []
    deps = dependencies(main)
    assert {"primaryNetwork", "secondaryNetwork", "primary", "secondary", "peering"} <= deps["peeringBack"]


RACING = """module peering 'modules/peering.bicep' = if (privateNetworking) {
  name: 'peering-primary'
  scope: primaryGroup
  params: {
    vnetName: primaryNames.vnet
    remoteVnetId: privateNetworking ? secondaryNetwork!.outputs.id : ''
  }
}

module peeringBack 'modules/peering.bicep' = if (privateNetworking) {
  name: 'peering-secondary'
  scope: secondaryGroup
  params: {
    vnetName: secondaryNames.vnet
    remoteVnetId: privateNetworking ? primaryNetwork!.outputs.id : ''
  }
}
"""


def test_the_racing_peerings_trip(bicep_files: dict[str, BicepFile]) -> None:
    """The peerings as they were: each named its own network by a string (no dependency on it), neither waited
    for the regions (private endpoints and VNet integration change the same networks) nor for the other."""
    main = bicep_files["main.bicep"]
    start = main.text.index("module peering 'modules/peering.bicep'")
    end = main.text.index("// Object replication in both directions")
    planted = BicepFile.from_text(main.text[:start] + RACING + "\n" + main.text[end:], main.path)
    problems = "\n".join(check_peering_order(planted))
    assert "'peering' does not wait for 'primaryNetwork'" in problems
    assert "'peeringBack' does not wait for 'secondaryNetwork'" in problems
    assert "'peering' does not wait for 'primary'" in problems
    assert "'peering' and 'peeringBack' can run at the same time" in problems


def test_dependencies_follow_outputs_variables_and_depends_on() -> None:
    f = BicepFile.from_text(
        "module a 'x.bicep' = {\n  name: 'a'\n}\n"
        "var fromA = a.outputs.id\n"
        "module b 'x.bicep' = {\n  name: 'b'\n  params: {\n    id: fromA\n    a: 'not a reference'\n  }\n}\n"
        "module c 'x.bicep' = {\n  name: 'c'\n  params: {\n    b: 'b'\n  }\n  dependsOn: [\n    b\n  ]\n}\n"
        "module d 'x.bicep' = {\n  name: 'd'\n  params: {\n    a: 1\n  }\n}\n")
    deps = dependencies(f)
    assert deps == {"a": set(), "b": {"a"}, "c": {"a", "b"}, "d": set()}  # a property named 'a' is no reference


# --- version-level immutability turned on for an existing container -------------------------------------------------


def test_the_own_archive_supports_immutability_from_creation(bicep_files: dict[str, BicepFile]) -> None:
    assert check_immutability_from_creation(bicep_files["modules/region.bicep"],
                                            bicep_files["modules/storage.bicep"]) == []


def test_immutability_enabled_only_with_retention_days_trips(bicep_files: dict[str, BicepFile]) -> None:
    region = bicep_files["modules/region.bicep"]
    planted = _planted(region, "immutableContainer: '${archiveContainer}-${regionKey}'",
                       "immutableContainer: immutabilityDays > 0 ? '${archiveContainer}-${regionKey}' : ''")
    problems = "\n".join(check_immutability_from_creation(planted, bicep_files["modules/storage.bicep"]))
    assert "must be the region's own archive container from its creation" in problems
    storage = bicep_files["modules/storage.bicep"]
    planted = _planted(storage, "enabled: container == immutableContainer",
                       "enabled: container == immutableContainer && immutabilityDays > 0")
    problems = "\n".join(check_immutability_from_creation(region, planted))
    assert "enables version-level immutability only with retention days" in problems


# --- Flex Consumption (and the gateway) zone redundant by default ---------------------------------------------------


def test_zone_redundancy_is_on_by_default(bicep_files: dict[str, BicepFile]) -> None:
    assert check_zone_redundancy(bicep_files["main.bicep"], bicep_files["modules/functionApp.bicep"],
                                 bicep_files["modules/gateway.bicep"]) == []


def test_zone_redundancy_off_by_default_trips(bicep_files: dict[str, BicepFile]) -> None:
    main = _planted(bicep_files["main.bicep"], "param primaryZoneRedundant bool = true",
                    "param primaryZoneRedundant bool = false")
    gateway = _planted(bicep_files["modules/gateway.bicep"], "    zoneRedundant: zoneRedundant",
                       "    zoneRedundant: false")
    problems = "\n".join(check_zone_redundancy(main, bicep_files["modules/functionApp.bicep"], gateway))
    assert "'primaryZoneRedundant' must default to true" in problems
    assert "environment 'environment' must be zone redundant" in problems
