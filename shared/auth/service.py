"""The access boundary the HTTP adapters call: who is asking, may they, and one audit line.

``authorize`` returns the :class:`~shared.auth.tokens.Principal` or raises :class:`AccessDenied`
with the HTTP answer: 401 + ``WWW-Authenticate: Bearer`` (no or bad credentials), 403 naming the
missing role, 503 when the issuer's keys cannot be fetched or auth is not configured (fail closed).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import Final

from shared.auth.roles import FUNCTION_KEY_ROLES, Role, describe
from shared.auth.tokens import (
    ADVICE,
    IssuerMisconfigured,
    IssuerUnavailable,
    Principal,
    Reason,
    TokenRejected,
    validator_for,
)
from shared.config import AuthSettings

log = logging.getLogger(__name__)
audit_log = logging.getLogger("shared.auth.audit")

REALM: Final = "dicomflow"
FUNCTION_KEY_HEADER: Final = "x-functions-key"


class AccessDenied(Exception):
    """The request may not proceed: ``status``, a sentence saying what to do, and response headers."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None, *,
                 principal: Principal | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers or {}
        #: Who was refused, when they were authenticated (a missing role): the audit record names them.
        self.principal = principal


def _unauthorized(reason: Reason) -> AccessDenied:
    challenge = f'Bearer realm="{REALM}"'
    if reason is not Reason.MISSING:  # RFC 6750 3.1: no error code when no credentials were sent
        challenge += f', error="invalid_token", error_description="{reason.value}"'
    return AccessDenied(401, ADVICE[reason], reason.value, {"WWW-Authenticate": challenge})


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _function_key(settings: AuthSettings, given: str) -> Principal:
    for n, key in enumerate(settings.function_keys, 1):
        if secrets.compare_digest(given.encode(), key.encode()):
            # The audit names the key by position and a short hash prefix, never by value.
            digest = hashlib.sha256(key.encode()).hexdigest()[:8]
            return Principal(subject=f"function-key-{n}:{digest}", roles=FUNCTION_KEY_ROLES, kind="function-key")
    raise _unauthorized(Reason.FUNCTION_KEY)


def authenticate(settings: AuthSettings, headers: Mapping[str, str], query: Mapping[str, str] | None = None
                 ) -> Principal:
    """The caller behind a request's headers (lower-case names), or :class:`AccessDenied`."""
    if query is not None and "code" in query:
        raise _unauthorized(Reason.FUNCTION_KEY)  # keys in URLs end up in access logs: refuse outright
    token = _bearer(headers)
    if token is None:
        key = headers.get(FUNCTION_KEY_HEADER)
        if key:
            return _function_key(settings, key)
        raise _unauthorized(Reason.MISSING)
    if not settings.configured:
        log.error("Bearer token refused: DICOMFLOW_AUTH_ISSUER and DICOMFLOW_AUTH_AUDIENCE are not set")
        raise AccessDenied(503, "Sign-in is not configured on this service: its operator must set "
                                "DICOMFLOW_AUTH_ISSUER and DICOMFLOW_AUTH_AUDIENCE.", "auth-not-configured")
    try:
        return validator_for(settings).validate(token)
    except TokenRejected as exc:
        raise _unauthorized(exc.reason) from None
    except IssuerUnavailable:  # logged where it was found, once per fetch
        raise AccessDenied(503, "The sign-in service's keys cannot be fetched right now; try again shortly.",
                           "issuer-unavailable", {"Retry-After": "5"}) from None
    except IssuerMisconfigured as exc:
        log.error("Bearer tokens refused: %s", exc)
        raise AccessDenied(503, f"Sign-in is misconfigured on this service: {exc}", "auth-misconfigured") from None


def authorize(settings: AuthSettings, headers: Mapping[str, str], any_of: Iterable[Role],
              query: Mapping[str, str] | None = None) -> Principal:
    """Authenticate, then require one of ``any_of`` roles (403 naming it when missing)."""
    principal = authenticate(settings, headers, query)
    need = frozenset(any_of)
    if need and not (principal.roles & need):
        raise AccessDenied(403, f"This request needs the {describe(need)} role; the caller's token does not "
                                "grant it. Ask an administrator to assign the app role.", f"missing-role:"
                           f"{describe(need).replace(' or ', '|')}", principal=principal)
    return principal


def audit(principal: Principal | None, method: str, route: str, study: str | None, status: int,
          outcome: str) -> None:
    """One line per request: who (object id), what (method, route template, study UID), outcome.

    Only identifiers go here: an object id is a GUID, a route is a template, UIDs are not patient data.
    The study is the raw path value, so it is written only if it is a valid UID (``invalid`` otherwise:
    a caller could put anything in the path, a patient's name included); the query string never is.
    """
    from shared.dicom.validate import is_valid_uid

    study = study if study is None or is_valid_uid(study) else "invalid"
    who = principal.subject if principal else "-"
    kind = principal.kind if principal else "anonymous"
    audit_log.info("audit who=%s kind=%s method=%s route=%s study=%s status=%d outcome=%s",
                   who, kind, method, route, study or "-", status, outcome)
