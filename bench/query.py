"""QIDO-RS and WADO-RS at scale: ours (devhost on Azurite) vs Orthanc's DICOMweb plugin.

    .venv/bin/python -m bench.query            # 100,000 instances / 5,000 studies (Orthanc: within a time budget)
    .venv/bin/python -m bench.query --quick    # 5,000 instances / 250 studies

Data: ``--studies`` studies of 2 series (CT, MR) x ``--per-series`` tiny instances (8x8 pixels),
~2 studies per patient, study dates spread over 2020-2025. Both sides get the same instances:

* ours: index rows written through ``shared.index`` (instance rows one batch per study, series and
  study aggregates and lookup rows exactly as settle computes them, lookups batched per partition),
  not a full ingest (that would take hours here); plus one real 1,000-instance series ingested
  through the devhost (archive, sidecars, settle's series bundle) for WADO-RS metadata.
* Orthanc: every instance uploaded as a DICOM file (``POST /instances``, 8 clients), within
  ``--orthanc-budget`` seconds; if the budget runs out, Orthanc holds the first K studies and
  queries only ask for values present in both (the table says K).

Each QIDO class is asked ``--reps`` times with different values through ``dicomweb-client``
(``search_for_studies``), the two sides interleaved (each value asked of both back to back, who goes first
alternating) after one untimed request each; wall time per request (the client's garbage collector off
while a request runs, as ``timeit`` does), p50/p95 (every sample kept in the JSON). WADO-RS series
metadata of the 1,000-instance series: latency, and (after a restart of Azurite with ``--debug`` on the
same data) the storage requests one retrieval makes.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

from bench import common
from bench.common import WORK, percentile

UID_ROOT = "1.2.826.0.1.3680043.8.498.99"
SURNAMES = ("SMITH", "JONES", "GARCIA", "MILLER", "DAVIS", "LOPEZ", "WILSON", "MOORE", "TAYLOR", "ANDERSON",
            "THOMAS", "JACKSON", "WHITE", "HARRIS", "MARTIN", "THOMPSON", "YOUNG", "ALLEN", "KING", "WRIGHT")
WADO_INSTANCES = 1000


def study_attrs(i: int) -> dict[str, str]:
    patient = i // 2
    day = 1 + (i * 7) % 2190  # 6 years of dates
    date = time.strftime("%Y%m%d", time.gmtime(1577836800 + day * 86400))
    return {"study": f"{UID_ROOT}.{i + 1}", "patient_id": f"QP{patient:06d}",
            "patient_name": f"{SURNAMES[patient % len(SURNAMES)]}{patient // len(SURNAMES)}^GIVEN{patient % 7}",
            "accession": f"QA{i:07d}", "date": date}


def make_instance(i: int, se: int, k: int, modality: str, attrs: dict[str, str], series_uid: str | None = None
                  ) -> bytes:
    """A tiny valid CT/MR image (8x8, 16 bit) as Part 10 bytes."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    sop_class = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4"
    series_uid = series_uid or f"{attrs['study']}.{se + 1}"
    sop = f"{series_uid}.{k + 1}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = attrs["study"], series_uid
    ds.PatientName, ds.PatientID = attrs["patient_name"], attrs["patient_id"]
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.AccessionNumber, ds.StudyDate, ds.StudyTime = attrs["accession"], attrs["date"], "101010"
    ds.StudyID, ds.StudyDescription, ds.ReferringPhysicianName = "1", "BENCH QUERY", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, se + 1, k + 1
    ds.SeriesDescription = f"{modality} series"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.full((8, 8), k % 4096, dtype="<u2").tobytes()
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dataset_iter(studies: int, per_series: int) -> Any:
    """(study index, [(modality, bytes) ...]) per study."""
    for i in range(studies):
        attrs = study_attrs(i)
        yield i, attrs, [make_instance(i, se, k, mod, attrs) for se, mod in enumerate(("CT", "MR"))
                         for k in range(per_series)]


# --- ours: index rows through shared.index ------------------------------------------------------------------


