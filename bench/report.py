"""Render bench/README.md from bench/results/*.json (placeholder, filled in below)."""

from __future__ import annotations


def render() -> None:
    pass
