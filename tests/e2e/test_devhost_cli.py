"""``python -m devhost`` as a newcomer uses it: up --detach / ready / status / down, what happens when the
host is killed (SIGKILL), keys, and bad input (malformed events.json, a port in use, Azurite missing, no
Core Tools): one line, exit 2, nothing left running. Always on free ports (never 7071/7072/10000-10002).

The stack itself is started twice in one test (it costs seconds); the bad-input cases, which fail before
anything starts, run the CLI in-process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from devhost import cli, state
from devhost.azurite import ROOT, Azurite, free_port, port_open

TEST_APP = "tests.devhost_app.function_app:app"
TEST_EVENTS = ROOT / "tests" / "devhost_app" / "events.json"
SETTINGS = ROOT / "local.settings.example.json"


def devhost(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devhost", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def up_args(state_dir: Path, azurite_ports: tuple[int, int, int], http: int, fabric: int, *extra: str) -> list[str]:
    return ["up", "--http-port", str(http), "--fabric-port", str(fabric),
            "--azurite-ports", ",".join(map(str, azurite_ports)), "--state-dir", str(state_dir),
            "--azurite-dir", str(state_dir / "azurite"), *extra]


def in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while state.pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_up_detach_crash_adopt_and_down_leave_no_process(tmp_path: Path) -> None:
    """``make up`` with the real app (devhost starts its own Azurite), ready when /api/health answers; the host
    is SIGKILLed twice: the next ``up`` adopts the Azurite it left, and ``down`` stops everything recorded
    even though the host that started it is dead: no process left, every port free."""
    az_ports = (free_port(), free_port(), free_port())
    http, fabric = free_port(), free_port()
    argv = up_args(tmp_path, az_ports, http, fabric, "--detach", "--settings", str(SETTINGS),
                   "--events", str(ROOT / "infra" / "events.json"), "--ready-path", "/api/health")
    pids: set[int] = set()
    try:
        r = devhost(*argv)
        assert r.returncode == 0, r.stderr
        assert "functions" in r.stdout
        st = state.read_json(state.state_path(tmp_path))
        host_pid, azurite_pid = st["pid"], st["azurite"]["pid"]
        pids |= {host_pid, azurite_pid}
        children = state.read_children(tmp_path)
        assert {children["host"]["pid"], children["azurite"]["pid"]} == {host_pid, azurite_pid}
        assert children["azurite"]["ports"] == list(az_ports)
        assert children["azurite"]["data_dir"] == str((tmp_path / "azurite").resolve())
        health = requests.get(f"http://127.0.0.1:{http}/api/health", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "up"}
        admin = devhost("token", "--state-dir", str(tmp_path), "--role", "admin").stdout.strip()
        deep = requests.get(f"http://127.0.0.1:{http}/api/health/deep", headers={"Authorization": f"Bearer {admin}"},
                            timeout=10)
        assert {k: v["up"] for k, v in deep.json()["dependencies"].items()} == {
            "blob": True, "queue": True, "table": True, "events": True}
        assert st["endpoints"]["events_endpoint"] == f"http://127.0.0.1:{fabric}/api/events"
        status = devhost("status", "--state-dir", str(tmp_path))
        assert status.returncode == 0
        assert f"http://127.0.0.1:{http}/api" in status.stdout and "health" in status.stdout
        again = devhost(*up_args(tmp_path, az_ports, free_port(), free_port()))
        assert again.returncode == 2 and "already running" in again.stderr

        os.kill(host_pid, signal.SIGKILL)  # a crash: nothing cleans up
        assert gone(host_pid) and state.pid_alive(azurite_pid)
        r = devhost(*argv)  # the next 'make up' adopts the Azurite the dead host left
        assert r.returncode == 0, r.stderr
        st = state.read_json(state.state_path(tmp_path))
        pids.add(st["pid"])
        assert st["azurite"]["pid"] == azurite_pid and st["azurite"]["started_by_us"]
        assert "Adopting Azurite" in (tmp_path / "devhost.log").read_text()
        assert requests.get(f"http://127.0.0.1:{http}/api/health", timeout=10).status_code == 200

        os.kill(st["pid"], signal.SIGKILL)
        assert gone(st["pid"]) and state.pid_alive(azurite_pid)
    finally:
        down = devhost("down", "--state-dir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert f"stopped azurite (pid {azurite_pid})" in down.stdout
    assert all(gone(pid) for pid in pids)
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                 if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))]
    assert not leftovers
    assert not any(port_open(p) for p in (http, fabric, *az_ports))
    assert not state.state_path(tmp_path).exists() and not state.children_path(tmp_path).exists()
    assert devhost("status", "--state-dir", str(tmp_path)).returncode == 1


def test_key_is_generated_once_and_printed_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, first, _ = in_process(["key", "--state-dir", str(tmp_path)], capsys)
    assert code == 0
    key = first.strip()
    assert first == key + "\n" and len(key) >= 40
    assert in_process(["key", "--state-dir", str(tmp_path)], capsys)[1].strip() == key
    events_key = in_process(["key", "--events", "--state-dir", str(tmp_path)], capsys)[1].strip()
    assert events_key and events_key != key
    assert in_process(["key", "--state-dir", str(tmp_path / "other")], capsys)[1].strip() != key
    assert oct(state.keys_path(tmp_path).stat().st_mode & 0o777) == "0o600"


def _assert_one_line_exit_2(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(("mutate", "needles"), [
    (lambda d: d["subscriptions"][3]["filter"]["advancedFilters"][0].update(operatorType="StringEq"),
     ("advancedFilters[0].operatorType", "StringEq", "use one of")),
    (lambda d: d["subscriptions"][0].update(endpoint="webhook"), ("inbox-sdk", "endpoint", "blobTrigger")),
    (lambda d: d["subscriptions"][6]["retryPolicy"].update(maxDeliveryAttempts=0), ("maxDeliveryAttempts", "1 to 30")),
])
def test_malformed_events_json(tmp_path: Path, azurite: Azurite, mutate, needles, capsys) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(TEST_EVENTS.read_text())
    mutate(doc)
    bad = tmp_path / "events.json"
    bad.write_text(json.dumps(doc))
    http, fabric = free_port(), free_port()
    code, _, err = in_process(up_args(tmp_path, azurite.ports, http, fabric, "--events", str(bad), "--app", TEST_APP),
                              capsys)
    _assert_one_line_exit_2(code, err, str(bad), *needles)
    assert not port_open(http) and not port_open(fabric)
    assert not state.state_path(tmp_path).exists()


def test_invalid_json_events_file(tmp_path: Path, azurite: Azurite, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "events.json"
    bad.write_text('{"topics": {,}')
    code, _, err = in_process(up_args(tmp_path, azurite.ports, free_port(), free_port(), "--events", str(bad)), capsys)
    _assert_one_line_exit_2(code, err, "invalid JSON at line 1", "fix the syntax")


def test_unknown_placeholder_in_the_settings(tmp_path: Path, azurite: Azurite,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"DicomStorage": "{devhost:storage_connection}"}}))
    code, _, err = in_process(up_args(tmp_path, azurite.ports, free_port(), free_port(), "--settings", str(settings),
                                      "--app", TEST_APP, "--events", str(TEST_EVENTS)), capsys)
    _assert_one_line_exit_2(code, err, "DicomStorage", "{devhost:storage_connection}", "{devhost:storage}")


def test_port_in_use(tmp_path: Path, azurite: Azurite, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fabric = free_port()
        code, _, err = in_process(up_args(tmp_path, azurite.ports, port, fabric), capsys)
    _assert_one_line_exit_2(code, err, f"Port {port} is already in use", "--http-port")
    assert not port_open(fabric)


def test_azurite_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    az_ports = (free_port(), free_port(), free_port())
    http, fabric = free_port(), free_port()
    monkeypatch.setenv("DEVHOST_NODE_MODULES", str(tmp_path / "none"))
    code, _, err = in_process(up_args(tmp_path, az_ports, http, fabric), capsys)
    _assert_one_line_exit_2(code, err, "Azurite is not installed", "npm ci")
    assert not any(port_open(p) for p in (http, fabric, *az_ports))


def test_core_tools_without_func_on_path(tmp_path: Path, azurite: Azurite, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (Path(p) / "func").exists())
    monkeypatch.setenv("PATH", path)
    code, _, err = in_process(up_args(tmp_path, azurite.ports, free_port(), free_port(), "--core-tools"), capsys)
    _assert_one_line_exit_2(code, err, "'func'", "not on PATH")


def test_detach_relays_the_startup_error(tmp_path: Path, azurite: Azurite) -> None:
    bad = tmp_path / "events.json"
    bad.write_text("[]")
    r = devhost(*up_args(tmp_path, azurite.ports, free_port(), free_port(), "--events", str(bad), "--detach"))
    _assert_one_line_exit_2(r.returncode, r.stderr, "not a JSON object")


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path, azurite: Azurite) -> None:
    http, fabric = free_port(), free_port()
    args = up_args(tmp_path, azurite.ports, http, fabric, "--app", TEST_APP, "--events", str(TEST_EVENTS))
    proc = subprocess.Popen([sys.executable, "-m", "devhost", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not state.state_path(tmp_path).exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)  # state.json is written once everything listens
        assert state.state_path(tmp_path).exists()
        assert port_open(http) and port_open(fabric)
        assert state.read_children(tmp_path)["host"]["pid"] == proc.pid
        assert "azurite" not in state.read_children(tmp_path)  # reused, not ours
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "devhost is stopping" in out
    assert not port_open(http) and not port_open(fabric)
    assert not state.state_path(tmp_path).exists() and not state.children_path(tmp_path).exists()
    assert azurite.answering()  # a reused Azurite is not ours to stop
