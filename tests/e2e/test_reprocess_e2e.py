"""``python -m tools config`` and ``python -m tools reprocess`` as a user runs them against the local stack
(found through the devhost's state files): a CT study becomes stable while no AI model is enabled; the user
turns the built-in model on and reprocesses the study: its SEG and SR are written, ingested and indexed.
Reprocessing again (this time by StudyDate) produces nothing new: the model finds its results archived
already, so nothing is written, ingested or announced again, and the routing worklist gets no second message."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devhost import state
from devhost.testing import DevHostProcess
from shared.storage import layout
from tests.phantoms import ellipsoid_ct
from tests.waiting import wait_until
from tools import cli

INSTITUTION = "Reprocess E2E Hospital"  # the rule matches only this test's study (Azurite is shared)
STUDY_DATE = "19990909"
GROUP = "reprocess-e2e"
RULES = {"rules": [{"name": "reprocess-e2e", "trigger": "Dicom.StudyStable",
                    "conditions": {"Modality": "CT", "derived": False, "InstitutionName": INSTITUTION},
                    "destinations": [{"type": "worklist", "group": GROUP}]}]}


def tools(capsys: pytest.CaptureFixture[str], dh: DevHostProcess, *argv: str) -> str:
    code = cli.main([*argv, "--state-dir", str(dh.state_dir)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def events(dh: DevHostProcess, kind: str, study: str) -> list[dict[str, Any]]:
    return [e for e in dh.published_events(type=kind) if e["data"].get("imageStudyInstanceUid") == study]


def delivered(dh: DevHostProcess, ids: set[str], subscription: str) -> bool:
    done = {r["id"] for r in state.read_journal(dh.state_dir, "delivered") if r["subscription"] == subscription}
    return ids <= done


def worklist_messages(dh: DevHostProcess) -> int:
    queue = QueueClient.from_connection_string(dh.azurite.connection_string, f"worklist-{GROUP}")
    return int(queue.get_queue_properties().approximate_message_count or 0)


def ingest_state(dh: DevHostProcess, blob: str) -> str:
    r = requests.get(f"{dh.base_url}/ingest/status", params={"blob": blob},
                     headers=dh.bearer("reader"), timeout=10)
    return str(r.json().get("state"))


def test_a_model_enabled_later_runs_on_reprocess_and_twice_adds_nothing(
        devhost: DevHostProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dh = devhost
    azure = BlobServiceClient.from_connection_string(dh.azurite.connection_string)
    try:
        azure.create_container(layout.CONFIG)
    except ResourceExistsError:
        pass
    config = azure.get_container_client(layout.CONFIG)
    if config.get_blob_client(layout.MODELS_DOC).exists():
        config.delete_blob(layout.MODELS_DOC)  # no model: inference is opt-in
    try:
        (tmp_path / "rules.json").write_text(json.dumps(RULES))
        assert "1 enabled: reprocess-e2e" in tools(capsys, dh, "config", "set", "rules", str(tmp_path / "rules.json"))

        series = ellipsoid_ct(tag="reprocess-e2e", size=32, pixel_mm=5.0, slice_mm=15.0)
        for ds in series:
            ds.InstitutionName = INSTITUTION
            ds.StudyDate = STUDY_DATE
        study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
        inbox = azure.get_container_client(layout.INBOX)
        for k, ds in enumerate(series):
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            inbox.upload_blob(f"reprocess-e2e/{k:03d}.dcm", buf.getvalue(), overwrite=True)

        # Stable with no model: inference ran on SeriesStable and did nothing; routing queued one worklist item.
        first = dh.wait_for_event(lambda e: e.get("type") == "Dicom.StudyStable"
                                  and e["data"]["imageStudyInstanceUid"] == study, timeout=120)
        stable_series = {e["id"] for e in events(dh, "Dicom.SeriesStable", study)}
        wait_until(lambda: delivered(dh, stable_series, "inference-series-stable"), 60, "inference to run")
        wait_until(lambda: delivered(dh, {first["id"]}, "routing-stable"), 60, "routing to run")
        assert events(dh, "Dicom.InferenceCompleted", study) == []
        assert worklist_messages(dh) == 1

        # The user turns the built-in model on and reprocesses the study.
        (tmp_path / "models.json").write_text('{"models": [{"kind": "builtin"}]}')
        assert "1 enabled: builtin" in tools(capsys, dh, "config", "set", "models", str(tmp_path / "models.json"))
        out = tools(capsys, dh, "reprocess", "--study", study)
        assert "announced 2 event(s) for 1 study(ies), 1 series" in out, out
        completed = dh.wait_for_event(lambda e: e.get("type") == "Dicom.InferenceCompleted"
                                      and e["data"]["imageSeriesInstanceUid"] == series_uid, timeout=120)
        results = {r["sopInstanceUid"] for r in completed["data"]["results"]}
        assert len(results) == 2  # a SEG and an SR
        for sop in results:
            dh.wait_for_event(lambda e, sop=sop: e.get("type") == "Dicom.ImageCreated"
                              and e["data"].get("imageSopInstanceUid") == sop and e["data"]["derived"], timeout=120)
        names = {layout.ai_result_inbox_path(completed["data"]["model"], sop) for sop in results}
        assert {ingest_state(dh, n) for n in names} == {"archived"}
        again_ids = {e["id"] for e in events(dh, "Dicom.StudyStable", study)}
        wait_until(lambda: delivered(dh, again_ids, "routing-stable"), 60, "routing to see the reprocessed study")
        assert worklist_messages(dh) == 1  # the ledger: delivered once

        # Again, by StudyDate: the model runs again and finds its results archived already: nothing is written,
        # nothing ingested or announced again, nothing routed again.
        # New events are new ids: delivery is at least once, so the same event (same id) may be published again.
        created = {e["id"] for kind in ("Dicom.ImageCreated", "Dicom.ImageUpdated")
                   for e in events(dh, kind, study)}
        archived = sum(1 for _ in azure.get_container_client(layout.ARCHIVE).list_blobs(name_starts_with=f"{study}/"))
        n_series = len(events(dh, "Dicom.SeriesStable", study))
        n_completed = len(events(dh, "Dicom.InferenceCompleted", study))
        out = tools(capsys, dh, "reprocess", "--from", "1999-09-09", "--to", "19990909")
        assert "for 1 study(ies)" in out, out
        wait_until(lambda: len(events(dh, "Dicom.InferenceCompleted", study)) > n_completed, 120, "inference again")
        assert f"on series {series_uid}: 2 objects (0 written, 2 unchanged)" in dh.logs()
        announced = {e["id"] for e in events(dh, "Dicom.SeriesStable", study)[n_series:]}
        announced |= {e["id"] for e in events(dh, "Dicom.StudyStable", study)}
        wait_until(lambda: delivered(dh, announced, "routing-stable"), 60, "routing to see the second reprocess")
        assert {ingest_state(dh, n) for n in names} == {"archived"}  # the first ingest's outcome: no second upload
        assert {e["id"] for kind in ("Dicom.ImageCreated", "Dicom.ImageUpdated")
                for e in events(dh, kind, study)} == created
        assert sum(1 for _ in azure.get_container_client(layout.ARCHIVE).list_blobs(name_starts_with=f"{study}/")) \
            == archived
        assert worklist_messages(dh) == 1
    finally:  # the config container is shared with the other tests of the session
        for name in (layout.MODELS_DOC, layout.RULES_DOC, layout.RULES_LAST_GOOD, layout.RULES_STATUS):
            if config.get_blob_client(name).exists():
                config.delete_blob(name)
