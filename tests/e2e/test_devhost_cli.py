"""``python -m devhost`` as a newcomer uses it: up --detach / health / status / down, keys, and bad
input (malformed events.json, a port in use, Azurite missing, no Core Tools): one line, exit 2,
nothing left running. Always on free ports (never 7071/7072/10000-10002)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from devhost import state
from devhost.azurite import ROOT, Azurite, free_port, port_open

TEST_EVENTS = ROOT / "tests" / "devhost_app" / "events.json"


def devhost(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devhost", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def up_args(state_dir: Path, azurite_ports: tuple[int, int, int], http: int, fabric: int, *extra: str) -> list[str]:
    return ["up", "--http-port", str(http), "--fabric-port", str(fabric),
            "--azurite-ports", ",".join(map(str, azurite_ports)), "--state-dir", str(state_dir),
            "--azurite-dir", str(state_dir / "azurite"), *extra]


def test_up_detach_health_status_down_leaves_no_process(tmp_path: Path) -> None:
    """``make up`` / ``curl /api/health`` / ``make down`` with the real app; devhost starts its own Azurite."""
    az_ports = (free_port(), free_port(), free_port())
    http, fabric = free_port(), free_port()
    r = devhost(*up_args(tmp_path, az_ports, http, fabric, "--detach"))
    try:
        assert r.returncode == 0, r.stderr
        st = state.read_json(state.state_path(tmp_path))
        host_pid, azurite_pid = st["pid"], st["azurite"]["pid"]
        assert st["azurite"]["started_by_us"] and state.pid_alive(azurite_pid)
        health = requests.get(f"http://127.0.0.1:{http}/api/health", timeout=10)
        assert health.status_code == 200
        assert {k: v["up"] for k, v in health.json()["dependencies"].items()} == {
            "blob": True, "queue": True, "table": True, "events": True}
        status = devhost("status", "--state-dir", str(tmp_path))
        assert status.returncode == 0
        assert f"http://127.0.0.1:{http}/api" in status.stdout and "health" in status.stdout
        again = devhost(*up_args(tmp_path, az_ports, free_port(), free_port()))
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        down = devhost("down", "--state-dir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert not state.pid_alive(host_pid) and not state.pid_alive(azurite_pid)
    assert not any(port_open(p) for p in (http, fabric, *az_ports))
    assert not state.state_path(tmp_path).exists()
    assert devhost("status", "--state-dir", str(tmp_path)).returncode == 1


def test_key_is_generated_once_and_printed_alone(tmp_path: Path) -> None:
    first = devhost("key", "--state-dir", str(tmp_path))
    assert first.returncode == 0
    key = first.stdout.strip()
    assert first.stdout == key + "\n" and len(key) >= 40
    assert devhost("key", "--state-dir", str(tmp_path)).stdout.strip() == key
    events_key = devhost("key", "--events", "--state-dir", str(tmp_path)).stdout.strip()
    assert events_key and events_key != key
    assert devhost("key", "--state-dir", str(tmp_path / "other")).stdout.strip() != key
    assert oct(state.keys_path(tmp_path).stat().st_mode & 0o777) == "0o600"


def _assert_one_line_exit_2(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(("mutate", "needles"), [
    (lambda d: d["subscriptions"][3]["filter"]["advancedFilters"][0].update(operatorType="StringEq"),
     ("advancedFilters[0].operatorType", "StringEq", "use one of")),
    (lambda d: d["subscriptions"][0].update(endpoint="webhook"), ("inbox-sdk", "endpoint", "blobTrigger")),
    (lambda d: d["subscriptions"][6]["retryPolicy"].update(maxDeliveryAttempts=0), ("maxDeliveryAttempts", "1 to 30")),
])
def test_malformed_events_json(tmp_path: Path, azurite: Azurite, mutate, needles) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(TEST_EVENTS.read_text())
    mutate(doc)
    bad = tmp_path / "events.json"
    bad.write_text(json.dumps(doc))
    http, fabric = free_port(), free_port()
    r = devhost(*up_args(tmp_path, azurite.ports, http, fabric, "--events", str(bad),
                         "--app", "tests.devhost_app.function_app:app"))
    _assert_one_line_exit_2(r, str(bad), *needles)
    assert not port_open(http) and not port_open(fabric)
    assert not state.state_path(tmp_path).exists()


def test_invalid_json_events_file(tmp_path: Path, azurite: Azurite) -> None:
    bad = tmp_path / "events.json"
    bad.write_text('{"topics": {,}')
    r = devhost(*up_args(tmp_path, azurite.ports, free_port(), free_port(), "--events", str(bad)))
    _assert_one_line_exit_2(r, "invalid JSON at line 1", "fix the syntax")


def test_port_in_use(tmp_path: Path, azurite: Azurite) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fabric = free_port()
        r = devhost(*up_args(tmp_path, azurite.ports, port, fabric))
    _assert_one_line_exit_2(r, f"Port {port} is already in use", "--http-port")
    assert not port_open(fabric)


def test_azurite_missing(tmp_path: Path) -> None:
    az_ports = (free_port(), free_port(), free_port())
    http, fabric = free_port(), free_port()
    r = devhost(*up_args(tmp_path, az_ports, http, fabric), env={"DEVHOST_NODE_MODULES": str(tmp_path / "none")})
    _assert_one_line_exit_2(r, "Azurite is not installed", "npm ci")
    assert not any(port_open(p) for p in (http, fabric, *az_ports))


def test_core_tools_without_func_on_path(tmp_path: Path, azurite: Azurite) -> None:
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (Path(p) / "func").exists())
    r = devhost(*up_args(tmp_path, azurite.ports, free_port(), free_port(), "--core-tools"), env={"PATH": path})
    _assert_one_line_exit_2(r, "'func'", "not on PATH")


def test_detach_relays_the_startup_error(tmp_path: Path, azurite: Azurite) -> None:
    bad = tmp_path / "events.json"
    bad.write_text("[]")
    r = devhost(*up_args(tmp_path, azurite.ports, free_port(), free_port(), "--events", str(bad), "--detach"))
    _assert_one_line_exit_2(r, "not a JSON object")


def test_demo_starts_shows_and_stops(tmp_path: Path, azurite: Azurite) -> None:
    http, fabric = free_port(), free_port()
    r = devhost("demo", "--http-port", str(http), "--fabric-port", str(fabric), "--azurite-ports",
                ",".join(map(str, azurite.ports)), "--state-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "-> 200 (up)" in r.stdout
    for needle in ("dependency", "blob ", "events", "function", "health", "ingest", "devhost stopped"):
        assert needle in r.stdout
    assert not port_open(http) and not port_open(fabric)
    assert not state.state_path(tmp_path).exists()


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path, azurite: Azurite) -> None:
    import signal
    import time

    http, fabric = free_port(), free_port()
    args = up_args(tmp_path, azurite.ports, http, fabric, "--app", "tests.devhost_app.function_app:app",
                   "--events", str(TEST_EVENTS))
    proc = subprocess.Popen([sys.executable, "-m", "devhost", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not state.state_path(tmp_path).exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)  # state.json is written once everything listens
        assert state.state_path(tmp_path).exists()
        assert port_open(http) and port_open(fabric)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "devhost is stopping" in out
    assert not port_open(http) and not port_open(fabric)
    assert not state.state_path(tmp_path).exists()
    assert azurite.answering()  # a reused Azurite is not ours to stop
