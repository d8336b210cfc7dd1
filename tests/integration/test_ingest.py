"""Ingest against a real Azurite with the real SDK publisher: every file ends archived
or quarantined with a reason; duplicates, updates, large files, settle, no PHI."""

from __future__ import annotations

import glob
import logging
import os
import uuid
import warnings
from pathlib import Path

import orjson
import pydicom
import pytest

from shared.index import keys
from shared.ingest import status
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.ingest.states import IngestState as State
from shared.ports import Blob
from shared.services import Services as Context
from shared.storage import layout
from tests.integration.eventsink import EventSink
from tools.corpus import load_manifest


def upload(ctx: Context, data: bytes, name: str | None = None) -> Blob:
    name = name or f"t/{uuid.uuid4().hex}.dcm"
    ctx.blobs.write(layout.INBOX, name, data)
    return ctx.blobs.open(layout.INBOX, name)


def settle(ctx: Context, study: str | None) -> None:
    assert study
    SettleService(ctx).settle(SettleRequest(study))


def pydicom_files() -> list[str]:
    base = os.path.join(os.path.dirname(pydicom.__file__), "data")
    files = glob.glob(base + "/test_files/**/*", recursive=True) + glob.glob(base + "/charset_files/*")
    return sorted(f for f in files if os.path.isfile(f))


def pydicom_reads_with_uids(path: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return all(str(ds.get(k, "")).strip() for k in
                       ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"))
        except Exception:
            return False


def test_every_pydicom_test_file_ends_archived_or_quarantined(pipeline: Context) -> None:
    service = IngestService(pipeline)
    files = pydicom_files()
    assert len(files) > 80
    outcomes = {}
    for path in files:
        blob = upload(pipeline, Path(path).read_bytes(), f"pydicom/{uuid.uuid4().hex}/{Path(path).name}")
        outcomes[path] = service.ingest(blob)
    for path, out in outcomes.items():
        assert out.state in (State.ARCHIVED, State.UPDATED, State.DUPLICATE, State.QUARANTINED), path
        if out.state == State.QUARANTINED:
            assert out.reason and out.message, path
        if pydicom_reads_with_uids(path):
            assert out.state != State.QUARANTINED, (path, out.reason)
            assert pipeline.blobs.properties(
                layout.ARCHIVE, layout.instance_path(out.study, out.series, out.sop)) is not None, path
        # The outcome can be asked for afterwards (from the inbox blob, which stays).
        assert status.blob_status(pipeline, out.blob).state == out.state, path


def test_synthetic_corpus_outcomes_match_the_manifest(pipeline: Context, small_corpus: Path) -> None:
    service = IngestService(pipeline)
    manifest = load_manifest(small_corpus)
    for entry in manifest["files"]:
        out = service.ingest(upload(pipeline, (small_corpus / entry["path"]).read_bytes()))
        expected = entry["expect"]
        if expected == "archived":
            assert out.state in (State.ARCHIVED, State.UPDATED, State.DUPLICATE), (entry["path"], out)
            if entry.get("sop_uid"):
                assert out.sop == entry["sop_uid"]
        else:
            assert out.state == State.QUARANTINED, entry["path"]
            assert out.reason == entry["reason"], (entry["path"], out.reason, out.message)
            matches = [b for b in pipeline.blobs.list(layout.QUARANTINE, metadata=True) if b.name.endswith(out.blob)]
            assert matches and matches[0].metadata["reason"] == entry["reason"]


def test_identical_resend_is_a_duplicate_and_announced_once(pipeline: Context, small_corpus: Path,
                                                             event_sink: EventSink) -> None:
    service = IngestService(pipeline)
    data = (small_corpus / "good/p01/ct/IM0002.dcm").read_bytes()
    ds = pydicom.dcmread(small_corpus / "good/p01/ct/IM0002.dcm")
    sop = str(ds.SOPInstanceUID)
    # (The corpus test may have ingested it already.)
    known = pipeline.index.get_instance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), sop) is not None
    outs = [service.ingest(upload(pipeline, data)) for _ in range(3)]
    settle(pipeline, outs[0].study)
    settle(pipeline, outs[0].study)
    created = [e for e in event_sink.of_type("Dicom.ImageCreated") if e["data"]["imageSopInstanceUid"] == sop]
    assert len(created) == 1
    assert [o.state for o in outs].count(State.ARCHIVED) == (0 if known else 1)
    assert all(o.state in (State.ARCHIVED, State.DUPLICATE) for o in outs)


