"""The audit trail's patient salt in Azure: one Key Vault secret per region with one value, written by the
deployment from a @secure() parameter that azd fills (random once, then read back), and read from the vault by
both regions' function apps (a Key Vault reference) and DIMSE gateways (a Container Apps secret), never a literal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.bicepcheck import (
    INFRA,
    SECURITY_RULES,
    BicepFile,
    azd_parameters,
    check_audit_salt,
    rule_secret_values,
)

SALT_FILES = ("main.bicep", "modules/region.bicep", "modules/keyVault.bicep", "modules/functionApp.bicep",
              "modules/gateway.bicep")
PARAMETERS = (INFRA / "main.parameters.json").read_text()


def _check(files: dict[str, BicepFile]) -> list[str]:
    return check_audit_salt(*(files[name] for name in SALT_FILES))


def test_function_apps_and_gateways_read_the_salt_from_their_vault(bicep_files: dict[str, BicepFile]) -> None:
    assert _check(bicep_files) == []


def test_no_salt_value_is_a_literal_in_bicep(bicep_files: dict[str, BicepFile]) -> None:
    assert rule_secret_values in SECURITY_RULES  # held over every file by test_security.py too
    for name, f in bicep_files.items():
        assert rule_secret_values(f) == [], name
    main = bicep_files["main.bicep"].doc["parameters"]["auditPatientSalt"]
    decorators = {d["type"]: d.get("argument") for d in main["decorators"]}
    assert "secure" in decorators and main["default"] is None
    # azd's generated value is 15 letters and digits (5 lower, 5 upper, 5 digits): the floor admits it.
    assert decorators["min_length"] == 15


def _planted(bicep_files: dict[str, BicepFile], name: str, old: str, new: str) -> dict[str, BicepFile]:
    real = bicep_files[name]
    assert old in real.text, f"{name} no longer has {old!r}"
    return {**bicep_files, name: BicepFile.from_text(real.text.replace(old, new, 1), real.path)}


@pytest.mark.parametrize(("name", "old", "new", "expected"), [
    pytest.param("modules/keyVault.bicep", "    value: auditPatientSalt\n", "    value: 'aB3dE6gH9jK2mN5'\n",
                  "a Key Vault secret's value is 'aB3dE6gH9jK2mN5'", id="secret-value-literal"),
    pytest.param("modules/keyVault.bicep", "    value: auditPatientSalt\n", "    value: uniqueString(vault.id)\n",
                  "it must be a @secure() parameter", id="secret-value-computed"),
    pytest.param("main.bicep", "@secure()\n@minLength(15)\n@description('Salt", "@minLength(15)\n@description('Salt",
                 "parameter 'auditPatientSalt' holds a salt: it must be @secure()", id="param-not-secure"),
    pytest.param("modules/region.bicep", "param auditPatientSalt string\n",
                 "param auditPatientSalt string = 'aB3dE6gH9jK2mN5'\n", "it must have no default", id="param-default"),
    pytest.param("main.bicep", "    auditPatientSalt: auditPatientSalt\n",
                 "    auditPatientSalt: 'aB3dE6gH9jK2mN5'\n", "a salt is given as 'aB3dE6gH9jK2mN5' (string)",
                 id="module-param-literal"),
    pytest.param("modules/keyVault.bicep", "output id string = vault.id",
                 "output leaked string = auditPatientSalt\noutput id string = vault.id",
                 "output 'leaked' returns the @secure() parameter 'auditPatientSalt'", id="output-leaks"),
])
def test_a_literal_or_exposed_salt_trips(bicep_files: dict[str, BicepFile], name: str, old: str, new: str,
                                         expected: str) -> None:
    f = _planted(bicep_files, name, old, new)[name]
    problems = "\n".join(p for rule in SECURITY_RULES for p in rule(f))
    assert expected in problems, problems


@pytest.mark.parametrize(("name", "old", "new", "expected"), [
    pytest.param("modules/functionApp.bicep", "    value: auditPatientSaltReference\n",
                 "    value: 'aB3dE6gH9jK2mN5'\n",
                 "app setting DICOMFLOW_AUDIT_PATIENT_SALT must be a required parameter", id="app-setting-literal"),
    pytest.param("modules/functionApp.bicep", "    name: 'DICOMFLOW_AUDIT_PATIENT_SALT'\n",
                 "    name: 'DICOMFLOW_AUDIT_SALT'\n", "must be a required parameter (a Key Vault reference), got None",
                 id="app-setting-missing"),
    pytest.param("modules/region.bicep", "auditPatientSaltReference: '@Microsoft.KeyVault(VaultName=",
                 "auditPatientSaltReference: '@Microsoft.KeyVault(VaultName=kv-other;X=",
                 "auditPatientSaltReference must be '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name}",
                 id="reference-to-another-vault"),
    pytest.param("modules/gateway.bicep", "              secretRef: 'audit-patient-salt'\n",
                 "              value: auditPatientSaltSecretUri\n", "must come from a secret (secretRef)",
                 id="gateway-env-value"),
    pytest.param("modules/gateway.bicep", "    keyVaultUrl: auditPatientSaltSecretUri\n",
                 "    value: auditPatientSaltSecretUri\n", "must be read from Key Vault (keyVaultUrl",
                 id="gateway-secret-by-value"),
    pytest.param("modules/region.bicep", "auditPatientSaltSecretUri: keyVault.outputs.auditPatientSaltSecretUri",
                 "auditPatientSaltSecretUri: '${keyVault.outputs.uri}secrets/audit-salt'",
                 "auditPatientSaltSecretUri must be keyVault.outputs.auditPatientSaltSecretUri",
                 id="gateway-other-uri"),
    pytest.param("main.bicep", "    auditPatientSaltSecretName: auditPatientSaltSecretName\n    auditPatientSalt",
                 "    auditPatientSaltSecretName: 'audit-salt-secondary'\n    auditPatientSalt",
                 "each region must get var auditPatientSaltSecretName", id="regions-differ"),
])
def test_a_salt_not_from_the_vault_trips(bicep_files: dict[str, BicepFile], name: str, old: str, new: str,
                                         expected: str) -> None:
    problems = "\n".join(_check(_planted(bicep_files, name, old, new)))
    assert expected in problems, problems


# --- azd: random on the first deployment, read back from the primary's vault afterwards ----------------------

class Vault:
    """What azd's secretOrRandomPassword sees: reads of (vault, secret), and a generated password otherwise."""

    GENERATED = "qW7eR4tY1uI8oP5"

    def __init__(self, secrets: dict[tuple[str, str], str]) -> None:
        self.secrets = secrets
        self.reads: list[tuple[str, str]] = []

    def __call__(self, args: list[str]) -> str:
        if len(args) != 2:
            return self.GENERATED
        self.reads.append((args[0], args[1]))
        return self.secrets.get((args[0], args[1]), self.GENERATED)


