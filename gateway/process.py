"""Run the gateway as a background process: ``python -m gateway up`` / ``down`` (what ``make up``/``down``
call), and :class:`GatewayProcess` for tests and benchmarks.

The child inherits this process's environment (settings are read by ``shared/config.py`` in the
child); its log and pid file live in ``.gateway/`` (git-ignored). Readiness is the port answering,
polled with a bound.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".gateway"


class GatewayError(RuntimeError):
    """The gateway did not start; the message carries the tail of its log."""


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


class GatewayProcess:
    """``python -m gateway`` in a subprocess (its own session, so stop() ends exactly it)."""

    def __init__(self, port: int, *, env: Mapping[str, str] | None = None, log_path: Path | None = None,
                 timeout: float = 30.0, inherit_env: bool = True) -> None:
        self.port = port
        self.env = dict(env or {})
        self.env["DICOMFLOW_GATEWAY_PORT"] = str(port)
        self.env.setdefault("DICOMFLOW_GATEWAY_HOST", "127.0.0.1")
        self.inherit_env = inherit_env
        self.log_path = log_path or STATE_DIR / "gateway.log"
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env} if self.inherit_env else dict(self.env)  # the child's settings
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise GatewayError(f"The gateway exited with code {code}: {self.logs()[-1500:]}")
            if port_open(self.port) and "listening on" in self.logs():
                return self
            time.sleep(0.05)
        self.stop()
        raise GatewayError(f"The gateway did not listen on port {self.port} within {self.timeout:.0f} s: "
                           f"{self.logs()[-1500:]}")

    def stop(self, timeout: float = 15.0) -> int | None:
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        return proc.returncode

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def up(port: int, host: str) -> int:
    """Start the gateway in the background (pid in .gateway/gateway.pid); print where it listens."""
    pid_file = STATE_DIR / "gateway.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text().strip() or 0)):
        print(f"DICOM gateway already running (pid {pid_file.read_text().strip()}); 'make down' stops it.")
        return 0
    gw = GatewayProcess(port, env={"DICOMFLOW_GATEWAY_HOST": host})
    try:
        gw.start()
    except GatewayError as exc:
        print(f"DICOM gateway failed to start: {exc}", file=sys.stderr)
        return 1
    assert gw.process is not None
    pid_file.write_text(str(gw.process.pid))
    gw.process = None  # detached: 'down' stops it by its pid
    print(f"DICOM gateway listening on {host}:{port} (log: {gw.log_path.relative_to(ROOT)})")
    return 0


def down() -> int:
    pid_file = STATE_DIR / "gateway.pid"
    if not pid_file.exists():
        print("DICOM gateway not running.")
        return 0
    pid = int(pid_file.read_text().strip() or 0)
    if pid and _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    print("DICOM gateway stopped.")
    return 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is not alive.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
