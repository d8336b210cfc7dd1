"""Migrating a legacy PACS: ``tools migrate`` from Orthanc into us (gateway + devhost) vs Orthanc to Orthanc by C-MOVE.

    .venv/bin/python -m bench.migrate            # the ingest bench's corpus (~2,000 instances), 2 repetitions
    .venv/bin/python -m bench.migrate --quick    # the quick corpus

The source is a fresh Orthanc (``LEGACY``) holding the corpus (loaded by REST before the clock starts). Per
repetition, on the same machine and with the same moves (studies grouped up to 50 instances per C-MOVE, as
``tools migrate`` groups them; ``--associations`` moves at once):

* **ours**: a fresh Azurite, the real app on the devhost (production settle timings) and the DIMSE gateway;
  ``python -m tools migrate`` runs until it has verified every study (our index holds every instance the
  source listed, and the gateway committed them). The gateway takes the batched ingest path
  (``shared/ingest/batch.py``). CPU: the devhost and gateway processes (psutil), per instance.
* **Orthanc to Orthanc**: a fresh destination Orthanc (``DEST``); the same C-MOVEs by pynetdicom, answered when
  the destination has stored and indexed each instance. CPU: the destination Orthanc, per instance.

Reported: instances/s (instances / wall time of the whole migration), the ratio ours / Orthanc, CPU per
instance. One instrumented run per mix (Azurite ``--debug``: every request it served) counts the storage requests
per instance from the emulator's side, waiting until every study was announced stable (one settle run each, at
the stable age) and the queues were empty: the corpus, and the small-study mix of the request budget
(``tools/corpus.py write_small_mix``: 40 DX/MG/CR studies of 1-10 instances). Results in
``bench/results/migrate.json`` and bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import common
from bench.common import ROOT, WORK, process_cpu, spread
from bench.ingest import FULL, PROD_SETTLE, QUICK, build_corpus


def _legacy(folder: Path, files: list[Path], modalities: dict[str, list[Any]]) -> Any:
    """The source: an Orthanc holding ``files``, knowing the given DICOM peers."""
    from bench.orthanc import BenchOrthanc, upload_many

    class Legacy(BenchOrthanc):
        def config(self) -> dict[str, Any]:
            cfg = super().config()
            cfg.update({"DicomAet": "LEGACY", "DicomModalities": modalities, "DicomScpTimeout": 120})
            return cfg

    pacs = Legacy(folder, http_threads=8)
    pacs.start()
    _, errors = upload_many(pacs, files, workers=8, desc="load the source")
    if errors:
        pacs.stop()
        raise RuntimeError(f"the source refused {len(errors)} file(s), e.g. {errors[0]}")
    return pacs


def _groups(pacs: Any) -> list[list[str]]:
    """The source's studies in the C-MOVE groups ``tools migrate`` makes of them (its own grouping)."""
    import requests

    from shared.ingest.batch import CHUNK_SIZE
    from tools.migration.dimse import SourceStudy
    from tools.migration.runner import group_studies

    studies = []
    for sid in requests.get(f"{pacs.url}/studies", timeout=60).json():
        s = requests.get(f"{pacs.url}/studies/{sid}", timeout=60).json()
        n = len(requests.get(f"{pacs.url}/studies/{sid}/instances", timeout=60).json())
        studies.append(SourceStudy(s["MainDicomTags"]["StudyInstanceUID"], n))
    return [[s.uid for s in group] for group in group_studies(studies, CHUNK_SIZE)]