def populate_ours(conn: str, studies: int, per_series: int, workers: int = 8) -> dict[str, Any]:
    """Index rows as ingest and settle write them, without running them for 100k files (hours here):
    instance rows (their DICOM JSON left out: study-level QIDO never reads it), then for each study
    what a settle run derives, with settle's own functions (aggregates, study lookup rows with the
    study's fields, UID lookups), lookups batched per partition."""
    from tqdm import tqdm

    from shared.config import Settings
    from shared.dicom.dicomjson import to_dicom_json
    from shared.dicom.header import read_header_bytes
    from shared.index import keys, tables
    from shared.index.records import InstanceRecord, from_dicom_json, to_entity
    from shared.index.store import utcnow
    from shared.ingest.settle import aggregate, study_lookups, uid_lookups
    from shared.ports import TableOp
    from shared.services import Services

    svc = Services.from_settings(Settings.from_env({"DicomStorage": conn}))
    svc.ensure_ready()
    store = svc.index
    lookups: list[tuple[str, str, dict[str, Any]]] = []
    lock = threading.Lock()
    now = utcnow()

    def write_study(rows: list[InstanceRecord]) -> None:
        study = rows[0].study_instance_uid
        ops = [TableOp("insert", to_entity(r, *keys.instance_keys(study, r.series_instance_uid, r.sop_instance_uid)))
               for r in rows]
        for i in range(0, len(ops), 100):
            svc.tables.transact(tables.INSTANCES, ops[i:i + 100])
        study_rec, by_series, series_recs = aggregate(rows, now)
        for se in series_recs:
            se.stable_at = now
        store.put_series(study, series_recs)
        store.put_study(study_rec, {"version": "bench"}, etag=None)
        rows_of_study = study_lookups(study_rec, series_recs)
        for uid, members in by_series.items():
            rows_of_study += uid_lookups(study, uid, members)
        with lock:
            lookups.extend(rows_of_study)

    start = time.monotonic()
    counter = svc.requests
    assert counter is not None  # Azure services count their requests
    before = counter.total()
    bar = tqdm(total=studies, desc="index (ours)", unit="study", leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for _i, _attrs, blobs in dataset_iter(studies, per_series):
            rows = []
            for data in blobs:
                h = read_header_bytes(data)
                doc = to_dicom_json(h, h.study_uid or "", h.series_uid or "", h.sop_uid or "")
                rows.append(from_dicom_json(doc, transfer_syntax_uid=h.transfer_syntax_uid, size_bytes=h.size_bytes,
                                            digest=h.digest, source="bench", ingested_at=now))
            futures.append(pool.submit(write_study, rows))
            if len(futures) > 4 * workers:
                futures.pop(0).result()
                bar.update(1)
        for f in futures:
            f.result()
            bar.update(1)
    bar.close()
    # Lookup rows of all studies, batched per partition (what settle writes study by study).
    by_pk: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for row in lookups:
        by_pk.setdefault(row[0], []).append(row)
    groups = list(by_pk.values())
    bar = tqdm(total=len(groups), desc="lookups (ours)", unit="pk", leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(store.put_lookups, groups):
            bar.update(1)
    bar.close()
    return {"seconds": time.monotonic() - start, "requests": counter.total() - before,
            "lookup_rows": len(lookups)}


# --- Orthanc ---------------------------------------------------------------------------------------------


def populate_orthanc(orthanc: Any, studies: int, per_series: int, budget: float, workers: int = 8) -> dict[str, Any]:
    import requests
    from tqdm import tqdm

    local = threading.local()
    errors: list[str] = []

    def post(data: bytes) -> None:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        r = s.post(f"{orthanc.url}/instances", data=data, headers={"Content-Type": "application/dicom"},
                   timeout=120)
        if r.status_code != 200:
            errors.append(f"HTTP {r.status_code}")

    start = time.monotonic()
    done = 0
    bar = tqdm(total=studies, desc="upload (orthanc)", unit="study", leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _i, _attrs, blobs in dataset_iter(studies, per_series):
            if time.monotonic() - start > budget:
                break
            list(pool.map(post, blobs))
            done += 1
            bar.update(1)
    bar.close()
    if errors:
        raise RuntimeError(f"Orthanc refused {len(errors)} instance(s), e.g. {errors[0]}")
    return {"seconds": time.monotonic() - start, "studies": done, "instances": done * 2 * per_series}


# --- the 1,000-instance series -------------------------------------------------------------------------------


def wado_series(folder: Path, count: int) -> tuple[dict[str, str], str, list[Path]]:
    attrs = {"study": f"{UID_ROOT}.999999", "patient_id": "QPWADO", "patient_name": "WADO^SERIES",
             "accession": "QAWADO", "date": "20250615"}
    series_uid = f"{attrs['study']}.1"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for k in range(count):
        p = folder / f"IM{k + 1:04d}.dcm"
        p.write_bytes(make_instance(999999, 0, k, "CT", attrs, series_uid=series_uid))
        paths.append(p)
    return attrs, series_uid, paths


def timed(fn: Any) -> tuple[float, Any]:
    """Wall time of one request in ms, with this (client) process's garbage collector off meanwhile, as
    ``timeit`` does: the populate step leaves ~10^5 objects here, and a full collection of them (tens of ms)
    landing inside a request would be charged to whichever server was being asked."""
    gc.disable()
    try:
        t = time.perf_counter()
        out = fn()
        return (time.perf_counter() - t) * 1000, out
    finally:
        gc.enable()


def query_battery(studies: int, rng: random.Random, reps: int) -> list[tuple[str, list[dict[str, Any]], int | None]]:
    """(class name, filters per repetition, limit)."""
    picks = [study_attrs(rng.randrange(studies)) for _ in range(reps)]
    out: list[tuple[str, list[dict[str, Any]], int | None]] = [
        ("StudyInstanceUID", [{"StudyInstanceUID": a["study"]} for a in picks], None),
        ("PatientID", [{"PatientID": a["patient_id"]} for a in picks], None),
        ("AccessionNumber", [{"AccessionNumber": a["accession"]} for a in picks], None),
    ]
    ranges = []
    mod_dates = []
    for a in picks:
        y, m = a["date"][:4], a["date"][4:6]
        ranges.append({"StudyDate": f"{y}{m}01-{y}{m}28"})
        mod_dates.append({"ModalitiesInStudy": "CT", "StudyDate": f"{y}{m}01-{y}{m}07"})
    out.append(("StudyDate range (a month)", ranges, None))
    out.append(("ModalitiesInStudy + StudyDate (a week)", mod_dates, None))
    out.append(("PatientName wildcard (SURNAMEnn*)", [{"PatientName": a["patient_name"].split("^")[0] + "*"}
                                                      for a in picks], None))
    out.append(("no filter, limit=100", [{} for _ in picks], 100))
    return out


def run(studies: int, per_series: int, reps: int, budget: float, workers: int,
        wado_instances: int = WADO_INSTANCES) -> dict[str, Any]:
    from dicomweb_client.api import DICOMwebClient

    from bench.orthanc import BenchOrthanc, upload_many
    from devhost.testing import DevHostProcess
    from tools.upload import upload_and_wait

    run_dir = WORK / "run-query"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    az = common.start_azurite(run_dir / "azurite")
    dh = DevHostProcess(azurite=az, env={"DICOMFLOW_STABLE_AGE_SECONDS": "5", "DICOMFLOW_SETTLE_DELAY_SECONDS": "5"},
                        state_dir=run_dir / "devhost", timeout=90, **common.REAL_APP)
    orthanc = BenchOrthanc(run_dir / "orthanc", http_threads=16)
    result: dict[str, Any] = {"studies": studies, "instances": studies * 2 * per_series, "reps": reps}
    try:
        dh.start()
        orthanc.start()
        # The 1,000-instance series, ingested for real on our side.
        wattrs, wseries, wpaths = wado_series(WORK / "wado-series", wado_instances)
        outcomes = upload_and_wait([WORK / "wado-series"], connection_string=az.connection_string,
                                   base_url=dh.base_url, key=dh.token("writer", minutes=120), workers=workers,
                                   timeout=900, progress=True)
        bad = [o for o in outcomes if o.state not in ("archived", "duplicate", "updated")]
        if bad:
            raise RuntimeError(f"{len(bad)} WADO series instance(s) not archived, e.g. {bad[0].state}")
        upload_many(orthanc, wpaths, workers=workers, desc="wado series (orthanc)")
        ours_client = DICOMwebClient(url=f"{dh.base_url}/dicomweb", headers=dh.bearer("reader", minutes=120))
        orth_client = DICOMwebClient(url=orthanc.dicomweb_url)

        def bundle_ready() -> bool:
            try:
                return len(ours_client.retrieve_series_metadata(wattrs["study"], wseries)) == wado_instances
            except Exception:
                return False

        common.wait_until(bundle_ready, 300, 1.0, "the series metadata bundle")

        result["ours_populate"] = populate_ours(az.connection_string, studies, per_series, workers)
        print(f"ours: {result['ours_populate']}", file=sys.stderr)
        result["orthanc_populate"] = populate_orthanc(orthanc, studies, per_series, budget, workers)
        print(f"orthanc: {result['orthanc_populate']}", file=sys.stderr)
        both = result["orthanc_populate"]["studies"]
        gc.collect()
        gc.freeze()  # what setup left in this process is not collected again during the timings

        rng = random.Random(7)
        queries = []
        clients = {"ours": ours_client, "orthanc": orth_client}
        for name, filters, limit in query_battery(max(1, both), rng, reps):
            row: dict[str, Any] = {"name": name}
            samples: dict[str, list[float]] = {"ours": [], "orthanc": []}
            counts: dict[str, list[int]] = {"ours": [], "orthanc": []}
            failed: dict[str, str] = {}
            # Interleaved: each filter is asked of both sides back to back (who goes first alternates), so a
            # moment of load on the shared machine falls on both; one untimed request per side first.
            for i, f in enumerate([filters[0], *filters]):
                for side in (("ours", "orthanc") if i % 2 else ("orthanc", "ours")):
                    if side in failed:
                        continue
                    try:
                        ms, res = timed(lambda f=f, c=clients[side], lim=limit: c.search_for_studies(
                            search_filters=f, limit=lim))
                    except Exception as exc:
                        failed[side] = f"{type(exc).__name__}: {str(exc)[:80]}"
                        continue
                    if i:
                        samples[side].append(ms)
                        counts[side].append(len(res))
            for side in clients:
                t, c = samples[side], counts[side]
                row[side] = ({"p50": percentile(t, 50), "p95": percentile(t, 95), "max": max(t),
                              "results": f"{min(c)}-{max(c)}", "samples_ms": [round(x, 2) for x in t]}
                             if t and side not in failed else {"failed": failed.get(side, "no answer")})
            queries.append(row)
            brief = {side: {k: v for k, v in row[side].items() if k != "samples_ms"} for side in clients}
            print(f"{name}: ours {brief['ours']} orthanc {brief['orthanc']}", file=sys.stderr)
        result["queries"] = queries

        wado: dict[str, Any] = {"instances": wado_instances}
        for side, client in (("ours", ours_client), ("orthanc", orth_client)):
            times = []
            n = 0
            for _ in range(max(5, reps // 4)):
                ms, res = timed(lambda c=client: c.retrieve_series_metadata(wattrs["study"], wseries))
                times.append(ms)
                n = len(res)
            wado[side] = {"p50": percentile(times, 50), "p95": percentile(times, 95), "items": n}
        # Count the storage requests of one retrieval: Azurite again, same data, with --debug.
        dh.stop()
        az.stop()
        debug_log = run_dir / "azurite-debug.log"
        az2 = common.start_azurite(run_dir / "azurite", debug_log=debug_log)
        try:
            dh.azurite = az2
            dh.start()
            time.sleep(2.0)
            offset = debug_log.stat().st_size
            calls = 5
            for _ in range(calls):
                ours_client.retrieve_series_metadata(wattrs["study"], wseries)
            time.sleep(0.5)
            reqs, _ = common.parse_debug_log(debug_log, start=offset)
            served = [r for r in reqs if common.classify(r) == common.PIPELINE
                      and not (r.service == "queue" and r.op == "receive messages")]
            blob_reads = [r for r in served if r.service == "blob" and r.method == "GET"]
            wado["ours"]["blob_reads"] = round(len(blob_reads) / calls, 2)
            wado["ours"]["storage_requests"] = round(len(served) / calls, 2)
            wado["ours"]["requests_by_kind"] = common.summarize_requests(served, calls)["detail"]
        finally:
            dh.stop()
            az2.stop()
        result["wado_series_metadata"] = wado
        result["note"] = (
            f"Ours: {studies} studies / {studies * 2 * per_series} instances in the index. Orthanc: "
            f"{both} studies / {both * 2 * per_series} instances uploaded within the {budget:.0f} s budget "
            f"({result['orthanc_populate']['seconds']:.0f} s)"
            + (" - fewer than ours, so queries ask only for values present in both." if both < studies else ".")
            + f" {reps} requests per class and side with different values, through dicomweb-client, the sides "
            "interleaved value by value after one untimed request each. Orthanc 1.10's DICOMweb "
            "does not percent-decode query values, so the wildcard class matches nothing there (a peer bug, "
            "docs/architecture.md, facts checked).")
        return result
    finally:
        dh.close()
        orthanc.stop()
        az.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="250 studies / 5,000 instances")
    parser.add_argument("--studies", type=int, default=None, help="studies (default 5,000; --quick 250)")
    parser.add_argument("--per-series", type=int, default=10, help="instances per series, 2 series a study")
    parser.add_argument("--reps", type=int, default=100, help="requests per query class and side")
    parser.add_argument("--orthanc-budget", type=float, default=900, help="seconds for Orthanc's upload")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--wado-instances", type=int, default=WADO_INSTANCES, help="size of the WADO-RS series")
    args = parser.parse_args(argv)
    from bench.orthanc import ensure_installed

    ensure_installed()
    studies = args.studies or (250 if args.quick else 5000)
    result = run(studies, args.per_series, args.reps, args.orthanc_budget, args.workers, args.wado_instances)
    path = common.save_result("query-quick" if args.quick else "query", {"quick": args.quick, **result})
    print(f"wrote {path}", file=sys.stderr)
    from bench.report import render

    render()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
