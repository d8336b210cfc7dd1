"""Bearer-token validation (``shared.auth``) against a real issuer over loopback HTTP.

The issuer is the devhost's development issuer (RSA keys in a temporary state dir, discovery document
and JWKS served by a small HTTP server on a free port); tokens it signs are what the app sees in
production from Entra ID. Hostile tokens are built with PyJWT and ``cryptography`` directly.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from devhost import issuer as dev
from shared.auth import service
from shared.auth.roles import Role
from shared.auth.tokens import IssuerUnavailable, TokenValidator
from shared.config import AuthSettings


class Issuer:
    """The development issuer's keys served over HTTP; counts JWKS fetches."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.jwks_fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith("/.well-known/openid-configuration"):
                    body = dev.discovery(owner.url)
                elif self.path.endswith("/jwks"):
                    owner.jwks_fetches += 1
                    body = dev.jwks(owner.state_dir)
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/issuer"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def token(self, *roles: str, **kwargs: object) -> str:
        return dev.mint(self.state_dir, self.url, roles=roles or ("reader",), **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[Issuer]:
    iss = Issuer(tmp_path)
    try:
        yield iss
    finally:
        iss.close()


def settings_for(iss: Issuer, **kw: object) -> AuthSettings:
    base = AuthSettings(issuer=iss.url, audiences=(dev.DEFAULT_AUDIENCE,), jwks_cooldown_seconds=0.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def refused(settings: AuthSettings, token: str | None) -> service.AccessDenied:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    with pytest.raises(service.AccessDenied) as info:
        service.authorize(settings, headers, {Role.READER})
    return info.value


def test_a_reader_token_of_the_issuer_is_accepted_with_its_object_id_and_roles(issuer: Issuer) -> None:
    p = service.authorize(settings_for(issuer), {"authorization": f"Bearer {issuer.token(user='ana')}"},
                          {Role.READER})
    assert p.subject == dev.user_oid("ana")
    assert p.roles == {Role.READER}


def test_no_token_is_401_with_a_bearer_challenge_and_no_error_code(issuer: Issuer) -> None:
    denied = refused(settings_for(issuer), None)
    assert denied.status == 401
    assert denied.headers["WWW-Authenticate"] == 'Bearer realm="dicomflow"'


@pytest.mark.parametrize("case", ["expired", "future-nbf", "wrong-audience", "wrong-issuer", "bad-signature",
                                  "alg-none", "hs256-with-public-key", "garbage", "unknown-kid", "no-exp"])
def test_bad_tokens_are_401_invalid_token_with_a_reason(issuer: Issuer, case: str) -> None:
    settings = settings_for(issuer)
    now = int(time.time())
    good = jwt.decode(issuer.token(), options={"verify_signature": False})
    kid = jwt.get_unverified_header(issuer.token())["kid"]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if case == "expired":
        token, reason = issuer.token(minutes=-5), "expired"  # beyond the 60 s leeway
    elif case == "future-nbf":
        token, reason = issuer.token(not_before=now + 600), "not-yet-valid"
    elif case == "wrong-audience":
        token, reason = issuer.token(audience="api://someone-else"), "wrong-audience"
    elif case == "wrong-issuer":
        token = dev.mint(issuer.state_dir, "https://login.example.org/evil/v2.0", roles=["reader"])
        reason = "wrong-issuer"
    elif case == "bad-signature":  # right kid, signed with another key
        token, reason = jwt.encode(good, other, algorithm="RS256", headers={"kid": kid}), "bad-signature"
    elif case == "alg-none":
        head = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
        body = base64.urlsafe_b64encode(json.dumps(good).encode())
        token, reason = (head + b"." + body + b".").decode().replace("=", ""), "unsupported-algorithm"
    elif case == "hs256-with-public-key":  # the classic key-confusion attack
        pub = dev.jwks(issuer.state_dir)["keys"][0]["n"].encode()
        token, reason = jwt.encode(good, pub, algorithm="HS256", headers={"kid": kid}), "unsupported-algorithm"
    elif case == "garbage":
        token, reason = "not.a.jwt", "malformed-token"
    elif case == "unknown-kid":
        token, reason = jwt.encode(good, other, algorithm="RS256", headers={"kid": "nope"}), "unknown-signing-key"
    else:  # no-exp
        claims = {k: v for k, v in good.items() if k != "exp"}
        key = dev.load_keys(issuer.state_dir)[-1]["pem"]  # properly signed, but never expires
        token, reason = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid}), "missing-claim"
    denied = refused(settings, token)
    assert denied.status == 401
    assert denied.reason == reason
    challenge = denied.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="dicomflow", error="invalid_token"') and reason in challenge
    assert token not in denied.message


