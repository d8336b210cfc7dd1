"""The app's CLI: ``python -m tools <command> [options]``.

Each command is a module ``tools/<name>.py`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code), listed in :data:`COMMANDS`. Only the chosen command's module is
imported, so ``--help`` and small commands start fast.

Conventions: results on stdout, errors as one line on stderr that says what to do; exit 0 on
success, 1 when the command ran but failed, 2 for bad input (options, files, documents).

Library choice: argparse (standard library: subcommands, ``--help``, typed options; no dependency to pin
for a handful of commands) and tqdm for progress bars.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: (command, module). The module has HELP, add_arguments(parser) and run(args) -> int.
COMMANDS: list[tuple[str, str]] = [
    ("synth", "tools.synth"),
    ("upload", "tools.upload"),
    ("demo", "tools.demo"),
    ("config", "tools.config"),
    ("reprocess", "tools.reprocess"),
    ("reindex", "tools.reindex"),
    ("drill", "tools.drill"),
]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools", description="dicomflow's own commands")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, module_name in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name)  # listed in --help without importing it
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    known = {name for name, _ in COMMANDS}
    only = argv[0] if argv and argv[0] in known else None
    args = build_parser(only).parse_args(argv)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
