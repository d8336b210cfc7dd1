"""Local processes: start one in its own session with a log file, wait until it is ready, stop its group.

Standard library only, and a public part of the devhost: the app's CLI (``tools/``) and the DIMSE
gateway's local control (``gateway/process.py``) use it too, so "is this pid alive", "stop that process
group" and "read that state file" have one implementation. Nothing here knows an app.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_json(path: Path) -> Any:
    """A JSON state file, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Write atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def pid_alive(pid: Any) -> bool:
    """Whether ``pid`` names a live process (a zombie is not alive)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):  # a zombie child of ours: reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    with contextlib.suppress(OSError):  # a zombie that is not our child: /proc says so where it exists
        if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
            return False
    return True


def stop_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL it if it is still there after ``timeout``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


class ProcessError(RuntimeError):
    """A managed process did not start; the message carries the tail of its log."""


class ManagedProcess:
    """A child in its own session (so stopping it stops exactly it and its children), with its output
    in ``log_path``. Subclasses give ``argv()`` and ``ready()``."""

    error: type[ProcessError] = ProcessError
    name = "process"

    def __init__(self, *, cwd: Path, log_path: Path, timeout: float, env: Mapping[str, str] | None = None) -> None:
        self.cwd = cwd
        self.log_path = log_path
        self.timeout = timeout
        self.child_env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> Sequence[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def launch(self, *, ready: Callable[[], bool] | None = None) -> None:
        """Start and wait (bounded) until ``ready()``; raises :attr:`error` with the log's tail."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**(self.child_env if self.child_env is not None else os.environ), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(list(self.argv()), cwd=self.cwd, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        check = ready or self.ready
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                raise self.error(f"{self.name} exited with code {code} at start: {self.logs()[-2000:]}")
            if check():
                return
            time.sleep(0.05)
        self.stop()
        raise self.error(f"{self.name} was not ready within {self.timeout:.0f} s: {self.logs()[-2000:]}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit code."""
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

    def kill(self) -> None:
        """SIGKILL the process and its group: a crash."""
        proc, self.process = self.process, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def logs(self) -> str:
        """Everything the process wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
