"""Helpers for the DIMSE gateway tests: the gateway next to a devhost, dcmtk runs, a test certificate.

Everything runs on loopback and free ports; polling is bounded, never a fixed sleep.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

from devhost.azurite import free_port
from gateway.process import GatewayProcess
from tests.integration.routing_peers import need

CALLING = ("STORESCU", "FINDSCU", "MOVESCU", "GETSCU", "ECHOSCU", "ORTHANC", "PYNETDICOM")


def start_gateway(connection_string: str, folder: Path, **env: str) -> GatewayProcess:
    """A gateway process on a free port against the given storage (settings as environment)."""
    settings = {"DicomStorage": connection_string, "DICOMFLOW_GATEWAY_COMMITMENT_WAIT_SECONDS": "5", **env}
    return GatewayProcess(free_port(), env=settings, log_path=folder / f"gateway-{free_port()}.log").start()


def dcmtk(tool: str, *args: str | bytes, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool; its output is decoded leniently (it echoes values in their character set)."""
    proc = subprocess.run([need(tool), *args], capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def suboperations(output: str) -> dict[str, int]:
    """The last Completed/Failed/Warning sub-operation counts movescu/getscu print with -v/-d."""
    counts: dict[str, int] = {}
    for name in ("Completed", "Failed", "Warning"):
        found = re.findall(rf"{name} Suboperations\s*:\s*(\d+)", output)
        if found:
            counts[name.lower()] = int(found[-1])
    return counts


def self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throw-away certificate and key for 127.0.0.1 (the test's CA is the certificate itself)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dicomflow-gateway-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "gateway.crt", folder / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def dataset_bytes(path: Path) -> bytes:
    """A DICOM file's data set without its preamble and file meta (what DIMSE transfers)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with path.open("rb") as f:
        read_preamble(f, force=False)
        _read_file_meta_info(f)
        return f.read()
