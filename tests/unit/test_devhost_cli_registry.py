"""The CLI's registration point: a module with add_arguments(parser) and run(args) -> int."""

from __future__ import annotations

import argparse
import sys
import types

import pytest

from devhost import cli


def test_builtin_commands_are_registered() -> None:
    names = [n for n, _ in cli.COMMANDS]
    for name in ("up", "down", "status", "key"):
        assert name in names
    parser = cli.build_parser()
    args = parser.parse_args(["up", "--http-port", "1234", "--env", "A=1", "--env", "B=2"])
    assert (args.http_port, args.fabric_port, args.env, args.app) == (1234, 7072, ["A=1", "B=2"], "function_app:app")
    assert (args.settings, args.events, args.ready_path) == (None, None, None)


def test_devhost_lists_runtime_commands_only() -> None:
    """The app's own commands (synth, upload, demo, config, reprocess) live in its CLI, not in the runtime."""
    assert not {"synth", "upload", "demo", "config", "reprocess"} & {n for n, _ in cli.COMMANDS}


def test_a_new_command_needs_only_a_module_and_a_list_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("devhost_fake_hello")
    module.HELP = "say hello"  # type: ignore[attr-defined]

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--times", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        return 40 + args.times

    module.add_arguments = add_arguments  # type: ignore[attr-defined]
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "devhost_fake_hello", module)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, ("hello", "devhost_fake_hello")])
    assert cli.main(["hello", "--times", "2"]) == 42


def test_listed_but_unwritten_modules_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", [("up", "devhost.up"), ("later", "devhost.not_written_yet")])
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["later"])
    assert parser.parse_args(["up"]).command == "up"
