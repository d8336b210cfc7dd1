"""``python -m devhost down``: stop what ``up`` started (leaves no process behind)."""

from __future__ import annotations

import argparse

from devhost import runtime

HELP = "stop what 'up' started"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runtime.add_state_dir(parser)


def run(args: argparse.Namespace) -> int:
    return runtime.down(args)
