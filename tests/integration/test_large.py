"""A 1 GiB multi-frame instance: ingest fetches its header and little more, and the
function process's memory stays flat (bytes and RSS are asserted; time is bench/'s)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from devhost.corpus import UidFactory, make_multiframe_mg, make_patients, make_study
from shared.ingest.context import Context
from shared.ingest.service import IngestService
from shared.ingest.states import IngestState as State
from shared.storage import layout

GiB = 1024**3


class PeakRss:
    """Samples this process's RSS in a thread; ``peak - start`` is the growth."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def one_gib_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("large") / "dbt_1gib.dcm"
    uids = UidFactory(seed=5)
    study = make_study(make_patients(1, seed=5)[0], uids, "large", description="DBT large")
    make_multiframe_mg(out, study, uids, frames=128, rows=2048, cols=2048, chunk_frames=4)
    assert out.stat().st_size >= GiB
    return out


@pytest.mark.slow
def test_1gib_instance_reads_header_plus_less_than_1mib(pipeline: Context, one_gib_file: Path) -> None:
    blob = pipeline.clients.blob.get_blob_client(layout.INBOX, "large/dbt_1gib.dcm")
    with one_gib_file.open("rb") as f:
        blob.upload_blob(f, overwrite=True, max_concurrency=4, length=one_gib_file.stat().st_size)
    with PeakRss() as rss:
        out = IngestService(pipeline).ingest(blob)
    assert out.state in (State.ARCHIVED, State.UPDATED), out
    row = pipeline.index.get_instance(out.study, out.series, out.sop)
    assert row is not None
    header_size = row.record.pixel_data_offset
    assert header_size and header_size < 64 * 1024 * 1024
    assert row.record.size_bytes >= GiB
    assert row.record.number_of_frames == 128
    print(f"header {header_size} B, fetched {out.bytes_read} B in {out.requests} requests, "
          f"RSS growth {(rss.peak - rss.start) / 2**20:.1f} MiB")
    assert out.bytes_read < header_size + 1024 * 1024, (out.bytes_read, header_size)
    assert rss.peak - rss.start < 150 * 1024 * 1024, (rss.peak - rss.start) / 2**20
    archived = pipeline.clients.blob.get_blob_client(layout.ARCHIVE, layout.instance_path(out.study, out.series,
                                                                                           out.sop))
    assert archived.get_blob_properties().size == row.record.size_bytes
    archived.delete_blob()  # free the emulator's memory for the rest of the session
