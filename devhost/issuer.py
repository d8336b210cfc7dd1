"""The development OpenID issuer: signing keys per stack, discovery document, JWKS, tokens.

Locally, apps validate bearer tokens exactly as they would against Entra ID: they read
``<issuer>/.well-known/openid-configuration``, fetch its ``jwks_uri`` and check RS256 signatures,
issuer, audience and lifetime. Only the issuer URL (``{devhost:issuer}`` in app settings) and the
audience differ.

* Keys: RSA 2048, generated on first use into ``<state-dir>/issuer-keys.json`` (mode 0600, git-ignored
  with the state dir, never committed). ``rotate()`` adds a new current key and keeps the previous one
  published so tokens already handed out stay valid until they expire.
* Served under ``/issuer`` on the devhost's service port (next to the event fabric):
  ``/issuer/.well-known/openid-configuration``, ``/issuer/jwks``, and a development sign-in
  (``/issuer/authorize`` + ``/issuer/token``: authorization code with PKCE, as browser apps such as OHIF
  use it; the sign-in page lets you pick the roles, there is no password).
* ``mint()`` signs an access token (``python -m devhost token``).

Tokens look like Entra ID v2 access tokens: ``iss``, ``aud``, ``sub``, ``oid``, ``tid``, ``roles``,
``scp``, ``azp`` (the client that asked: ``devhost-cli`` for ``python -m devhost token``, the browser
app's client id after a sign-in), ``iat``/``nbf``/``exp``, ``ver``. The ID token of a sign-in is shaped
like Entra's too: for the client (``aud``), with ``nonce`` and without ``scp``/``azp``, so an API that
accepts access tokens only can tell it apart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PATH: Final = "/issuer"
DEFAULT_AUDIENCE: Final = "api://devhost"
#: The tenant id of the development issuer (a fixed, recognisable GUID: it is not Entra's).
TENANT: Final = "00000000-0000-0000-0000-00000000de71"
ROLES: Final = ("reader", "writer", "admin")
MAX_KEYS: Final = 2
_lock = threading.Lock()


def issuer_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}{PATH}"


def keys_path(state_dir: Path) -> Path:
    return Path(state_dir) / "issuer-keys.json"


def _new_key() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"kid": uuid.uuid4().hex[:16], "pem": pem}


def _write(path: Path, keys: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": keys}, fh)
    tmp.replace(path)


def load_keys(state_dir: Path) -> list[dict[str, str]]:
    """The signing keys, oldest first (the last one signs); created on first use."""
    path = keys_path(state_dir)
    with _lock:
        with contextlib.suppress(OSError, ValueError):
            keys = json.loads(path.read_text()).get("keys")
            if isinstance(keys, list) and keys and all({"kid", "pem"} <= set(k) for k in keys):
                return keys
        keys = [_new_key()]
        _write(path, keys)
        return keys


def rotate(state_dir: Path) -> str:
    """Make a new signing key current (the previous one stays published); returns its kid."""
    keys = load_keys(state_dir)
    with _lock:
        keys = [*keys, _new_key()][-MAX_KEYS:]
        _write(keys_path(state_dir), keys)
    return keys[-1]["kid"]


def jwks(state_dir: Path) -> dict[str, Any]:
    out = []
    for k in load_keys(state_dir):
        private = serialization.load_pem_private_key(k["pem"].encode(), password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
        out.append({**jwk, "kid": k["kid"], "use": "sig", "alg": "RS256"})
    return {"keys": out}


def discovery(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "oid", "tid", "name", "preferred_username", "roles"],
    }


def user_oid(user: str) -> str:
    """A stable object id per user name (so audit lines tell developers apart)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"devhost-user:{user}"))


#: The ``azp`` of tokens ``python -m devhost token`` prints (the command line is the client).
CLI_CLIENT: Final = "devhost-cli"


def mint(state_dir: Path, issuer: str, *, roles: Sequence[str] = ("reader",), audience: str = DEFAULT_AUDIENCE,
         minutes: float = 60.0, user: str = "dev", not_before: float | None = None,
         extra: dict[str, Any] | None = None, client: str = CLI_CLIENT) -> str:
    """A signed RS256 access token of the development issuer (``extra`` adds claims; None removes one)."""
    key = load_keys(state_dir)[-1]
    now = int(time.time())
    oid = user_oid(user)
    claims: dict[str, Any] = {
        "iss": issuer, "aud": audience, "sub": oid, "oid": oid, "tid": TENANT, "ver": "2.0",
        "name": user, "preferred_username": f"{user}@devhost.local", "scp": "access_as_user", "azp": client,
        "roles": list(roles), "iat": now, "nbf": int(not_before if not_before is not None else now),
        "exp": now + int(minutes * 60),
    }
    claims.update(extra or {})
    claims = {k: v for k, v in claims.items() if v is not None}
    private = serialization.load_pem_private_key(key["pem"].encode(), password=None)
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": key["kid"]})  # type: ignore[arg-type]


# --- HTTP: discovery, JWKS and the development sign-in ------------------------------------------------

