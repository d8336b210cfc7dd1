"""Extended query tags and the audit trail end to end: dicomweb-client and plain HTTP against the real app on
the devhost (Azurite), as the README shows.

One devhost, with the tag list's TTL and write grace at 1 s (so a reindex starts 2 s after a tag is added) and
the audit flush interval at an hour: nothing reaches the audit container in the background, so what is there
after the devhost stops was appended by its graceful stop. Then it starts again and the audit API answers.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
import requests
from azure.storage.blob import BlobServiceClient
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from devhost.azurite import Azurite
from devhost.issuer import user_oid
from devhost.testing import DevHostProcess
from shared.audit.query import AuditQuery, search
from shared.audit.record import patients_of, requestors_of, studies_of
from shared.storage.azure import AzureBlobStore
from tests.e2e.conftest import REAL_APP_ENV, REAL_APP_EVENTS, REAL_APP_SETTINGS
from tests.instances import instance, uid
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
RUN = uuid.uuid4().hex[:8]
STUDY, OTHER = uid(RUN, "tags-study"), uid(RUN, "tags-other")
THIN, THICK, LATE = uid(RUN, "thin"), uid(RUN, "thick"), uid(RUN, "late")


@pytest.fixture(scope="module")
def dh(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostProcess]:
    env = {**REAL_APP_ENV, "DICOMFLOW_EXTENDED_TAGS_TTL_SECONDS": "1",
           "DICOMFLOW_EXTENDED_TAGS_WRITE_GRACE_SECONDS": "1", "DICOMFLOW_AUDIT_FLUSH_SECONDS": "3600",
           "DICOMFLOW_AUDIT_SPOOL_DIR": str(tmp_path_factory.mktemp("audit-spool"))}
    stack = DevHostProcess(app="function_app:app", events=REAL_APP_EVENTS, azurite=azurite, env=env,
                           settings=REAL_APP_SETTINGS, state_dir=tmp_path_factory.mktemp("devhost-tags"),
                           watch_from_now=True)
    with stack:
        yield stack


def ct(study: str, series: str, sop: str, *, thickness: str, laterality: str | None = None) -> Dataset:
    ds = pydicom.dcmread(io.BytesIO(instance(study, series, sop, patient_id=f"PID-{RUN}")))
    ds.SliceThickness = thickness
    if laterality is not None:
        ds.private_block(0x0401, "MicrosoftPC", create=True).add_new(0x01, "SH", laterality)
    return ds


def oid(role: str) -> str:
    """The object id the development issuer gives the test's user of ``role`` (what audit records name)."""
    return user_oid(f"{role}-{RUN}")


def client(dh: DevHostProcess, role: str) -> DICOMwebClient:
    return DICOMwebClient(f"{dh.base_url}/dicomweb", headers=dh.bearer(role, user=f"{role}-{RUN}"))


def tags_url(dh: DevHostProcess, path: str = "") -> str:
    return f"{dh.base_url}/dicomweb/extendedquerytags{path}"


def series_found(dh: DevHostProcess, **filters: str) -> set[str]:
    found = client(dh, "reader").search_for_series(search_filters=filters)
    return {r["0020000E"]["Value"][0] for r in found}


def test_extended_query_tags_with_dicomweb_client(dh: DevHostProcess) -> None:
    writer = client(dh, "writer")
    writer.store_instances([ct(STUDY, THIN, uid(RUN, "t1"), thickness="1.25", laterality="LEFT"),
                            ct(STUDY, THIN, uid(RUN, "t2"), thickness="1.250"),
                            ct(OTHER, THICK, uid(RUN, "k1"), thickness="5")])
    admin = dh.bearer("admin", user=f"admin-{RUN}")
    body = [{"path": "SliceThickness", "vr": "DS", "level": "Series"},
            {"path": "04011001", "vr": "SH", "privateCreator": "MicrosoftPC", "level": "Instance"}]
    # Bad input first: a malformed path, a VR mismatch (400), and only an admin may add (403).
    bad = requests.post(tags_url(dh), json=[{"path": "0018005", "level": "Series"}], headers=admin, timeout=30)
    assert bad.status_code == 400 and "neither 8 hex digits" in bad.json()["error"]
    bad = requests.post(tags_url(dh), json=[{"path": "00180050", "vr": "LO", "level": "Series"}], headers=admin,
                        timeout=30)
    assert bad.status_code == 400 and "has VR DS" in bad.json()["error"]
    assert requests.post(tags_url(dh), json=body, headers=dh.bearer("writer", user=f"writer-{RUN}"),
                         timeout=30).status_code == 403

    started = requests.post(tags_url(dh), json=body, headers=admin, timeout=30)
    assert started.status_code == 202, started.text
    op = started.json()
    assert op["href"].endswith(f"/dicomweb/operations/{op['id']}")
    again = requests.post(tags_url(dh), json=body[:1], headers=admin, timeout=30)
    assert again.status_code == 409  # already an extended query tag

    def finished() -> dict[str, Any] | None:
        got = requests.get(op["href"], headers=dh.bearer("reader"), timeout=30)
        return got.json() if got.status_code == 200 else None

    status = wait_until(finished, timeout=60, what="the reindex operation", interval=0.3)
    assert status["status"] == "completed" and status["type"] == "reindex" and status["percentComplete"] == 100
    assert status["results"]["instancesIndexed"] >= 3
    tag = requests.get(tags_url(dh, "/SliceThickness"), headers=dh.bearer("reader"), timeout=30).json()
    assert tag == {"path": "00180050", "vr": "DS", "level": "Series", "status": "Ready", "queryStatus": "Enabled"}

    assert series_found(dh, SliceThickness="1.25") >= {THIN} and THICK not in series_found(dh, SliceThickness="1.25")
    found = client(dh, "reader").search_for_instances(search_filters={"04011001": "LEFT"})
    assert [r["00080018"]["Value"][0] for r in found] == [uid(RUN, "t1")]
    # A new upload is indexed at ingest: found at once (its study has not settled).
    writer.store_instances([ct(STUDY, LATE, uid(RUN, "l1"), thickness="1.25")])
    assert series_found(dh, SliceThickness="1.25", StudyInstanceUID=STUDY) == {THIN, LATE}

    gone = requests.delete(tags_url(dh, "/00180050"), headers=admin, timeout=30)
    assert gone.status_code == 204
    refused = requests.get(f"{dh.base_url}/dicomweb/series", params={"SliceThickness": "1.25"},
                           headers=dh.bearer("reader"), timeout=30)
    assert refused.status_code == 400


