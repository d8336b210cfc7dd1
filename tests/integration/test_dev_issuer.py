"""The devhost's development OpenID issuer over HTTP: discovery, keys, and the sign-in browser apps use
(authorization code + PKCE), checked with the app's own token validation (``shared.auth``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from devhost.azurite import free_port
from devhost.issuer import DEFAULT_AUDIENCE, PATH, IssuerApp
from shared.auth import service
from shared.auth.roles import Role
from shared.config import AuthSettings

REDIRECT = "http://127.0.0.1:3000/callback"


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    root = web.Application()
    root.add_subapp(PATH, IssuerApp(tmp_path, url).app())
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(root, host="127.0.0.1", port=port), loop=loop)
    loop.run_until_complete(client.start_server())
    try:
        yield loop, client, url
    finally:
        loop.run_until_complete(client.close())
        loop.close()


def sign_in(loop: asyncio.AbstractEventLoop, client: TestClient, roles: list[str], verifier: str,
            redirect: str = REDIRECT, client_id: str = "viewer") -> tuple[int, dict[str, list[str]]]:
    params = {"client_id": client_id, "redirect_uri": redirect, "response_type": "code", "scope": "openid",
              "state": "s1", "nonce": "n1", "code_challenge": challenge(verifier), "code_challenge_method": "S256"}

    async def go() -> tuple[int, dict[str, list[str]]]:
        page = await client.get(f"{PATH}/authorize", params=params)
        if page.status != 200:
            return page.status, {}
        form = [(k, v) for k, v in params.items()] + [("role", r) for r in roles] + [("user", "ana")]
        back = await client.post(f"{PATH}/authorize", data=form, allow_redirects=False)
        return back.status, parse_qs(urlsplit(back.headers.get("Location", "")).query)

    return loop.run_until_complete(go())


def test_code_flow_with_pkce_gives_a_token_the_app_accepts(issuer: tuple) -> None:
    loop, client, url = issuer
    verifier = secrets.token_urlsafe(32)
    status, query = sign_in(loop, client, ["reader"], verifier)
    assert status == 302 and query["state"] == ["s1"]

    async def exchange(code: str, v: str) -> tuple[int, dict]:
        r = await client.post(f"{PATH}/token", data={"grant_type": "authorization_code", "code": code,
                                                      "redirect_uri": REDIRECT, "code_verifier": v,
                                                      "client_id": "viewer"})
        return r.status, await r.json()

    status, tokens = loop.run_until_complete(exchange(query["code"][0], verifier))
    assert status == 200 and tokens["token_type"] == "Bearer"
    settings = AuthSettings(issuer=url, audiences=(DEFAULT_AUDIENCE,), jwks_cooldown_seconds=0.0)
    principal = loop.run_until_complete(asyncio.to_thread(
        service.authorize, settings, {"authorization": f"Bearer {tokens['access_token']}"}, {Role.READER}))
    assert principal.roles == {Role.READER}
    # The id token is for the client (its aud), not for the API: the app refuses it.
    with pytest.raises(service.AccessDenied):
        service.authorize(settings, {"authorization": f"Bearer {tokens['id_token']}"}, {Role.READER})
    # A code works once.
    assert loop.run_until_complete(exchange(query["code"][0], verifier))[0] == 400


def test_the_sign_ins_id_token_is_refused_even_when_the_viewer_is_the_api(issuer: tuple) -> None:
    """A viewer registered as the API itself gets an ID token whose audience is the API's and which carries
    the roles: only its shape (nonce, no scp, no azp) tells it from an access token, and the app refuses it."""
    loop, client, url = issuer
    verifier = secrets.token_urlsafe(32)
    status, query = sign_in(loop, client, ["reader"], verifier, client_id=DEFAULT_AUDIENCE)
    assert status == 302

    async def exchange() -> dict:
        r = await client.post(f"{PATH}/token", data={"grant_type": "authorization_code", "code": query["code"][0],
                                                      "redirect_uri": REDIRECT, "code_verifier": verifier,
                                                      "client_id": DEFAULT_AUDIENCE})
        return await r.json()

    tokens = loop.run_until_complete(exchange())
    settings = AuthSettings(issuer=url, audiences=(DEFAULT_AUDIENCE,), jwks_cooldown_seconds=0.0)

    def call(token: str) -> object:
        return service.authorize(settings, {"authorization": f"Bearer {token}"}, {Role.READER})

    assert loop.run_until_complete(asyncio.to_thread(call, tokens["access_token"]))
    with pytest.raises(service.AccessDenied) as info:
        loop.run_until_complete(asyncio.to_thread(call, tokens["id_token"]))
    assert info.value.status == 401 and info.value.reason == "not-an-access-token"


def test_a_wrong_verifier_or_a_foreign_redirect_is_refused(issuer: tuple) -> None:
    loop, client, _ = issuer
    status, query = sign_in(loop, client, ["admin"], "the-real-verifier-" + "x" * 30)

    async def exchange() -> int:
        r = await client.post(f"{PATH}/token", data={"grant_type": "authorization_code", "code": query["code"][0],
                                                      "redirect_uri": REDIRECT, "code_verifier": "guessed"})
        return r.status

    assert loop.run_until_complete(exchange()) == 400
    status, _ = sign_in(loop, client, ["reader"], "v" * 43, redirect="https://evil.example/callback")
    assert status == 400


def test_discovery_names_the_keys_and_allows_browsers(issuer: tuple) -> None:
    loop, client, url = issuer

    async def get(path: str) -> tuple[dict, str | None]:
        r = await client.get(path)
        return await r.json(), r.headers.get("Access-Control-Allow-Origin")

    doc, cors = loop.run_until_complete(get(f"{PATH}/.well-known/openid-configuration"))
    assert doc["issuer"] == url and doc["jwks_uri"] == f"{url}/jwks" and cors == "*"
    keys, _ = loop.run_until_complete(get(f"{PATH}/jwks"))
    assert keys["keys"] and all(k["kty"] == "RSA" and k["alg"] == "RS256" and "d" not in k for k in keys["keys"])
