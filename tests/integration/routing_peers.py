"""Real peers for the routing tests: dcmtk's storescp (Orthanc: ``tests/e2e/orthanc.py``).

storescp starts on a free loopback port in a temporary folder and is stopped (terminate,
then kill) when the context ends. Readiness is a bounded poll, never a fixed sleep.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devhost.azurite import port_open
from shared.ports import BlobStore
from shared.storage import layout
from tests.waiting import wait_until

ORTHANC_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} missing: install the Debian test peers ('make peers')")
    return path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def storescp(out_dir: Path, port: int, *, ae_title: str = "STORESCP", accept_all: bool = False,
             extra: Sequence[str] = (), implicit_only: bool = False) -> Iterator[Path]:
    """storescp: by default uncompressed syntaxes only; ``accept_all`` every one dcmtk knows; ``implicit_only``
    Implicit VR Little Endian only (an old workstation); ``extra``: more storescp options."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [need("storescp"), "-od", str(out_dir), "-aet", ae_title, "+B", *extra]
    if accept_all:
        args.append("+xa")
    if implicit_only:
        args.append("+xi")
    proc = subprocess.Popen([*args, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, what=f"storescp on {port}")
        assert proc.poll() is None, "storescp exited at start"
        yield out_dir
    finally:
        _stop(proc)


def archive(blobs: BlobStore, datasets: list) -> dict[str, Any]:
    """Put datasets in the archive as ingest would; return StudyStable-like event data."""
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        path = layout.instance_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        blobs.write(layout.ARCHIVE, path, buf.getvalue())
    return {"imageStudyInstanceUid": datasets[0].StudyInstanceUID}
