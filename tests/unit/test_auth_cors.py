"""CORS policy (``shared.auth.cors``) and role rules (``shared.auth.roles``): pure logic."""

from __future__ import annotations

import logging

import pytest

from shared.auth.cors import CorsPolicy
from shared.auth.roles import Role, for_dicomweb, from_claim

VIEWER = "http://127.0.0.1:3000"


def preflight(policy: CorsPolicy, origin: str, method: str = "GET", headers: str = "authorization") -> tuple:
    return policy.preflight({"origin": origin, "access-control-request-method": method,
                             "access-control-request-headers": headers})


def test_preflight_from_an_allowed_origin_grants_authorization_and_accept() -> None:
    status, headers = preflight(CorsPolicy((VIEWER,)), VIEWER, headers="Authorization, Accept")
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == VIEWER
    allowed = {h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "accept"} <= allowed
    assert "GET" in headers["Access-Control-Allow-Methods"]
    assert "Origin" in headers["Vary"]


def test_preflight_from_another_origin_is_refused_without_cors_headers() -> None:
    status, headers = preflight(CorsPolicy((VIEWER,)), "https://evil.example")
    assert status == 403
    assert not any(k.startswith("Access-Control-Allow") for k in headers)


def test_no_origins_configured_means_no_browser_access() -> None:
    assert preflight(CorsPolicy(()), VIEWER)[0] == 403
    assert CorsPolicy(()).response_headers(VIEWER) == {}


def test_response_headers_expose_what_a_viewer_reads() -> None:
    h = CorsPolicy((VIEWER,)).response_headers(VIEWER)
    assert h["Access-Control-Allow-Origin"] == VIEWER
    for name in ("WWW-Authenticate", "Warning", "Content-Location"):
        assert name in h["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in CorsPolicy((VIEWER,)).response_headers("http://other:3000")


def test_wildcard_origin_and_unknown_request_headers() -> None:
    assert CorsPolicy(("*",)).response_headers("https://any.example")["Access-Control-Allow-Origin"] == "*"
    assert preflight(CorsPolicy(("*",)), "https://any.example", headers="x-custom-secret")[0] == 403


def test_roles_from_the_claim_and_per_method() -> None:
    assert from_claim(["reader"]) == {Role.READER}
    assert from_claim(["admin"]) == {Role.READER, Role.WRITER, Role.ADMIN}
    assert from_claim(["writer", "unknown", 3]) == {Role.WRITER}
    assert from_claim("reader") == {Role.READER}
    assert from_claim(None) == frozenset()
    assert [for_dicomweb(m) for m in ("GET", "POST", "DELETE", "PATCH")] == [
        Role.READER, Role.WRITER, Role.ADMIN, Role.ADMIN]


def test_the_audit_line_writes_a_path_value_only_when_it_is_a_uid(caplog: pytest.LogCaptureFixture) -> None:
    from shared.auth.service import audit

    with caplog.at_level(logging.INFO, logger="shared.auth.audit"):
        audit(None, "GET", "dicomweb/studies/{study}", "1.2.840.1", 200, "allowed")
        audit(None, "GET", "dicomweb/studies/{study}", "Smith^John", 400, "allowed")
    first, second = (r.getMessage() for r in caplog.records)
    assert "study=1.2.840.1 " in first
    assert "study=invalid " in second and "Smith" not in second


def test_the_devhost_and_the_app_name_blobs_in_logs_alike() -> None:
    from devhost.host import log_name as devhost_name
    from shared.storage.layout import log_name

    for name in ("Müller^Jürgen/IM0001.dcm", "corpus/good/p01/ct/IM0001~3fa9c2d1.dcm", "x"):
        assert log_name(name) == devhost_name(name)
        assert log_name(name).startswith("blob#") and "Jürgen" not in log_name(name)
