"""TLS towards routing destinations: routed C-STORE with ``"tls": true`` and STOW-RS over https.

Trust: the system's CA store plus ``DICOMFLOW_ROUTING_TLS_CA``; host names are checked (a
destination ``host`` given as an IP address needs that address in the peer certificate). A client
certificate (``DICOMFLOW_ROUTING_TLS_CLIENT_CERT``, certificate and key in one PEM) is presented to
peers that ask for one (mutual TLS), the way DICOM TLS peers and many DICOMweb gateways
authenticate a sender.

These are the only destination credentials, and they live in app settings (in Azure Key Vault
references, docs/deploy.md), never in ``rules.json``: whoever writes the rules chooses where
instances go, but cannot read or redirect a secret (a client certificate proves who we are without
handing its key to the peer). Settings hold PEM text (Key Vault references resolve to the text) or a
file's path; ``requests`` and OpenSSL read certificates from files, so PEM text is written once per
process to a private temporary folder (mode 0600).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from shared.config import Settings
from shared.tls import harden, is_pem, pem_text

_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class RoutingTls:
    """File paths of the CA bundle and the client certificate (None: not configured)."""

    ca_file: str | None = None
    client_cert_file: str | None = None

    def context(self) -> ssl.SSLContext:
        """An SSL context for a C-STORE association (pynetdicom's ``tls_args``)."""
        ctx = harden(ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
        if self.ca_file:
            ctx.load_verify_locations(self.ca_file)
        if self.client_cert_file:
            ctx.load_cert_chain(self.client_cert_file)
        return ctx

    def requests_options(self) -> dict[str, object]:
        """``verify`` and ``cert`` for ``requests`` (system CAs plus ours; our client certificate)."""
        options: dict[str, object] = {}
        if self.ca_file:
            options["verify"] = self.ca_file
        if self.client_cert_file:
            options["cert"] = self.client_cert_file
        return options


def _as_file(value: str | None, name: str, system_cas: bool = False) -> str | None:
    if not value:
        return None
    if not is_pem(value) and not system_cas:
        return value
    text = pem_text(value)
    if system_cas:  # requests' verify= replaces the default bundle: add ours to the system's
        import certifi

        text = Path(certifi.where()).read_text() + "\n" + text
    path = Path(_folder()) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return str(path)


@functools.lru_cache(maxsize=1)
def _folder() -> str:
    folder = tempfile.mkdtemp(prefix="dicomflow-routing-tls-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.lru_cache(maxsize=4)
def _material(ca: str | None, client: str | None) -> RoutingTls:
    with _lock:
        return RoutingTls(_as_file(ca, "ca.pem", system_cas=True), _as_file(client, "client.pem"))


def routing_tls(settings: Settings) -> RoutingTls:
    """The routing TLS material of these settings (written to files once per process)."""
    return _material(settings.routing_tls_ca, settings.routing_tls_client_cert)
