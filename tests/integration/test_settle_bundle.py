"""Settle against Azurite: the series metadata bundle is exact after every run and built from the
rows (no per-instance blob reads); a burst of arrivals asks for one settle run; runs are idempotent."""

from __future__ import annotations

import dataclasses
import io
import uuid
from pathlib import Path

import orjson
import pydicom

from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.services import Services
from shared.storage import layout
from tools.corpus import CorpusOptions, load_manifest, write_corpus


def _ingest(svc: Services, data: bytes) -> None:
    name = f"bundle/{uuid.uuid4().hex}.dcm"
    svc.blobs.write(layout.INBOX, name, data)
    IngestService(svc).ingest(svc.blobs.open(layout.INBOX, name))


def _bundle(svc: Services, study: str, series: str) -> list[dict]:
    return orjson.loads(svc.blobs.read(layout.METADATA, layout.series_metadata_path(study, series)) or b"[]")


def test_bundle_follows_arrivals_and_replacements_without_reading_blobs(pipeline: Services, tmp_path: Path) -> None:
    out = tmp_path / "series"
    small = layout.BUNDLE_MIN_INSTANCES
    write_corpus(out, CorpusOptions(patients=1, slices=small + 3, rows=16, cols=16, seed=77, broken=False))
    ct = [e for e in load_manifest(out)["files"] if e["modality"] == "CT"]
    study, series = ct[0]["study_uid"], ct[0]["series_uid"]
    for e in ct[:small - 1]:
        _ingest(pipeline, (out / e["path"]).read_bytes())
    SettleService(pipeline).settle(SettleRequest(study))
    assert _bundle(pipeline, study, series) == []  # a small series has none: its rows are its metadata
    for e in ct[small - 1:small]:
        _ingest(pipeline, (out / e["path"]).read_bytes())
    SettleService(pipeline).settle(SettleRequest(study))
    assert len(_bundle(pipeline, study, series)) == small

    for e in ct[small:]:
        _ingest(pipeline, (out / e["path"]).read_bytes())
    counter = pipeline.requests
    before = counter.snapshot()
    SettleService(pipeline).settle(SettleRequest(study))
    spent = counter.snapshot() - before
    assert spent["blob GET"] == 0, spent  # the DICOM JSON comes from the rows read anyway
    bundle = _bundle(pipeline, study, series)
    assert [d["00080018"]["Value"][0] for d in bundle] == [e["sop_uid"] for e in ct]  # instance order

    # A replaced instance (same SOP UID, new content) shows its new content in the bundle.
    ds = pydicom.dcmread(out / ct[0]["path"])
    ds.SeriesDescription = "replaced"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    _ingest(pipeline, buf.getvalue())
    SettleService(pipeline).settle(SettleRequest(study))
    doc = next(d for d in _bundle(pipeline, study, series) if d["00080018"]["Value"][0] == ct[0]["sop_uid"])
    assert doc["0008103E"]["Value"] == ["replaced"]


def test_a_burst_asks_for_one_settle_run_and_extra_runs_change_nothing(pipeline: Services, tmp_path: Path) -> None:
    """A modality sends a study's slices together: one settle message per study and quiet period,
    decided in-process (nothing shared is written per instance), and a repeated run is a no-op."""
    settings = dataclasses.replace(pipeline.settings, settle_delay_seconds=30.0, stable_age_seconds=60.0)
    svc = Services.from_settings(settings)
    out = tmp_path / "once"
    write_corpus(out, CorpusOptions(patients=1, slices=6, rows=16, cols=16, seed=6060, broken=False))
    ct = [e for e in load_manifest(out)["files"] if e["modality"] == "CT"]
    study = ct[0]["study_uid"]
    svc.ensure_ready()
    before = svc.requests.snapshot()
    for e in ct:
        _ingest(svc, (out / e["path"]).read_bytes())
    spent = svc.requests.snapshot() - before
    assert spent["queue POST"] == 1, spent  # one settle message for the whole burst
    # Every instance: its upload (the test's), its header read, its archive copy, its row
    # transaction; and one pending row for the series.
    assert (spent["blob GET"], spent["blob PUT"], spent["table POST"]) == (len(ct), 2 * len(ct), len(ct)), spent
    assert spent["table PUT"] == 1, spent
    first = SettleService(svc).settle(SettleRequest(study))
    again = SettleService(svc).settle(SettleRequest(study))
    assert (first.state, again.state) == ("settled", "unchanged")
    assert first.events == len(ct) and again.events == 0


def test_series_metadata_of_a_small_series_is_one_query_and_of_a_large_one_its_bundle(pipeline: Services,
                                                                                      tmp_path: Path) -> None:
    """WADO-RS series metadata: a series of fewer than BUNDLE_MIN_INSTANCES has no bundle (settle writes none)
    and is answered from its rows in one table query, settled or not; a larger settled one from its bundle."""
    from shared.dicomweb.wado import Wado

    small = layout.BUNDLE_MIN_INSTANCES
    out = tmp_path / "two"
    write_corpus(out, CorpusOptions(patients=2, slices=small, rows=16, cols=16, seed=2020, broken=False))
    files = load_manifest(out)["files"]
    large = [e for e in files if e["modality"] == "CT" and e["patient_index"] == 0]
    few = [e for e in files if e["modality"] == "CT" and e["patient_index"] == 1][:3]
    for e in large + few:
        _ingest(pipeline, (out / e["path"]).read_bytes())
    for e in (large[0], few[0]):
        SettleService(pipeline).settle(SettleRequest(e["study_uid"], force=True))
    wado = Wado(pipeline.blobs, pipeline.index)

    def metadata(e: dict) -> tuple[list[str], dict[str, int]]:
        before = pipeline.requests.snapshot()
        reply = wado.series_metadata(None, "http://x", e["study_uid"], e["series_uid"])
        spent = pipeline.requests.snapshot() - before
        return [d["00080018"]["Value"][0] for d in orjson.loads(reply.body)], dict(spent)

    sops, spent = metadata(few[0])
    assert sorted(sops) == sorted(e["sop_uid"] for e in few) and spent == {"table GET": 1}
    assert pipeline.blobs.read(layout.METADATA, layout.series_metadata_path(few[0]["study_uid"],
                                                                            few[0]["series_uid"])) is None
    sops, spent = metadata(large[0])
    assert sops == [e["sop_uid"] for e in large]  # instance order
    assert spent == {"table GET": 2, "blob GET": 1}  # a first page of rows, the pending rows, the bundle