def test_a_token_without_the_role_is_403_naming_the_role(issuer: Issuer) -> None:
    with pytest.raises(service.AccessDenied) as info:
        service.authorize(settings_for(issuer), {"authorization": f"Bearer {issuer.token('writer')}"},
                          {Role.READER})
    assert info.value.status == 403
    assert "reader role" in info.value.message
    # admin is the data owner: it may read, write and delete
    admin = {"authorization": f"Bearer {issuer.token('admin')}"}
    for need in (Role.READER, Role.WRITER, Role.ADMIN):
        assert service.authorize(settings_for(issuer), admin, {need}).roles >= {need}


def test_a_rotated_key_is_fetched_once_and_old_tokens_stay_valid(issuer: Issuer) -> None:
    settings = settings_for(issuer)
    old = issuer.token()
    service.authorize(settings, {"authorization": f"Bearer {old}"}, {Role.READER})
    service.authorize(settings, {"authorization": f"Bearer {issuer.token()}"}, {Role.READER})
    assert issuer.jwks_fetches == 1  # cached
    dev.rotate(issuer.state_dir)
    new = issuer.token()
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    service.authorize(settings, {"authorization": f"Bearer {new}"}, {Role.READER})
    assert issuer.jwks_fetches == 2  # the unknown kid made it refetch
    service.authorize(settings, {"authorization": f"Bearer {old}"}, {Role.READER})
    assert issuer.jwks_fetches == 2


def test_unknown_kids_do_not_hammer_the_issuer_within_the_cooldown(issuer: Issuer) -> None:
    settings = settings_for(issuer, jwks_cooldown_seconds=300.0)
    TokenValidator(settings)  # construction fetches nothing
    assert issuer.jwks_fetches == 0
    service.authorize(settings, {"authorization": f"Bearer {issuer.token()}"}, {Role.READER})
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for n in range(5):
        forged = jwt.encode({"iss": issuer.url}, other, algorithm="RS256", headers={"kid": f"forged-{n}"})
        assert refused(settings, forged).reason == "unknown-signing-key"
    assert issuer.jwks_fetches == 1


def test_functions_keys_only_where_enabled_and_never_in_the_url(issuer: Issuer) -> None:
    off = settings_for(issuer)
    with pytest.raises(service.AccessDenied) as info:
        service.authorize(off, {"x-functions-key": "k1"}, {Role.READER})
    assert info.value.status == 401 and info.value.reason == "function-key-refused"
    on = settings_for(issuer, function_keys=("k1",))
    p = service.authorize(on, {"x-functions-key": "k1"}, {Role.WRITER})
    assert p.kind == "function-key" and "k1" not in p.subject
    with pytest.raises(service.AccessDenied) as info:
        service.authorize(on, {"x-functions-key": "k1"}, {Role.ADMIN})
    assert info.value.status == 403
    with pytest.raises(service.AccessDenied) as info:
        service.authorize(on, {}, {Role.READER}, query={"code": "k1"})
    assert info.value.status == 401


def test_an_unconfigured_service_refuses_tokens_with_503_naming_the_settings() -> None:
    with pytest.raises(service.AccessDenied) as info:
        service.authorize(AuthSettings(), {"authorization": "Bearer x.y.z"}, {Role.READER})
    assert info.value.status == 503 and "DICOMFLOW_AUTH_ISSUER" in info.value.message


def test_an_unreachable_issuer_is_503_not_401(tmp_path: Path) -> None:
    token = dev.mint(tmp_path, "http://127.0.0.1:9/issuer", roles=["reader"])
    settings = AuthSettings(issuer="http://127.0.0.1:9/issuer", audiences=(dev.DEFAULT_AUDIENCE,))
    denied = refused(settings, token)
    assert denied.status == 503 and denied.headers.get("Retry-After")


# -- issuer outages: last good keys, negative caching --------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_last_good_keys_carry_an_issuer_outage_then_stop_at_the_stale_bound(issuer: Issuer) -> None:
    clock = Clock()
    settings = settings_for(issuer, jwks_cache_seconds=60.0, jwks_cooldown_seconds=30.0,
                            jwks_max_stale_seconds=600.0)
    v = TokenValidator(settings, clock=clock)
    token = issuer.token(user="ana")
    assert v.validate(token).subject == dev.user_oid("ana")
    issuer.close()  # the issuer goes away (connection refused from now on)
    clock.now += 120  # the cache has expired
    assert v.validate(token).subject == dev.user_oid("ana")  # the last good keys
    assert v.validate(issuer.token(user="bo")).subject == dev.user_oid("bo")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_kid = jwt.encode({"iss": issuer.url}, other, algorithm="RS256", headers={"kid": "rotated-meanwhile"})
    with pytest.raises(IssuerUnavailable):  # maybe a rotation we could not fetch: 503, not 401
        v.validate(new_kid)
    clock.now += 600  # past cache + max stale
    with pytest.raises(IssuerUnavailable, match="MAX_STALE"):
        v.validate(token)


