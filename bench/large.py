"""Large instances: our ingest vs a naive full download + dcmread vs Orthanc's upload.

    .venv/bin/python -m bench.large            # 100 MiB (5 reps), 1 GiB (3 reps), 3.99 GiB (1 rep)
    .venv/bin/python -m bench.large --quick    # 100 MiB only (3 reps)

Each file is a generated multi-frame Breast Tomosynthesis instance with per-frame functional
groups (``tools.corpus.make_multiframe_mg``, streamed to disk). 4 GiB does not fit a native Pixel
Data element (32-bit length, max 0xFFFFFFFE bytes), so the largest size is 511 frames of
2048x2048x16 bit = 3.99 GiB, the largest that fits.

Per size, against one Azurite with data on disk (the file uploaded once to the inbox, kept there):

* ours: ``IngestService(services).ingest(blob)`` in a fresh child process (ranged header read,
  server-side copy to the archive, the instance row with its DICOM JSON, the series' pending row
  and the study's settle message); time, bytes fetched and requests (the reader's own count),
  storage requests of the whole ingest (the SDK-level counter, ``Services.requests``), peak RSS
  of the child (``ru_maxrss``). Between repetitions the instance row and the archive copy are
  deleted so every repetition does the full work.
* naive: what the Functions samples do, ``download_blob().readall()`` then ``pydicom.dcmread`` of
  the bytes, in a fresh child under an address-space cap (``--naive-cap-gib``, default 8) so a
  failure is a MemoryError, not the machine swapping. Never done in ``shared/``.
* orthanc: a fresh Orthanc per repetition, the file POSTed (streamed) to ``/instances``; time, HTTP
  status, Orthanc's peak RSS (VmHWM).

Results: ``bench/results/large.json`` and the README table.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import WORK, spread

MIB = 1024 * 1024
#: name -> (frames, rows, cols, repetitions)
SIZES: dict[str, tuple[int, int, int, int]] = {
    "100MiB": (25, 2048, 1024, 5),
    "1GiB": (128, 2048, 2048, 3),
    "3.99GiB": (511, 2048, 2048, 1),
}
QUICK_SIZES = {"100MiB": (25, 2048, 1024, 3)}


def make_file(name: str, frames: int, rows: int, cols: int) -> Path:
    from tools.corpus import UidFactory, make_multiframe_mg, make_patients, make_study

    out = WORK / "large" / f"DBT_{name}.dcm"
    done = out.with_suffix(".complete")
    if out.exists() and done.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    uids = UidFactory(7)
    study = make_study(make_patients(1, seed=7)[0], uids, f"large-{name}", description="DBT LARGE", day=1)
    print(f"generating {out.name} ({frames} frames of {rows}x{cols})", file=sys.stderr)
    try:
        make_multiframe_mg(out, study, uids, frames=frames, rows=rows, cols=cols, series_number=50, chunk_frames=4)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    done.write_text("ok\n")
    return out


def remove_files(sizes: dict[str, Any]) -> None:
    """Delete what :func:`make_file` generated for these sizes (a run without ``--keep-files``)."""
    for name in sizes:
        for p in (WORK / "large").glob(f"DBT_{name}.*"):
            p.unlink(missing_ok=True)


# --- child processes (one measurement each, fresh memory) ---------------------------------------------------


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _event_sink() -> str:
    """A local endpoint that accepts event batches (answers 200): the ingest publishes one event."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/api/events"


def child_ours(conn: str, blob_name: str) -> dict[str, Any]:
    from shared.config import Settings
    from shared.ingest.service import IngestService
    from shared.services import Services
    from shared.storage.layout import INBOX

    settings = Settings.from_env({"DicomStorage": conn, "DicomEvents__topicEndpointUri": _event_sink(),
                                  "DICOMFLOW_EVENTS_LOCAL_KEY": "bench"})
    services = Services.from_settings(settings)
    services.ensure_ready()
    counter = services.requests
    assert counter is not None  # Azure services count their requests
    before = counter.total()
    baseline = _peak_rss_bytes()
    t = time.monotonic()
    out = IngestService(services).ingest(services.blobs.open(INBOX, blob_name))
    seconds = time.monotonic() - t
    return {"seconds": seconds, "state": out.state, "bytes_read": out.bytes_read, "requests": out.requests,
            "storage_requests": counter.total() - before,
            "peak_rss": _peak_rss_bytes(), "baseline_rss": baseline,
            "uids": [out.study, out.series, out.sop]}


def child_naive(conn: str, blob_name: str, cap_bytes: int) -> dict[str, Any]:
    from io import BytesIO

    import pydicom
    from azure.storage.blob import BlobClient

    from shared.storage.layout import INBOX

    blob = BlobClient.from_connection_string(conn, INBOX, blob_name)
    baseline = _peak_rss_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))
    t = time.monotonic()
    try:
        data = blob.download_blob().readall()
        ds = pydicom.dcmread(BytesIO(data))
        _ = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    except MemoryError:
        return {"failed": f"MemoryError under a {cap_bytes / 2**30:.0f} GiB address-space cap",
                "seconds": time.monotonic() - t, "peak_rss": _peak_rss_bytes(), "baseline_rss": baseline}
    return {"seconds": time.monotonic() - t, "bytes_read": len(data), "requests": None,
            "peak_rss": _peak_rss_bytes(), "baseline_rss": baseline}


