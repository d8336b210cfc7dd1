"""Shared fixtures: a real Azurite per test session (in memory, free ports)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite, ephemeral  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.services import Services  # noqa: E402

#: Which folders' modules start first under ``make test`` (xdist hands whole modules to the next free worker in
#: this order): the end-to-end modules, minutes each, first; the many short unit tests last, where they fill
#: the gaps instead of leaving one worker alone on a long module at the end.
_START_ORDER = {"e2e": 0, "integration": 1, "infra": 2, "unit": 3}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _START_ORDER.get(item.path.parent.name, len(_START_ORDER)))  # stable: modules whole


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with ephemeral(tmp_path_factory.mktemp("azurite")) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def storage_env(azurite: Azurite) -> dict[str, str]:
    """App settings pointing at the session's Azurite."""
    return {"DicomStorage": azurite.connection_string, "DICOMFLOW_STABLE_AGE_SECONDS": "0"}


@pytest.fixture(scope="session")
def settings(storage_env: dict[str, str]) -> Settings:
    return Settings.from_env(storage_env)


@pytest.fixture(scope="session")
def storage(settings: Settings) -> Services:
    """Services over the session's Azurite with every container, table and queue created
    (the same ``ensure_ready`` the app runs once per process). No event topic."""
    svc = Services.from_settings(settings)
    svc.ensure_ready()
    return svc
