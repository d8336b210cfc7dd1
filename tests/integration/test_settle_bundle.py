"""The series metadata bundle is exact after every settle run and is built incrementally:
a run reads only the sidecars of instances the previous bundle lacks (or that were replaced)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import orjson
import pydicom
import pytest

from devhost.corpus import CorpusOptions, load_manifest, write_corpus
from shared.ingest import settle as settle_module
from shared.ingest.context import Context
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.storage import blobs, layout


def _ingest(ctx: Context, data: bytes) -> None:
    blob = ctx.clients.blob.get_blob_client(layout.INBOX, f"bundle/{uuid.uuid4().hex}.dcm")
    blob.upload_blob(data)
    IngestService(ctx).ingest(blob)


def _bundle(ctx: Context, study: str, series: str) -> list[dict]:
    raw = ctx.clients.blob.get_blob_client(layout.METADATA, layout.series_metadata_path(study, series))
    return orjson.loads(raw.download_blob().read())


def test_bundle_grows_incrementally_and_follows_replacements(pipeline: Context, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "series"
    write_corpus(out, CorpusOptions(patients=1, slices=8, rows=16, cols=16, seed=77, broken=False))
    ct = [e for e in load_manifest(out)["files"] if e["modality"] == "CT"]
    study, series = ct[0]["study_uid"], ct[0]["series_uid"]
    reads: list[str] = []
    real_get_json = blobs.get_json

    def counting_get_json(svc: object, container: str, path: str) -> object:
        reads.append(path)
        return real_get_json(svc, container, path)

    monkeypatch.setattr(settle_module.blobs, "get_json", counting_get_json)

    for e in ct[:5]:
        _ingest(pipeline, (out / e["path"]).read_bytes())
    SettleService(pipeline).settle(study, enqueued=1e12)
    assert len(_bundle(pipeline, study, series)) == 5
    reads.clear()

    for e in ct[5:]:
        _ingest(pipeline, (out / e["path"]).read_bytes())
    SettleService(pipeline).settle(study, enqueued=1e12)
    bundle = _bundle(pipeline, study, series)
    assert sorted(d["00080018"]["Value"][0] for d in bundle) == sorted(e["sop_uid"] for e in ct)
    sidecar_reads = [p for p in reads if not p.endswith("series.json")]
    assert len(sidecar_reads) == len(ct) - 5, reads  # only the new instances' sidecars
    assert sum(p.endswith("series.json") for p in reads) == 1  # plus the previous bundle, once

    # A replaced instance (same SOP UID, new content) shows its new content in the bundle.
    ds = pydicom.dcmread(out / ct[0]["path"])
    ds.SeriesDescription = "replaced"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    _ingest(pipeline, buf.getvalue())
    SettleService(pipeline).settle(study, enqueued=1e12)
    doc = next(d for d in _bundle(pipeline, study, series) if d["00080018"]["Value"][0] == ct[0]["sop_uid"])
    assert doc["0008103E"]["Value"] == ["replaced"]
