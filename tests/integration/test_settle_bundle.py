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
from shared.ingest.settle import SettleRequest, SettleService
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
    SettleService(pipeline).settle(SettleRequest(study, force=True))
    assert len(_bundle(pipeline, study, series)) == 5
    reads.clear()

    for e in ct[5:]:
        _ingest(pipeline, (out / e["path"]).read_bytes())
    SettleService(pipeline).settle(SettleRequest(study, force=True))
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
    SettleService(pipeline).settle(SettleRequest(study, force=True))
    doc = next(d for d in _bundle(pipeline, study, series) if d["00080018"]["Value"][0] == ct[0]["sop_uid"])
    assert doc["0008103E"]["Value"] == ["replaced"]


def test_a_burst_settles_once_whatever_order_its_messages_run(pipeline: Context, tmp_path: Path) -> None:
    """Each ingest's message names the arrival it wrote; only the one matching the study
    marker's last arrival runs (so concurrent tails of a burst do not settle twice)."""
    import random

    out = tmp_path / "once"
    write_corpus(out, CorpusOptions(patients=1, slices=6, rows=16, cols=16, seed=6060, broken=False))
    ct = [e for e in load_manifest(out)["files"] if e["modality"] == "CT"]
    study = ct[0]["study_uid"]
    for e in ct:
        _ingest(pipeline, (out / e["path"]).read_bytes())
    queue = pipeline.queue(layout.SETTLE_QUEUE)
    mine = []
    for _ in range(20):
        for m in queue.receive_messages(messages_per_page=32, visibility_timeout=30):
            body = SettleRequest.from_message(
                m.content if m.content.startswith("{") else __import__("base64").b64decode(m.content))
            if body.study == study:
                mine.append(body)
                queue.delete_message(m)
        if len(mine) >= len(ct):
            break
    assert len(mine) == len(ct)
    # Concurrent ingests can commit out of order: an instance stamped later may write the marker
    # first, so its message names an arrival newer than the marker's final value. It must not run.
    mine.append(SettleRequest(study, max(b.arrival for b in mine) + 0.5))
    random.Random(1).shuffle(mine)
    states = [SettleService(pipeline).settle(b).state for b in mine]
    assert sorted(states).count("superseded") == len(ct), states
