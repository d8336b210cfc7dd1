"""The app's CLI: ``python -m tools <command> [options]``.

Each command is a module ``tools/<name>.py`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code), listed in :data:`COMMANDS`. Only the chosen command's module is
imported, so ``--help`` and small commands start fast.

Conventions: results on stdout, errors as one line on stderr that says what to do; exit 0 on
success, 1 when the command ran but failed, 2 for bad input (options, files, documents). A command
may raise :class:`CommandError` (e.g. :class:`tools.stack.StackError`: no stack or account to talk
to) instead: :func:`main` prints it as ``<command>: <message>`` and exits with its code.

Library choice: argparse (standard library: subcommands, ``--help``, typed options; no dependency to pin
for a handful of commands) and tqdm for progress bars.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from devhost import cli


class CommandError(RuntimeError):
    """A command cannot go on; the message (one line) says what to do, ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


#: (command, module). The module has HELP, add_arguments(parser) and run(args) -> int.
COMMANDS: list[tuple[str, str]] = [
    ("synth", "tools.synth"),
    ("upload", "tools.upload"),
    ("demo", "tools.demo"),
    ("config", "tools.config"),
    ("reprocess", "tools.reprocess"),
    ("reindex", "tools.reindex"),
    ("update", "tools.update"),
    ("merge", "tools.merge"),
    ("rejected", "tools.rejected"),
    ("drill", "tools.drill"),
    ("migrate", "tools.migrate"),
    ("audit", "tools.audit"),
]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse and dispatch with the devhost's command-list CLI (one implementation of the pattern)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return cli.main(argv, commands=COMMANDS, prog="python -m tools", description="dicomflow's own commands")
    except CommandError as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
