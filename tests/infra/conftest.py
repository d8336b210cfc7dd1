"""Fixtures for the offline Bicep checks: parsed infra files and the app's functions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.bicepcheck import INFRA, BicepFile, infra_files


@pytest.fixture(scope="session")
def bicep_files() -> dict[str, BicepFile]:
    """Every .bicep under infra/, parsed (a parse error fails here, loudly)."""
    return {str(p.relative_to(INFRA)): BicepFile.load(p) for p in infra_files()}


@pytest.fixture(scope="session")
def functions() -> dict[str, list[dict[str, Any]]]:
    """Function name -> bindings, from function_app.app at test time (others are adding functions)."""
    from tests.appfunctions import app_functions

    return {str(f.get_function_name()): json.loads(f.get_function_json())["bindings"]
            for f in app_functions()}


@pytest.fixture(scope="session")
def events() -> dict[str, Any]:
    return json.loads((INFRA / "events.json").read_text(encoding="utf-8"))
