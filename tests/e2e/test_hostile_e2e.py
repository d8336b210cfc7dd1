"""Hostile input against the real local stack (devhost + Azurite), one test per category of issue 19's
bounded work: a deflate bomb through the inbox and through STOW-RS (the host process's peak memory
measured), a wildcard query that used to hang the host, path traversal, non-ASCII digits, the STOW part
cap, the QIDO rows budget and the cheap health probe.

Peak memory: the host's resident high-water mark (``VmHWM`` of ``/proc/<pid>/status``, reset through
``/proc/<pid>/clear_refs``) against its resident size just before (psutil), so a peak between two samples
cannot be missed. The bar is the issue's: under 256 MiB for any single upload or part.
"""

from __future__ import annotations

import io
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pydicom
import pytest
import requests
from azure.storage.blob import BlobServiceClient
from dicomweb_client.api import DICOMwebClient

from devhost.azurite import Azurite
from devhost.testing import DevHostProcess
from shared.storage import layout
from tests import hostile
from tests.e2e.conftest import REAL_APP_ENV, REAL_APP_EVENTS, REAL_APP_SETTINGS
from tests.instances import instance, uid
from tests.waiting import wait_until

MIB = 1024 * 1024
BUDGET_MIB = 256
#: Small request limits, so their tests need a few instances, not thousands (the defaults are in the README).
ENV = {**REAL_APP_ENV, "DICOMFLOW_STOW_MAX_PARTS": "20", "DICOMFLOW_QUERY_MAX_ROWS": "10"}


@pytest.fixture(scope="module")
def host(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostProcess]:
    dh = DevHostProcess(app="function_app:app", events=REAL_APP_EVENTS, azurite=azurite, env=ENV,
                        settings=REAL_APP_SETTINGS, state_dir=tmp_path_factory.mktemp("hostile"), watch_from_now=True)
    with dh:
        yield dh


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """0.5 MiB on the wire; its data set inflates to 512 MiB (a private OB of zeros before the pixels)."""
    return hostile.deflate_bomb("e2e-bomb")


def _hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def peak_growth(dh: DevHostProcess, action: Callable[[], Any]) -> tuple[float, Any]:
    """The host's peak resident memory above its resident size before ``action``, in MiB."""
    assert dh.process is not None
    proc = psutil.Process(dh.process.pid)
    before = proc.memory_info().rss
    with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current resident size
    out = action()
    return (_hwm(proc.pid) - before) / MIB, out


def status(dh: DevHostProcess, blob: str) -> requests.Response:
    return requests.get(f"{dh.base_url}/ingest/status", params={"blob": blob}, headers=dh.bearer("reader"),
                        timeout=30)


def client(dh: DevHostProcess, *roles: str) -> DICOMwebClient:
    return DICOMwebClient(f"{dh.base_url}/dicomweb", headers=dh.bearer(*roles))


def test_a_deflate_bomb_through_the_inbox_is_quarantined_within_the_memory_budget(host: DevHostProcess,
                                                                                   bomb: bytes) -> None:
    name = f"hostile/bomb-{uuid.uuid4().hex[:8]}.dcm"
    inbox = BlobServiceClient.from_connection_string(host.azurite.connection_string).get_container_client(
        layout.INBOX)

    def upload_and_wait() -> dict[str, Any]:
        inbox.upload_blob(name, bomb)
        return wait_until(lambda: (s := status(host, name).json()).get("state") == "quarantined" and s,
                          timeout=60, what="the bomb's outcome")

    growth, outcome = peak_growth(host, upload_and_wait)
    print(f"\ninbox bomb ({len(bomb) / MIB:.2f} MiB, 512 MiB inflated): host peak +{growth:.0f} MiB")
    assert outcome["reason"] == "header-too-large", outcome
    assert "DICOMFLOW_HEADER_MAX_INFLATED_BYTES" in outcome["message"]
    assert growth < BUDGET_MIB


def test_a_deflate_bomb_through_stow_is_refused_within_the_memory_budget(host: DevHostProcess, bomb: bytes) -> None:
    body, ctype = hostile.multipart([bomb])

    def post() -> requests.Response:
        return requests.post(f"{host.base_url}/dicomweb/studies", data=body, timeout=60,
                             headers={"Content-Type": ctype, "Accept": "application/dicom+json",
                                      **host.bearer("writer")})

    growth, resp = peak_growth(host, post)
    print(f"\nSTOW bomb: host peak +{growth:.0f} MiB")
    assert resp.status_code == 409, resp.text  # no part stored (PS3.18 10.5.3)
    failed = resp.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000]]
    assert growth < BUDGET_MIB


