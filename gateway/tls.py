"""DICOM TLS (PS3.15 Annex B, BCP 195 profile): TLS 1.2 or later, forward-secret AEAD ciphers.

Server: the certificate (and key) from files, e.g. a Key Vault certificate that Container Apps
mounts as a secret volume; with a CA file, clients must present a certificate it signed.
Client (C-MOVE destinations and commitment reports marked ``"tls": true``): the system trust
store plus the CA file when given, host names checked, the server certificate as client
certificate when the peer asks for one.
"""

from __future__ import annotations

import ssl

from shared.config import GatewaySettings
from shared.tls import harden


def server_context(cfg: GatewaySettings) -> ssl.SSLContext | None:
    """The listener's TLS context, or None when no certificate is configured (plain TCP)."""
    if not cfg.tls_cert_file:
        return None
    ctx = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file or None)
    if cfg.tls_ca_file:
        ctx.load_verify_locations(cfg.tls_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cfg: GatewaySettings) -> ssl.SSLContext:
    """TLS towards a peer: verify its certificate (system CAs + our CA file) and host name."""
    ctx = harden(ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
    if cfg.tls_ca_file:
        ctx.load_verify_locations(cfg.tls_ca_file)
    if cfg.tls_cert_file:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file or None)
    return ctx
