"""``python -m devhost key``: print only the local function key (``--events``: the event-topic key).

Keys are generated with :mod:`secrets` on first use and kept in ``<state-dir>/keys.json``.
"""

from __future__ import annotations

import argparse

from devhost import runtime

HELP = "print the local function key (or --events: the event-topic key)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", action="store_true", help="print the event-topic key instead")
    runtime.add_state_dir(parser)


def run(args: argparse.Namespace) -> int:
    return runtime.key(args)
