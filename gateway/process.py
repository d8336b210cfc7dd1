"""Run the gateway as a background process: ``python -m gateway up`` / ``down`` (what ``make up``/``down``
call), and :class:`GatewayProcess` for tests and benchmarks.

Local control only (the container runs ``python -m gateway`` and never imports this module), so it uses
the devhost's process helpers (:mod:`devhost.procs`). The child inherits this process's environment
(settings are read by ``shared/config.py`` in the child); its log and pid file live in ``.gateway/``
(git-ignored). Readiness is the port answering, polled with a bound.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from devhost.procs import ManagedProcess, ProcessError, pid_alive, port_open, stop_group

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".gateway"


class GatewayError(ProcessError):
    """The gateway did not start; the message carries the tail of its log."""


class GatewayProcess(ManagedProcess):
    """``python -m gateway`` in a subprocess (its own session, so stop() ends exactly it)."""

    error = GatewayError
    name = "the gateway"

    def __init__(self, port: int, *, env: Mapping[str, str] | None = None, log_path: Path | None = None,
                 timeout: float = 30.0, inherit_env: bool = True) -> None:
        self.port = port
        self.env = dict(env or {})
        self.env["DICOMFLOW_GATEWAY_PORT"] = str(port)
        self.env.setdefault("DICOMFLOW_GATEWAY_HOST", "127.0.0.1")
        child_env = {**os.environ, **self.env} if inherit_env else dict(self.env)  # the child's settings
        super().__init__(cwd=ROOT, log_path=log_path or STATE_DIR / "gateway.log", timeout=timeout, env=child_env)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "gateway"]

    def ready(self) -> bool:
        return port_open(self.port) and "listening on" in self.logs()

    def start(self) -> GatewayProcess:
        self.launch()
        return self

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def up(port: int, host: str) -> int:
    """Start the gateway in the background (pid in .gateway/gateway.pid); print where it listens."""
    pid_file = STATE_DIR / "gateway.pid"
    if pid_file.exists() and pid_alive(int(pid_file.read_text().strip() or 0)):
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
    if pid_alive(pid):
        stop_group(pid)
    pid_file.unlink(missing_ok=True)
    print("DICOM gateway stopped.")
    return 0
