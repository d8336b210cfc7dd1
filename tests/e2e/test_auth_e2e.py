"""Access end to end: the real app on the devhost, tokens from its development issuer.

What a browser viewer and a script meet: 401 + ``WWW-Authenticate: Bearer`` without a token, 403
naming the missing role, CORS preflight from an allowed and a refused origin, key rotation with
``python -m devhost token --rotate``, and one audit line per request without the token in it.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import requests

from devhost.azurite import Azurite
from devhost.issuer import user_oid
from devhost.testing import DevHostProcess
from tests.e2e.conftest import REAL_APP_ENV, REAL_APP_EVENTS, REAL_APP_SETTINGS, ROOT

pytestmark = pytest.mark.slow
VIEWER = "http://127.0.0.1:3000"


@pytest.fixture(scope="module")
def dh(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostProcess]:
    env = {**REAL_APP_ENV, "DICOMFLOW_CORS_ORIGINS": VIEWER, "DICOMFLOW_AUTH_JWKS_COOLDOWN_SECONDS": "0"}
    with DevHostProcess(azurite=azurite, env=env, settings=REAL_APP_SETTINGS, events=REAL_APP_EVENTS,
                        state_dir=tmp_path_factory.mktemp("devhost-auth"), watch_from_now=True) as proc:
        yield proc


def cli(dh: DevHostProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devhost", "token", "--state-dir", str(dh.state_dir), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_every_protected_route_wants_a_bearer_token(dh: DevHostProcess) -> None:
    base = f"{dh.base_url}/dicomweb"
    s, se, i = "1.2.3", "1.2.3.4", "1.2.3.4.5"
    for method, url in (("GET", f"{base}/studies"), ("GET", f"{base}/studies/{s}/series/{se}/metadata"),
                        ("GET", f"{base}/studies/{s}/series/{se}/instances/{i}/frames/1"),
                        ("POST", f"{base}/studies"), ("DELETE", f"{base}/studies/{s}"),
                        ("GET", f"{dh.base_url}/ingest/status")):
        r = requests.request(method, url, timeout=30)
        assert r.status_code == 401, (method, url, r.status_code)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="dicomflow"'
        assert "Authorization: Bearer" in r.json()["error"]
    r = requests.get(f"{base}/studies", headers={"Authorization": "Bearer not.a.token"}, timeout=30)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # The host's key no longer opens DICOMweb: keys are for machine clients only where a setting allows them.
    assert requests.get(f"{base}/studies", headers={"x-functions-key": dh.key}, timeout=30).status_code == 401
    assert requests.get(f"{dh.base_url}/health", timeout=30).status_code == 200  # probes stay anonymous


def test_roles_decide_what_a_token_may_do(dh: DevHostProcess) -> None:
    base = f"{dh.base_url}/dicomweb"
    assert requests.get(f"{base}/studies", headers=dh.bearer("reader"), timeout=30).status_code == 200
    r = requests.get(f"{base}/studies", headers=dh.bearer("writer"), timeout=30)
    assert r.status_code == 403 and "reader role" in r.json()["error"]
    r = requests.post(f"{base}/studies", headers={**dh.bearer("reader"), "Content-Type": "application/dicom"},
                      data=b"x", timeout=30)
    assert r.status_code == 403 and "writer role" in r.json()["error"]
    r = requests.delete(f"{base}/studies/1.2.3", headers=dh.bearer("reader", "writer"), timeout=30)
    assert r.status_code == 403 and "admin role" in r.json()["error"]
    assert requests.delete(f"{base}/studies/1.2.3", headers=dh.bearer("admin"), timeout=30).status_code == 404
    r = requests.get(f"{dh.base_url}/ingest/status", headers=dh.bearer(), timeout=30)  # no role at all
    assert r.status_code == 403 and "reader or writer" in r.json()["error"]
    assert requests.get(f"{dh.base_url}/ingest/status", headers=dh.bearer("writer"), timeout=30).status_code == 200


def test_cors_preflight_and_responses(dh: DevHostProcess) -> None:
    url = f"{dh.base_url}/dicomweb/studies"
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization,accept"}
    ok = requests.options(url, headers={"Origin": VIEWER, **ask}, timeout=30)
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == VIEWER
    assert "authorization" in ok.headers["Access-Control-Allow-Headers"].lower()
    refused = requests.options(url, headers={"Origin": "http://evil.example", **ask}, timeout=30)
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
    got = requests.get(url, headers={"Origin": VIEWER, **dh.bearer("reader")}, timeout=30)
    assert got.headers["Access-Control-Allow-Origin"] == VIEWER
    assert "X-Dicomflow-Plan" in got.headers["Access-Control-Expose-Headers"]
    denied = requests.get(url, headers={"Origin": VIEWER}, timeout=30)  # the viewer must be able to read a 401
    assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == VIEWER
    other = requests.get(url, headers={"Origin": "http://evil.example", **dh.bearer("reader")}, timeout=30)
    assert "Access-Control-Allow-Origin" not in other.headers


def test_token_cli_and_key_rotation(dh: DevHostProcess) -> None:
    url = f"{dh.base_url}/dicomweb/studies"
    first = cli(dh, "--role", "reader")
    assert first.returncode == 0, first.stderr
    old = first.stdout.strip()
    assert requests.get(url, headers={"Authorization": f"Bearer {old}"}, timeout=30).status_code == 200
    rotated = cli(dh, "--rotate", "--role", "reader", "--minutes", "5")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert requests.get(url, headers={"Authorization": f"Bearer {new}"}, timeout=30).status_code == 200
    assert requests.get(url, headers={"Authorization": f"Bearer {old}"}, timeout=30).status_code == 200
    nowhere = subprocess.run([sys.executable, "-m", "devhost", "token", "--state-dir", str(dh.state_dir / "none")],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert nowhere.returncode == 1 and "no running devhost" in nowhere.stderr


def test_one_audit_line_per_request_without_the_token(dh: DevHostProcess) -> None:
    user = f"auditor-{uuid.uuid4().hex[:6]}"
    token = dh.token("reader", user=user)
    study = "1.2.826.0.1.3680043.10.1341.77"
    requests.get(f"{dh.base_url}/dicomweb/studies/{study}/metadata", headers={"Authorization": f"Bearer {token}"},
                 timeout=30)
    requests.get(f"{dh.base_url}/dicomweb/studies/{study}/metadata", timeout=30)
    logs = dh.logs()
    ours = [ln for ln in logs.splitlines() if f"who={user_oid(user)}" in ln]
    assert len(ours) == 1, ours
    assert f"route=dicomweb/studies/{{study}}/metadata study={study} status=404 outcome=allowed" in ours[0]
    assert "outcome=denied:missing-token" in logs
    assert token not in logs and token.split(".")[1] not in logs