def test_a_failing_issuer_is_asked_once_per_cooldown_not_once_per_request(tmp_path: Path) -> None:
    asked: list[str] = []

    class Down(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_error(503)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Down)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/issuer"
        clock = Clock()
        v = TokenValidator(AuthSettings(issuer=url, audiences=(dev.DEFAULT_AUDIENCE,), jwks_cooldown_seconds=30.0),
                           clock=clock)
        token = dev.mint(tmp_path, url, roles=["reader"])
        for _ in range(20):
            with pytest.raises(IssuerUnavailable):
                v.validate(token)
        assert asked == ["/issuer/.well-known/openid-configuration"]
        clock.now += 31
        with pytest.raises(IssuerUnavailable):
            v.validate(token)
        assert len(asked) == 2
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("issuer_url", "jwks", "ok"), [
    ("https://login.microsoftonline.com/t/v2.0", None, True),
    ("http://login.example.org/t/v2.0", None, False),
    ("http://127.0.0.1:7072/issuer", None, True),
    ("http://localhost:7072/issuer", "http://localhost:7072/issuer/jwks", True),
    ("http://127.0.0.1:7072/issuer", "http://keys.example.org/jwks", False),
    ("https://login.example.org/t", "http://login.example.org/keys", False),
    ("http://127.0.0.1.example.org/issuer", None, False),
])
def test_issuer_and_keys_are_https_except_a_development_issuer_on_this_machine(issuer_url: str, jwks: str | None,
                                                                              ok: bool) -> None:
    settings = AuthSettings(issuer=issuer_url, audiences=(dev.DEFAULT_AUDIENCE,), jwks_uri=jwks)
    with pytest.raises(service.AccessDenied) as info:
        service.authorize(settings, {"authorization": "Bearer x.y.z"}, {Role.READER})
    if ok:
        assert info.value.reason == "malformed-token"  # got as far as reading the token
    else:
        assert info.value.status == 503 and info.value.reason == "auth-misconfigured"
        assert "https://" in info.value.message


# -- access tokens only --------------------------------------------------------------------------------------

def test_an_id_token_of_the_same_issuer_is_refused_even_for_our_audience(issuer: Issuer) -> None:
    """The sign-in's ID token (the devhost issuer shapes it like Entra's: aud = the client, nonce, no scp/azp),
    for a viewer registered as the API itself, so its audience is ours and it carries the roles."""
    settings = settings_for(issuer)
    id_token = issuer.token("reader", extra={"scp": None, "azp": None, "nonce": "n1"})
    denied = refused(settings, id_token)
    assert denied.status == 401 and denied.reason == "not-an-access-token"
    assert service.authorize(settings, {"authorization": f"Bearer {issuer.token('reader')}"}, {Role.READER})


@pytest.mark.parametrize("shape", ["no-azp-entra", "nonce", "at_hash", "token_use-id", "idtyp-device",
                                   "no-scp-no-roles", "typ-id"])
def test_tokens_that_are_not_access_tokens_are_refused(issuer: Issuer, shape: str) -> None:
    extra: dict[str, object] = {
        "no-azp-entra": {"azp": None}, "nonce": {"nonce": "n"}, "at_hash": {"at_hash": "x"},
        "token_use-id": {"token_use": "id"}, "idtyp-device": {"idtyp": "device"},
        "no-scp-no-roles": {"scp": None, "roles": None, "ver": None, "azp": None}, "typ-id": {},
    }[shape]
    token = issuer.token("reader", extra=extra)
    if shape == "typ-id":
        claims = jwt.decode(token, options={"verify_signature": False})
        key = next(k for k in dev.load_keys(issuer.state_dir))
        from cryptography.hazmat.primitives import serialization

        private = serialization.load_pem_private_key(key["pem"].encode(), password=None)
        token = jwt.encode(claims, private, algorithm="RS256",  # type: ignore[arg-type]
                           headers={"kid": key["kid"], "typ": "id+jwt"})
    assert refused(settings_for(issuer), token).reason == "not-an-access-token"
    # An app-only (client credentials) access token: roles, azp, no scp, idtyp app.
    app = issuer.token("writer", extra={"scp": None, "name": None, "idtyp": "app"})
    assert service.authorize(settings_for(issuer), {"authorization": f"Bearer {app}"}, {Role.WRITER}).kind == "app"
