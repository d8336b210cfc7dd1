"""Bearer-token (JWT) validation against an OpenID issuer's signing keys.

Library: PyJWT (``jwt``): the JWT library the Azure SDK already brings in (``msal`` depends on it),
small and well kept; it checks the signature and ``exp``/``nbf``/``iss``/``aud`` itself and parses
the key set (:class:`jwt.PyJWKSet`). joserfc/authlib would do the same with a second dependency tree.
The key cache is ours (:class:`SigningKeys`), because PyJWT's ``PyJWKClient`` answers an issuer outage
with an error as soon as its cache expires and retries the issuer on every request meanwhile:

* keys are cached for ``DICOMFLOW_AUTH_JWKS_CACHE_SECONDS`` and refetched when a token names an
  unknown key (rotation), at most once per ``..._JWKS_COOLDOWN_SECONDS``;
* a failed fetch (discovery or keys) is remembered for the cooldown too (negative caching: an
  outage costs the issuer one request per cooldown, not one per API call);
* during an outage the last good keys keep validating tokens they signed, for up to
  ``DICOMFLOW_AUTH_JWKS_MAX_STALE_SECONDS`` past their cache lifetime (a token signed by a key we
  never saw gets 503: it may be a rotation we could not fetch);
* one fetch at a time; while it runs, callers with a usable (if stale) key do not wait for it.

Rules: RS256 only (``alg: none``, HS256 and the rest are refused before any key is looked up),
``exp``, ``nbf``, ``iss`` and ``aud`` required and checked with a small leeway for clock skew. The
JWKS location comes from the issuer's discovery document (``<issuer>/.well-known/openid-
configuration``), whose ``issuer`` must equal the configured one, unless set directly. Issuer and
JWKS are ``https://``; plain ``http://`` only when the issuer is on this machine (127.0.0.1, ::1 or
localhost: the devhost's development issuer), and then its keys too.

Access tokens only (:func:`check_access_token`): an ID token of the same issuer may carry our
audience (a viewer registered as the API itself) and roles, but it is not a grant to call us. Refused:
a ``typ`` header other than ``JWT``/``at+jwt`` (RFC 9068), ``token_use`` other than ``access``, an
``idtyp`` other than ``app``/``user`` (Entra's access-token claim), an ID-token-only claim (``nonce``,
``at_hash``, ``c_hash``; OpenID Connect Core 2), an Entra token (``ver`` 1.0/2.0) without the client
that asked for it (``azp``, v1 ``appid``: access tokens only), and a token with neither ``scp`` nor
``roles``.

Nothing from a token (claims, the token itself) is put in an exception message or a log line; the
reasons are fixed codes (:class:`Reason`).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

import jwt

from shared.auth.roles import Role, from_claim
from shared.config import AuthSettings

log = logging.getLogger(__name__)

ALGORITHMS: Final = ("RS256",)
REQUIRED_CLAIMS: Final = ("exp", "nbf", "iss", "aud")
HTTP_TIMEOUT_SECONDS: Final = 10.0
#: The most a discovery document or key set may weigh (Entra's key set is about 10 KiB).
MAX_DOCUMENT_BYTES: Final = 1024 * 1024
LOOPBACK_HOSTS: Final = ("127.0.0.1", "::1", "localhost")
#: ``typ`` headers of access tokens: Entra and most issuers send ``JWT``; RFC 9068 names ``at+jwt``.
ACCESS_TOKEN_TYPES: Final = ("jwt", "at+jwt", "application/at+jwt")
#: Claims only ID tokens carry (OpenID Connect Core 1.0, section 2 and 3.1.3.6).
ID_TOKEN_CLAIMS: Final = ("nonce", "at_hash", "c_hash")


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
    NOT_ACCESS_TOKEN = "not-an-access-token"  # noqa: S105 - a reason code, not a secret
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
    Reason.NOT_ACCESS_TOKEN: "This is not an access token (an ID token?): request an access token for this API "
                             "(scope api://<api>/.default or its delegated scope) and send that.",
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


class IssuerMisconfigured(Exception):
    """The configured issuer or its key location is not acceptable (answer 503; the operator fixes it)."""


def _loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in LOOPBACK_HOSTS


def check_issuer_urls(issuer: str, jwks_uri: str | None = None) -> None:
    """https only; plain http for an issuer on this machine (the development issuer) and its keys there."""
    scheme = urlsplit(issuer).scheme.lower()
    if not (scheme == "https" or (scheme == "http" and _loopback(issuer))):
        raise IssuerMisconfigured("DICOMFLOW_AUTH_ISSUER must be an https:// URL (plain http only for a development "
                                  "issuer on 127.0.0.1/localhost).")
    if jwks_uri is not None:
        kind = urlsplit(jwks_uri).scheme.lower()
        if not (kind == "https" or (kind == "http" and scheme == "http" and _loopback(jwks_uri))):
            raise IssuerMisconfigured("The issuer's signing keys (jwks_uri, or DICOMFLOW_AUTH_JWKS_URI) must be "
                                      "https:// (plain http only on this machine, for a development issuer).")


def check_access_token(header: Mapping[str, Any], claims: Mapping[str, Any]) -> None:
    """Raise :class:`TokenRejected` (``not-an-access-token``) for an ID token or anything not a grant."""
    typ = header.get("typ")
    if typ is not None and str(typ).lower() not in ACCESS_TOKEN_TYPES:
        raise TokenRejected(Reason.NOT_ACCESS_TOKEN)
    if "token_use" in claims and claims["token_use"] != "access":  # noqa: S105 - a claim value, not a secret
        raise TokenRejected(Reason.NOT_ACCESS_TOKEN)
    if "idtyp" in claims and claims["idtyp"] not in ("app", "user"):
        raise TokenRejected(Reason.NOT_ACCESS_TOKEN)
    if any(c in claims for c in ID_TOKEN_CLAIMS):
        raise TokenRejected(Reason.NOT_ACCESS_TOKEN)
    if str(claims.get("ver", "")) in ("1.0", "2.0") and not (claims.get("azp") or claims.get("appid")):
        raise TokenRejected(Reason.NOT_ACCESS_TOKEN)
    if "scp" not in claims and "roles" not in claims:
        raise TokenRejected(Reason.NOT_ACCESS_TOKEN)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as r:  # noqa: S310 - https or loopback (checked)
        body = r.read(MAX_DOCUMENT_BYTES + 1)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError("document too large")
    return json.loads(body)


class SigningKeys:
    """The issuer's signing keys by ``kid``: cached, refetched on rotation, remembered through outages
    (see the module docstring). ``clock`` is monotonic seconds (tests drive it)."""

    def __init__(self, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic,
                 fetch_json: Callable[[str], Any] = _get_json) -> None:
        assert settings.issuer
        self.issuer = settings.issuer
        self.jwks_uri = settings.jwks_uri
        self.lifespan = settings.jwks_cache_seconds
        self.cooldown = settings.jwks_cooldown_seconds
        self.max_stale = settings.jwks_max_stale_seconds
        self.clock = clock
        self.fetch_json = fetch_json
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._fetched: float | None = None  # last success
        self._attempted: float | None = None  # last attempt
        self._failed: float | None = None  # last failure, cleared by a success
        self._flight: threading.Event | None = None
        self._warned_stale = False

    def _fresh(self, now: float) -> bool:
        return self._fetched is not None and now - self._fetched < self.lifespan

    def _stale_usable(self, now: float) -> bool:
        return self._fetched is not None and now - self._fetched < self.lifespan + self.max_stale

    def _may_fetch(self, now: float) -> bool:
        if self._failed is not None and now - self._failed < self.cooldown:
            return False  # negative cache: the issuer failed a moment ago
        # Keys are fresh: an unknown kid may refetch only once per cooldown.
        return not (self._fresh(now) and self._attempted is not None and now - self._attempted < self.cooldown)

    def key(self, kid: str) -> Any:
        tried = False
        while True:
            with self._lock:
                now = self.clock()
                known = self._keys.get(kid)
                if known is not None and self._fresh(now):
                    return known
                mine = not tried and self._flight is None and self._may_fetch(now)
                if mine:
                    flight = self._flight = threading.Event()
                    self._attempted = now
                else:
                    flight = self._flight  # type: ignore[assignment]
                    if known is not None and self._stale_usable(now):
                        self._warn_stale()
                        return known
                    if flight is None or tried:
                        self._refuse(now)
            if mine:
                tried = True
                try:
                    keys = self._fetch()
                except IssuerUnavailable as exc:
                    log.warning("Token issuer unavailable: %s", exc)
                    keys = None
                with self._lock:
                    if keys is not None:
                        self._keys, self._fetched, self._failed, self._warned_stale = keys, self.clock(), None, False
                    else:
                        self._failed = self.clock()
                    self._flight = None
                flight.set()
            else:
                assert flight is not None
                flight.wait(3 * HTTP_TIMEOUT_SECONDS)
                tried = True

    def _warn_stale(self) -> None:
        if not self._warned_stale:
            self._warned_stale = True
            log.warning("Token issuer unreachable: validating with the last good signing keys (fetched %.0f s ago)",
                        self.clock() - (self._fetched or 0.0))

    def _refuse(self, now: float) -> None:
        if self._fresh(now):
            raise TokenRejected(Reason.UNKNOWN_KEY)
        if self._fetched is not None and not self._stale_usable(now):
            raise IssuerUnavailable("The token issuer's signing keys cannot be fetched and the last good ones are "
                                    "older than DICOMFLOW_AUTH_JWKS_MAX_STALE_SECONDS allows.")
        raise IssuerUnavailable("The token issuer's signing keys cannot be fetched; try again shortly.")

    def _fetch(self) -> dict[str, Any]:
        uri = self.jwks_uri or self._discover()
        check_issuer_urls(self.issuer, uri)
        try:
            data = self.fetch_json(uri)
            keyset = jwt.PyJWKSet.from_dict(data)
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            raise IssuerUnavailable(f"The token issuer's signing keys ({uri}) cannot be read "
                                    f"({type(exc).__name__}).") from None
        return {k.key_id: k.key for k in keyset.keys if k.key_id}

    def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            doc = self.fetch_json(url)
        except (OSError, ValueError) as exc:
            raise IssuerUnavailable(f"The token issuer's discovery document ({url}) cannot be read "
                                    f"({type(exc).__name__}); check DICOMFLOW_AUTH_ISSUER.") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("jwks_uri"), str):
            raise IssuerUnavailable(f"{url} has no jwks_uri; check DICOMFLOW_AUTH_ISSUER.")
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer.rstrip("/"):
            raise IssuerUnavailable(f"{url} names another issuer; set DICOMFLOW_AUTH_ISSUER to the issuer "
                                    "exactly as its discovery document gives it.")
        return str(doc["jwks_uri"])


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an object id (Entra ``oid``, else ``sub``) and the roles the token grants."""

    subject: str
    roles: frozenset[Role]
    kind: str = "user"  # "user", "app" (client credentials), "function-key"


class TokenValidator:
    """Validates tokens of one issuer for a set of audiences; thread-safe, one per settings."""

    def __init__(self, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not settings.issuer or not settings.audiences:
            raise ValueError("TokenValidator needs an issuer and at least one audience")
        self.issuer = settings.issuer
        self.audiences = list(settings.audiences)
        self.leeway = settings.leeway_seconds
        self.keys = SigningKeys(settings, clock=clock)

    def validate(self, token: str) -> Principal:
        """The caller, or :class:`TokenRejected` / :class:`IssuerUnavailable` / :class:`IssuerMisconfigured`."""
        check_issuer_urls(self.issuer, self.keys.jwks_uri)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenRejected(Reason.MALFORMED) from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenRejected(Reason.ALGORITHM)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected(Reason.UNKNOWN_KEY)
        key = self.keys.key(kid)
        try:
            claims = jwt.decode(
                token, key, algorithms=list(ALGORITHMS), audience=self.audiences, issuer=self.issuer,
                leeway=self.leeway, options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(_rejection(exc)) from None
        check_access_token(header, claims)
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