# --- Orthanc ----------------------------------------------------------------------------------------


def orthanc_once(path: Path, tag: str, timeout: float) -> dict[str, Any]:
    import requests

    from bench.orthanc import BenchOrthanc, upload_file

    folder = WORK / f"large-orthanc-{tag}"
    shutil.rmtree(folder, ignore_errors=True)
    orthanc = BenchOrthanc(folder)
    try:
        orthanc.start()
        assert orthanc.process is not None
        pid = orthanc.process.pid
        baseline = common.peak_rss(pid)
        t = time.monotonic()
        try:
            r = upload_file(orthanc, path, timeout=timeout)
            status: int | str = r.status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        seconds = time.monotonic() - t
        alive = orthanc.process is not None and orthanc.process.poll() is None
        out: dict[str, Any] = {"seconds": seconds, "status": status, "peak_rss": common.peak_rss(pid) if alive else 0,
                               "baseline_rss": baseline}
        if status != 200:
            out["failed"] = f"HTTP {status}" if isinstance(status, int) else status
            if not alive:
                out["failed"] += " (Orthanc exited)"
        return out
    finally:
        orthanc.stop()
        shutil.rmtree(folder, ignore_errors=True)


# --- the benchmark ---------------------------------------------------------------------------------------


def _upload(conn: str, path: Path, name: str) -> float:
    from azure.storage.blob import BlobClient

    from shared.storage.layout import INBOX

    blob = BlobClient.from_connection_string(conn, INBOX, name, max_single_put_size=64 * MIB,
                                             max_block_size=32 * MIB)
    t = time.monotonic()
    with path.open("rb") as f:
        blob.upload_blob(f, length=path.stat().st_size, overwrite=True, max_concurrency=4)
    return time.monotonic() - t


def _forget(conn: str, uids: list[str]) -> None:
    """Delete the instance row and its archive copy so the next repetition ingests from scratch
    (not as a retry, not as a duplicate)."""
    from shared.config import Settings
    from shared.index import keys, tables
    from shared.services import Services
    from shared.storage import layout

    services = Services.from_settings(Settings.from_env({"DicomStorage": conn}))
    study, series, sop = uids
    services.tables.delete(tables.INSTANCES, *keys.instance_keys(study, series, sop))
    services.blobs.delete(layout.ARCHIVE, layout.instance_path(study, series, sop))


def run(sizes: dict[str, tuple[int, int, int, int]], cap_gib: float, timeout: float) -> dict[str, Any]:
    from azure.storage.blob import ContainerClient
    from tqdm import tqdm

    from shared.storage.layout import INBOX

    results: dict[str, Any] = {}
    az_dir = WORK / "large-azurite"
    shutil.rmtree(az_dir, ignore_errors=True)
    az = common.start_azurite(az_dir)
    try:
        conn = az.connection_string
        cc = ContainerClient.from_connection_string(conn, INBOX)
        cc.create_container()
        for name, (frames, rows, cols, reps) in sizes.items():
            path = make_file(name, frames, rows, cols)
            size = path.stat().st_size
            blob_name = f"large/{path.name}"
            upload_s = _upload(conn, path, blob_name)
            rows_out: dict[str, list[dict[str, Any]]] = {"ours": [], "naive": [], "orthanc": []}
            for rep in tqdm(range(reps), desc=f"large {name}", leave=False):
                ours = common.run_child("bench.large", ["ours", conn, blob_name], timeout)
                rows_out["ours"].append(ours)
                if ours.get("uids") and all(ours["uids"]):
                    _forget(conn, ours["uids"])
                rows_out["naive"].append(common.run_child("bench.large", ["naive", conn, blob_name,
                                                                          str(int(cap_gib * 2**30))], timeout))
                rows_out["orthanc"].append(orthanc_once(path, f"{name}-{rep}", timeout))
            summary: dict[str, Any] = {"bytes": size, "frames": frames, "reps": reps, "upload_seconds": upload_s}
            for peer, runs in rows_out.items():
                summary[peer] = common.summarize_runs(runs, "bytes_read", "requests", "storage_requests")
                summary[peer]["peak_rss_mib"] = spread([r["peak_rss"] / MIB for r in runs
                                                        if not r.get("failed") and r.get("peak_rss")])
            results[name] = summary
            print(f"{name}: ours {summary['ours']['seconds'].get('median', float('nan')):.2f} s, naive "
                  f"{summary['naive']['seconds'].get('median', float('nan')):.2f} s {summary['naive']['failed']}, "
                  f"orthanc {summary['orthanc']['seconds'].get('median', float('nan')):.2f} s "
                  f"{summary['orthanc']['failed']}", file=sys.stderr)
            cc.delete_blob(blob_name)
    finally:
        az.stop()
        shutil.rmtree(az_dir, ignore_errors=True)
    return results


def _child(argv: list[str]) -> dict[str, Any]:
    kind, conn, blob_name, *rest = argv
    return child_ours(conn, blob_name) if kind == "ours" else child_naive(conn, blob_name, int(rest[0]))


def main(argv: list[str] | None = None) -> int:
    return common.sized_main(argv, prog="python -m bench.large", doc=__doc__ or "", name="large", run=run,
                             sizes=SIZES, quick_sizes=QUICK_SIZES, quick_help="100 MiB only (3 repetitions)",
                             timeout=600.0, remove_files=remove_files, child=_child)

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
