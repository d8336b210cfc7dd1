"""``python -m devhost up``: start the local stack (foreground; ``--detach`` for background)."""

from __future__ import annotations

import argparse

from devhost import runtime

HELP = "start Azurite, the event fabric, the blob watcher and the function host"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runtime.add_up_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return runtime.up(args)
