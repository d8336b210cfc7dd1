"""Bearer-token (JWT) validation against an OpenID issuer's signing keys.

Library: PyJWT (``jwt``) with its :class:`jwt.PyJWKClient`. Chosen because it is the JWT library the
Azure SDK already brings in (``msal`` depends on it), it is small and well kept, checks
``exp``/``nbf``/``iss``/``aud`` itself, and its JWKS client caches the key set, refetches it when a
token names an unknown key (rotation) with a cooldown between forced refetches, and refuses
non-HTTP key URLs. joserfc/authlib would do the same with a second dependency tree.

Rules: RS256 only (``alg: none``, HS256 and the rest are refused before any key is looked up),
``exp``, ``nbf``, ``iss`` and ``aud`` required and checked with a small leeway for clock skew. The
JWKS location comes from the issuer's discovery document (``<issuer>/.well-known/openid-
configuration``), whose ``issuer`` must equal the configured one, unless set directly.

Nothing from a token (claims, the token itself) is put in an exception message or a log line; the
reasons are fixed codes (:class:`Reason`).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import jwt

from shared.auth.roles import Role, from_claim
from shared.config import AuthSettings

log = logging.getLogger(__name__)

ALGORITHMS: Final = ("RS256",)
REQUIRED_CLAIMS: Final = ("exp", "nbf", "iss", "aud")
HTTP_TIMEOUT_SECONDS: Final = 10.0


class Reason(StrEnum):
    """Why a token was refused (stable codes: audit lines and RFC 6750 error descriptions)."""

    MISSING = "missing-token"
    MALFORMED = "malformed-token"
    ALGORITHM = "unsupported-algorithm"
    UNKNOWN_KEY = "unknown-signing-key"
    SIGNATURE = "bad-signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    AUDIENCE = "wrong-audience"
    ISSUER = "wrong-issuer"
    CLAIMS = "missing-claim"
    FUNCTION_KEY = "function-key-refused"


#: What the caller should do, per reason (sent as the error description; no token content).
ADVICE: Final[dict[Reason, str]] = {
    Reason.MISSING: "Send 'Authorization: Bearer <access token>'.",
    Reason.MALFORMED: "The bearer token is not a JWT; send the access token your sign-in returned.",
    Reason.ALGORITHM: "Only RS256-signed tokens are accepted.",
    Reason.UNKNOWN_KEY: "The token is signed with a key the issuer does not publish; sign in again.",
    Reason.SIGNATURE: "The token's signature does not verify; sign in again.",
    Reason.EXPIRED: "The token has expired; sign in again or get a new token.",
    Reason.NOT_YET_VALID: "The token is not valid yet (nbf); check the clock of the machine that issued it.",
    Reason.AUDIENCE: "The token is for another audience; request a token for this API.",
    Reason.ISSUER: "The token comes from an issuer this service does not trust.",
    Reason.CLAIMS: "The token lacks a required claim (exp, nbf, iss, aud).",
    Reason.FUNCTION_KEY: "Functions keys are not accepted here: send a bearer token (x-functions-key "
                         "works only where DICOMFLOW_AUTH_FUNCTION_KEYS enables it, never as ?code=).",
}


class TokenRejected(Exception):
    """The token is not acceptable; ``reason`` says why (no token content in the message)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(ADVICE[reason])
        self.reason = reason


class IssuerUnavailable(Exception):
    """The issuer's discovery document or keys cannot be fetched (transient: answer 503)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an object id (Entra ``oid``, else ``sub``) and the roles the token grants."""

    subject: str
    roles: frozenset[Role]
    kind: str = "user"  # "user", "app" (client credentials), "function-key"


class TokenValidator:
    """Validates tokens of one issuer for a set of audiences; thread-safe, one per settings."""

    def __init__(self, settings: AuthSettings) -> None:
        if not settings.issuer or not settings.audiences:
            raise ValueError("TokenValidator needs an issuer and at least one audience")
        self.issuer = settings.issuer
        self.audiences = list(settings.audiences)
        self.leeway = settings.leeway_seconds
        self._settings = settings
        self._jwks_uri = settings.jwks_uri
        self._client: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    # -- keys ---------------------------------------------------------------------------------
    def _keys(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._client is None:
                uri = self._jwks_uri or self._discover()
                self._client = jwt.PyJWKClient(
                    uri, cache_jwk_set=True, lifespan=self._settings.jwks_cache_seconds,
                    cooldown_duration=self._settings.jwks_cooldown_seconds, timeout=HTTP_TIMEOUT_SECONDS,
                )
            return self._client

    def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as r:  # noqa: S310 - configured issuer
                doc = json.load(r)
        except (OSError, ValueError) as exc:
            raise IssuerUnavailable(f"The token issuer's discovery document ({url}) cannot be read "
                                    f"({type(exc).__name__}); check DICOMFLOW_AUTH_ISSUER.") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("jwks_uri"), str):
            raise IssuerUnavailable(f"{url} has no jwks_uri; check DICOMFLOW_AUTH_ISSUER.")
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer.rstrip("/"):
            raise IssuerUnavailable(f"{url} names another issuer; set DICOMFLOW_AUTH_ISSUER to the issuer "
                                    "exactly as its discovery document gives it.")
        return str(doc["jwks_uri"])

    def _signing_key(self, kid: str) -> Any:
        client = self._keys()
        try:
            return client.get_signing_key(kid).key
        except jwt.PyJWKClientConnectionError:
            raise IssuerUnavailable("The token issuer's signing keys cannot be fetched; try again shortly.") \
                from None
        except jwt.PyJWKClientError:
            raise TokenRejected(Reason.UNKNOWN_KEY) from None

    # -- validation ---------------------------------------------------------------------------
    def validate(self, token: str) -> Principal:
        """The caller, or :class:`TokenRejected` / :class:`IssuerUnavailable`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenRejected(Reason.MALFORMED) from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenRejected(Reason.ALGORITHM)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected(Reason.UNKNOWN_KEY)
        key = self._signing_key(kid)
        try:
            claims = jwt.decode(
                token, key, algorithms=list(ALGORITHMS), audience=self.audiences, issuer=self.issuer,
                leeway=self.leeway, options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(_rejection(exc)) from None
        subject = str(claims.get("oid") or claims.get("sub") or "")
        if not subject:
            raise TokenRejected(Reason.CLAIMS)
        # Entra ID: app-only (client credentials) tokens carry no delegated scopes (scp).
        kind = "user" if "scp" in claims or "name" in claims else "app"
        return Principal(subject=subject, roles=from_claim(claims.get("roles")), kind=kind)


@functools.lru_cache(maxsize=4)
def validator_for(settings: AuthSettings) -> TokenValidator:
    """One validator (and so one key cache) per distinct settings, for the life of the process."""
    return TokenValidator(settings)


#: PyJWT's errors, most specific first (they share :class:`jwt.InvalidTokenError` as their base).
_REJECTIONS: Final = (
    (jwt.ExpiredSignatureError, Reason.EXPIRED),
    (jwt.ImmatureSignatureError, Reason.NOT_YET_VALID),
    (jwt.InvalidAudienceError, Reason.AUDIENCE),
    (jwt.InvalidIssuerError, Reason.ISSUER),
    (jwt.MissingRequiredClaimError, Reason.CLAIMS),
    (jwt.InvalidSignatureError, Reason.SIGNATURE),
)


def _rejection(exc: jwt.InvalidTokenError) -> Reason:
    """Why PyJWT refused a token, as our reason code (anything else: malformed)."""
    return next((reason for kind, reason in _REJECTIONS if isinstance(exc, kind)), Reason.MALFORMED)
