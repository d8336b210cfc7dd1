"""Security rules over the parsed resources of every Bicep file, and a bad snippet for each rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra.bicepcheck import (
    INFRA,
    SECURITY_RULES,
    BicepFile,
    app_settings,
    dig,
    infra_files,
    rule_blob_services,
    rule_diagnostics,
    rule_event_grid,
    rule_front_door,
    rule_function_apps,
    rule_key_vault,
    rule_monitoring,
    rule_no_service_tag_bypass,
    rule_no_storage_keys,
    rule_role_assignments,
    rule_storage_accounts,
)

FILES = infra_files()
IDS = [str(p.relative_to(INFRA)) for p in FILES]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_security_rules_hold(path: Path, bicep_files: dict[str, BicepFile]) -> None:
    f = bicep_files[str(path.relative_to(INFRA))]
    problems = [p for rule in SECURITY_RULES for p in rule(f)]
    assert problems == []


def _declaring(bicep_files: dict[str, BicepFile], rtype: str) -> set[str]:
    return {name for name, f in bicep_files.items() if any(True for _ in f.resources(rtype))}


def test_role_assignments_live_in_the_role_modules(bicep_files: dict[str, BicepFile]) -> None:
    """Each region's own roles in one module; the one cross-region grant (the peer's table reader) in another."""
    assert _declaring(bicep_files, "Microsoft.Authorization/roleAssignments") == {"modules/roleAssignments.bicep",
                                                                                 "modules/peerRoles.bicep"}


def _role_of(body: dict) -> str:
    return str(body["properties"]["roleDefinitionId"]).split("'operand_2': '")[1].split("'")[0]


def test_event_grid_identities_hold_only_the_dead_letter_container(bicep_files: dict[str, BicepFile]) -> None:
    """Each topic dead-letters with its own system-assigned identity (the storage firewall admits a trusted service
    with no other), which may write the dead-letter container and nothing else."""
    roles = bicep_files["modules/roleAssignments.bicep"]
    for principal in ("systemTopicPrincipalId", "customTopicPrincipalId"):
        held = [body for _sym, body in roles.resources("Microsoft.Authorization/roleAssignments")
                if body["properties"]["principalId"] == principal]
        assert [(_role_of(b), b["scope"]) for b in held] == [("storageBlobDataContributor", "deadLetters")]
    containers = {sym: body["name"] for sym, body in
                  roles.resources("Microsoft.Storage/storageAccounts/blobServices/containers", include_existing=True)}
    assert containers["deadLetters"] == "deadLetterContainer"
    grid = bicep_files["modules/eventGrid.bicep"]
    for rtype in ("Microsoft.EventGrid/systemTopics", "Microsoft.EventGrid/topics"):
        (_, topic), = grid.resources(rtype)
        assert topic["identity"] == {"type": "SystemAssigned"}
    region = bicep_files["modules/region.bicep"]
    (_, given), = [(s, b) for s, p, b in region.modules() if p == "roleAssignments.bicep"]
    for principal in ("systemTopicPrincipalId", "customTopicPrincipalId"):
        assert f"'operand_2': '{principal}'" in str(given["params"][principal])  # the topics' own, not the app's


def test_the_deployer_holds_no_data_role_unless_asked(bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    assert main.doc["parameters"]["grantDeployerDataAccess"]["default"] is False
    for _sym, path, body in main.modules():
        if path.endswith("region.bicep"):
            assert "grantDeployerDataAccess" in str(body["params"]["userPrincipalId"])


def test_the_peer_may_read_tables_and_nothing_else(bicep_files: dict[str, BicepFile]) -> None:
    peer = bicep_files["modules/peerRoles.bicep"]
    assert [_role_of(b) for _s, b in peer.resources("Microsoft.Authorization/roleAssignments")] == [
        "storageTableDataReader"]


def test_clients_and_event_grid_reach_the_apps_only_through_front_door(bicep_files: dict[str, BicepFile]) -> None:
    """Over Private Link the apps' public endpoint admits no one; without it, Front Door alone (its tag and this
    profile's ID). No service tag admits Event Grid: it delivers through Front Door's hooks endpoints (stage 2)."""
    fa = bicep_files["modules/functionApp.bicep"]
    (_, site), = fa.resources("Microsoft.Web/sites")
    config = site["properties"]["siteConfig"]
    assert config["ipSecurityRestrictionsDefaultAction"] == "Deny"
    assert "ipSecurityRestrictions: privateLinkOnly ? [] : frontDoorOnly" in fa.text
    (rule,) = fa.variable("frontDoorOnly")
    assert rule["ipAddress"] == "AzureFrontDoor.Backend"
    assert rule["headers"] == {"'x-azure-fdid'": ["frontDoorId"]}  # pycep keeps the quotes
    assert fa.doc["parameters"]["privateLinkOnly"]["default"] is True
    for name, f in bicep_files.items():
        assert "AzureEventGrid" not in f.code_without_comments(), f"{name} names the AzureEventGrid service tag"
    profile = bicep_files["modules/frontDoorProfile.bicep"]
    assert "profile.properties.frontDoorId" in profile.text
    # Every Front Door origin of an app or an inbox uses Private Link when privateLink is on.
    fd = bicep_files["modules/frontDoor.bicep"]
    origins = list(fd.resources("Microsoft.Cdn/profiles/originGroups/origins"))
    assert len(origins) == 6
    for sym, origin in origins:
        link = origin["properties"]["sharedPrivateLinkResource"]
        assert isinstance(link, str) and link.endswith("Link") and fd.variable(link), sym
    for link in ("primaryLink", "secondaryLink", "primaryInboxLink", "secondaryInboxLink"):
        assert "privateLink ?" in fd.text.split(f"var {link} = ", 1)[1].splitlines()[0]
    # Stage 2 points Event Grid at the hooks endpoints (stage 1 outputs), never at the apps.
    stage2 = bicep_files["stage2/main.bicep"]
    for _sym, _path, body in stage2.modules():
        assert str(body["params"]["hooksHost"]) in ("primaryHooksHost", "secondaryHooksHost")


def test_private_networking_is_the_default_and_closes_the_public_endpoints(bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    assert main.doc["parameters"]["privateNetworking"]["default"] is True
    assert bicep_files["modules/region.bicep"].doc["parameters"]["privateNetworking"]["default"] is True
    # Storage and Key Vault: the firewall denies every public address (trusted services with their own identity
    # pass: Event Grid dead-letters); the custom topic: public access off.
    for file, rtype in (("modules/storage.bicep", "Microsoft.Storage/storageAccounts"),
                        ("modules/keyVault.bicep", "Microsoft.KeyVault/vaults")):
        (_, body), = bicep_files[file].resources(rtype)
        acls = body["properties"]["networkAcls"]
        assert "privateOnly" in str(acls["defaultAction"]) and "'Deny'" in str(acls["defaultAction"]), file
        assert acls["ipRules"] == [] and acls["virtualNetworkRules"] == [], file
    (_, topic), = bicep_files["modules/eventGrid.bicep"].resources("Microsoft.EventGrid/topics")
    assert "publicNetworkAccess" in str(topic["properties"]["publicNetworkAccess"])
    region = bicep_files["modules/region.bicep"]
    for group in ("'blob'", "'queue'", "'table'", "'vault'", "'topic'"):
        assert f"group: {group}" in region.text
    given = {path: body["params"] for _s, path, body in region.modules()}
    assert given["keyVault.bicep"]["privateOnly"] == "privateNetworking"
    assert given["functionApp.bicep"]["privateLinkOnly"] == "privateNetworking"
    assert given["gateway.bicep"]["subnetId"] == "gatewaySubnetId"  # the gateway lives in the region's network
    data = [b["params"] for _s, p, b in region.modules() if p == "storage.bicep" and "queues" in b["params"]]
    assert [d["privateOnly"] for d in data] == ["privateNetworking"]
    fd = [b["params"] for _s, p, b in main.modules() if p.endswith("frontDoor.bicep")]
    assert [f["privateLink"] for f in fd] == ["privateNetworking"]


def test_every_storage_account_comes_from_the_storage_module(bicep_files: dict[str, BicepFile]) -> None:
    assert _declaring(bicep_files, "Microsoft.Storage/storageAccounts") == {"modules/storage.bicep"}


def test_resources_under_test_exist(bicep_files: dict[str, BicepFile]) -> None:
    """The rules above would pass vacuously if the resources were missing: make sure they are there."""
    for rtype in ("Microsoft.Storage/storageAccounts", "Microsoft.Storage/storageAccounts/blobServices",
                  "Microsoft.Authorization/roleAssignments", "Microsoft.Insights/components",
                  "Microsoft.OperationalInsights/workspaces", "Microsoft.EventGrid/topics",
                  "Microsoft.EventGrid/systemTopics", "Microsoft.EventGrid/systemTopics/eventSubscriptions",
                  "Microsoft.EventGrid/topics/eventSubscriptions", "Microsoft.KeyVault/vaults", "Microsoft.Web/sites",
                  "Microsoft.Web/serverfarms", "Microsoft.Storage/storageAccounts/objectReplicationPolicies",
                  "Microsoft.Cdn/profiles/originGroups", "Microsoft.Network/privateEndpoints",
                  "Microsoft.Network/privateDnsZones", "Microsoft.Cdn/profiles/ruleSets/rules"):
        assert _declaring(bicep_files, rtype), f"no file declares {rtype}"


def test_object_replication_both_ways_destination_first_with_ids_as_parameters(
        bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    mods = {sym: body["params"] for sym, path, body in main.modules() if path.endswith("objectReplication.bicep")}
    assert set(mods) == {"toSecondaryDestination", "toSecondarySource", "toPrimaryDestination", "toPrimarySource"}
    for direction, param in (("toSecondary", "replicationPolicyToSecondary"),
                             ("toPrimary", "replicationPolicyToPrimary")):
        # The destination side: 'default' on the first deployment only, the assigned ID afterwards.
        assert "'default'" in str(mods[direction + "Destination"]["policyId"]) and param in str(
            mods[direction + "Destination"]["policyId"])
        source = str(mods[direction + "Source"])
        assert f"{direction}Destination" in source and "policyId" in source and "ruleIds" in source
        assert main.doc["parameters"][param]["default"] == ""
    outputs = set(main.doc["outputs"])
    assert {"REPLICATION_POLICY_TO_SECONDARY", "REPLICATION_RULES_TO_SECONDARY", "REPLICATION_POLICY_TO_PRIMARY",
            "REPLICATION_RULES_TO_PRIMARY"} <= outputs
    given = (INFRA / "main.parameters.json").read_text()
    for output, param in (("REPLICATION_POLICY_TO_SECONDARY", "replicationPolicyToSecondary"),
                          ("REPLICATION_RULES_TO_PRIMARY", "replicationRulesToPrimary")):
        assert f'"{param}": {{ "value": "${{{output}=}}" }}' in given


def test_front_door_is_active_passive_by_default_and_writes_go_primary_first(
        bicep_files: dict[str, BicepFile]) -> None:
    (_, profile), = bicep_files["modules/frontDoorProfile.bicep"].resources("Microsoft.Cdn/profiles")
    assert profile["sku"]["name"] == "Premium_AzureFrontDoor"
    fd = bicep_files["modules/frontDoor.bicep"]
    assert fd.doc["parameters"]["activeActiveReads"]["default"] is False
    assert "secondaryPriority: activeActiveReads ? 1 : 2" in fd.text  # reads
    groups = fd.variable("apiGroups")
    assert groups[1] == {"name": "functions-writes", "secondaryPriority": 2}  # writes: always primary first
    (_, rule), = fd.resources("Microsoft.Cdn/profiles/ruleSets/rules")
    condition = rule["properties"]["conditions"][0]["parameters"]
    # "Not a read" (negated GET/HEAD/OPTIONS) covers every write method, PATCH included, without naming a method
    # the RequestMethod condition does not document.
    assert condition["negateCondition"] is True and set(condition["matchValues"]) == {"GET", "HEAD", "OPTIONS"}
    assert "'operand_1': 'apiGroupsRes', 'operand_2': 1" in str(rule["properties"]["actions"][0])


# --- negative tests ----------------------------------------------------------------------------------------

STORAGE_OK = """
resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'x'
  sku: {
    name: 'Standard_RAGZRS'
  }
  properties: {
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
  }
}
"""

BAD = [
    pytest.param(rule_no_storage_keys,
                 "resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {\n  name: 'x'\n}\n"
                 "var cs = 'DefaultEndpointsProtocol=https;AccountName=x;AccountKey=${sa.listKeys().keys[0].value}'\n",
                 ["'DefaultEndpointsProtocol'", "'AccountKey'", "sa.listKeys() on Microsoft.Storage/storageAccounts"],
                 id="storage-key-connection-string"),
    pytest.param(rule_no_storage_keys,
                 "var k = listKeys(resourceId('Microsoft.Storage/storageAccounts', 'x'), '2023-01-01').keys[0].value\n",
                 ["listKeys(...) as a free function"], id="listKeys-free-function"),
    pytest.param(rule_no_storage_keys,
                 "resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {\n  name: 'x'\n}\n"
                 "var s = sa.listAccountSas('2023-01-01', {}).accountSasToken\n",
                 ["'listAccountSas'"], id="account-sas"),
    pytest.param(rule_storage_accounts,
                 STORAGE_OK.replace("Standard_RAGZRS", "Standard_LRS"), ["sku must be Standard_RAGZRS"], id="lrs"),
    pytest.param(rule_storage_accounts,
                 STORAGE_OK.replace("allowSharedKeyAccess: false", "allowSharedKeyAccess: true"),
                 ["allowSharedKeyAccess must be False"], id="shared-key"),
    pytest.param(rule_storage_accounts,
                 STORAGE_OK.replace("'TLS1_2'", "'TLS1_0'").replace("supportsHttpsTrafficOnly: true", ""),
                 ["minimumTlsVersion must be 'TLS1_2'", "supportsHttpsTrafficOnly must be True"], id="tls-https"),
    pytest.param(rule_storage_accounts,
                 STORAGE_OK.replace("allowBlobPublicAccess: false", "allowBlobPublicAccess: allowPublic"),
                 ["allowBlobPublicAccess must be False"], id="public-blob-param"),
    pytest.param(rule_blob_services,
                 "resource b 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {\n  name: 'default'\n"
                 "  properties: {\n    isVersioningEnabled: false\n    deleteRetentionPolicy: {\n      enabled: true\n"
                 "    }\n  }\n}\n",
                 ["isVersioningEnabled must be true", "containerDeleteRetentionPolicy.enabled must be true",
                  "changeFeed.enabled must be true"], id="versioning-soft-delete"),
    pytest.param(rule_role_assignments,
                 "resource r 'Microsoft.Authorization/roleAssignments@2022-04-01' = {\n  name: 'fixed'\n"
                 "  properties: {\n    principalId: 'p'\n    roleDefinitionId: subscriptionResourceId("
                 "'Microsoft.Authorization/roleDefinitions', '8e3af657-a8ff-443c-a75c-2fe8c4bcb635') // Owner\n"
                 "  }\n}\n",
                 ["name must be guid(scope, principal, role)", "assigns 8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
                  "GUID 8e3af657-a8ff-443c-a75c-2fe8c4bcb635 is not an allowed role"], id="owner-role"),
    pytest.param(rule_role_assignments,
                 "var roles = {\n  blob: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Reader\n}\n",
                 ["needs the comment '// Storage Blob Data Owner'"], id="wrong-role-comment"),
    pytest.param(rule_monitoring,
                 "resource ai 'Microsoft.Insights/components@2020-02-02' = {\n  name: 'a'\n  kind: 'web'\n"
                 "  properties: {\n    Application_Type: 'web'\n    DisableLocalAuth: false\n  }\n}\n"
                 "resource la 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {\n  name: 'l'\n}\n",
                 ["DisableLocalAuth: true", "features.disableLocalAuth: true"], id="local-auth"),
    pytest.param(rule_event_grid,
                 "resource t 'Microsoft.EventGrid/topics@2022-06-15' = {\n  name: 't'\n  properties: {\n"
                 "    inputSchema: 'EventGridSchema'\n  }\n}\n"
                 "resource s 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {\n  parent: t\n"
                 "  name: 's'\n  properties: {\n    eventDeliverySchema: 'EventGridSchema'\n"
                 "    deadLetterDestination: {}\n  }\n}\n",
                 ["disableLocalAuth: true", "inputSchema must be CloudEventSchemaV1_0",
                  "eventDeliverySchema must be CloudEventSchemaV1_0", "use deadLetterWithResourceIdentity"],
                 id="event-grid"),
    pytest.param(rule_event_grid,
                 "resource s 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {\n  name: 's'\n"
                 "  properties: {\n    destination: {\n      endpointType: 'WebHook'\n      properties: {\n"
                 "        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/eventgrid"
                 "?functionName=ingest&code=${key}'\n      }\n    }\n"
                 "    eventDeliverySchema: 'EventGridSchema'\n    deadLetterWithResourceIdentity: {}\n  }\n}\n",
                 ["webhook must be https://<hooks host>/runtime/webhooks/", "'defaultHostName': the app's own host",
                  "'code=': a key in the URL", "secret x-functions-key delivery attribute",
                  "system-assigned identity"], id="webhook-around-front-door"),
    pytest.param(rule_event_grid,
                 "resource s 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {\n  name: 's'\n"
                 "  properties: {\n    destination: {\n      endpointType: 'AzureFunction'\n      properties: {\n"
                 "        resourceId: '${site.id}/functions/routing'\n      }\n    }\n"
                 "    eventDeliverySchema: 'CloudEventSchemaV1_0'\n    deadLetterWithResourceIdentity: {\n"
                 "      identity: {\n        type: 'SystemAssigned'\n      }\n    }\n  }\n}\n",
                 ["destination must be a WebHook through Front Door's hooks endpoint, got 'AzureFunction'"],
                 id="azure-function-endpoint"),
    pytest.param(rule_no_service_tag_bypass,
                 "resource s 'Microsoft.Web/sites@2024-04-01' = {\n  name: 's'\n  properties: {\n    siteConfig: {\n"
                 "      ipSecurityRestrictions: [\n        {\n          name: 'event-grid'\n          action: 'Allow'\n"
                 "          priority: 200\n          tag: 'ServiceTag'\n          ipAddress: 'AzureEventGrid'\n"
                 "        }\n      ]\n    }\n  }\n}\n",
                 ["resource 's' admits service tag 'AzureEventGrid' without an X-Azure-FDID header"],
                 id="event-grid-service-tag"),
    pytest.param(rule_no_service_tag_bypass,
                 "var open = [\n  {\n    name: 'fd'\n    tag: 'ServiceTag'\n    ipAddress: 'AzureFrontDoor.Backend'\n"
                 "  }\n]\n",
                 ["variable 'open' admits service tag 'AzureFrontDoor.Backend' without an X-Azure-FDID header"],
                 id="front-door-tag-without-fdid"),
    pytest.param(rule_front_door,
                 "resource p 'Microsoft.Cdn/profiles@2024-02-01' = {\n  name: 'p'\n  location: 'global'\n  sku: {\n"
                 "    name: 'Standard_AzureFrontDoor'\n  }\n}\n"
                 "resource e 'Microsoft.Cdn/profiles/afdEndpoints@2024-02-01' = {\n  parent: p\n  name: 'e'\n}\n"
                 "resource r 'Microsoft.Cdn/profiles/afdEndpoints/routes@2024-02-01' = {\n  parent: e\n  name: 'r'\n"
                 "  properties: {\n    supportedProtocols: [\n      'Http'\n      'Https'\n    ]\n"
                 "    cacheConfiguration: {\n      queryStringCachingBehavior: 'UseQueryString'\n    }\n  }\n}\n"
                 "resource w 'Microsoft.Network/FrontDoorWebApplicationFirewallPolicies@2025-03-01' = {\n  name: 'w'\n"
                 "  properties: {\n    policySettings: {\n      enabledState: 'Enabled'\n      mode: 'Detection'\n"
                 "    }\n  }\n}\n",
                 ["must be Premium_AzureFrontDoor", "route 'r' must take and forward HTTPS only", "route 'r' caches",
                  "must be enabled in Prevention mode", "needs the managed rule set Microsoft_DefaultRuleSet",
                  "needs a rate-limit rule per client address", "must scrub query strings",
                  "endpoint 'e' is not behind the WAF policy"], id="front-door-waf"),
    pytest.param(rule_key_vault,
                 "resource kv 'Microsoft.KeyVault/vaults@2023-07-01' = {\n  name: 'k'\n  properties: {\n"
                 "    enableRbacAuthorization: false\n  }\n}\n",
                 ["enableRbacAuthorization: true", "enablePurgeProtection: true"], id="key-vault"),
    pytest.param(rule_function_apps,
                 "resource p 'Microsoft.Web/serverfarms@2024-04-01' = {\n  name: 'p'\n  sku: {\n    name: 'Y1'\n"
                 "  }\n}\nresource s 'Microsoft.Web/sites@2024-04-01' = {\n  name: 's'\n  properties: {\n"
                 "    siteConfig: {\n      appSettings: [\n        {\n          name: 'FUNCTIONS_WORKER_RUNTIME'\n"
                 "          value: 'python'\n        }\n        {\n          name: 'WEBSITE_RUN_FROM_PACKAGE'\n"
                 "          value: '1'\n        }\n      ]\n    }\n  }\n}\n",
                 ["httpsOnly: true", "minTlsVersion must be '1.2'", "'FUNCTIONS_WORKER_RUNTIME' is not allowed",
                  "'WEBSITE_RUN_FROM_PACKAGE' is not allowed", "must be Flex Consumption", "python 3.11",
                  "managed identity", "user-assigned identity"], id="function-app"),
    pytest.param(rule_diagnostics,
                 "resource kv 'Microsoft.KeyVault/vaults@2023-07-01' = {\n  name: 'k'\n}\n"
                 "resource site 'Microsoft.Web/sites@2024-04-01' = {\n  name: 's'\n}\n"
                 "resource d 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {\n  name: 'd'\n"
                 "  scope: kv\n  properties: {\n    workspaceId: 'w'\n  }\n}\n",
                 ["Microsoft.Web/sites 'site' has no diagnostic setting"], id="diagnostics"),
]


@pytest.mark.parametrize(("rule", "text", "expected"), BAD)
def test_rule_trips(rule: Callable[[BicepFile], list[str]], text: str, expected: list[str]) -> None:
    problems = "\n".join(rule(BicepFile.from_text(text)))
    for fragment in expected:
        assert fragment in problems, f"{rule.__name__} did not report {fragment!r}; it said:\n{problems}"


def test_comments_do_not_trip_the_key_rule() -> None:
    f = BicepFile.from_text("// never build an AccountKey connection string or call listKeys() on storage\n"
                            "var url = 'https://example.org/a'\n")
    assert rule_no_storage_keys(f) == []


def test_host_system_key_is_allowed() -> None:
    f = BicepFile.from_text(
        "resource site 'Microsoft.Web/sites@2024-04-01' existing = {\n  name: 'f'\n}\n"
        "resource host 'Microsoft.Web/sites/host@2024-04-01' existing = {\n  parent: site\n  name: 'default'\n}\n"
        "var key = host.listKeys().systemKeys.blobs_extension\n")
    assert rule_no_storage_keys(f) == []


def test_the_app_checks_tokens_and_answers_cors_itself(bicep_files: dict[str, BicepFile]) -> None:
    """No App Service authentication (unreliable on Flex) and no platform CORS (it would override the app's)."""
    fa = bicep_files["modules/functionApp.bicep"]
    (_, site), = fa.resources("Microsoft.Web/sites")
    assert dig(site, "properties", "siteConfig", "cors", "allowedOrigins") == []
    assert not [b for _, b in fa.resources("Microsoft.Web/sites/config") if b.get("name") == "authsettingsV2"]
    assert {"DICOMFLOW_AUTH_ISSUER", "DICOMFLOW_AUTH_AUDIENCE", "DICOMFLOW_CORS_ORIGINS"} <= set(app_settings(fa))
    main = (INFRA / "main.bicep").read_text()
    # One parameter feeds the allowed origins, together with the deployed viewer's own origin.
    assert "union(viewerOrigins, corsAllowedOrigins)" in main and "corsOrigins: corsOrigins" in main
    assert "'${environment().authentication.loginEndpoint}${entraTenantId}/v2.0'" in main
