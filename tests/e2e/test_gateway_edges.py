"""The DIMSE gateway's edges with dcmtk: where it may listen, TLS handshakes that cannot hold the door,
and C-STORE temporary files that are capped and never left behind.

Gateways here run against the session's Azurite (no function host: nothing is ingested; the inbox write
is what C-STORE answers on). Each test starts its own gateway with the settings it is about.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from devhost.azurite import Azurite, free_port
from gateway.process import GatewayError, GatewayProcess
from tests.e2e.gateway_peers import dcmtk, self_signed, start_gateway
from tests.instances import uid
from tests.integration.routing_peers import need
from tests.waiting import wait_until

pytestmark = pytest.mark.peers


def _instance(folder: Path, name: str, pixel_bytes: int) -> Path:
    """A secondary capture instance with about ``pixel_bytes`` of pixel data."""
    side = max(8, int((pixel_bytes // 2) ** 0.5))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("edges", name)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("edges", "study"), uid("edges", "series")
    ds.PatientName, ds.PatientID, ds.Modality = "Edge^Case", "EDGE-1", "OT"
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(side * side * 2)
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _spooled(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file()] if folder.exists() else []


def test_beyond_loopback_it_needs_an_ae_allow_list_or_mutual_tls(azurite: Azurite, tmp_path: Path) -> None:
    env = {"DicomStorage": azurite.connection_string, "DICOMFLOW_GATEWAY_HOST": "0.0.0.0"}
    open_gateway = GatewayProcess(free_port(), env=env, log_path=tmp_path / "open.log", timeout=20)
    try:
        with pytest.raises(GatewayError) as refused:
            open_gateway.start()
    finally:
        open_gateway.stop()  # had it started (the check regressed), it must not outlive the test
    message = str(refused.value)
    assert "exited with code 2" in message
    assert "DICOMFLOW_GATEWAY_ALLOWED_AE_TITLES" in message and "DICOMFLOW_GATEWAY_TLS_CA_FILE" in message
    # With an allow-list it listens on every interface, and still answers only the listed AE titles.
    gw = GatewayProcess(free_port(), env={**env, "DICOMFLOW_GATEWAY_ALLOWED_AE_TITLES": "ECHOSCU"},
                        log_path=tmp_path / "listed.log", timeout=20).start()
    try:
        assert dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "DICOMFLOW", "127.0.0.1", str(gw.port)).returncode == 0
        assert dcmtk("echoscu", "-aet", "OTHER", "-aec", "DICOMFLOW", "127.0.0.1", str(gw.port)).returncode != 0
    finally:
        gw.stop()


def test_an_idle_connection_does_not_hold_up_a_tls_association(azurite: Azurite, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    gw = start_gateway(azurite.connection_string, tmp_path, DICOMFLOW_GATEWAY_TLS_CERT_FILE=str(cert),
                       DICOMFLOW_GATEWAY_TLS_KEY_FILE=str(key), DICOMFLOW_GATEWAY_TIMEOUT_SECONDS="30")
    idle = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(3)]  # connect, say nothing
    try:
        t0 = time.monotonic()
        echo = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "DICOMFLOW", "+tla", "+cf", str(cert), "-to", "5",
                     "-ta", "5", "127.0.0.1", str(gw.port), timeout=30)
        assert echo.returncode == 0, echo.stderr
        # Well inside the 30 s handshake timeout the idle sockets hold (the accepting thread used to wait it out).
        assert time.monotonic() - t0 < 15
    finally:
        for s in idle:
            s.close()
        gw.stop()


def test_a_data_set_over_the_cap_aborts_its_association_and_leaves_no_file(azurite: Azurite, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    gw = start_gateway(azurite.connection_string, tmp_path, DICOMFLOW_GATEWAY_MAX_STORE_BYTES=str(256 * 1024),
                       DICOMFLOW_GATEWAY_SPOOL_DIR=str(spool))
    try:
        big, small = _instance(tmp_path, "big", 2 * 1024 * 1024), _instance(tmp_path, "small", 64 * 1024)
        refused = dcmtk("storescu", "-aet", "STORESCU", "-aec", "DICOMFLOW", "127.0.0.1", str(gw.port), str(big))
        assert refused.returncode != 0
        wait_until(lambda: "larger than DICOMFLOW_GATEWAY_MAX_STORE_BYTES" in gw.logs(), timeout=10,
                   what="the cap in the gateway log")
        wait_until(lambda: not _spooled(spool), timeout=10, what="the spool emptied after the abort")
        ok = dcmtk("storescu", "-aet", "STORESCU", "-aec", "DICOMFLOW", "127.0.0.1", str(gw.port), str(small))
        assert ok.returncode == 0, ok.stderr
        assert spool.is_dir() and not _spooled(spool)
    finally:
        gw.stop()
    assert not spool.exists()  # the gateway's own folder goes with it


def test_a_sender_killed_mid_transfer_leaves_no_file(azurite: Azurite, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool).mkdir()
    (spool / "cstore-left-by-a-crash.dcm").write_bytes(b"x" * 100)  # what a killed gateway process left
    gw = start_gateway(azurite.connection_string, tmp_path, DICOMFLOW_GATEWAY_SPOOL_DIR=str(spool))
    try:
        assert not _spooled(spool), "the spool is emptied at start"
        big = _instance(tmp_path, "slow", 24 * 1024 * 1024)
        # Small PDUs make the transfer take a while, so it is killed half way.
        sender = subprocess.Popen([need("storescu"), "-aet", "STORESCU", "-aec", "DICOMFLOW", "--max-send-pdu",
                                   "4096", "127.0.0.1", str(gw.port), str(big)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: any(p.stat().st_size > 0 for p in _spooled(spool)), timeout=20,
                       what="the data set arriving in the spool", interval=0.01)
        finally:
            sender.send_signal(signal.SIGKILL)
            sender.wait(10)
        wait_until(lambda: not _spooled(spool), timeout=10, what="the half-received data set removed")
        ok = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "DICOMFLOW", "127.0.0.1", str(gw.port))
        assert ok.returncode == 0, ok.stderr
    finally:
        gw.stop()
