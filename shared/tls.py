"""TLS for DICOM peers (PS3.15 Annex B, the BCP 195 profile): TLS 1.2 or later, forward-secret AEAD ciphers.

One hardening for every DICOM TLS connection the app and the gateway make or accept
(``gateway/tls.py`` for the gateway's listener and its C-MOVE/commitment peers,
:mod:`shared.routing.tls` for routed C-STORE and STOW-RS), and the one reader of a PEM setting
that is either the PEM text itself (a Key Vault reference in app settings) or a file's path.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

#: BCP 195 (RFC 9325) recommended suites for TLS 1.2; TLS 1.3 suites are fixed by OpenSSL and all qualify.
BCP195_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def is_pem(value: str) -> bool:
    """A setting that holds PEM text (``-----BEGIN ...``) rather than a file's path."""
    return value.lstrip().startswith("-----BEGIN ")


def pem_text(value: str) -> str:
    """The PEM text of a setting: itself, or the content of the file it names."""
    return value if is_pem(value) else Path(value).read_text()
