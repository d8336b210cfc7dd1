"""Real peers for the routing tests: dcmtk's storescp and Orthanc with its DICOMweb plugin.

Each starts on free loopback ports in a temporary folder and is stopped (terminate,
then kill) when the context ends. Readiness is a bounded poll, never a fixed sleep.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devhost.azurite import free_port, port_open
from shared.storage import layout

ORTHANC_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} missing: install the Debian test peers ('make peers')")
    return path


def wait_until(check: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"Timed out after {timeout:.0f}s waiting for {what}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def storescp(out_dir: Path, port: int, *, ae_title: str = "STORESCP", accept_all: bool = False) -> Iterator[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [need("storescp"), "-od", str(out_dir), "-aet", ae_title, "+B"]
    if accept_all:
        args.append("+xa")
    proc = subprocess.Popen([*args, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, what=f"storescp on {port}")
        assert proc.poll() is None, "storescp exited at start"
        yield out_dir
    finally:
        _stop(proc)


@contextmanager
def orthanc(work: Path) -> Iterator[str]:
    """Orthanc with DICOMweb; yields the DICOMweb root URL (``http://127.0.0.1:<port>/dicom-web``)."""
    binary = need("Orthanc")
    if not ORTHANC_DICOMWEB.exists():
        pytest.fail("Orthanc's DICOMweb plugin missing: install Debian's orthanc-dicomweb ('make peers')")
    http, dicom = free_port(), free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "routing-test",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "HttpPort": http,
        "DicomPort": dicom,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(ORTHANC_DICOMWEB)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("wb")
    proc = subprocess.Popen([binary, str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/system", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, timeout=30, what="Orthanc")
        assert proc.poll() is None, (work / "orthanc.log").read_text()[-2000:]
        yield f"http://127.0.0.1:{http}/dicom-web"
    finally:
        _stop(proc)
        log.close()


def archive(blob_service: Any, datasets: list) -> dict[str, Any]:
    """Put datasets in the archive as ingest would; return StudyStable-like event data."""
    container = blob_service.get_container_client(layout.ARCHIVE)
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        path = layout.instance_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        container.upload_blob(path, buf.getvalue(), overwrite=True)
    return {"imageStudyInstanceUid": datasets[0].StudyInstanceUID}
