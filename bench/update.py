"""Bulk update of a large instance: ours (header rewritten, the rest copied) vs the naive rewrite vs Orthanc.

    .venv/bin/python -m bench.update            # 100 MiB (3 reps), 1 GiB (2 reps)
    .venv/bin/python -m bench.update --quick    # 100 MiB (2 reps)

The file is ``bench.large``'s multi-frame tomosynthesis instance (``make_file``), uploaded once and
ingested. Each repetition changes PatientName to a new value:

* ours: the steps of a one-study ``update`` operation (``shared.ops.runner.run_step``, the ``operations``
  function's body) in a fresh child process: time, peak RSS growth (VmHWM over VmRSS at the start, the
  peak reset first: a child's ``ru_maxrss`` starts at its parent's), storage requests by kind (the
  SDK-level counter). On
  Azurite the tail of the file is streamed through the process in 8 MiB blocks (Azurite implements no
  Put Block From URL); in Azure the service copies it (``stage_block_from_url``) and only the head passes
  through the process: that figure is inferred from the request shape, not measured here.
* naive: what a script would do with the Azure SDK: ``download_blob().readall()``, ``pydicom.dcmread``,
  change the name, ``save_as`` into memory, ``upload_blob``; in a fresh child under an address-space cap.
* orthanc: ``POST /instances/{id}/modify`` with ``{"Replace": {"PatientName": ...}, "Force": true}`` on a
  fresh Orthanc holding the file (Orthanc writes the modified copy as a new instance); time and Orthanc's
  peak RSS growth (VmHWM).

Results: ``bench/results/update.json`` and the README table.
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
from bench.common import WORK
from bench.large import _upload, make_file, remove_files

MIB = 1024 * 1024
#: name -> (frames, rows, cols, repetitions)
SIZES: dict[str, tuple[int, int, int, int]] = {"100MiB": (25, 2048, 1024, 3), "1GiB": (128, 2048, 2048, 2)}
QUICK_SIZES = {"100MiB": (25, 2048, 1024, 2)}


def _status(field: str) -> int:
    """A size from /proc/self/status (bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _start_peak() -> int:
    """Reset this process's peak RSS (a child's starts at its parent's: ``ru_maxrss`` survives fork and exec)
    and return its RSS now, the baseline the peak is compared with."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status("VmRSS")


def _peak() -> int:
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _services(conn: str) -> Any:
    from shared.config import Settings
    from shared.services import Services

    svc = Services.from_settings(Settings.from_env({"DicomStorage": conn, "DICOMFLOW_SETTLE_DELAY_SECONDS": "60"}))
    svc.ensure_ready()
    return svc


def child_ours(conn: str, study: str, name: str) -> dict[str, Any]:
    from shared.update import service as update
    from shared.update.changes import parse_changes

    svc = _services(conn)
    change = parse_changes({"00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]}})
    from shared.ops import runner
    from shared.ops.store import OperationStore

    op = update.submit(svc, [study], change, actor="bench")
    before = svc.requests.snapshot()
    baseline = _start_peak()
    t = time.monotonic()
    while True:  # the operations function's work: one step per queue message, until the operation ends
        if runner.run_step(svc, runner.message(op.id)) in ("done", "finished"):
            break
    seconds = time.monotonic() - t
    spent = svc.requests.snapshot() - before
    done = OperationStore(svc.tables).get(op.id)
    return {"seconds": seconds, "status": str(done.status) if done else "missing", "peak_rss": _peak(),
            "baseline_rss": baseline, "requests": dict(spent), "storage_requests": sum(spent.values())}


def child_naive(conn: str, path: str, name: str, cap_bytes: int) -> dict[str, Any]:
    from io import BytesIO

    import pydicom
    from azure.storage.blob import BlobClient

    from shared.storage.layout import ARCHIVE

    blob = BlobClient.from_connection_string(conn, ARCHIVE, path, max_single_put_size=64 * MIB,
                                             max_block_size=32 * MIB)
    baseline = _start_peak()
    resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))
    t = time.monotonic()
    try:
        data = blob.download_blob().readall()
        ds = pydicom.dcmread(BytesIO(data))
        ds.PatientName = name
        out = BytesIO()
        ds.save_as(out)
        blob.upload_blob(out.getvalue(), overwrite=True, max_concurrency=4)
    except MemoryError:
        return {"failed": f"MemoryError under a {cap_bytes / 2**30:.0f} GiB address-space cap",
                "seconds": time.monotonic() - t, "peak_rss": _peak(), "baseline_rss": baseline}
    return {"seconds": time.monotonic() - t, "peak_rss": _peak(), "baseline_rss": baseline}


def orthanc_runs(path: Path, tag: str, reps: int, timeout: float) -> list[dict[str, Any]]:
    import requests

    from bench.orthanc import BenchOrthanc, upload_file

    folder = WORK / f"update-orthanc-{tag}"
    shutil.rmtree(folder, ignore_errors=True)
    orthanc = BenchOrthanc(folder)
    out: list[dict[str, Any]] = []
    try:
        orthanc.start()
        assert orthanc.process is not None
        pid = orthanc.process.pid
        r = upload_file(orthanc, path, timeout=timeout)
        r.raise_for_status()
        instance = r.json()["ID"]
        for rep in range(reps):
            baseline = common.peak_rss(pid)
            t = time.monotonic()
            m = requests.post(f"{orthanc.url}/instances/{instance}/modify", timeout=timeout,
                              json={"Replace": {"PatientName": f"Bench^Orthanc{rep}"}, "Force": True})
            seconds = time.monotonic() - t
            row: dict[str, Any] = {"seconds": seconds, "status": m.status_code, "peak_rss": common.peak_rss(pid),
                                   "baseline_rss": baseline, "bytes_returned": len(m.content)}
            if m.status_code != 200:
                row["failed"] = f"HTTP {m.status_code}"
            out.append(row)
    finally:
        orthanc.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return out


def run(sizes: dict[str, tuple[int, int, int, int]], cap_gib: float, timeout: float) -> dict[str, Any]:
    from tqdm import tqdm

    from shared.ingest.service import IngestService
    from shared.storage import layout

    results: dict[str, Any] = {}
    az_dir = WORK / "update-azurite"
    shutil.rmtree(az_dir, ignore_errors=True)
    az = common.start_azurite(az_dir)
    try:
        conn = az.connection_string
        svc = _services(conn)
        for name, (frames, rows, cols, reps) in sizes.items():
            path = make_file(name, frames, rows, cols)
            blob_name = f"update/{path.name}"
            _upload(conn, path, blob_name)
            got = IngestService(svc).ingest(svc.blobs.open(layout.INBOX, blob_name))
            assert got.study and got.series and got.sop, got
            archived = layout.instance_path(got.study, got.series, got.sop)
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "naive": []}
            for rep in tqdm(range(reps), desc=f"update {name}", leave=False):
                runs["ours"].append(common.run_child("bench.update", ["ours", conn, got.study, f"Bench^Ours{rep}"],
                                                     timeout))
                runs["naive"].append(common.run_child("bench.update", ["naive", conn, archived, f"Bench^Naive{rep}",
                                                                       str(int(cap_gib * 2**30))], timeout))
            runs["orthanc"] = orthanc_runs(path, name, reps, timeout)
            summary: dict[str, Any] = {"bytes": path.stat().st_size, "frames": frames, "reps": reps}
            for peer, rows_ in runs.items():
                summary[peer] = common.summarize_runs(rows_, "storage_requests")
            results[name] = summary
            med = {p: (summary[p]["seconds"].get("median", float("nan")),
                       summary[p]["rss_growth_mib"].get("median", float("nan"))) for p in runs}
            print(f"{name}: " + ", ".join(f"{p} {s:.2f} s +{m:.0f} MiB {summary[p]['failed'] or ''}"
                                          for p, (s, m) in med.items()), file=sys.stderr)
    finally:
        az.stop()
        shutil.rmtree(az_dir, ignore_errors=True)
    return results


def _child(argv: list[str]) -> dict[str, Any]:
    kind, conn, *rest = argv
    return child_ours(conn, *rest) if kind == "ours" else child_naive(conn, rest[0], rest[1], int(rest[2]))


def main(argv: list[str] | None = None) -> int:
    return common.sized_main(argv, prog="python -m bench.update", doc=__doc__ or "", name="update", run=run,
                             sizes=SIZES, quick_sizes=QUICK_SIZES, quick_help="100 MiB only (2 repetitions)",
                             timeout=900.0, remove_files=remove_files, child=_child)

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