def test_the_audit_api_answers_admins_by_study_actor_and_patient(dh: DevHostProcess) -> None:
    reader = client(dh, "reader")
    reader.retrieve_study_metadata(STUDY)
    list(reader.iter_study(OTHER))
    denied = requests.get(f"{dh.base_url}/audit", params={"study": STUDY},
                          headers=dh.bearer("reader", user=f"reader-{RUN}"), timeout=30)
    assert denied.status_code == 403  # the audit trail is for admins
    admin = dh.bearer("admin", user=f"auditor-{RUN}")
    # The flush interval is an hour: the API appends what its process has pending before it reads.
    got = requests.get(f"{dh.base_url}/audit", params={"study": STUDY}, headers=admin, timeout=30)
    assert got.status_code == 200, got.text
    records = got.json()["records"]
    assert all(STUDY in studies_of(r) for r in records)
    times = [r["EventIdentification"]["EventDateTime"] for r in records]
    assert times == sorted(times)
    events = {(r["EventIdentification"]["EventID"]["csd-code"], r["EventIdentification"]["EventActionCode"])
              for r in records}
    assert {("110104", "C"), ("110112", "E"), ("110103", "R")} <= events  # STOW-RS, QIDO-RS, metadata
    assert {oid("writer"), oid("reader")} <= {u for r in records for u in requestors_of(r)}
    stow = next(r for r in records if r["EventIdentification"]["EventID"]["csd-code"] == "110104")
    assert patients_of(stow) and all(p.startswith("sha256:") for p in patients_of(stow))
    assert f"PID-{RUN}" not in got.text

    def by(**params: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{dh.base_url}/audit", params={**params, "limit": "1000"}, headers=admin, timeout=30)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["records"])

    assert any(r["EventIdentification"]["EventID"]["csd-code"] == "110104"
               and r["EventIdentification"]["EventActionCode"] == "R" for r in by(study=OTHER))  # WADO-RS
    changes = by(actor=oid("admin"))
    assert {r["EventIdentification"]["EventID"]["csd-code"] for r in changes} == {"110113"}  # tag changes
    assert len([r for r in changes if r["EventIdentification"]["EventOutcomeIndicator"] == 0]) == 2  # add, delete
    assert any(o["ParticipantObjectID"] == "extendedquerytags/00180050"
               for r in changes for o in r["ParticipantObjectIdentification"])
    assert any(r["EventIdentification"]["EventOutcomeIndicator"] == 4 for r in by(actor=oid("writer")))  # the 403
    assert {s for r in by(patient=f"PID-{RUN}") for s in studies_of(r)} >= {STUDY, OTHER}
    assert requests.get(f"{dh.base_url}/audit", params={"study": "not-a-uid"}, headers=admin,
                        timeout=30).status_code == 400


def test_a_graceful_stop_appends_every_pending_record(dh: DevHostProcess) -> None:
    late = client(dh, "reader")
    late.search_for_series(search_filters={"StudyInstanceUID": OTHER})
    late.retrieve_series_metadata(OTHER, THICK)
    dh.stop()  # SIGTERM: the devhost exits normally; its audit writer appends at exit (flush interval: 1 hour)
    trail = AzureBlobStore(BlobServiceClient.from_connection_string(dh.azurite.connection_string))
    records = search(trail, AuditQuery.parse({"study": OTHER, "limit": "1000"})).records
    series_reads = [r for r in records if r["EventIdentification"]["EventID"]["csd-code"] == "110103"
                    and any(THICK in (o.get("ParticipantObjectDescription") or {}).get("Series", [])
                            for o in r["ParticipantObjectIdentification"])]
    assert series_reads, "the series metadata read just before the stop is in the trail"
    queries = [r for r in records if r["EventIdentification"]["EventID"]["csd-code"] == "110112"]
    assert queries and oid("reader") in {u for r in queries for u in requestors_of(r)}
