"""DIMSE C-STORE receive: dcmtk ``storescu`` sending the bench corpus to our gateway vs Orthanc's DIMSE port.

    .venv/bin/python -m bench.dimse            # the full ingest corpus, 3 repetitions
    .venv/bin/python -m bench.dimse --quick    # the quick corpus, 2 repetitions

The same files (``bench.ingest``'s corpus), the same client concurrency (``--senders`` storescu
processes, each sending its share of the files over one association), one fresh receiver per run:

* ours: ``python -m gateway`` on a fresh in-memory Azurite. Success is answered once the instance is
  durable in ``dicom-inbox`` (ingest then runs asynchronously and is measured by ``bench.ingest``).
* Orthanc: its DICOM port, answering after it has stored and indexed the instance on local disk.

Reported: instances/s (files / wall time from the first association to the last release) and the
receiver's CPU per instance (psutil, before/after); results in ``bench/results/dimse.json``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import WORK, process_cpu, spread
from bench.ingest import FULL, QUICK, build_corpus


def _send(port: int, called: str, files: list[Path], senders: int) -> float:
    """Wall seconds for ``senders`` concurrent storescu processes to send ``files``."""
    shares = [files[i::senders] for i in range(senders)]
    t0 = time.monotonic()
    procs = [subprocess.Popen(["storescu", "-aec", called, "-R", "127.0.0.1", str(port), *map(str, share)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for share in shares if share]
    errors = [p.communicate()[1].decode(errors="replace") for p in procs]
    elapsed = time.monotonic() - t0
    failed = [e for p, e in zip(procs, errors, strict=True) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"storescu failed: {failed[0][-800:]}")
    return elapsed


def run_ours(files: list[Path], senders: int, folder: Path) -> dict[str, float]:
    from devhost.azurite import free_port
    from gateway.process import GatewayProcess

    az = common.start_azurite(folder / "azurite", in_memory=True)
    try:
        with GatewayProcess(free_port(), env={"DicomStorage": az.connection_string,
                                              "DICOMFLOW_GATEWAY_MAX_ASSOCIATIONS": str(senders * 2)},
                            log_path=folder / "gateway.log") as gw:
            assert gw.process is not None
            cpu0 = process_cpu(gw.process.pid)
            wall = _send(gw.port, "DICOMFLOW", files, senders)
            cpu = process_cpu(gw.process.pid) - cpu0
            received = gw.logs().count("C-STORE assoc=")
    finally:
        az.stop()
    if received != len(files):
        raise RuntimeError(f"the gateway logged {received} C-STOREs for {len(files)} files")
    return {"seconds": wall, "per_second": len(files) / wall, "cpu_ms_per_instance": cpu * 1000 / len(files)}


def run_orthanc(files: list[Path], senders: int, folder: Path) -> dict[str, float]:
    import requests

    from bench.orthanc import BenchOrthanc

    with BenchOrthanc(folder / "orthanc") as orthanc:
        assert orthanc.process is not None
        cpu0 = process_cpu(orthanc.process.pid)
        wall = _send(orthanc.dicom_port, "ORTHANC", files, senders)
        cpu = process_cpu(orthanc.process.pid) - cpu0
        stored = int(requests.get(f"{orthanc.url}/statistics", timeout=30).json()["CountInstances"])
    if stored != len(files):
        raise RuntimeError(f"Orthanc holds {stored} instances for {len(files)} files")
    return {"seconds": wall, "per_second": len(files) / wall, "cpu_ms_per_instance": cpu * 1000 / len(files)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dimse", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--senders", type=int, default=4, help="concurrent storescu processes (default 4)")
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None:
        print("storescu missing: run 'make peers'", file=sys.stderr)
        return 2
    size = QUICK if args.quick else FULL
    reps = args.reps or (2 if args.quick else 3)
    _, files, _ = build_corpus(size)
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "orthanc": []}
    for rep in range(reps):
        for name, fn in (("ours", run_ours), ("orthanc", run_orthanc)):
            folder = WORK / f"dimse-{name}-{rep}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            r = fn(files, args.senders, folder)
            runs[name].append(r)
            print(f"{name} run {rep + 1}: {r['per_second']:.1f} instances/s, "
                  f"{r['cpu_ms_per_instance']:.2f} ms CPU per instance", file=sys.stderr)
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": common.git_commit(),
        "orthanc_version": common.orthanc_version(), "instances": len(files), "senders": args.senders,
        "bytes": sum(p.stat().st_size for p in files), "reps": reps,
        **{name: {k: spread([r[k] for r in rs]) for k in rs[0]} for name, rs in runs.items()},
    }
    result["ratio_per_second"] = statistics.median(
        o["per_second"] / t["per_second"] for o, t in zip(runs["ours"], runs["orthanc"], strict=True))
    common.save_result("dimse-quick" if args.quick else "dimse", result)
    print(f"ours/Orthanc instances/s: {result['ratio_per_second']:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