def test_a_wildcard_query_that_hung_the_host_is_answered_and_the_host_keeps_answering(host: DevHostProcess) -> None:
    """A 60-letter name and ``*a*a*...*b``: a backtracking regular expression takes exponential time on
    it (the host stopped answering). Here the query at the wildcard cap is answered while other requests
    are, and one over the cap is a clear 400."""
    study, series, sop = uid("wild", "study"), uid("wild", "series"), uid("wild", "sop")
    pid = f"WILD-{uuid.uuid4().hex[:8]}"
    ds = pydicom.dcmread(io.BytesIO(instance(study, series, sop, name="a" * 60, patient_id=pid)))
    client(host, "writer").store_instances([ds])
    reader = client(host, "reader")
    at_cap = "*a" * 9 + "*b"  # 10 wildcards: the default cap
    answer: dict[str, Any] = {}

    def search() -> None:
        answer["found"] = reader.search_for_studies(search_filters={"PatientID": pid, "PatientName": at_cap})

    worker = threading.Thread(target=search, daemon=True)
    worker.start()
    meanwhile = [requests.get(f"{host.base_url}/health", timeout=30).status_code for _ in range(3)]
    worker.join(timeout=60)
    assert not worker.is_alive(), "the wildcard query did not finish"
    assert meanwhile == [200, 200, 200]
    assert answer["found"] == []  # the name has no 'b'
    assert [s["0020000D"]["Value"][0] for s in reader.search_for_studies(
        search_filters={"PatientID": pid, "PatientName": "*a*a*a"})] == [study]
    over = requests.get(f"{host.base_url}/dicomweb/studies", timeout=30, headers=host.bearer("reader"),
                        params={"PatientID": pid, "PatientName": "*a" * 30 + "*b"})
    assert over.status_code == 400 and "DICOMFLOW_QUERY_MAX_WILDCARDS" in over.text


def test_a_status_query_cannot_leave_the_inbox(host: DevHostProcess) -> None:
    for name in ("../dicom-archive/1.2/1.3/1.4.dcm", "a/../../dicom-archive/x.dcm", "/x", "a\\..\\b"):
        resp = status(host, name)
        assert resp.status_code == 400, (name, resp.status_code, resp.text)
    summary = requests.get(f"{host.base_url}/ingest/status", headers=host.bearer("reader"), timeout=30).json()
    assert "complete" in summary and "counts" in summary


@pytest.mark.parametrize("path", [
    "dicomweb/studies?limit=\u0661\u0660",
    "dicomweb/studies?StudyDate=\u0662\u0660\u0662\u0666\u0660\u0661\u0660\u0661",
    "dicomweb/changefeed?offset=\u00b2", "dicomweb/studies/1.2.\u0663/series",
    "dicomweb/studies/1.2/series/1.3/instances/1.4/frames/\u0661",
    "dicomweb/studies/1.2/series/1.3/instances/1.4/bulkdata/\u0661-\u0662",
])
def test_non_ascii_digits_are_a_400_never_a_500(host: DevHostProcess, path: str) -> None:
    base, _, query = path.partition("?")
    url = f"{host.base_url}/{urllib.parse.quote(base)}" + (f"?{urllib.parse.quote(query, safe='=&')}" if query else "")
    resp = requests.get(url, headers=host.bearer("reader"), timeout=30)
    assert resp.status_code == 400, (path, resp.status_code, resp.text)


def test_stow_refuses_more_parts_than_its_limit(host: DevHostProcess) -> None:
    body, ctype = hostile.multipart([b"x"] * 21)  # DICOMFLOW_STOW_MAX_PARTS=20 here (default 1,000)
    resp = requests.post(f"{host.base_url}/dicomweb/studies", data=body, timeout=30,
                         headers={"Content-Type": ctype, **host.bearer("writer")})
    assert resp.status_code == 413 and "DICOMFLOW_STOW_MAX_PARTS" in resp.text


def test_a_broad_query_stops_at_the_rows_budget_and_a_narrow_one_answers(host: DevHostProcess) -> None:
    run = uuid.uuid4().hex[:8]
    datasets = [pydicom.dcmread(io.BytesIO(instance(uid(run, i, "st"), uid(run, i, "se"),
                                                                   uid(run, i, "sop"), patient_id=f"ROWS-{run}-{i}")))
                for i in range(12)]
    client(host, "writer").store_instances(datasets)  # 12 studies: more than the budget of 10 rows here
    broad = requests.get(f"{host.base_url}/dicomweb/studies", params={"PatientName": "*zzz*"}, timeout=30,
                         headers=host.bearer("reader"))
    assert broad.status_code == 413 and "DICOMFLOW_QUERY_MAX_ROWS" in broad.text, (broad.status_code, broad.text)
    narrow = client(host, "reader").search_for_studies(search_filters={"PatientID": f"ROWS-{run}-3"})
    assert [s["0020000D"]["Value"][0] for s in narrow] == [datasets[3].StudyInstanceUID]


def test_the_anonymous_health_probe_says_up_and_nothing_more_deep_checks_need_admin(host: DevHostProcess) -> None:
    resp = requests.get(f"{host.base_url}/health", timeout=30)
    assert resp.status_code == 200 and resp.json() == {"status": "up"}
    assert requests.get(f"{host.base_url}/health/deep", timeout=30).status_code == 401
    assert requests.get(f"{host.base_url}/health/deep", headers=host.bearer("reader"), timeout=30).status_code == 403
    deep = requests.get(f"{host.base_url}/health/deep", headers=host.bearer("admin"), timeout=30)
    assert deep.status_code == 200 and set(deep.json()["dependencies"]) == {"blob", "queue", "table", "events"}
