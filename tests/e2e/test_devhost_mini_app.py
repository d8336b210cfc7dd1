"""The devhost is a runtime, not part of dicomflow: a second, minimal v2 app (tests/mini_app: an HTTP
function and a queue trigger, its settings a Core Tools-style local.settings.json) runs on it unchanged,
with no events file, on Azurite ports other than 10000-10002 (so ``UseDevelopmentStorage=true`` works only
because the devhost rewrites it)."""

from __future__ import annotations

import time

import requests

from devhost.azurite import DEFAULT_PORTS, Azurite
from devhost.testing import DevHostProcess


def test_a_second_minimal_app_runs_unchanged(azurite: Azurite, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert azurite.ports != DEFAULT_PORTS
    with DevHostProcess(app="tests.mini_app.function_app:app", azurite=azurite, state_dir=tmp_path) as dh:
        assert requests.get(f"{dh.base_url}/greeted/ada", timeout=10).status_code == 404
        assert requests.post(f"{dh.base_url}/greet/ada", timeout=10).status_code == 202
        deadline = time.monotonic() + 30
        while (answer := requests.get(f"{dh.base_url}/greeted/ada", timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, dh.logs()[-2000:]
            time.sleep(0.1)
        assert answer.text == "yes"
        logs = dh.logs()
    assert "Executed 'Functions.remember' (Succeeded" in logs
    assert "no Event Grid subscriptions" in logs