def run_ours(files: list[Path], folder: Path, *, associations: int, instrumented: bool, studies: int,
             timeout: float) -> dict[str, Any]:
    from devhost.azurite import free_port
    from devhost.testing import DevHostProcess
    from gateway.process import GatewayProcess

    debug = folder / "azurite-debug.log" if instrumented else None
    az = common.start_azurite(folder / "azurite", debug_log=debug, in_memory=True)
    gw_port = free_port()
    dh = DevHostProcess(azurite=az, env=PROD_SETTLE, state_dir=folder / "devhost", timeout=120, **common.REAL_APP)
    gw = GatewayProcess(gw_port, env={"DicomStorage": az.connection_string, "DICOMFLOW_GATEWAY_MAX_ASSOCIATIONS": "32",
                                      **PROD_SETTLE}, log_path=folder / "gateway.log")
    pacs = None
    try:
        dh.start()
        gw.start()
        pacs = _legacy(folder / "legacy", files, {"dicomflow": ["DICOMFLOW", "127.0.0.1", gw_port]})
        assert dh.pid is not None and gw.process is not None
        start_log = debug.stat().st_size if debug is not None and debug.exists() else 0
        cpu0 = process_cpu(dh.pid) + process_cpu(gw.process.pid)
        t0 = time.monotonic()
        argv = [sys.executable, "-m", "tools", "migrate", "--source", f"LEGACY@127.0.0.1:{pacs.dicom_port}",
                "--gateway", f"DICOMFLOW@127.0.0.1:{gw_port}", "--connection-string", az.connection_string,
                "--state", str(folder / "state.sqlite"), "--associations", str(associations), "--quiet"]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        elapsed = time.monotonic() - t0
        cpu = process_cpu(dh.pid) + process_cpu(gw.process.pid) - cpu0
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode != 0:
            raise RuntimeError(f"tools migrate failed ({done.returncode}): {last} {done.stderr[-800:]}")
        n = len(files)
        result: dict[str, Any] = {"instances": n, "seconds": elapsed, "inst_per_s": n / elapsed,
                                  "cpu_ms": cpu * 1000 / n, "report": last}
        if instrumented:
            assert debug is not None
            journal = dh.state_dir / "events.jsonl"

            def stable() -> bool:
                recs = common.journal_events(journal)
                return sum(1 for r in recs if (r.get("event") or {}).get("type") == "Dicom.StudyStable") >= studies

            common.wait_until(stable, timeout, 2.0, "every study stable")
            time.sleep(10.0)  # the group runs' last writes and the triggers' deletes
            reqs, _ = common.parse_debug_log(debug, start=start_log)
            result["requests"] = common.summarize_requests(reqs, n)
            # Within the pipeline bucket, what does not grow with the instances: the Functions host polling its
            # queues (time-driven), and tools migrate's own verification reads (a client's, not the pipeline's).
            piped = [r for r in result["requests"]["detail"] if r["bucket"] == common.PIPELINE]
            polling = sum(r["count"] for r in piped if r["op"] == "receive messages")
            verify = sum(r["count"] for r in piped if r["op"] == "query (select)")
            total = result["requests"]["buckets"].get(common.PIPELINE, {}).get("count", 0)
            result["split"] = {"volume": total - polling - verify, "polling": polling, "verification": verify,
                               "volume_per_instance": (total - polling - verify) / n}
            result["events"] = common.count_events(journal, n)
            result["studies"] = studies
        return result
    finally:
        if pacs is not None:
            pacs.stop()
        gw.stop()
        dh.close()
        az.stop()


def run_orthanc(files: list[Path], folder: Path, *, associations: int) -> dict[str, Any]:
    import requests

    from bench.orthanc import BenchOrthanc
    from tools.migration.dimse import Peer, SourceSession

    class Dest(BenchOrthanc):
        def config(self) -> dict[str, Any]:
            cfg = super().config()
            cfg.update({"DicomAet": "DEST"})
            return cfg

    dest = Dest(folder / "dest", http_threads=8)
    pacs = None
    try:
        dest.start()
        pacs = _legacy(folder / "legacy", files, {"dest": ["DEST", "127.0.0.1", dest.dicom_port],
                                                  "driver": ["DRIVER", "127.0.0.1", 1]})
        assert dest.process is not None
        groups = _groups(pacs)
        local = threading.local()
        sessions: list[SourceSession] = []
        lock = threading.Lock()

        def move(group: list[str]) -> None:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = SourceSession(Peer("LEGACY", "127.0.0.1", pacs.dicom_port), "DRIVER",
                                                        timeout=600)
                with lock:
                    sessions.append(session)
            got = session.move_many(group, "DEST")
            if not got.ok:
                raise RuntimeError(f"the C-MOVE to Orthanc failed: 0x{got.status:04X}")

        cpu0 = process_cpu(dest.process.pid)
        t0 = time.monotonic()
        with ThreadPoolExecutor(associations) as pool:
            list(pool.map(move, groups))
        elapsed = time.monotonic() - t0
        cpu = process_cpu(dest.process.pid) - cpu0
        for s in sessions:
            s.close()
        held = int(requests.get(f"{dest.url}/statistics", timeout=30).json()["CountInstances"])
        if held != len(files):
            raise RuntimeError(f"Orthanc (destination) holds {held} of {len(files)} instances")
        n = len(files)
        return {"instances": n, "seconds": elapsed, "inst_per_s": n / elapsed, "cpu_ms": cpu * 1000 / n}
    finally:
        if pacs is not None:
            pacs.stop()
        dest.stop()


