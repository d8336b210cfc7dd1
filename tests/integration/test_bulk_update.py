"""Bulk update against Azurite with the real SDK adapters: the new version is composed in blocks (Azurite
has no Put Block From URL, so the tail is streamed in bounded blocks), the first version kept, the row
rewritten; what it costs per instance is counted from the SDK's side."""

from __future__ import annotations

import io
import uuid
from collections import Counter

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from shared.ingest.service import IngestService
from shared.ingest.states import IngestState
from shared.ops import runner
from shared.ops.store import OperationStore, Status
from shared.services import Services
from shared.storage import layout
from shared.storage.azure import STREAM_BLOCK
from shared.update import service as update
from shared.update.changes import parse_changes
from shared.update.locks import StudyLocks
from tests.instances import instance, uid

CHANGE = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Roe^Richard"}]},
          "00100020": {"vr": "LO", "Value": ["PID-AZ"]}}


def big_instance(study: str, series: str, sop: str, frames: int) -> bytes:
    """A multi-frame instance whose pixel data spans several streamed blocks, with a long header."""
    ds = pydicom.dcmread(io.BytesIO(instance(study, series, sop)))
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    ds.PixelData = np.random.default_rng(3).integers(0, 4000, (frames, 512, 512), dtype=np.uint16).tobytes()
    # A header longer than the first ranged read: the new version's header is read past the bytes in hand.
    ds.add_new(0x00290010, "LO", "DICOMFLOW TEST")
    ds.add_new(0x00291010, "OB", bytes(200_000))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_bulk_update_on_azurite_keeps_pixel_bytes_and_costs_a_fixed_number_of_requests(pipeline: Services) -> None:
    tag = uuid.uuid4().hex
    study, series = uid(tag, "study"), uid(tag, "series")
    sops = [uid(tag, "sop", n) for n in range(4)]
    files = {sop: instance(study, series, sop, number=n + 1) for n, sop in enumerate(sops[:3])}
    files[sops[3]] = big_instance(study, series, sops[3], frames=40)  # 20 MiB: three streamed blocks
    assert len(files[sops[3]]) > 2 * STREAM_BLOCK
    ingest = IngestService(pipeline)
    for sop, data in files.items():
        name = f"bulk/{tag}/{sop}.dcm"
        pipeline.blobs.write(layout.INBOX, name, data)
        assert ingest.ingest(pipeline.blobs.open(layout.INBOX, name)).state is IngestState.ARCHIVED

    op = update.submit(pipeline, [study], parse_changes(CHANGE), actor="integration")
    before = pipeline.requests.snapshot() if pipeline.requests else Counter()
    assert runner.run_step(pipeline, runner.message(op.id)) == "done"  # one step: the operations function's body
    spent = (pipeline.requests.snapshot() if pipeline.requests else Counter()) - before
    done = OperationStore(pipeline.tables).get(op.id)
    assert done is not None and done.status is Status.COMPLETED and done.results["instanceUpdated"] == 4

    for sop, data in files.items():
        path = layout.instance_path(study, series, sop)
        new = pipeline.blobs.read(layout.ARCHIVE, path)
        assert new is not None
        ds, old = pydicom.dcmread(io.BytesIO(new)), pydicom.dcmread(io.BytesIO(data))
        assert ds.PatientID == "PID-AZ" and str(ds.PatientName) == "Roe^Richard"
        assert ds.PixelData == old.PixelData
        assert pipeline.blobs.read(layout.ARCHIVE, layout.original_path(study, series, sop)) == data
        row = pipeline.index.get_instance(study, series, sop)
        assert row is not None and row.record.patient_id == "PID-AZ" and row.record.size_bytes == len(new)
    assert StudyLocks(pipeline.tables).holder(study) is None  # the study is free again

    # Per small instance: the original's copy and the new version in one Put Blob (its tail came with the
    # header read); the 20 MiB one: the copy, the head block, three streamed tail blocks (each a ranged read),
    # the commit. Per instance also its row read twice (the listing, then the conditional check) and one table
    # transaction; per series a pending row; per operation its record read and written twice by the runner.
    small = n = len(files)
    small -= 1
    from_url_probe = 1 if spent["blob PUT"] == 2 * small + 6 + 1 else 0  # the refused Put Block From URL
    assert spent["blob PUT"] == 2 * small + 6 + from_url_probe, spent
    # Header reads: one per small instance; the long one's header, old and new, takes more ranged reads (the
    # reader's window grows, then jumps past the deferred 200 KB value): 4 between them here, counted.
    assert spent["blob GET"] == (n - 1) + 4 + 3, spent  # + its three streamed tail blocks
    assert spent["table POST"] == n, spent
    assert sum(spent.values()) <= 8 * n + 16, spent  # the rest: operation record saves (some time-based), locks
