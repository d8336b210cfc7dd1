"""Local processes: start one in its own session with a log file, wait until it is ready, stop its group.

Standard library only, and a public part of the devhost: the app's CLI (``tools/``) and the DIMSE
gateway's local control (``gateway/process.py``) use it too, so "is this pid alive", "stop that process
group" and "read that state file" have one implementation. Nothing here knows an app.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


#: Where local listeners' ports are reserved, one file per port holding the reserving process's pid.
PORTS_DIR = Path(tempfile.gettempdir()) / "dicomflow-ports"
_LISTEN_LOW = 10000


def _listen_range() -> range:
    """Ports for local listeners: below the kernel's ephemeral range, which it hands to outgoing connections.

    A port asked of the kernel with ``bind(0)`` comes from the ephemeral range, so between choosing it
    and the server binding it, any client connection on the machine may take it as its source port
    (CI saw ``address already in use`` for a devhost port chosen that way). Below that range only
    listeners compete, and those this function hands out are reserved.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    return range(_LISTEN_LOW, low) if low - _LISTEN_LOW >= 4096 else range(0)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reserved_by_live(path: Path) -> bool:
    try:
        return pid_alive(int(path.read_text() or 0))
    except (OSError, ValueError):
        return False


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free to listen on, reserved for this process's lifetime.

    Reserved across processes (parallel test workers, the drill's two regions) under one file lock, so
    no port is handed out twice while its taker lives, and never from the ephemeral range (see
    :func:`_listen_range`). Where that range cannot be read, the kernel's choice, bound together.
    """
    span = _listen_range()
    if not span:
        socks = [socket.socket() for _ in range(n)]
        try:
            for sock in socks:
                sock.bind(("127.0.0.1", 0))
            return [int(sock.getsockname()[1]) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
    PORTS_DIR.mkdir(parents=True, exist_ok=True)
    picked: list[int] = []
    with open(PORTS_DIR / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for _ in range(50 * n + 1000):
            if len(picked) == n:
                break
            port = span.start + secrets.randbelow(len(span))
            path = PORTS_DIR / str(port)
            if port in picked or _reserved_by_live(path) or not _bindable(port):
                continue
            path.write_text(str(os.getpid()))
            picked.append(port)
    if len(picked) < n:
        raise OSError(f"no {n} free local ports between {span.start} and {span.stop}")
    return picked


def free_port() -> int:
    return free_ports(1)[0]


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
