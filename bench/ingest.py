"""Ingest throughput and cost per instance: our pipeline on the devhost vs Orthanc's REST ingest.

    .venv/bin/python -m bench.ingest            # >= 2,000 instances, 3 timed repetitions (about 12 min)
    .venv/bin/python -m bench.ingest --quick    # ~130 instances, 5 repetitions (about 3 min)

One synthetic corpus (``tools.corpus``: CT and MR series in several transfer syntaxes, an SR, a DX,
plus extra multi-frame tomosynthesis instances), cached under ``$DICOMFLOW_BENCH_DIR``:

1. Header path CPU (``time.process_time`` over every file, bytes already in memory): what ingest
   does per file before it writes (``read_header_bytes`` + ``validate`` + ``to_dicom_json`` +
   ``from_dicom_json`` with ``ContentDigest`` + ``pack_meta``) vs a bare
   ``pydicom.dcmread(stop_before_pixels=True)``.
2. Timed runs, each on a fresh Azurite + devhost and a fresh Orthanc: upload every file with
   ``--workers`` concurrent clients and time until every outcome is recorded (the ingest function
   logs one line per blob once its instance row is written; Orthanc answers each POST after storing
   and indexing). Watching the log puts no load on the stack; after the clock stops, every outcome
   is confirmed where a user asks for it, ``GET /api/ingest/status?blob=`` (reader token). CPU of
   the devhost process and of Orthanc (psutil, before/after), bytes read from storage per instance
   (the ingest's own count, from its log line).
3. One instrumented run (Azurite ``--debug``: every request it serves is logged): storage requests
   per instance by kind, and events published/delivered from the devhost fabric's journal, waiting
   until every study is stable with the production settle timings (settle delay 5 s, stable age
   60 s), so settle, inference and routing are counted. The status checks come after the count.

Results go to ``bench/results/ingest.json`` and the README table (``python -m bench`` renders it).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from bench import common
from bench.common import WORK, process_cpu, spread

QUICK = {"patients": 2, "slices": 40, "extra_mf": 2}
FULL = {"patients": 12, "slices": 112, "extra_mf": 8}
#: Settle timings of every run: the production defaults (shared/config.py).
PROD_SETTLE = {"DICOMFLOW_STABLE_AGE_SECONDS": "60", "DICOMFLOW_SETTLE_DELAY_SECONDS": "5"}
_READ = re.compile(r"Ingest \S+: (archived|updated|duplicate|quarantined) sop=\S+ "
                   r"\(read (\d+) bytes in (\d+) requests\)")
#: The ingest function's one line per blob (shared/ingest/service.py): the outcome is recorded.
_OUTCOME = re.compile(r"Ingest (\S+): (archived|updated|duplicate|quarantined)\b")


# --- the corpus -------------------------------------------------------------------------------------------


def build_corpus(size: dict[str, int]) -> tuple[Path, list[Path], int]:
    """The corpus folder, its DICOM files and the number of studies (generated once per size)."""
    from tools.corpus import UidFactory, load_manifest, make_multiframe_mg, make_patients, make_study, write_corpus

    out = WORK / f"corpus-p{size['patients']}-s{size['slices']}-mf{size['extra_mf']}"
    done = out / ".complete"
    if not done.exists():
        shutil.rmtree(out, ignore_errors=True)
        write_corpus(out, patients=size["patients"], slices=size["slices"], broken=False, progress=True)
        uids = UidFactory(0)
        patients = make_patients(size["patients"])
        for k in range(size["extra_mf"]):
            p = patients[k % len(patients)]
            study = make_study(p, uids, f"mf{k}", description="DBT BENCH", day=20 + k)
            make_multiframe_mg(out / "good" / "mf" / f"DBT{k:03d}.dcm", study, uids, frames=8, rows=256, cols=208,
                               series_number=10 + k)
        done.write_text("ok\n")
    files = sorted(p for p in (out / "good").rglob("*.dcm"))
    manifest = load_manifest(out)
    studies = {f["study_uid"] for f in manifest["files"]} | {f"mf{k}" for k in range(size["extra_mf"])}
    return out, files, len(studies)


# --- 1. header path CPU -------------------------------------------------------------------------------------


def header_cpu(files: list[Path], reps: int) -> dict[str, Any]:
    import hashlib
    import warnings

    import pydicom
    from tqdm import tqdm

    from shared.dicom.dicomjson import to_dicom_json
    from shared.dicom.header import read_header_bytes
    from shared.dicom.validate import validate
    from shared.index.records import from_dicom_json, pack_meta
    from shared.ingest.service import ContentDigest

    blobs = [p.read_bytes() for p in files]
    # The Content-MD5 each inbox blob arrives with (Azure Storage computes it for every single-request
    # upload, and the first ranged read returns it): ingest's duplicate check uses it, not a hash of its own.
    md5s = [hashlib.md5(data).digest() for data in blobs]

    def ours() -> None:
        for data, md5 in zip(blobs, md5s, strict=True):
            h = read_header_bytes(data)
            s, se, i, _ = validate(h)
            doc = to_dicom_json(h, s, se, i)
            from_dicom_json(doc, transfer_syntax_uid=h.transfer_syntax_uid, size_bytes=h.size_bytes,
                            digest=ContentDigest(h, md5).value)
            pack_meta(doc)

    def bare() -> None:
        for data in blobs:
            pydicom.dcmread(BytesIO(data), stop_before_pixels=True)

    def parse_only() -> None:
        for data in blobs:
            read_header_bytes(data)

    def dicom_json_only() -> None:
        for data in blobs:  # a fresh parse each time (the JSON converts what it must); less read_header
            to_dicom_json(read_header_bytes(data), "1.2", "1.3", "1.4")

    def record_and_pack() -> None:
        for doc in docs:
            from_dicom_json(doc, transfer_syntax_uid="1.2.840.10008.1.2.1", size_bytes=1)
            pack_meta(doc)

    docs = [to_dicom_json(read_header_bytes(d), "1.2", "1.3", "1.4") for d in blobs]
    out: dict[str, list[float]] = {"ours_ms": [], "bare_ms": [], "read_header_ms": [], "to_dicom_json_ms": [],
                                   "record_pack_ms": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in tqdm(range(reps), desc="header cpu", leave=False):
            for key, fn in (("ours_ms", ours), ("bare_ms", bare), ("read_header_ms", parse_only),
                            ("to_dicom_json_ms", dicom_json_only), ("record_pack_ms", record_and_pack)):
                t = time.process_time()
                fn()
                out[key].append((time.process_time() - t) * 1000 / len(blobs))
    # to_dicom_json alone: what the fresh parse + JSON cost beyond the parse (same repetition).
    out["to_dicom_json_ms"] = [j - r for j, r in zip(out["to_dicom_json_ms"], out["read_header_ms"], strict=True)]
    ratios = [o / b for o, b in zip(out["ours_ms"], out["bare_ms"], strict=True)]
    return {"instances": len(blobs), **{k: spread(v) for k, v in out.items()}, "ratio": spread(ratios)}


# --- 2./3. our pipeline on the devhost ---------------------------------------------------------------------------


def _logged_outcomes(log_text: str) -> dict[str, str]:
    """Blob log name (``layout.log_name``: logs never carry an uploader's blob name) -> outcome, from the ingest
    function's log lines."""
    return {m.group(1): m.group(2) for m in _OUTCOME.finditer(log_text)}


def _confirm_outcomes(dh: Any, names: list[str]) -> dict[str, int]:
    """Every outcome as ``GET /api/ingest/status?blob=`` reports it (reader token), counted by state;
    a blob without a final state there fails the run."""
    from collections import Counter

    from tools.upload import wait_for_outcomes

    statuses = wait_for_outcomes(dh.base_url, names, key=dh.token("reader", minutes=60), timeout=300,
                                 concurrency=8, progress=False)
    states = Counter(str(statuses.get(n, {}).get("state", "no answer")) for n in names)
    bad = {s: c for s, c in states.items() if s not in ("archived", "updated", "duplicate")}
    if bad:
        raise RuntimeError(f"ingest status does not confirm every outcome: {dict(states)}")
    return dict(states)


def _queue_depth(conn: str) -> int:
    """Messages in the settle queue, visible or not (one request, counted as bench observation)."""
    from azure.storage.queue import QueueClient

    from shared.storage.layout import SETTLE_QUEUE

    with QueueClient.from_connection_string(conn, SETTLE_QUEUE) as q:
        return int(q.get_queue_properties().approximate_message_count or 0)


def _bytes_read(log_text: str) -> tuple[int, int, int]:
    """(instances, bytes, requests) from the ingest log lines of the devhost."""
    n = b = r = 0
    for m in _READ.finditer(log_text):
        n += 1
        b += int(m.group(2))
        r += int(m.group(3))
    return n, b, r


def run_ours(corpus: Path, files: list[Path], studies: int, *, workers: int, tag: str, instrumented: bool,
             timeout: float) -> dict[str, Any]:
    from tqdm import tqdm

    from devhost.testing import DevHostProcess
    from shared.storage import layout
    from shared.storage.layout import INBOX
    from tools.upload import plan_uploads, upload_all

    run_dir = WORK / f"run-ours-{tag}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    debug_log = run_dir / "azurite-debug.log" if instrumented else None
    az = common.start_azurite(run_dir / "azurite", debug_log=debug_log, in_memory=True)
    dh = DevHostProcess(azurite=az, env=PROD_SETTLE, state_dir=run_dir / "devhost", timeout=90, **common.REAL_APP)
    try:
        dh.start()
        assert dh.pid is not None
        items = plan_uploads([corpus / "good"])
        n = len(items)
        time.sleep(1.0)  # let the watcher's first listing settle before the clock starts
        cpu0, az0 = process_cpu(dh.pid), process_cpu(az.process.pid if az.process else 0)
        t0 = time.monotonic()
        outcomes = upload_all(items, az.connection_string, INBOX, workers=workers, progress=True)
        failed = [o for o in outcomes if not o.uploaded]
        if failed:
            raise RuntimeError(f"{len(failed)} upload(s) failed, e.g. {failed[0].error}")
        uploaded = time.monotonic() - t0
        journal = dh.state_dir / "events.jsonl"
        names = [i.blob_name for i in items]
        logged_as = {layout.log_name(name) for name in names}
        bar = tqdm(total=n, desc=f"ingest {tag}", unit="inst", leave=False)
        deadline = time.monotonic() + timeout
        done = 0
        while done < n:
            done = len(_logged_outcomes(dh.logs()).keys() & logged_as)
            bar.update(done - bar.n)
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {done}/{n} outcomes recorded within {timeout:.0f} s")
            if dh.process is None or dh.process.poll() is not None:
                raise RuntimeError(f"the devhost exited during the run (after {done}/{n} instances): "
                                   f"{dh.logs()[-500:]}")
            time.sleep(0.25)
        elapsed = time.monotonic() - t0
        bar.close()
        cpu1, az1 = process_cpu(dh.pid), process_cpu(az.process.pid if az.process else 0)
        result: dict[str, Any] = {
            "instances": n, "seconds": elapsed, "upload_seconds": uploaded, "inst_per_s": n / elapsed,
            "host_cpu_ms": (cpu1 - cpu0) * 1000 / n, "azurite_cpu_ms": (az1 - az0) * 1000 / n,
        }
        got, nbytes, nreq = _bytes_read(dh.logs())
        result.update({"bytes_read_per_instance": nbytes / max(1, got), "reads_per_instance": nreq / max(1, got),
                       "mean_file_bytes": sum(i.size for i in items) / n})
        if instrumented:
            # Until every study is stable and the fabric is quiet: settle and routing are counted too.
            def stable() -> bool:
                recs = common.journal_events(journal)
                return sum(1 for r in recs if (r.get("event") or {}).get("type") == "Dicom.StudyStable") >= studies

            common.wait_until(stable, timeout + 180, 1.0, "every study stable")
            # Every settle message handled (a run that finds nothing new costs requests too).
            common.wait_until(lambda: _queue_depth(az.connection_string) == 0, timeout, 2.0, "settle queue empty")
            size = -1
            while journal.stat().st_size != size:
                size = journal.stat().st_size
                time.sleep(3.0)
            cpu2 = process_cpu(dh.pid)
            result["host_cpu_ms_with_settle"] = (cpu2 - cpu0) * 1000 / n
            assert debug_log is not None
            reqs, _ = common.parse_debug_log(debug_log)
            result["requests"] = common.summarize_requests(reqs, n, uploads=n)
            result["events"] = common.count_events(journal, n)
            result["studies"] = studies
        result["confirmed"] = _confirm_outcomes(dh, names)
        return result
    finally:
        dh.close()
        az.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


# --- 2. Orthanc -----------------------------------------------------------------------------------------------


def run_orthanc(files: list[Path], *, workers: int, tag: str) -> dict[str, Any]:
    from bench.orthanc import BenchOrthanc, upload_many

    run_dir = WORK / f"run-orthanc-{tag}"
    shutil.rmtree(run_dir, ignore_errors=True)
    orthanc = BenchOrthanc(run_dir, http_threads=max(8, workers))
    try:
        orthanc.start()
        assert orthanc.process is not None
        pid = orthanc.process.pid
        cpu0 = process_cpu(pid)
        elapsed, errors = upload_many(orthanc, files, workers=workers, desc=f"orthanc {tag}")
        cpu1 = process_cpu(pid)
        if errors:
            raise RuntimeError(f"Orthanc refused {len(errors)} file(s), e.g. {errors[0]}")
        n = len(files)
        return {"instances": n, "seconds": elapsed, "inst_per_s": n / elapsed, "cpu_ms": (cpu1 - cpu0) * 1000 / n}
    finally:
        orthanc.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


# --- the whole benchmark ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus (~130 instances), for development")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 3, --quick 5)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent upload clients for both (default 8)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for one run's outcomes")
    parser.add_argument("--no-instrumented", action="store_true", help="skip the request-counting run")
    parser.add_argument("--instrumented-only", action="store_true",
                        help="only the request-counting run; keep the timed results of the last run")
    args = parser.parse_args(argv)
    from bench.orthanc import ensure_installed

    ensure_installed()
    size = QUICK if args.quick else FULL
    reps = args.reps or (5 if args.quick else 3)
    corpus, files, studies = build_corpus(size)
    print(f"corpus: {len(files)} instances in {studies} studies ({corpus})", file=sys.stderr)

    if args.instrumented_only:
        name = "ingest-quick" if args.quick else "ingest"
        previous = common.load_result(name)
        if previous is None:
            parser.error(f"--instrumented-only needs an earlier bench/results/{name}.json")
        previous.pop("machine", None)
        previous["instrumented"] = run_ours(corpus, files, studies, workers=args.workers, tag="counted",
                                            instrumented=True, timeout=args.timeout)
        previous["instrumented"]["commit"] = common.git_commit()
        previous["instrumented"]["counted_at"] = common.machine()["date"]
        print(f"wrote {common.save_result(name, previous)}", file=sys.stderr)
        from bench.report import render

        render()
        return 0

    header = header_cpu(files, 5)
    print(f"header path: ours {header['ours_ms']['median']:.2f} ms, bare dcmread "
          f"{header['bare_ms']['median']:.2f} ms per instance", file=sys.stderr)

    ours, orth = [], []
    for rep in range(reps):
        ours.append(run_ours(corpus, files, studies, workers=args.workers, tag=f"t{rep}", instrumented=False,
                             timeout=args.timeout))
        orth.append(run_orthanc(files, workers=args.workers, tag=f"t{rep}"))
        print(f"rep {rep + 1}/{reps}: ours {ours[-1]['inst_per_s']:.1f} inst/s, "
              f"orthanc {orth[-1]['inst_per_s']:.1f} inst/s", file=sys.stderr)
    counted = None
    if not args.no_instrumented:
        counted = run_ours(corpus, files, studies, workers=args.workers, tag="counted", instrumented=True,
                           timeout=args.timeout)
        req = counted["requests"]["buckets"].get(common.PIPELINE, {})
        print(f"instrumented: {req.get('per_instance')} pipeline storage requests per instance, "
              f"{counted['events']['publish_calls_per_instance']} event publish calls per instance", file=sys.stderr)

    def col(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
        return spread([r[key] for r in rows])

    result = {
        "timed_at": common.machine()["date"],
        "quick": args.quick,
        "workers": args.workers,
        "reps": reps,
        "corpus": {"instances": len(files), "studies": studies, "mean_file_bytes": statistics.mean(
            p.stat().st_size for p in files), **size},
        "header_cpu": header,
        "ours": {k: col(ours, k) for k in ("inst_per_s", "seconds", "host_cpu_ms", "azurite_cpu_ms",
                                           "bytes_read_per_instance", "reads_per_instance")},
        "orthanc": {k: col(orth, k) for k in ("inst_per_s", "seconds", "cpu_ms")},
        "ratio_throughput": spread([o["inst_per_s"] / p["inst_per_s"] for o, p in zip(ours, orth, strict=True)]),
        "ratio_cpu": spread([o["host_cpu_ms"] / p["cpu_ms"] for o, p in zip(ours, orth, strict=True)]),
        "runs": {"ours": ours, "orthanc": orth},
        "instrumented": counted,
    }
    path = common.save_result("ingest-quick" if args.quick else "ingest", result)
    print(f"wrote {path}", file=sys.stderr)
    from bench.report import render

    render()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
