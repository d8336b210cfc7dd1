"""Retrieval: whole-slide frames (stored and transcoded), rendered JPEG, series transcoding; ours vs Orthanc.

    .venv/bin/python -m bench.retrieve            # a ~400 MiB slide (16,384 tiles), a 500-slice CT series
    .venv/bin/python -m bench.retrieve --quick    # a ~25 MiB slide (1,024 tiles), 40 slices

Data, the same files on both sides (ours: uploaded to the inbox of a devhost on Azurite and ingested; Orthanc:
``POST /instances``):

* a VL Whole Slide Microscopy instance, TILED_FULL, 256x256 JPEG baseline tiles, an empty Basic Offset Table
  (as many scanners write it; ``--tiles``);
* a CT series of 512x512 16-bit slices stored JPEG-LS lossless (``--slices``).

Measured through each server's DICOMweb, one client, the two sides interleaved request by request:

* stored frames: random tiles, ``Accept: multipart/related; type="image/jpeg"``, checked byte-exact against the
  file's own tiles;
* transcoded frames: random tiles as ``application/octet-stream`` in Explicit VR Little Endian (decoded pixels,
  checked equal to pydicom's decoding), and as JPEG-LS lossless, read twice (ours keeps compressed results in
  ``dicom-cache``: the second read is a cache read);
* rendered JPEG: a CT slice (``/instances/{i}/rendered``) in a new window each time (a viewer dragging the level),
  CT slices rendered once each (a stack scrolled, ``--reps`` of them, as many as the series has beyond two) and
  slide tiles (``/frames/{n}/rendered``);
* a whole CT series as Explicit VR Little Endian (``/series/{se}`` with ``transfer-syntax=1.2.840.10008.1.2.1``).

Wall time per request (p50/p95) and the server's CPU per request (process CPU time over the batch: ours the
devhost process that runs the app plus Azurite, Orthanc its process). Results: ``bench/results/retrieve.json``.
"""

from __future__ import annotations

import argparse
import copy
import io
import random
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from bench.common import WORK, percentile

ELE = "1.2.840.10008.1.2.1"
JLS = "1.2.840.10008.1.2.4.80"
# The stored syntax named: a bare type="image/jpeg" means JPEG lossless (PS3.18 Table 8.7.3-2), which Orthanc
# then transcodes to.
STORED_ACCEPT = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'
PLAIN_ACCEPT = f'multipart/related; type="application/octet-stream"; transfer-syntax={ELE}'
JLS_ACCEPT = f'multipart/related; type="image/jls"; transfer-syntax={JLS}'
SERIES_ACCEPT = f'multipart/related; type="application/dicom"; transfer-syntax={ELE}'


# --- data ------------------------------------------------------------------------------------------------
def make_slide(path: Path, tiles: int, tile: int = 256) -> dict[str, Any]:
    """The slide, written streamed: pydicom writes the header, then the encapsulated tiles are appended (64
    distinct JPEG tiles of tissue-like noise, about 26 KiB each, cycled: a 16,384-tile slide is about 420 MiB and takes
    seconds to make)."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    side = int(tiles ** 0.5)
    rng = np.random.default_rng(5)
    jpegs = []
    for _ in range(64):
        base = np.array([233, 150, 190], np.float32) * (0.75 + 0.25 * rng.random((tile // 4, tile // 4, 1)))
        img = np.kron(base, np.ones((4, 4, 1), np.float32)) + rng.normal(0, 10, (tile, tile, 3))
        out = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=88, subsampling=1)
        jpegs.append(out.getvalue())
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (generate_uid() for _ in range(3))
    ds.PatientID, ds.PatientName, ds.Modality = "BENCH-WSI", "Bench^Slide", "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.Rows = ds.Columns = tile
    ds.NumberOfFrames = tiles
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = side * tile
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.50")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    order = [i % len(jpegs) for i in range(tiles)]
    with path.open("r+b") as f:
        f.seek(0, io.SEEK_END)
        f.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x00\x00\x00\x00")
        for k in order:
            data = jpegs[k] + (b"\x00" if len(jpegs[k]) % 2 else b"")
            f.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(data)) + data)
        f.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    return {"path": path, "study": str(ds.StudyInstanceUID), "series": str(ds.SeriesInstanceUID),
            "sop": str(ds.SOPInstanceUID), "tiles": [jpegs[k] for k in order], "size": path.stat().st_size}


def make_ct(folder: Path, slices: int) -> dict[str, Any]:
    """A CT series (512x512, 16-bit, a phantom with noise) stored JPEG-LS lossless."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) ** 2 / 200**2 + (yy - 256) ** 2 / 150**2) < 1
    sops = []
    for n in range(slices):
        ds = copy.deepcopy(template)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.PatientID, ds.PatientName = "BENCH-CT", "Bench^CT"
        ds.InstanceNumber = n + 1
        ds.Rows = ds.Columns = 512
        ds.WindowCenter, ds.WindowWidth = 40, 400
        hu = np.where(body, 40, -1000) + rng.normal(0, 12, (512, 512))
        ds.PixelData = (hu - float(ds.RescaleIntercept)).astype(np.int16).tobytes()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.compress(JLS)
        ds.save_as(folder / f"CT{n + 1:04d}.dcm", enforce_file_format=True)
        sops.append(str(ds.SOPInstanceUID))
    return {"folder": folder, "study": study, "series": series, "sops": sops}