def _deploy(env: dict[str, str], vault: Vault) -> dict[str, Any]:
    return azd_parameters(PARAMETERS, env, {"secretOrRandomPassword": vault})


def test_azd_generates_the_salt_once_then_reads_it_back_from_the_primary_vault(
        bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    secret = main.variable("auditPatientSaltSecretName")
    # First deployment: no PRIMARY_KEY_VAULT in the azd environment yet, so nothing to read: a generated value.
    first = Vault({})
    assert _deploy({"AZURE_ENV_NAME": "prod"}, first)["auditPatientSalt"] == {"value": Vault.GENERATED}
    assert first.reads == []
    # The deployment outputs the primary's vault; azd keeps outputs as environment values.
    assert main.doc["outputs"]["PRIMARY_KEY_VAULT"]["value"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "primary", "operand_2": {"operator": {"type": "property_accessor", "operands": {
            "operand_1": "outputs", "operand_2": "keyVaultName"}}}}}}
    # Every later deployment: the secret Bicep wrote is read back from that vault, under the name Bicep uses.
    later = Vault({("kv-abc123", secret): "Zx9Yw8Vu7Ts6Rq5"})
    assert _deploy({"AZURE_ENV_NAME": "prod", "PRIMARY_KEY_VAULT": "kv-abc123"}, later)["auditPatientSalt"] == {
        "value": "Zx9Yw8Vu7Ts6Rq5"}
    assert later.reads == [("kv-abc123", secret)]


def test_the_azd_read_back_trips_on_a_wrong_name_or_variable(bicep_files: dict[str, BicepFile]) -> None:
    secret = bicep_files["main.bicep"].variable("auditPatientSaltSecretName")
    env = {"PRIMARY_KEY_VAULT": "kv-abc123"}
    for broken in (PARAMETERS.replace(f" {secret})", " audit-salt)"),                  # not the secret Bicep writes
                   PARAMETERS.replace("${PRIMARY_KEY_VAULT=}", "${PRIMARY_KEYVAULT=}"),  # not an output: never read
                   PARAMETERS.replace(f" {secret})", " audit_patient.salt)")):          # azd's args: \w, space, -
        vault = Vault({("kv-abc123", secret): "Zx9Yw8Vu7Ts6Rq5"})
        given = azd_parameters(broken, env, {"secretOrRandomPassword": vault})["auditPatientSalt"]["value"]
        assert given != "Zx9Yw8Vu7Ts6Rq5", broken


def test_the_parameters_file_gives_the_salt_only_through_azd() -> None:
    value = json.loads(PARAMETERS)["parameters"]["auditPatientSalt"]["value"]
    assert value.startswith("$(secretOrRandomPassword ") and value.endswith(")")


def test_the_deployer_may_read_the_salt_in_the_primary_vault_only(bicep_files: dict[str, BicepFile]) -> None:
    """azd reads the salt back with the deployer's own sign-in: Key Vault Secrets User on that one secret, in the
    primary's vault, and nothing else of either vault."""
    regions = {sym: body["params"] for sym, path, body in bicep_files["main.bicep"].modules()
               if path.endswith("region.bicep")}
    assert regions["primary"].get("auditSaltReaderPrincipalId") == "principalId"
    assert "auditSaltReaderPrincipalId" not in regions["secondary"]
    roles = bicep_files["modules/roleAssignments.bicep"]
    held = [(body["scope"], str(body["properties"]["roleDefinitionId"])) for _s, body in
            roles.resources("Microsoft.Authorization/roleAssignments")
            if body["properties"]["principalId"] == "saltReaderPrincipalId"]
    assert len(held) == 1 and held[0][0] == "auditSaltSecret" and "'keyVaultSecretsUser'" in held[0][1]
    region = bicep_files["modules/region.bicep"]
    (given,) = [body["params"] for _s, path, body in region.modules() if path == "roleAssignments.bicep"]
    assert given["saltReaderPrincipalId"] == "auditSaltReaderPrincipalId"
    # The assignments' scope is the vault's output, so they wait for the secret to exist.
    assert "'keyVault'" in str(given["auditPatientSaltSecretName"])
