"""A real Orthanc (+ DICOMweb plugin) for cross-checks and benchmarks, on loopback and free ports.

    with OrthancProcess(tmp_path) as orthanc:
        orthanc.upload(path_or_bytes)          # REST POST /instances
        client = DICOMwebClient(orthanc.dicomweb_url)

Orthanc gets a temporary JSON configuration (HTTP and DICOM ports from
``devhost.azurite.free_port``, storage and index under the given folder, no
authentication, loopback only) and is stopped (SIGTERM, then SIGKILL) on exit.
Orthanc 1.10's DICOMweb plugin does not percent-decode QIDO values (docs/architecture.md,
facts checked): queries sent to it must avoid ``*``, spaces, ``/``, ``#`` and ``'``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from devhost.azurite import free_port

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def available() -> bool:
    return shutil.which("Orthanc") is not None and PLUGIN.exists()


class OrthancError(RuntimeError):
    pass


class OrthancProcess:
    def __init__(self, folder: Path, *, timeout: float = 30.0) -> None:
        self.folder = Path(folder)
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.folder / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "dicomflow-peer",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "StudiesMetadata": "Full",
                         "SeriesMetadata": "Full"},
            "StableAge": 1,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
        }

    def start(self) -> OrthancProcess:
        if not available():
            raise OrthancError("Orthanc or its DICOMweb plugin is missing: apt-get install orthanc orthanc-dicomweb")
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "orthanc.json"
        cfg.write_text(json.dumps(self.config()))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(["Orthanc", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.folder)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                self.process = None
                raise OrthancError(f"Orthanc exited at start: {tail}")
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise OrthancError(f"Orthanc did not answer within {self.timeout:.0f} s (see {self.log_path})")

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def upload(self, data: bytes | Path) -> dict[str, Any]:
        body = data.read_bytes() if isinstance(data, Path) else data
        r = requests.post(f"{self.url}/instances", data=body, headers={"Content-Type": "application/dicom"},
                          timeout=30)
        r.raise_for_status()
        return dict(r.json())

    def __enter__(self) -> OrthancProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
