"""Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) as the bench's peer.

Reuses the test fixture's :class:`tests.e2e.orthanc.OrthancProcess` (loopback, free ports, a
temporary configuration, stopped by process group on exit) and adds what the bench needs:
installing the packages when missing (apt-get, as root or with sudo, the Makefile ``peers`` recipe),
streamed uploads of big files, and a pooled uploader for the same client concurrency as ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import requests

from tests.e2e.orthanc import PLUGIN, OrthancError, OrthancProcess, available

__all__ = ["BenchOrthanc", "OrthancError", "OrthancProcess", "ensure_installed", "upload_file", "upload_many"]


class BenchOrthanc(OrthancProcess):
    """The fixture's Orthanc with settings for measuring: no compression, one storage area,
    enough HTTP threads for the client concurrency used."""

    def __init__(self, folder: Path, *, http_threads: int = 16, timeout: float = 60.0) -> None:
        super().__init__(folder, timeout=timeout)
        self.http_threads = http_threads

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update({"HttpThreadsCount": self.http_threads, "StorageCompression": False,
                    "HttpTimeout": 600, "KeepAlive": True, "LimitFindResults": 0, "LimitFindInstances": 0})
        return cfg


def ensure_installed() -> None:
    """Install Orthanc and its DICOMweb plugin from Debian when missing (root or sudo)."""
    if available():
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if sudo and shutil.which("sudo") is None:
        raise OrthancError("Orthanc is missing and this user cannot install it: run 'sudo make peers'.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "orthanc", "orthanc-dicomweb"], check=True, env=env)
    if not available():
        raise OrthancError(f"apt-get ran but Orthanc or {PLUGIN} is still missing.")


def upload_file(orthanc: OrthancProcess, path: Path, *, timeout: float = 600.0,
                session: requests.Session | None = None) -> requests.Response:
    """POST one file to /instances, streamed from disk (requests sends the open file)."""
    s = session or requests
    with path.open("rb") as f:
        return s.post(f"{orthanc.url}/instances", data=f, timeout=timeout,
                      headers={"Content-Type": "application/dicom", "Content-Length": str(path.stat().st_size)})


def upload_many(orthanc: OrthancProcess, paths: Sequence[Path], *, workers: int, progress: bool = True,
                desc: str = "orthanc") -> tuple[float, list[str]]:
    """Upload with ``workers`` concurrent clients (one keep-alive session each); returns the
    wall time and the errors (empty when every POST answered 200)."""
    from tqdm import tqdm

    local = threading.local()
    errors: list[str] = []

    def one(path: Path) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        data = path.read_bytes()
        r = session.post(f"{orthanc.url}/instances", data=data, headers={"Content-Type": "application/dicom"},
                         timeout=120)
        if r.status_code != 200:
            errors.append(f"{path.name}: HTTP {r.status_code}")

    bar = tqdm(total=len(paths), unit="file", desc=desc, disable=not progress, leave=False)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for fut in as_completed([pool.submit(one, p) for p in paths]):
            try:
                fut.result()
            except requests.RequestException as exc:
                errors.append(type(exc).__name__)
            bar.update(1)
    elapsed = time.monotonic() - start
    bar.close()
    return elapsed, errors