# --- measuring -------------------------------------------------------------------------------------------
def _cpu(pids: list[int]) -> float:
    return sum(common.process_cpu(p) for p in pids)


def batch(name: str, sides: dict[str, Any], calls: list[Any], pids: dict[str, list[int]],
          cap: dict[str, int] | None = None) -> dict[str, Any]:
    """Each call of ``calls`` made against every side in turn (who goes first alternates); wall ms per request
    and server CPU ms per request per side. ``cap``: at most that many calls for a side (Orthanc needs seconds
    to minutes for some requests on a large slide; its first ones are the sample)."""
    walls: dict[str, list[float]] = {s: [] for s in sides}
    cpu: dict[str, float] = {s: 0.0 for s in sides}
    errors: dict[str, str] = {}
    for i, call in enumerate(calls):
        for side in (list(sides) if i % 2 else list(reversed(sides))):
            if side in errors or (cap and side in cap and len(walls[side]) >= cap[side]):
                continue
            before = _cpu(pids[side])
            t = time.perf_counter()
            try:
                call(side, sides[side])
            except Exception as exc:  # a peer that cannot do this is recorded; the other side goes on
                errors[side] = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            walls[side].append((time.perf_counter() - t) * 1000)
            cpu[side] += _cpu(pids[side]) - before
    out: dict[str, Any] = {"name": name, "requests": len(calls)}
    for side in sides:
        w = walls[side]
        out[side] = ({"error": errors[side]} if side in errors else {"skipped": True} if not w else
                     {"p50_ms": percentile(w, 50), "p95_ms": percentile(w, 95), "cpu_ms": cpu[side] * 1000 / len(w),
                      "samples": w})
    print(f"{name}: " + ", ".join(f"{s} {out[s].get('p50_ms', out[s].get('error'))}" for s in sides),
          file=sys.stderr)
    return out


def _parts(r: Any) -> list[bytes]:
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    return [p.content for p in MultipartDecoder.from_response(r).parts]


