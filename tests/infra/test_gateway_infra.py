"""The DIMSE gateway's Bicep (modules/gateway.bicep and its wiring) against the gateway's code."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config import GatewaySettings
from tests.infra.bicepcheck import INFRA, BicepFile

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
    secrets = str(app["properties"]["configuration"]["secrets"])
    assert "keyVaultUrl" in secrets and "'value'" not in secrets  # the certificate comes from Key Vault only
    text = bicep_files["modules/gateway.bicep"].text
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


def test_gateway_identity_holds_only_the_roles_it_needs(bicep_files: dict[str, BicepFile]) -> None:
    roles = bicep_files["modules/roleAssignments.bicep"]
    held = sorted(str(body["properties"]["roleDefinitionId"]).split("'operand_2': '")[1].split("'")[0]
                  for _s, body in roles.resources("Microsoft.Authorization/roleAssignments")
                  if body["properties"]["principalId"] == "gatewayPrincipalId")
    assert held == ["keyVaultSecretsUser", "storageBlobDataContributor", "storageTableDataReader"]


def test_region_deploys_the_gateway_when_an_image_is_given(bicep_files: dict[str, BicepFile]) -> None:
    region = bicep_files["modules/region.bicep"]
    mods = {sym: path for sym, path, _body in region.modules()}
    assert mods.get("gateway") == "gateway.bicep"
    assert "var deployGateway = !empty(gatewayImage)" in region.text
    main = bicep_files["main.bicep"]
    assert "gatewayImage: gatewayImage" in main.text
    assert Path(INFRA / "modules" / "gateway.bicep").is_file()
