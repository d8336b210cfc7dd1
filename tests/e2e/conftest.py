"""End-to-end fixtures: the devhost in a subprocess against the session's Azurite.

``devhost_factory(app=..., events=..., env=...)`` starts a :class:`devhost.testing.DevHostProcess`
(free ports, its own state dir) and stops it at the end of the test; ``devhost`` is the real
``function_app:app`` with ``infra/events.json`` (settle without delay), shared by a module. The real
app's settings come from ``local.settings.example.json`` (``{devhost:...}`` placeholders), so the tests
run from a fresh clone, where there is no local.settings.json.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devhost.azurite import Azurite
from devhost.testing import DevHostProcess

ROOT = Path(__file__).resolve().parents[2]
#: The app's settings file (its auth settings use the devhost's development issuer: ``dh.bearer(role...)``
#: signs tokens for it); the tests' own settings on top.
REAL_APP_SETTINGS = ROOT / "local.settings.example.json"
REAL_APP_EVENTS = ROOT / "infra" / "events.json"
AUTH_ENV = {"DICOMFLOW_AUTH_ISSUER": "{devhost:issuer}", "DICOMFLOW_AUTH_AUDIENCE": "api://devhost"}
REAL_APP_ENV = {**AUTH_ENV, "DICOMFLOW_STABLE_AGE_SECONDS": "0", "DICOMFLOW_SETTLE_DELAY_SECONDS": "0",
                "DICOMFLOW_ROUTING_RULES_TTL_SECONDS": "0"}


@pytest.fixture
def devhost_factory(azurite: Azurite, tmp_path: Path) -> Iterator[Callable[..., DevHostProcess]]:
    started: list[DevHostProcess] = []

    def start(app: str = "function_app:app", events: str | Path | None = None, **kwargs: Any) -> DevHostProcess:
        kwargs.setdefault("state_dir", tmp_path / f"devhost-{len(started)}")
        kwargs.setdefault("watch_from_now", True)  # see the devhost fixture
        if app == "function_app:app":
            kwargs.setdefault("settings", REAL_APP_SETTINGS)
        dh = DevHostProcess(app=app, events=events or REAL_APP_EVENTS, azurite=azurite, **kwargs)
        started.append(dh)
        return dh.start()

    try:
        yield start
    finally:
        for dh in started:
            dh.close()


@pytest.fixture(scope="module")
def devhost(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostProcess]:
    """The real app on the devhost (one per test module). The session's Azurite keeps every module's
    uploads (the inbox is kept), so a new devhost announces only blobs that arrive after it starts."""
    dh = DevHostProcess(app="function_app:app", events=REAL_APP_EVENTS, azurite=azurite, env=REAL_APP_ENV,
                        settings=REAL_APP_SETTINGS, state_dir=tmp_path_factory.mktemp("devhost"),
                        watch_from_now=True)
    with dh:
        yield dh