def test_same_sop_with_new_content_is_an_update(pipeline: Context, small_corpus: Path, event_sink: EventSink) -> None:
    service = IngestService(pipeline)
    path = small_corpus / "good/p02/ct/IM0003.dcm"
    ds = pydicom.dcmread(path)
    first = service.ingest(upload(pipeline, path.read_bytes()))
    ds.SeriesDescription = "corrected"
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    second = service.ingest(upload(pipeline, buf.getvalue()))
    settle(pipeline, second.study)
    assert first.state in (State.ARCHIVED, State.DUPLICATE)
    assert second.state == State.UPDATED
    updated = [e for e in event_sink.of_type("Dicom.ImageUpdated")
               if e["data"]["imageSopInstanceUid"] == str(ds.SOPInstanceUID)]
    assert len(updated) == 1
    row = pipeline.index.get_instance(second.study, second.series, second.sop)
    assert row is not None and row.record.series_description == "corrected"


def test_large_private_element_is_never_downloaded(pipeline: Context, tmp_path: Path) -> None:
    """A 10 MB private value and 8 MB of pixel data: the header read stays small."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.private_block(0x0029, "DICOMFLOW TEST", create=True).add_new(0x10, "OB", b"\x01" * (10 * 1024 * 1024))
    ds.Rows, ds.Columns = 2048, 2048
    ds.PixelData = b"\x00\x01" * (2048 * 2048)
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    out = IngestService(pipeline).ingest(upload(pipeline, path.read_bytes()))
    assert out.state in (State.ARCHIVED, State.UPDATED)
    assert out.bytes_read < 1024 * 1024, out.bytes_read
    row = pipeline.index.get_instance(out.study, out.series, out.sop)
    assert row is not None and row.meta is not None
    sidecar = orjson.loads(row.meta)
    private = next(v for k, v in sidecar.items() if k.startswith("0029") and v.get("vr") == "OB")
    assert "BulkDataURI" in private and "InlineBinary" not in private
    assert sidecar["7FE00010"]["BulkDataURI"].startswith(f"studies/{out.study}/")


def test_settle_aggregates_lookups_bundle_and_stable_events(pipeline: Context, small_corpus: Path,
                                                             event_sink: EventSink) -> None:
    manifest = load_manifest(small_corpus)
    service = IngestService(pipeline)
    entries = [e for e in manifest["files"] if e["kind"] == "good" and e["patient_index"] == 2]
    for e in entries:
        service.ingest(upload(pipeline, (small_corpus / e["path"]).read_bytes()))
    study = entries[0]["study_uid"]
    result = SettleService(pipeline).settle(SettleRequest(study, force=True))
    assert result.state == "stable"
    rec = pipeline.index.get_study(study)
    assert rec is not None
    assert rec.number_of_study_related_instances == len({e["sop_uid"] for e in entries if e["study_uid"] == study})
    assert rec.modalities_in_study == sorted({e["modality"] for e in entries if e["study_uid"] == study})
    series = pipeline.index.list_series(study)
    assert len(series) == rec.number_of_study_related_series
    for se in series:  # a bundle for a large series; a small one's rows hold its metadata (WADO-RS reads them)
        raw = pipeline.blobs.read(layout.METADATA, layout.series_metadata_path(study, se.series_instance_uid))
        count = se.number_of_series_related_instances
        if count >= layout.BUNDLE_MIN_INSTANCES:
            assert raw is not None and len(orjson.loads(raw)) == count
        else:
            assert raw is None
            rows = pipeline.index.series_rows_with_meta(study, se.series_instance_uid)
            assert len(rows) == count and all(meta for _, meta, _ in rows)
    # Lookup rows exist for the patient's ID, so QIDO needs no scan.
    pid = rec.patient_id
    assert pid
    [(pk, rk_range)] = keys.value_lookup_ranges(keys.Lookup.PATIENT_ID, pid)
    hits = list(pipeline.index.lookup(pk=pk, rk_range=rk_range))
    # One row for this study (other modules' synthetic corpora on this session's Azurite reuse patient IDs).
    assert [keys.study_of_value_row(h["RowKey"]) for h in hits].count(study) == 1
    stable = [e for e in event_sink.of_type("Dicom.StudyStable") if e["data"]["imageStudyInstanceUid"] == study]
    assert len(stable) == 1
    # Settling again without new arrivals announces nothing new (idempotent).
    assert SettleService(pipeline).settle(SettleRequest(study)).state == "unchanged"
    stable = [e for e in event_sink.of_type("Dicom.StudyStable") if e["data"]["imageStudyInstanceUid"] == study]
    assert len(stable) == 1


def test_no_patient_data_in_logs_or_events(pipeline: Context, small_corpus: Path, event_sink: EventSink,
                                           caplog: pytest.LogCaptureFixture) -> None:
    manifest = load_manifest(small_corpus)
    sentinel = [p for p in manifest["patients"] if "Sentinel" in str(p)]
    assert sentinel, "the corpus was written with a sentinel patient"
    caplog.set_level(logging.DEBUG)
    service = IngestService(pipeline)
    for e in manifest["files"][:15]:
        out = service.ingest(upload(pipeline, (small_corpus / e["path"]).read_bytes()))
        if out.study:
            settle(pipeline, out.study)
    text = caplog.text + b"".join(event_sink.raw).decode("utf-8", "replace")
    assert "Sentinel" not in text and "SENTINEL" not in text
    for p in manifest["patients"]:
        for key in ("patient_id", "PatientID", "id"):
            if isinstance(p, dict) and p.get(key):
                assert str(p[key]) not in text


def test_names_in_every_character_set_are_stored_decoded(pipeline: Context, tmp_path: Path) -> None:
    """ISO_IR 100, 192, GB18030, ISO 2022 IR 87/149: the index holds Unicode, not bytes."""
    from tools.corpus import CorpusOptions, write_corpus

    out = tmp_path / "charsets"
    write_corpus(out, CorpusOptions(patients=6, slices=1, rows=16, cols=16, seed=3, broken=False))
    service = IngestService(pipeline)
    seen = {}
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out_ = service.ingest(upload(pipeline, path.read_bytes()))
        row = pipeline.index.get_instance(out_.study, out_.series, out_.sop)
        assert row is not None
        charset = ds.get("SpecificCharacterSet")
        key = "\\".join(charset) if isinstance(charset, pydicom.multival.MultiValue) else str(charset)
        seen[key] = (str(ds.PatientName), row.record.patient_name)
    assert len(seen) >= 4, seen
    for key, (expected, stored) in seen.items():
        assert stored == expected, key
    assert any(any("\u3040" <= c <= "\u9fff" for c in stored) for _, stored in seen.values())


def test_redelivery_of_a_finished_blob_announces_nothing_again(pipeline: Context, small_corpus: Path,
                                                              event_sink: EventSink) -> None:
    """Event Grid delivers at least once: the same BlobCreated twice gives one outcome and one event."""
    keep = pipeline
    path = small_corpus / "good/p03/mr/IM0001.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    import io

    buf = io.BytesIO()
    full = pydicom.dcmread(path)
    full.SOPInstanceUID = ds.SOPInstanceUID
    full.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    full.save_as(buf, enforce_file_format=True)
    blob = upload(keep, buf.getvalue())
    first = IngestService(keep).ingest(blob)
    second = IngestService(keep).ingest(blob)
    assert first.state == second.state == State.ARCHIVED
    settle(keep, first.study)
    settle(keep, first.study)
    assert keep.blobs.properties(layout.INBOX, blob.name) is not None  # the inbox keeps it
    created = [e for e in event_sink.of_type("Dicom.ImageCreated")
               if e["data"]["imageSopInstanceUid"] == str(ds.SOPInstanceUID)]
    assert len(created) == 1