def run(tiles: int, slices: int, frames: int, reps: int, transcoded: int, orthanc_cap: int) -> dict[str, Any]:
    import pydicom
    import requests

    from bench.orthanc import BenchOrthanc, upload_file, upload_many
    from devhost.testing import DevHostProcess
    from tools.upload import upload_and_wait

    data_dir = WORK / "retrieve"
    slide_path = data_dir / f"slide-{tiles}.dcm"
    slide = make_slide(slide_path, tiles)
    ct = make_ct(data_dir / f"ct-{slices}", slices)
    run_dir = WORK / "run-retrieve"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    az = common.start_azurite(run_dir / "azurite")
    dh = DevHostProcess(azurite=az, env={"DICOMFLOW_STABLE_AGE_SECONDS": "2", "DICOMFLOW_SETTLE_DELAY_SECONDS": "1"},
                        state_dir=run_dir / "devhost", timeout=90, **common.REAL_APP)
    orthanc = BenchOrthanc(run_dir / "orthanc", http_threads=8)
    result: dict[str, Any] = {"slide_bytes": slide["size"], "tiles": tiles, "ct_slices": slices}
    try:
        dh.start()
        orthanc.start()
        staging = run_dir / "upload"
        staging.mkdir()
        shutil.copy(slide_path, staging / "slide.dcm")
        for p in sorted(ct["folder"].iterdir()):
            shutil.copy(p, staging / p.name)
        outcomes = upload_and_wait([staging], connection_string=az.connection_string, base_url=dh.base_url,
                                   key=dh.token("writer", minutes=120), workers=8, timeout=900, progress=True)
        bad = [o for o in outcomes if o.state != "archived"]
        if bad:
            raise RuntimeError(f"{len(bad)} file(s) not archived, e.g. {bad[0].state}")
        r = upload_file(orthanc, slide_path)
        r.raise_for_status()
        _, errors = upload_many(orthanc, sorted(ct["folder"].iterdir()), workers=4, desc="ct (orthanc)")
        if errors:
            raise RuntimeError(f"Orthanc refused CT files: {errors[:3]}")
        ours = requests.Session()
        ours.headers.update(dh.bearer("reader", minutes=120))
        roots = {"ours": (ours, f"{dh.base_url}/dicomweb"), "orthanc": (requests.Session(), orthanc.dicomweb_url)}
        assert az.process is not None and orthanc.process is not None and dh.pid is not None
        pids: dict[str, list[int]] = {"ours": [dh.pid, az.process.pid], "orthanc": [orthanc.process.pid]}
        s_url = f"studies/{slide['study']}/series/{slide['series']}/instances/{slide['sop']}"
        rng = random.Random(3)

        def get(side: str, root: Any, path: str, accept: str) -> Any:
            session, base = root
            resp = session.get(f"{base}/{path}", headers={"Accept": accept}, timeout=600)
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return resp

        # Warm-up (untimed): the frame index on our side, Orthanc's caches of the instance; a CT series read.
        for side, root in roots.items():
            get(side, root, f"{s_url}/frames/1", STORED_ACCEPT)
            get(side, root, f"studies/{ct['study']}/series/{ct['series']}/instances/{ct['sops'][0]}/rendered",
                "image/jpeg")

        def stored(n: int) -> Any:
            def call(side: str, root: Any) -> None:
                (part,) = _parts(get(side, root, f"{s_url}/frames/{n}", STORED_ACCEPT))
                if part.rstrip(b"\0") != slide["tiles"][n - 1].rstrip(b"\0"):
                    raise AssertionError(f"frame {n} is not the stored tile")
            return call

        def plain(n: int) -> Any:
            def call(side: str, root: Any) -> None:
                (part,) = _parts(get(side, root, f"{s_url}/frames/{n}", PLAIN_ACCEPT))
                if len(part) != 256 * 256 * 3:
                    raise AssertionError(f"frame {n}: {len(part)} bytes, not 256x256 RGB")
            return call

        def jls(n: int) -> Any:
            def call(side: str, root: Any) -> None:
                (part,) = _parts(get(side, root, f"{s_url}/frames/{n}", JLS_ACCEPT))
                if not part.startswith(b"\xff\xd8\xff\xf7"):  # SOI, then SOF55: a JPEG-LS frame
                    raise AssertionError(f"frame {n} is not JPEG-LS")
            return call

        picks = [rng.randrange(1, tiles + 1) for _ in range(frames)]
        result["stored_frames"] = batch("stored frames (slide)", roots, [stored(n) for n in picks], pids,
                                        {"orthanc": orthanc_cap * 10})
        fresh = [rng.randrange(1, tiles + 1) for _ in range(transcoded)]
        result["plain_frames"] = batch("frames as Explicit VR LE", roots, [plain(n) for n in fresh], pids,
                                       {"orthanc": orthanc_cap})
        fresh = [rng.randrange(1, tiles + 1) for _ in range(transcoded)]
        result["jls_frames"] = batch("frames as JPEG-LS, first read", roots, [jls(n) for n in fresh], pids,
                                     {"orthanc": max(1, orthanc_cap // 3)})
        result["jls_frames_again"] = batch("frames as JPEG-LS, read again", roots, [jls(n) for n in fresh], pids,
                                           {"orthanc": 0})  # Orthanc keeps no transcoded frames: as the first read
        pm_check = _parts(get("ours", roots["ours"], f"{s_url}/frames/{fresh[0]}", PLAIN_ACCEPT))[0]
        # One frame decoded by pydicom from the file (``ds.pixel_array`` would decode all 16,384 tiles: 3 GiB of
        # pixels and 21 GiB of the bench's memory at the peak, which the kernel's OOM killer ended).
        from pydicom.pixels import pixel_array

        expected = pixel_array(str(slide_path), index=fresh[0] - 1)
        result["plain_equal_pydicom"] = bool(np.array_equal(np.frombuffer(pm_check, np.uint8).reshape(expected.shape),
                                                            expected))
        mid = ct["sops"][len(ct["sops"]) // 2]
        ct_inst = f"studies/{ct['study']}/series/{ct['series']}/instances/{mid}"
        result["rendered_ct"] = batch("rendered JPEG, CT slice", roots, [
            (lambda side, root, w=w: get(side, root, f"{ct_inst}/rendered?window={w},400,linear", "image/jpeg"))
            for w in range(0, reps * 20, 20)], pids)
        # A stack scrolled: each slice rendered once (nothing of it seen before on either side), the header's window.
        scroll = [sop for sop in ct["sops"] if sop not in (ct["sops"][0], mid)][:reps]
        result["rendered_ct_scroll"] = batch("rendered JPEG, CT slices once each", roots, [
            (lambda side, root, sop=sop: get(side, root, f"studies/{ct['study']}/series/{ct['series']}/instances/"
                                                     f"{sop}/rendered", "image/jpeg"))
            for sop in scroll], pids)
        result["rendered_tile"] = batch("rendered JPEG, slide tile", roots, [
            (lambda side, root, n=n: get(side, root, f"{s_url}/frames/{n}/rendered", "image/jpeg"))
            for n in (rng.randrange(1, tiles + 1) for _ in range(transcoded))], pids, {"orthanc": orthanc_cap})

        def series(side: str, root: Any) -> None:
            parts = _parts(get(side, root, f"studies/{ct['study']}/series/{ct['series']}", SERIES_ACCEPT))
            if len(parts) != slices:
                raise AssertionError(f"{len(parts)} parts for {slices} slices")
            if pydicom.dcmread(io.BytesIO(parts[0])).file_meta.TransferSyntaxUID != ELE:
                raise AssertionError("not Explicit VR Little Endian")

        result["series_transcode"] = batch(f"{slices}-slice CT series as Explicit VR LE", roots,
                                           [series] * max(2, reps // 5), pids)
    finally:
        orthanc.stop()
        dh.close()
        az.stop()
    result["machine"] = common.machine()
    result["commit"] = common.git_commit()
    result["orthanc_version"] = common.orthanc_version()
    result["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return result


def _stop_on_sigterm() -> None:
    """SIGTERM (a timeout, a kill) ends the run through its ``finally``: the servers it started are stopped."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiles", type=int, default=None, help="tiles of the slide (a square number)")
    parser.add_argument("--slices", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None, help="random stored frames")
    parser.add_argument("--transcoded", type=int, default=None,
                        help="random frames per transcoded or rendered batch (Orthanc takes seconds for each)")
    parser.add_argument("--reps", type=int, default=None, help="rendered CT requests")
    parser.add_argument("--orthanc-cap", type=int, default=None,
                        help="most Orthanc requests per transcoded/rendered batch (10x for stored frames)")
    args = parser.parse_args(argv)
    tiles = args.tiles or (1024 if args.quick else 16384)
    slices = args.slices or (40 if args.quick else 500)
    frames = args.frames or (60 if args.quick else 200)
    reps = args.reps or (10 if args.quick else 20)
    transcoded = args.transcoded or (10 if args.quick else 20)
    orthanc_cap = args.orthanc_cap or (10 if args.quick else 3)
    from bench.orthanc import ensure_installed

    _stop_on_sigterm()
    ensure_installed()
    result = run(tiles, slices, frames, reps, transcoded, orthanc_cap)
    result["quick"] = args.quick
    common.save_result("retrieve-quick" if args.quick else "retrieve", result)
    from bench.report import render

    render()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
