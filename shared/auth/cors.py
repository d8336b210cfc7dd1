"""CORS for browser viewers (OHIF runs on another origin than the API and preflights every request).

The allowed origins come from ``DICOMFLOW_CORS_ORIGINS`` (``*`` = any). Tokens travel in the
``Authorization`` header, never in cookies, so credentials mode is not needed and not offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

#: Methods of the DICOMweb and status API.
ALLOW_METHODS: Final = "GET, HEAD, POST, DELETE, OPTIONS"
#: Request headers a viewer or script sends (Authorization is never CORS-safelisted).
ALLOW_HEADERS: Final = ("authorization", "accept", "content-type", "cache-control", "pragma", "range",
                        "if-none-match", "if-modified-since", "x-requested-with")
#: Response headers a viewer may read beyond the safelisted ones.
EXPOSE_HEADERS: Final = "Content-Length, Content-Location, Location, Warning, WWW-Authenticate, Retry-After, " \
                        "X-Dicomflow-Plan"
MAX_AGE_SECONDS: Final = 600


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: tuple[str, ...] = ()

    def allow_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for this request's Origin, or None (not allowed)."""
        if not origin or not self.origins:
            return None
        if "*" in self.origins:
            return "*"
        return origin if origin.rstrip("/") in self.origins else None

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for an actual (non-preflight) response; empty when the origin is not allowed."""
        allowed = self.allow_origin(origin)
        if allowed is None:
            return {"Vary": "Origin"} if self.origins and "*" not in self.origins else {}
        headers = {"Access-Control-Allow-Origin": allowed, "Access-Control-Expose-Headers": EXPOSE_HEADERS}
        if allowed != "*":
            headers["Vary"] = "Origin"
        return headers

    def preflight(self, headers: Mapping[str, str]) -> tuple[int, dict[str, str]]:
        """Answer an ``OPTIONS`` preflight: 204 with the grants, or 403 (no CORS headers) when refused."""
        origin = headers.get("origin")
        method = (headers.get("access-control-request-method") or "").upper()
        allowed = self.allow_origin(origin)
        vary = {"Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
        if allowed is None or not method:
            return 403, vary
        asked = [h.strip().lower() for h in (headers.get("access-control-request-headers") or "").split(",")
                 if h.strip()]
        if any(h not in ALLOW_HEADERS for h in asked) or method not in ALLOW_METHODS.split(", "):
            return 403, vary
        return 204, {
            **vary,
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ", ".join(ALLOW_HEADERS),
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        }
