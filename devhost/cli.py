"""The devhost CLI: ``python -m devhost <command> [options]``.

Adding a command
----------------
Write ``devhost/<name>.py`` exposing::

    HELP = "one line for --help"                                  # optional
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...                 # the exit code

and list it in :data:`COMMANDS` below as ``("<name>", "devhost.<name>")``. That is all: the parser,
``--help`` and dispatch come from the list. A listed module that does not exist is skipped.

Only runtime commands belong here (the devhost knows no app); an app's own commands (synthetic
data, uploads, a demo, configuration) live in the app's own CLI, which finds a running devhost
through the state files described in devhost/state.py.

Conventions: print results on stdout and errors as one line on stderr; exit 0 on success, 1 when
the command ran but failed, 2 for bad input (bad options, files, ports). Use
``devhost.runtime.add_state_dir(parser)`` to honour ``--state-dir``, and ``devhost.state`` /
``devhost.testing`` to find a running stack (keys, ports, journal).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

#: (command name, module). The module exposes add_arguments(parser) and run(args) -> int.
COMMANDS: list[tuple[str, str]] = [
    ("up", "devhost.up"),
    ("down", "devhost.down"),
    ("status", "devhost.status"),
    ("key", "devhost.key"),
    ("token", "devhost.token"),
]


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # not written yet; a missing dependency inside it is a real error
            return None
        raise


DESCRIPTION = "a local runtime for Azure Functions Python v2 apps: Azurite, an Event Grid fabric and a function host"


def build_parser(only: str | None = None, *, commands: Sequence[tuple[str, str]] | None = None,
                 prog: str = "python -m devhost", description: str = DESCRIPTION) -> argparse.ArgumentParser:
    """The CLI parser of a command list; with ``only``, just that command's module is imported (fast
    start; the others are listed in ``--help`` without their help line). Reused by the app's own CLI."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, module_name in (COMMANDS if commands is None else commands):
        if only is not None and name != only:
            sub.add_parser(name)
            continue
        module = _load(module_name)
        if module is None:
            continue
        p = sub.add_parser(name, help=getattr(module, "HELP", None), description=getattr(module, "HELP", None))
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None, *, commands: Sequence[tuple[str, str]] | None = None,
         prog: str = "python -m devhost", description: str = DESCRIPTION) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = COMMANDS if commands is None else commands
    known = {name for name, _ in commands}
    only = argv[0] if argv and argv[0] in known else None
    args = build_parser(only, commands=commands, prog=prog, description=description).parse_args(argv)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
