"""The planner answers every supported key from lookup rows (no scan), with candidates
that include every true match."""

from __future__ import annotations

import uuid
from pathlib import Path

import pydicom
import pytest

from devhost.corpus import CorpusOptions, load_manifest, write_corpus
from shared.index.query import Criteria, choose, plan_and_fetch
from shared.ingest.context import Context
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleRequest, SettleService
from shared.storage import layout


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real names in several character sets (the session corpus uses a sentinel name)."""
    out = tmp_path_factory.mktemp("qcorpus")
    write_corpus(out, CorpusOptions(patients=5, slices=4, rows=32, cols=32, seed=11, broken=False))
    return out


@pytest.fixture(scope="module")
def indexed(pipeline: Context, small_corpus: Path) -> list[dict]:
    service = IngestService(pipeline)
    manifest = load_manifest(small_corpus)
    good = [e for e in manifest["files"] if e["kind"] == "good"]
    for e in good:
        blob = pipeline.clients.blob.get_blob_client(layout.INBOX, f"q/{uuid.uuid4().hex}.dcm")
        blob.upload_blob((small_corpus / e["path"]).read_bytes())
        service.ingest(blob)
    for study in {e["study_uid"] for e in good}:
        SettleService(pipeline).settle(SettleRequest(study, force=True))
    return good


def _header(small_corpus: Path, entry: dict) -> pydicom.Dataset:
    return pydicom.dcmread(small_corpus / entry["path"], stop_before_pixels=True)


def test_patient_id_exact_and_prefix(pipeline: Context, indexed: list[dict], small_corpus: Path) -> None:
    ds = _header(small_corpus, indexed[0])
    plan, found = plan_and_fetch(pipeline.index, "study", Criteria(patient_id=str(ds.PatientID)))
    assert str(plan) == "lookup:PatientID"
    assert ds.StudyInstanceUID in {r.study_instance_uid for r in found}
    plan, found = plan_and_fetch(pipeline.index, "study", Criteria(patient_id=str(ds.PatientID)[:3] + "*"))
    assert str(plan) == "lookup:PatientID"
    assert ds.StudyInstanceUID in {r.study_instance_uid for r in found}


def test_name_lookup_is_accent_and_case_insensitive(pipeline: Context, indexed: list[dict],
                                                   small_corpus: Path) -> None:
    names = {}
    for e in indexed:
        ds = _header(small_corpus, e)
        names[str(ds.PatientName)] = str(ds.StudyInstanceUID)
    accented = next((n for n in names if any(ord(c) > 127 for c in n.split("^")[0])), None)
    assert accented, names.keys()
    import unicodedata

    family = accented.split("=")[0].split("^")[0]
    plain = "".join(c for c in unicodedata.normalize("NFKD", family) if not unicodedata.combining(c)).upper()
    plan, found = plan_and_fetch(pipeline.index, "study", Criteria(patient_name=plain[:3] + "*"))
    assert str(plan) == "lookup:PatientName"
    assert names[accented] in {r.study_instance_uid for r in found}


def test_uid_lookups_and_modality_with_dates(pipeline: Context, indexed: list[dict], small_corpus: Path) -> None:
    e = next(x for x in indexed if x["modality"] == "MR")
    ds = _header(small_corpus, e)
    plan, found = plan_and_fetch(pipeline.index, "instance", Criteria(sop_uids=[e["sop_uid"]]))
    assert str(plan) == "lookup:SOPInstanceUID"
    assert [r.sop_instance_uid for r in found] == [e["sop_uid"]]
    plan, found = plan_and_fetch(pipeline.index, "series", Criteria(series_uids=[e["series_uid"]]))
    assert str(plan) == "lookup:SeriesInstanceUID"
    assert [r.series_instance_uid for r in found] == [e["series_uid"]]
    date = str(ds.StudyDate)
    plan, found = plan_and_fetch(pipeline.index, "series", Criteria(modality="MR", study_date=(date, date)))
    assert str(plan) == "lookup:Modality"
    got = {r.series_instance_uid for r in found}
    assert e["series_uid"] in got
    assert all(r.modality == "MR" for r in pipeline.index.list_series(e["study_uid"])
               if r.series_instance_uid in got)


def test_date_range_open_ends_and_scan_is_named(pipeline: Context, indexed: list[dict], small_corpus: Path) -> None:
    dates = sorted({str(_header(small_corpus, e).StudyDate) for e in indexed})
    plan, found = plan_and_fetch(pipeline.index, "study", Criteria(study_date=(dates[-1], None)))
    assert str(plan) == "lookup:StudyDate"
    assert {r.study_date for r in found} >= {dates[-1]}
    assert str(choose("study", Criteria())) == "scan:studies"
    assert str(choose("study", Criteria(patient_id="*"))) == "scan:studies"


def test_injection_attempt_matches_literally(pipeline: Context, indexed: list[dict]) -> None:
    plan, found = plan_and_fetch(pipeline.index, "study", Criteria(patient_id="x' or PartitionKey ne 'y"))
    assert str(plan) == "lookup:PatientID"
    assert list(found) == []
