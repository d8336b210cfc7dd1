"""DICOM TLS (PS3.15 Annex B, BCP 195 profile): TLS 1.2 or later, forward-secret AEAD ciphers.

Server: the certificate (and key) from files, e.g. a Key Vault certificate that Container Apps
mounts as a secret volume; with a CA file, clients must present a certificate it signed.
Client (C-MOVE destinations and commitment reports marked ``"tls": true``): the system trust
store plus the CA file when given, host names checked, the server certificate as client
certificate when the peer asks for one.
"""

from __future__ import annotations

import ssl
from typing import Final

from shared.config import GatewaySettings

#: BCP 195 (RFC 9325) recommended suites for TLS 1.2; TLS 1.3 suites are fixed by OpenSSL and all qualify.
BCP195_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def server_context(cfg: GatewaySettings) -> ssl.SSLContext | None:
    """The listener's TLS context, or None when no certificate is configured (plain TCP)."""
    if not cfg.tls_cert_file:
        return None
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file or None)
    if cfg.tls_ca_file:
        ctx.load_verify_locations(cfg.tls_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cfg: GatewaySettings) -> ssl.SSLContext:
    """TLS towards a peer: verify its certificate (system CAs + our CA file) and host name."""
    ctx = _harden(ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
    if cfg.tls_ca_file:
        ctx.load_verify_locations(cfg.tls_ca_file)
    if cfg.tls_cert_file:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file or None)
    return ctx
