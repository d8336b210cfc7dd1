"""The planner answers every supported key from lookup rows (no scan), with candidates
that include every true match."""

from __future__ import annotations

import uuid
from pathlib import Path

import pydicom
import pytest

from shared.index import keys
from shared.index.query import Criteria, choose, plan_and_fetch
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.services import Services as Context
from shared.storage import layout
from tools.corpus import CorpusOptions, load_manifest, write_corpus


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
        name = f"q/{uuid.uuid4().hex}.dcm"
        pipeline.blobs.write(layout.INBOX, name, (small_corpus / e["path"]).read_bytes())
        service.ingest(pipeline.blobs.open(layout.INBOX, name))
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
    prefix = str(ds.PatientID)[:3]
    plan, found = plan_and_fetch(pipeline.index, "study", Criteria(patient_id=prefix + "*"))
    assert str(plan) == "lookup:PatientID"
    # Every study of every patient with that prefix, though their IDs' rows are in different partitions.
    ids = {e["study_uid"]: str(_header(small_corpus, e).PatientID) for e in indexed}
    assert len({keys.value_lookup_keys(keys.Lookup.PATIENT_ID, v, "1")[0] for v in ids.values()}) > 1
    assert {s for s, v in ids.items() if v.startswith(prefix)} <= {r.study_instance_uid for r in found}


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


def test_a_study_query_answers_from_the_lookup_rows_alone(pipeline: Context, indexed: list[dict]) -> None:
    """Study lookup rows carry the study's fields: a keyed study query is the lookup query and the
    pending rows, never a read of each candidate's study row, and gives the study row's values."""
    study = indexed[0]["study_uid"]
    stored = pipeline.index.get_study(study)
    assert stored is not None and stored.patient_id
    before = pipeline.requests.snapshot()
    plan, found = plan_and_fetch(pipeline.index, "study", Criteria(patient_id=stored.patient_id))
    records = {r.study_instance_uid: r for r in found}
    spent = pipeline.requests.snapshot() - before
    assert str(plan) == "lookup:PatientID"
    assert spent == {"table GET": 2}, spent  # the lookup partition, the pending table
    got = records[study]
    stored.updated_at = got.updated_at = None  # the lookup rows do not follow every run's timestamp
    assert got == stored
