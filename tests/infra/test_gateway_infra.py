"""The DIMSE gateway's Bicep (modules/gateway.bicep and its wiring) against the gateway's code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.config import GatewaySettings
from tests.infra.bicepcheck import INFRA, BicepFile, check_gateway_admission

ROOT = INFRA.parent


def _app(bicep_files: dict[str, BicepFile]) -> dict:
    (_sym, app), = bicep_files["modules/gateway.bicep"].resources("Microsoft.App/containerApps")
    return app


def test_tcp_ingress_on_the_gateway_port_internal_by_default(bicep_files: dict[str, BicepFile]) -> None:
    f = bicep_files["modules/gateway.bicep"]
    ingress = _app(bicep_files)["properties"]["configuration"]["ingress"]
    assert ingress["transport"] == "tcp"
    assert ingress["targetPort"] == ingress["exposedPort"] == "port"
    assert f.text.count(f"var port = {GatewaySettings().port}") == 1
    assert ingress["external"] == "externalIngress" and f.doc["parameters"]["externalIngress"]["default"] is False
    assert "internal: !externalIngress" in f.text  # the environment's load balancer is private too


def test_runs_as_its_own_identity_with_no_secret_values(bicep_files: dict[str, BicepFile]) -> None:
    app = _app(bicep_files)
    assert app["identity"]["type"] == "UserAssigned"
    f = bicep_files["modules/gateway.bicep"]
    assert str(app["properties"]["configuration"]["secrets"]) == str(
        {"function": {"type": "concat", "parameters": {"arg_1": "certSecrets", "arg_2": "caSecrets",
                                                       "arg_3": "saltSecrets"}}})
    for var in ("certSecrets", "saltSecrets"):  # the certificate with its key, and the audit salt: Key Vault only
        secret = str(f.variable(var))
        assert "keyVaultUrl" in secret and "'value'" not in secret, var
    # The one secret given by value is the client CA certificate: public, a file for the gateway to verify with.
    assert "'value': 'tlsClientCaCertificate'" in str(f.variable("caSecrets"))
    text = f.text
    assert "listKeys" not in text and "sharedKey" not in text


def test_container_settings_are_ones_the_code_reads(bicep_files: dict[str, BicepFile]) -> None:
    names = set(re.findall(r"name: '((?:DICOMFLOW_GATEWAY|DicomStorage)[A-Za-z_]*)'",
                           bicep_files["modules/gateway.bicep"].text))
    assert {"DICOMFLOW_GATEWAY_PORT", "DicomStorage__blobServiceUri", "DICOMFLOW_GATEWAY_TLS_CERT_FILE"} <= names
    config = (ROOT / "shared" / "config.py").read_text()
    for name in names:
        suffix = name.removeprefix("DICOMFLOW_GATEWAY_").removeprefix("DicomStorage")
        assert suffix.strip("_") in config, f"{name} is set by Bicep but shared/config.py never reads it"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "DICOMFLOW_GATEWAY_HOST=0.0.0.0" in dockerfile and '"-m", "gateway"' in dockerfile


def test_gateway_identity_holds_exactly_its_containers_and_its_two_secrets(bicep_files: dict[str, BicepFile]) -> None:
    """Blob roles scoped to each container it writes (the inbox) or reads (archive and configuration, its region's
    and the peer's replica), never the account; the Key Vault role scoped to each of its two secrets (its TLS
    certificate, the audit salt), one assignment each, never the vault."""
    roles = bicep_files["modules/roleAssignments.bicep"]
    held = {sym: (str(body["properties"]["roleDefinitionId"]).split("'operand_2': '")[1].split("'")[0],
                  str(body["scope"]))
            for sym, body in roles.resources("Microsoft.Authorization/roleAssignments")
            if body["properties"]["principalId"] == "gatewayPrincipalId"}
    assert held["gatewayBlobWrites"][0] == "storageBlobDataContributor"
    assert "'gatewayWriteScopes'" in held["gatewayBlobWrites"][1]
    assert held["gatewayBlobReads"][0] == "storageBlobDataReader"
    assert "'gatewayReadScopes'" in held["gatewayBlobReads"][1]
    assert held["gatewayTables"] == ("storageTableDataReader", "dataAccount")
    assert held["gatewaySecrets"] == ("keyVaultSecretsUser", "gatewaySecret")
    assert held["gatewayAuditSalt"] == ("keyVaultSecretsUser", "auditSaltSecret")
    assert held["gatewayQueues"][0] == "storageQueueDataMessageSender"  # the batched path's chunk messages
    assert "'gatewayQueueScopes'" in held["gatewayQueues"][1]
    assert set(held) == {"gatewayBlobWrites", "gatewayBlobReads", "gatewayTables", "gatewaySecrets", "gatewayQueues",
                         "gatewayAuditSalt"}
    scopes = {sym: body for sym, body in roles.resources(include_existing=True)}
    for sym, name in (("gatewaySecret", "gatewaySecretName"), ("auditSaltSecret", "auditPatientSaltSecretName")):
        assert roles.doc["resources"][sym]["type"] == "Microsoft.KeyVault/vaults/secrets"
        assert scopes[sym]["parent"] == "vault" and name in str(scopes[sym]["name"])
    for sym in ("gatewayWriteScopes", "gatewayReadScopes"):
        assert roles.doc["resources"][sym]["type"] == "Microsoft.Storage/storageAccounts/blobServices/containers"
    # What the region passes: the inbox and audit to write, and for the batched path its own archive and metadata
    # and the batch queue; archive and config, own and the peer's, to read; the secret name.
    region = bicep_files["modules/region.bicep"]
    (_, given), = [(s, b) for s, p, b in region.modules() if p == "roleAssignments.bicep"]
    assert given["params"]["gatewayWrites"] == ["inboxContainer", "auditContainer", "${archiveContainer}-${regionKey}",
                                                "dicom-metadata"]
    assert given["params"]["gatewaySendsTo"] == ["dicom-ingest-batch"]
    queues = roles.doc["resources"]["gatewayQueueScopes"]
    assert queues["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues"
    assert "gatewayOwnReads" in str(given["params"]["gatewayReads"]) and "gatewayPeerReads" in str(
        given["params"]["gatewayReads"])
    assert region.variable("gatewayOwnReads")["config"] == "${c}-${regionKey}"
    assert region.variable("gatewayPeerReads")["config"] == "${c}-${peerRegionKey}"
    main = bicep_files["main.bicep"]
    assert main.resolve(main.variable("gatewayReads")) == ["dicom-archive", "dicomflow-config"]
    assert given["params"]["gatewaySecretName"] == "gatewayTlsCertificateSecretName"


def test_gateway_never_listens_beyond_loopback_without_allow_list_or_mutual_tls(
        bicep_files: dict[str, BicepFile]) -> None:
    gateway, region = bicep_files["modules/gateway.bicep"], bicep_files["modules/region.bicep"]
    assert check_gateway_admission(gateway, region) == []
    assert "value: admitted ? '0.0.0.0' : '127.0.0.1'" in gateway.text


REFUSED = "'refused: the DIMSE gateway listens beyond loopback"


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    pytest.param("gateway", "  'mutual TLS'\n  'allow-list and mutual TLS'\n])",
                 "  'mutual TLS'\n  'allow-list and mutual TLS'\n  'open'\n])", "must allow exactly",
                 id="open-allowed"),
    pytest.param("gateway", "value: admitted ? '0.0.0.0' : '127.0.0.1'", "value: '0.0.0.0'",
                 "DICOMFLOW_GATEWAY_HOST must be", id="always-every-interface"),
    pytest.param("gateway", "var mutualTls = tls && !empty(tlsClientCaCertificate)", "var mutualTls = tls",
                 "var mutualTls must need both", id="server-tls-is-not-mutual"),
    pytest.param("region", REFUSED, "'mutual TLS' // ", "with a 'refused: ...' value otherwise", id="never-refused"),
])
def test_gateway_admission_check_trips(bicep_files: dict[str, BicepFile], file: str, old: str, new: str,
                                       expected: str) -> None:
    files = {"gateway": bicep_files["modules/gateway.bicep"], "region": bicep_files["modules/region.bicep"]}
    real = files[file]
    assert old in real.text
    files[file] = BicepFile.from_text(real.text.replace(old, new, 1), real.path)
    assert expected in "\n".join(check_gateway_admission(files["gateway"], files["region"]))


def test_each_region_deploys_a_zone_redundant_gateway_when_an_image_is_given(bicep_files: dict[str, BicepFile]) -> None:
    region = bicep_files["modules/region.bicep"]
    mods = {sym: path for sym, path, _body in region.modules()}
    assert mods.get("gateway") == "gateway.bicep"
    assert "var deployGateway = !empty(gatewayImage)" in region.text
    main = bicep_files["main.bicep"]
    regions = [body["params"] for _s, path, body in main.modules() if path.endswith("region.bicep")]
    assert len(regions) == 2 and all(r["gatewayImage"] == "gatewayImage" for r in regions)
    gw = bicep_files["modules/gateway.bicep"]
    assert gw.doc["parameters"]["minReplicas"]["default"] >= 2
    assert "minReplicas: minReplicas" in gw.text
    assert Path(INFRA / "modules" / "gateway.bicep").is_file()


def test_one_gateway_name_follows_the_ingest_region(bicep_files: dict[str, BicepFile]) -> None:
    """dimse.<zone>: a private DNS record with a short TTL, in the global group, pointing at ingestRegion's gateway."""
    dns = bicep_files["modules/gatewayDns.bicep"]
    records = {body["name"]: body for _s, body in dns.resources("Microsoft.Network/privateDnsZones/A")}
    assert set(records) == {"dimse", "dimse-primary", "dimse-secondary"}
    assert "ingestRegion" in str(records["dimse"]["properties"]["aRecords"])
    assert dns.doc["parameters"]["ttlSeconds"]["default"] <= 60
    main = bicep_files["main.bicep"]
    (params,) = [body["params"] for sym, path, body in main.modules() if path.endswith("gatewayDns.bicep")]
    assert params["ingestRegion"] == "ingestRegion"
    (scope,) = [main.doc["modules"][sym]["config"] for sym, path, _b in main.modules()
                if path.endswith("gatewayDns.bicep")]
    assert "globalGroup" in str(scope)
