"""``python -m devhost status``: what runs, on which ports, and event counts (exit 1 when not running)."""

from __future__ import annotations

import argparse

from devhost import runtime

HELP = "show what runs, its ports and event counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runtime.add_state_dir(parser)


def run(args: argparse.Namespace) -> int:
    return runtime.status(args)