def small_mix() -> tuple[list[Path], int]:
    from tools.corpus import load_manifest, write_small_mix

    out = WORK / "small-mix-40-s19"
    if not (out / ".complete").exists():
        shutil.rmtree(out, ignore_errors=True)
        write_small_mix(out, studies=40, seed=19)
        (out / ".complete").write_text("ok\n")
    entries = load_manifest(out)["files"]
    return [out / e["path"] for e in entries], len({e["study_uid"] for e in entries})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick corpus (~130 instances)")
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions (default 2)")
    parser.add_argument("--associations", type=int, default=2, help="C-MOVEs at once, both sides (default 2)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--no-instrumented", action="store_true", help="skip the request-counting runs")
    args = parser.parse_args(argv)
    from bench.orthanc import ensure_installed

    ensure_installed()
    size = QUICK if args.quick else FULL
    _, files, studies = build_corpus(size)
    print(f"corpus: {len(files)} instances in {studies} studies", file=sys.stderr)
    ours: list[dict[str, Any]] = []
    orth: list[dict[str, Any]] = []
    for rep in range(args.reps):
        for name, rows in (("ours", ours), ("orthanc", orth)):
            folder = WORK / f"migrate-{name}-{rep}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            if name == "ours":
                rows.append(run_ours(files, folder, associations=args.associations, instrumented=False,
                                     studies=studies, timeout=args.timeout))
            else:
                rows.append(run_orthanc(files, folder, associations=args.associations))
            shutil.rmtree(folder, ignore_errors=True)
            print(f"{name} run {rep + 1}: {rows[-1]['inst_per_s']:.1f} instances/s, {rows[-1]['cpu_ms']:.2f} ms CPU "
                  "per instance", file=sys.stderr)
    counted: dict[str, Any] = {}
    if not args.no_instrumented:
        small, small_studies = small_mix()
        for label, mix, n_studies in (("corpus", files, studies), ("small mix", small, small_studies)):
            folder = WORK / f"migrate-counted-{label.replace(' ', '-')}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            counted[label] = run_ours(mix, folder, associations=args.associations, instrumented=True,
                                      studies=n_studies, timeout=args.timeout)
            shutil.rmtree(folder, ignore_errors=True)
            req = counted[label]["requests"]["buckets"].get(common.PIPELINE, {})
            print(f"instrumented ({label}): {req.get('per_instance')} pipeline requests per instance", file=sys.stderr)
    result = {
        "timed_at": common.machine()["date"], "quick": args.quick, "reps": args.reps,
        "associations": args.associations,
        "corpus": {"instances": len(files), "studies": studies, **size},
        "ours": {k: spread([r[k] for r in ours]) for k in ("inst_per_s", "seconds", "cpu_ms")},
        "orthanc": {k: spread([r[k] for r in orth]) for k in ("inst_per_s", "seconds", "cpu_ms")},
        "ratio_throughput": spread([o["inst_per_s"] / p["inst_per_s"] for o, p in zip(ours, orth, strict=True)]),
        "ratio_cpu": spread([o["cpu_ms"] / p["cpu_ms"] for o, p in zip(ours, orth, strict=True)]),
        "runs": {"ours": ours, "orthanc": orth},
        "instrumented": counted,
    }
    path = common.save_result("migrate-quick" if args.quick else "migrate", result)
    ratio = statistics.median(r["inst_per_s"] for r in ours) / statistics.median(r["inst_per_s"] for r in orth)
    print(f"wrote {path}; ours / Orthanc instances/s: {ratio:.2f}", file=sys.stderr)
    from bench.report import render

    render()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