class IssuerApp:
    """The issuer's HTTP endpoints (an aiohttp sub-application mounted at :data:`PATH`)."""

    CODE_TTL = 120.0

    def __init__(self, state_dir: Path, issuer: str, audience: str = DEFAULT_AUDIENCE) -> None:
        self.state_dir = state_dir
        self.issuer = issuer
        self.audience = audience
        self._codes: dict[str, dict[str, Any]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/authorize", self._approve)
        app.router.add_post("/token", self._token)
        app.router.add_get("/userinfo", self._userinfo)
        app.router.add_route("OPTIONS", "/{tail:.*}", self._preflight)
        return app

    @staticmethod
    def _cors(resp: web.StreamResponse) -> web.StreamResponse:
        # Browser apps read discovery, keys and tokens cross-origin (like Entra ID's SPA endpoints).
        resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp

    async def _preflight(self, request: web.Request) -> web.StreamResponse:
        return self._cors(web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Authorization",
            "Access-Control-Max-Age": "600"}))

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        return self._cors(web.json_response(discovery(self.issuer)))

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        return self._cors(web.json_response(jwks(self.state_dir)))

    async def _userinfo(self, request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("no bearer token")
            kid = jwt.get_unverified_header(token).get("kid")
            key = next((k for k in jwks(self.state_dir)["keys"] if k["kid"] == kid), None)
            if key is None:
                raise jwt.InvalidTokenError("unknown key")
            claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], issuer=self.issuer,
                                options={"verify_aud": False})
        except jwt.InvalidTokenError:
            return self._cors(web.json_response({"error": "invalid_token"}, status=401))
        keep = ("sub", "oid", "name", "preferred_username", "roles")
        return self._cors(web.json_response({k: claims[k] for k in keep if k in claims}))

    @staticmethod
    def _loopback(uri: str) -> bool:
        """Redirects go to this machine only (a development issuer must not be an open redirector)."""
        from urllib.parse import urlsplit

        parts = urlsplit(uri)
        return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("redirect_uri") and not self._loopback(q["redirect_uri"]):
            return web.Response(status=400, text="redirect_uri must be an http://127.0.0.1 or localhost address")
        missing = [p for p in ("client_id", "redirect_uri", "code_challenge") if not q.get(p)]
        if missing or q.get("response_type") != "code" or q.get("code_challenge_method", "S256") != "S256":
            return web.Response(status=400, text="authorization code flow with PKCE (S256) only; missing or wrong: "
                                                 + ", ".join(missing or ["response_type/code_challenge_method"]))
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in q.items())
        boxes = "".join(f'<label><input type="checkbox" name="role" value="{r}"{" checked" if r == "reader" else ""}>'
                        f" {r}</label><br>" for r in ROLES)
        page = (f"<!doctype html><meta charset=utf-8><title>devhost sign-in</title>"
                f"<h1>devhost development sign-in</h1><p>Not for production: no password; pick the roles the "
                f"token should carry.</p><form method=post>{hidden}<label>User <input name=user value=dev></label>"
                f"<br>{boxes}<button type=submit>Sign in</button></form>")
        return web.Response(text=page, content_type="text/html")

    async def _approve(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if not self._loopback(str(form.get("redirect_uri", ""))):
            return web.Response(status=400, text="redirect_uri must be an http://127.0.0.1 or localhost address")
        code = secrets.token_urlsafe(24)
        roles = [str(r) for r in form.getall("role", []) if str(r) in ROLES]
        self._codes[code] = {"client_id": str(form.get("client_id")), "redirect_uri": str(form.get("redirect_uri")),
                             "challenge": str(form.get("code_challenge")), "nonce": form.get("nonce"),
                             "scope": str(form.get("scope", "")), "roles": roles,
                             "user": str(form.get("user") or "dev")[:64], "at": time.monotonic()}
        params = {"code": code, **({"state": str(form["state"])} if form.get("state") else {})}
        raise web.HTTPFound(f"{form.get('redirect_uri')!s}?{urlencode(params)}")

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        grant = self._codes.pop(str(form.get("code", "")), None)
        if form.get("grant_type") != "authorization_code" or grant is None \
                or time.monotonic() - grant["at"] > self.CODE_TTL:
            return self._cors(web.json_response({"error": "invalid_grant"}, status=400))
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (not secrets.compare_digest(challenge, grant["challenge"])
                or form.get("redirect_uri") != grant["redirect_uri"]
                or form.get("client_id", grant["client_id"]) != grant["client_id"]):
            return self._cors(web.json_response({"error": "invalid_grant"}, status=400))
        minutes = 60.0
        access = mint(self.state_dir, self.issuer, roles=grant["roles"], audience=self.audience,
                      minutes=minutes, user=grant["user"], client=grant["client_id"])
        id_claims: dict[str, Any] = {"aud": grant["client_id"], "scp": None, "azp": None}
        if grant["nonce"]:
            id_claims["nonce"] = str(grant["nonce"])
        id_token = mint(self.state_dir, self.issuer, roles=grant["roles"], audience=grant["client_id"],
                        minutes=minutes, user=grant["user"], extra=id_claims)
        return self._cors(web.json_response({
            "access_token": access, "id_token": id_token, "token_type": "Bearer",
            "expires_in": int(minutes * 60), "scope": grant["scope"]}))
