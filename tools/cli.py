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

import sys
from collections.abc import Sequence

from devhost import cli

#: (command, module). The module has HELP, add_arguments(parser) and run(args) -> int.
COMMANDS: list[tuple[str, str]] = [
    ("synth", "tools.synth"),
    ("upload", "tools.upload"),
    ("demo", "tools.demo"),
    ("config", "tools.config"),
    ("reprocess", "tools.reprocess"),
    ("reindex", "tools.reindex"),
    ("drill", "tools.drill"),
    ("audit", "tools.audit"),
]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse and dispatch with the devhost's command-list CLI (one implementation of the pattern)."""
    return cli.main(argv, commands=COMMANDS, prog="python -m tools", description="dicomflow's own commands")


if __name__ == "__main__":
    sys.exit(main())
