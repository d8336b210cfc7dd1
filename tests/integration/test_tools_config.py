"""``python -m tools config`` against a real Azurite: what a user types to turn on an AI model or change
routing rules. The documents are validated with the same schema files the app loads, a bad one never
lands, and routing's own verdict is shown."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from devhost.azurite import Azurite
from shared.inference import registry
from shared.routing import rules
from shared.storage import layout
from tools import cli, stack

RULES = {"rules": [{"name": "ct-worklist", "trigger": "Dicom.StudyStable", "conditions": {"Modality": "CT"},
                    "destinations": [{"type": "worklist", "group": "body-ct"}]}]}


def run(capsys: pytest.CaptureFixture[str], azurite: Azurite | None, *argv: str) -> tuple[int, str, str]:
    target = ["--connection-string", azurite.connection_string, "--state-dir", "/nonexistent"] if azurite else []
    code = cli.main(["config", *argv, *target])
    out = capsys.readouterr()
    return code, out.out, out.err


def write(tmp_path: Path, name: str, doc: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def config(azurite: Azurite) -> object:
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(layout.CONFIG)
    if not container.exists():
        container.create_container()
    for blob in (layout.MODELS_DOC, layout.RULES_DOC, layout.RULES_LAST_GOOD, layout.RULES_STATUS):
        if container.get_blob_client(blob).exists():
            container.delete_blob(blob)
    return container


def test_set_get_and_a_bad_document_never_lands(azurite, config, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, azurite, "get", "models")
    assert code == 1 and "models is not set" in err and "config set models FILE" in err

    good = {"models": [{"kind": "builtin", "modalities": ["CT"]}]}
    code, out, err = run(capsys, azurite, "set", "models", write(tmp_path, "models.json", good))
    assert code == 0, err
    assert f"stored {layout.CONFIG}/{layout.MODELS_DOC}" in out and "1 enabled: builtin" in out
    code, out, _ = run(capsys, azurite, "get", "models")
    assert code == 0 and json.loads(out) == good
    assert registry.parse(config.get_blob_client(layout.MODELS_DOC).download_blob().readall())  # the app reads it

    bad = {"models": [{"kind": "builtin"}, {"kind": "python", "factory": "not a factory"}]}
    code, _, err = run(capsys, azurite, "set", "models", write(tmp_path, "bad.json", bad))
    assert code == 2 and "models[1] field factory" in err and "models is not valid" in err
    assert json.loads(run(capsys, azurite, "get", "models")[1]) == good  # unchanged

    onnx = {"models": [{"kind": "onnx", "name": "lung", "version": "1", "blob": "models/lung.onnx"}]}
    code, _, err = run(capsys, azurite, "set", "models", write(tmp_path, "onnx.json", onnx))
    assert code == 2 and "models/lung.onnx" in err and "upload them first" in err

    code, _, err = run(capsys, azurite, "set", "models", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err


def test_rules_are_set_from_stdin_and_routing_accepts_them(azurite, config, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(json.dumps(RULES).encode())))
    code, out, err = run(capsys, azurite, "set", "rules", "-")
    assert code == 0, err
    assert "1 rule(s), 1 enabled: ct-worklist" in out
    status = json.loads(config.get_blob_client(layout.RULES_STATUS).download_blob().readall())
    assert status["state"] == "accepted"
    assert config.get_blob_client(layout.RULES_LAST_GOOD).download_blob().readall() == json.dumps(RULES).encode()

    code, out, _ = run(capsys, azurite, "list")
    assert code == 0
    assert "models  inference/models.json" in out and "not set" in out
    assert "routing/rules.json" in out and "1 rule(s)" in out
    assert "Routing's verdict on the rules: accepted" in out
    code, out, _ = run(capsys, azurite, "validate", "rules")
    assert code == 0 and "rules: valid" in out and layout.RULES_DOC in out


def test_validate_a_file_offline_names_the_rule_and_field(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, None, "validate", "rules", write(tmp_path, "ok.json", RULES))
    assert code == 0 and "rules: valid" in out
    twice = {"rules": [RULES["rules"][0], RULES["rules"][0]]}
    code, _, err = run(capsys, None, "validate", "rules", write(tmp_path, "twice.json", twice))
    assert code == 2 and "rule 1 field name" in err and "used twice" in err
    port = json.loads(json.dumps(RULES))
    port["rules"][0]["destinations"] = [{"type": "dicom", "aeTitle": "PACS", "host": "pacs", "port": 70000}]
    code, _, err = run(capsys, None, "validate", "rules", write(tmp_path, "port.json", port))
    assert code == 2 and "rule 0 ('ct-worklist') field destinations[0].port" in err
    (tmp_path / "broken.json").write_text("{")
    code, _, err = run(capsys, None, "validate", "models", str(tmp_path / "broken.json"))
    assert code == 2 and "not JSON" in err


def test_the_schema_files_are_the_ones_the_app_validates_with(capsys) -> None:  # type: ignore[no-untyped-def]
    for name, owner in (("models", registry), ("rules", rules)):
        code, out, _ = run(capsys, None, "schema", name)
        assert code == 0 and Path(out.strip()) == owner.SCHEMA_PATH and owner.SCHEMA_PATH.is_file()
        code, out, _ = run(capsys, None, "schema", name, "--show")
        assert json.loads(out) == owner.SCHEMA


def test_azure_target_is_identity_based() -> None:
    """--account-url gives the app's identity-based settings (DefaultAzureCredential), never a key."""
    args = argparse.Namespace(account_url="https://acct.blob.core.windows.net/", connection_string=None,
                              state_dir=Path("/nonexistent"),
                              events_endpoint="https://t.westeurope-1.eventgrid.azure.net/api/events")
    settings, where = stack.settings_for(args, env={})
    assert settings.storage.blob_service_uri == "https://acct.blob.core.windows.net"
    assert settings.storage.connection_string is None and settings.events_local_key is None
    assert settings.events_endpoint == args.events_endpoint and where == settings.storage.blob_service_uri
    args.account_url = "http://acct.blob.core.windows.net"
    with pytest.raises(stack.StackError, match="https://"):
        stack.settings_for(args, env={})
    nothing = argparse.Namespace(account_url=None, connection_string=None, state_dir=Path("/nonexistent"))
    with pytest.raises(stack.StackError, match="make up"):
        stack.settings_for(nothing, env={})
