"""STOW-RS response building (PS3.18 10.5.3): status and sequences from per-part outcomes (pure logic)."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from shared.dicomweb.stow import CANNOT_UNDERSTAND, DOES_NOT_MATCH, OUT_OF_RESOURCES, PartResult, _response

CALL = SimpleNamespace(base_url="http://h/api/dicomweb", study=None,
                       settings=SimpleNamespace(service_host_name="h"))


def ok(n: int, state: str = "stored") -> PartResult:
    return PartResult("1.2.840.10008.5.1.4.1.1.2", f"1.2.3.{n}", "1.2.3", "1.2.3.0", f"stow/x/{n}.dcm", None, state)


def failed(code: int) -> PartResult:
    return PartResult(failure=code, state="failed")


def body(reply) -> dict:
    return orjson.loads(reply.body)


def test_all_stored_is_200_with_retrieve_urls():
    reply = _response(CALL, [ok(1), ok(2)], "r")
    assert reply.status == 200 and "Warning" not in reply.headers
    out = body(reply)
    assert out["00081190"]["Value"] == ["http://h/api/dicomweb/studies/1.2.3"]
    refs = out["00081199"]["Value"]
    assert [r["00081155"]["Value"][0] for r in refs] == ["1.2.3.1", "1.2.3.2"]
    assert refs[0]["00081190"]["Value"] == ["http://h/api/dicomweb/studies/1.2.3/series/1.2.3.0/instances/1.2.3.1"]
    assert "00081198" not in out


def test_some_failed_is_202_and_none_stored_is_409():
    reply = _response(CALL, [ok(1), failed(CANNOT_UNDERSTAND)], "r")
    assert reply.status == 202
    assert body(reply)["00081198"]["Value"] == [{"00081197": {"vr": "US", "Value": [0xC000]}}]
    reply = _response(CALL, [failed(DOES_NOT_MATCH), failed(OUT_OF_RESOURCES)], "r")
    assert reply.status == 409
    assert [f["00081197"]["Value"][0] for f in body(reply)["00081198"]["Value"]] == [0xA900, 0xA700]
    assert "00081199" not in body(reply)


def test_pending_parts_are_202_with_a_warning_naming_the_status_endpoint():
    reply = _response(CALL, [ok(1), ok(2, state="pending")], "r")
    assert reply.status == 202
    assert "/api/ingest/status?blob=" in reply.headers["Warning"] and "stow/x/2.dcm" in reply.headers["Warning"]
    assert len(body(reply)["00081199"]["Value"]) == 2  # pending parts are referenced: they were accepted
