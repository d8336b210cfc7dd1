"""Azurite lifecycle: start it from ``node_modules`` unless one already answers, wait
until it is healthy, stop what we started.

Azurite's well-known development account is the one place a storage key may appear
(it is public and only opens the local emulator).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from devhost.procs import free_port, port_open

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret: https://learn.microsoft.com/azure/storage/common/storage-use-azurite)
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_PORTS = (10000, 10001, 10002)


class AzuriteError(RuntimeError):
    """Azurite could not be started; the message says what to do."""


def connection_string(blob: int, queue: int, table: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{ACCOUNT};"
    )


def node_modules() -> Path:
    """Where Azurite is installed: the repo's node_modules, or $DEVHOST_NODE_MODULES if set."""
    return Path(os.environ.get("DEVHOST_NODE_MODULES") or ROOT / "node_modules")


def azurite_binary() -> Path:
    path = node_modules() / ".bin" / "azurite"
    if not path.exists():
        raise AzuriteError(
            f"Azurite is not installed ({path} missing): run 'npm ci' in {ROOT} (or 'make setup')."
        )
    return path


@dataclass
class Azurite:
    """A running Azurite (started by us, or found already answering)."""

    blob_port: int = DEFAULT_PORTS[0]
    queue_port: int = DEFAULT_PORTS[1]
    table_port: int = DEFAULT_PORTS[2]
    location: Path = field(default_factory=lambda: ROOT / ".azurite")
    in_memory: bool = False
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    #: An Azurite a previous ``up`` started and left running (its host died): ours to stop.
    adopted_pid: int | None = None

    @property
    def ports(self) -> tuple[int, int, int]:
        return (self.blob_port, self.queue_port, self.table_port)

    @property
    def connection_string(self) -> str:
        return connection_string(*self.ports)

    @property
    def started_by_us(self) -> bool:
        return self.process is not None or self.adopted_pid is not None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else self.adopted_pid

    def answering(self) -> bool:
        return all(port_open(p) for p in self.ports)

    def start(self, timeout: float = 30.0) -> Azurite:
        """Start Azurite unless one already answers on all three ports."""
        if self.answering():
            return self
        busy = [p for p in self.ports if port_open(p)]
        if busy:
            raise AzuriteError(
                f"Port(s) {', '.join(map(str, busy))} are in use by something that is not a complete Azurite: "
                "stop that process or choose other ports."
            )
        binary = azurite_binary()
        if shutil.which("node") is None:
            raise AzuriteError("Node.js is not on PATH: install Node 20 to run Azurite.")
        self.location.mkdir(parents=True, exist_ok=True)
        args = [
            str(binary),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
        ]
        args += ["--inMemoryPersistence"] if self.in_memory else ["--location", str(self.location)]
        self.log_path = self.location / "azurite.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-400:]
                self.process = None
                raise AzuriteError(f"Azurite exited at start (see {self.log_path}): {tail.strip()}")
            if self.answering():
                return self
            time.sleep(0.1)
        self.stop()
        raise AzuriteError(f"Azurite did not answer within {timeout:.0f} s (see {self.log_path}).")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Azurite if we started (or adopted) it, never one we merely found."""
        proc, pid = self.process, self.pid
        self.process = self.adopted_pid = None
        if pid is not None and (proc is None or proc.poll() is None):
            terminate_pid(pid, timeout)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def terminate_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM a process, ours or one a previous run left (SIGKILL after ``timeout``); True once it is gone
    (a child of ours is reaped)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def ephemeral(location: Path) -> Azurite:
    """An Azurite on free ports with in-memory data: what tests use."""
    return Azurite(free_port(), free_port(), free_port(), location=location, in_memory=True)
