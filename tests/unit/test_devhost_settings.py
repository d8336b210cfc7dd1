"""The hosted app's settings (devhost/settings.py): its settings file and --env only, with the devhost's
endpoints reached through {devhost:...} placeholders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from devhost import settings
from devhost.azurite import DEFAULT_PORTS, Azurite


class Stack:
    def __init__(self, ports: tuple[int, int, int] = (20000, 20001, 20002)) -> None:
        self.args = argparse.Namespace(http_port=17071, fabric_port=17072)
        self.azurite = Azurite(*ports)
        self.keys = {"function": "fn-key", "events": "ev-key"}


def write(tmp_path: Path, values: dict[str, str], **extra: object) -> settings.SettingsFile:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values, **extra}))
    return settings.read_file(path, required=True)


def test_placeholders_expand_in_any_value(tmp_path: Path) -> None:
    stack = Stack()
    file = write(tmp_path, {"Store": "{devhost:storage}", "Topic": "{devhost:events_endpoint}",
                            "TopicKey": "{devhost:events_key}", "Self": "{devhost:http_url}/api/things",
                            "Plain": "unchanged"})
    env = settings.app_settings(stack, file, [])
    assert env["Store"] == stack.azurite.connection_string and "20000" in env["Store"]
    assert env["Topic"] == "http://127.0.0.1:17072/api/events"
    assert env["TopicKey"] == "ev-key"
    assert env["Self"] == "http://127.0.0.1:17071/api/things"
    assert env["Plain"] == "unchanged"


def test_the_placeholder_table_is_one_dict_a_new_entry_extends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(settings.PLACEHOLDERS, "issuer",
                        settings.Placeholder("a dev issuer", lambda s: f"http://127.0.0.1:{s.args.http_port + 9}"))
    env = settings.app_settings(Stack(), write(tmp_path, {"Issuer": "{devhost:issuer}"}), [])
    assert env["Issuer"] == "http://127.0.0.1:17080"


def test_unknown_placeholder_names_setting_and_choices(tmp_path: Path) -> None:
    file = write(tmp_path, {"Store": "{devhost:storge}"})
    with pytest.raises(settings.SettingsError) as err:
        settings.app_settings(Stack(), file, [])
    message = str(err.value)
    assert "Store" in message and "{devhost:storge}" in message and "{devhost:storage}" in message
    assert str(file.path) in message


def test_use_development_storage_is_rewritten_only_off_the_default_ports(tmp_path: Path) -> None:
    file = write(tmp_path, {"Store": "UseDevelopmentStorage=true", "Other": "usedevelopmentstorage = TRUE;"})
    moved = Stack()
    env = settings.app_settings(moved, file, [])
    assert env["Store"] == env["Other"] == moved.azurite.connection_string
    assert settings.app_settings(Stack(DEFAULT_PORTS), file, [])["Store"] == "UseDevelopmentStorage=true"


def test_order_host_then_file_then_env(tmp_path: Path) -> None:
    stack = Stack()
    env = settings.app_settings(stack, write(tmp_path, {"A": "file", "B": "file"}), ["B=env", "C={devhost:events_key}"])
    assert (env["A"], env["B"], env["C"]) == ("file", "env", "ev-key")
    # The Functions runtime's own settings are provided by the host unless the app sets them.
    assert env["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert env["AzureWebJobsStorage"] == stack.azurite.connection_string
    mine = settings.app_settings(stack, write(tmp_path, {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}), [])
    assert mine["AzureWebJobsStorage"] == stack.azurite.connection_string


def test_no_app_setting_is_invented(tmp_path: Path) -> None:
    """Without a settings file the app gets the host's two settings and --env, nothing of any app."""
    missing = settings.read_file(tmp_path / "none.json", required=False)
    assert missing.path is None
    assert set(settings.app_settings(Stack(), missing, ["X=1"])) == {"FUNCTIONS_WORKER_RUNTIME",
                                                                     "AzureWebJobsStorage", "X"}


def test_bad_files_and_env_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(settings.SettingsError, match="no such file"):
        settings.read_file(tmp_path / "nope.json", required=True)
    bad = tmp_path / "bad.json"
    bad.write_text('{"Values": [1]}')
    with pytest.raises(settings.SettingsError, match='"Values" object'):
        settings.read_file(bad, required=True)
    with pytest.raises(settings.SettingsError, match="is not K=V"):
        settings.parse_env(["JUSTKEY"])


def test_cors_comes_from_the_host_section(tmp_path: Path) -> None:
    assert write(tmp_path, {}, Host={"CORS": "http://viewer.test"}).cors == "http://viewer.test"


def test_the_repo_example_settings_use_placeholders_only() -> None:
    """local.settings.example.json works as it is under devhost: every endpoint through a placeholder."""
    root = Path(__file__).resolve().parents[2]
    file = settings.read_file(root / "local.settings.example.json", required=True)
    env = settings.app_settings(Stack(), file, [])
    assert "{devhost:" not in json.dumps(env)
    assert env["DicomStorage"] == Stack().azurite.connection_string
