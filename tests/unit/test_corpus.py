"""The synthetic corpus: good files read back with the intended content, broken files are broken
in the intended way, and the huge multi-frame generator streams to disk."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from shared.dicom.header import read_header_bytes
from shared.dicom.validate import is_valid_uid, validate
from shared.errors import BadInput
from tools import corpus, synth

ROOT = Path(__file__).resolve().parents[2]
# The broken set holds invalid UIDs on purpose; pydicom warns when it reads them.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[Path]]:
    out = tmp_path_factory.mktemp("corpus")
    files = corpus.write_corpus(out, patients=6, slices=4, seed=7)
    return out, corpus.load_manifest(out), files


def _good(manifest: dict) -> list[dict]:
    return [f for f in manifest["files"] if f["kind"] == "good"]


def test_manifest_lists_every_file_written(written):
    out, manifest, files = written
    assert sorted(out / f["path"] for f in manifest["files"]) == sorted(files)
    assert all(p.exists() for p in files)
    assert len(files) == corpus.corpus_file_count(corpus.CorpusOptions(patients=6, slices=4))
    assert {f["modality"] for f in _good(manifest)} == {"CT", "MR", "DX", "MG", "SR"}


def test_good_files_read_back_with_uids_and_decoded_names(written):
    out, manifest, _ = written
    patients = {p["index"]: p for p in manifest["patients"]}
    for entry in _good(manifest):
        ds = pydicom.dcmread(out / entry["path"])
        assert str(ds.StudyInstanceUID) == entry["study_uid"]
        assert str(ds.SeriesInstanceUID) == entry["series_uid"]
        assert str(ds.SOPInstanceUID) == entry["sop_uid"]
        assert str(ds.file_meta.MediaStorageSOPInstanceUID) == entry["sop_uid"]
        assert str(ds.file_meta.TransferSyntaxUID) == entry["transfer_syntax_uid"]
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert is_valid_uid(str(uid), strict=True) and uid.startswith(corpus.UID_PREFIX)
        patient = patients[entry["patient_index"]]
        assert str(ds.PatientName) == patient["name"]
        assert ds.PatientID == patient["patient_id"]
        expected_charset = patient["charset"] or None
        assert ds.get("SpecificCharacterSet") == expected_charset
        for keyword in ("StudyDate", "StudyTime", "AccessionNumber", "Modality", "BodyPartExamined",
                        "StationName", "InstitutionName", "SeriesNumber", "InstanceNumber"):
            if not (keyword == "BodyPartExamined" and entry["modality"] == "SR"):  # not in the SR IODs
                assert ds.get(keyword) not in (None, ""), (entry["path"], keyword)
        if entry["modality"] != "SR":
            pixels = ds.pixel_array
            assert pixels.shape[-2:] == (ds.Rows, ds.Columns)
            assert pixels.max() > pixels.min()


def test_names_are_encoded_in_their_character_sets(written):
    out, manifest, _ = written
    first_ct = {f["patient_index"]: out / f["path"] for f in _good(manifest) if f["path"].endswith("ct/IM0001.dcm")}
    raw = {i: p.read_bytes() for i, p in first_ct.items()}
    assert "Müller^Jürgen".encode("latin-1") in raw[0]
    assert "Иванов^Пётр".encode() in raw[1]
    assert "王^小东".encode("gb18030") in raw[2]
    assert b"\x1b$B" in raw[3]  # ISO 2022 IR 87: JIS X 0208 escape
    assert b"\x1b$)C" in raw[4]  # ISO 2022 IR 149: KS X 1001 designation
    assert raw[5].count(b"Doe^John") == 1
    charsets = [json.dumps(p["charset"]) for p in manifest["patients"]]
    assert len(set(charsets)) == 6


def test_transfer_syntaxes_and_one_deflated_series(written):
    _, manifest, _ = written
    syntaxes = {f["transfer_syntax_uid"] for f in _good(manifest)}
    assert {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian} <= syntaxes
    deflated_series = {f["series_uid"] for f in _good(manifest)
                       if f["transfer_syntax_uid"] == DeflatedExplicitVRLittleEndian}
    assert len(deflated_series) == 1


def test_big_endian_pixels_match_little_endian_phantom(tmp_path):
    uids = corpus.UidFactory(3)
    patient = corpus.make_patients(1, seed=3)[0]
    study = corpus.make_study(patient, uids, "ct", description="CT")
    little = corpus.make_ct_series(tmp_path / "le", study, uids, slices=2, rows=32, cols=32,
                                   rng=np.random.default_rng(1))
    big = corpus.make_ct_series(tmp_path / "be", study, uids, slices=2, rows=32, cols=32,
                                transfer_syntax=ExplicitVRBigEndian, rng=np.random.default_rng(1))
    for a, b in zip(little, big, strict=True):
        assert np.array_equal(pydicom.dcmread(a).pixel_array, pydicom.dcmread(b).pixel_array)
        assert a.read_bytes() != b.read_bytes()


def test_same_seed_same_bytes_other_seed_other_uids(tmp_path):
    a = corpus.write_corpus(tmp_path / "a", patients=2, slices=2, seed=1, broken=False)
    b = corpus.write_corpus(tmp_path / "b", patients=2, slices=2, seed=1, broken=False)
    corpus.write_corpus(tmp_path / "c", patients=2, slices=2, seed=2, broken=False)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    uids_a = {f["sop_uid"] for f in corpus.load_manifest(tmp_path / "a")["files"]}
    uids_c = {f["sop_uid"] for f in corpus.load_manifest(tmp_path / "c")["files"]}
    assert len(uids_a) == len(a) and not uids_a & uids_c


def test_ct_geometry_gives_the_phantom_volume(tmp_path):
    """Threshold segmentation over the headers' geometry finds the ellipsoidal body and the bone."""
    uids = corpus.UidFactory(0)
    study = corpus.make_study(corpus.make_patients(1)[0], uids, "ct", description="CT")
    rows = cols = 64
    slices, thickness = 40, 2.5
    paths = corpus.make_ct_series(tmp_path, study, uids, slices=slices, rows=rows, cols=cols,
                                  slice_thickness=thickness)
    datasets = sorted((pydicom.dcmread(p) for p in paths), key=lambda d: float(d.ImagePositionPatient[2]))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])
    z = [float(d.ImagePositionPatient[2]) for d in datasets]
    dz = np.diff(z)
    assert np.allclose(dz, thickness) and all(float(d.SliceThickness) == thickness for d in datasets)
    sy, sx = (float(v) for v in datasets[0].PixelSpacing)
    voxel = sy * sx * thickness
    body_ml = (hu > -900).sum() * voxel / 1000
    # Ellipsoid: semi-axes 0.30*rows and 0.42*cols pixels, and the z range [-1, 1] spread over
    # 1.9 / slices per slice (the sampled part covers |z| < 0.95: 0.7 % less than the full one).
    a, b = 0.30 * rows * sy, 0.42 * cols * sx
    c = slices * thickness / 1.9
    expected_ml = 4 / 3 * math.pi * a * b * c / 1000
    assert body_ml == pytest.approx(expected_ml, rel=0.08)
    assert (hu > 300).sum() > 0  # bone
    assert ((hu < -600) & (hu > -900)).sum() > 0  # lungs


def test_multiframe_mg_has_per_frame_groups(written):
    out, manifest, _ = written
    mg = next(f for f in _good(manifest) if f["modality"] == "MG")
    ds = pydicom.dcmread(out / mg["path"])
    assert ds.SOPClassUID == corpus.BREAST_TOMO_IMAGE
    assert int(ds.NumberOfFrames) == len(ds.PerFrameFunctionalGroupsSequence) == 16
    positions = [float(i.PlanePositionSequence[0].ImagePositionPatient[0]) for i in ds.PerFrameFunctionalGroupsSequence]
    assert positions == sorted(positions) and len(set(positions)) == 16
    frames = ds.pixel_array
    assert frames.shape == (16, ds.Rows, ds.Columns)
    assert frames[8].mean() > frames[0].mean()  # brighter towards the middle slice


def _broken(written) -> dict[str, tuple[Path, dict]]:
    out, manifest, _ = written
    return {f["defect"]: (out / f["path"], f) for f in manifest["files"] if f["kind"] == "broken"}


def test_broken_set_has_every_case(written):
    cases = _broken(written)
    assert set(cases) == set(corpus.BROKEN_CASES)
    for case, (_, entry) in cases.items():
        assert entry["expect"] == ("archived" if case in corpus.VALID_BROKEN_CASES else "quarantined")


def test_broken_files_are_broken_as_intended(written):
    cases = _broken(written)
    assert cases["zero_bytes"][0].stat().st_size == 0
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(cases["random_bytes"][0])

    path, _ = cases["truncated_header"]
    data = path.read_bytes()
    tag = data.index(b"\x20\x00\x0d\x00UI")
    declared = struct.unpack("<H", data[tag + 6:tag + 8])[0]
    assert len(data) - (tag + 8) < declared  # ends inside the StudyInstanceUID value
    assert "SeriesInstanceUID" not in pydicom.dcmread(path, stop_before_pixels=True)

    path, _ = cases["huge_length"]
    data = path.read_bytes()
    at = data.index(b"\x10\x00\x10\x00", 132)
    assert struct.unpack("<I", data[at + 4:at + 8])[0] > 100 * len(data)

    for case, keyword in (("missing_study_uid", "StudyInstanceUID"), ("missing_series_uid", "SeriesInstanceUID"),
                          ("missing_sop_uid", "SOPInstanceUID"), ("missing_sop_class_uid", "SOPClassUID")):
        ds = pydicom.dcmread(cases[case][0])
        assert keyword not in ds, case
    assert "MediaStorageSOPInstanceUID" not in pydicom.dcmread(cases["missing_sop_uid"][0]).file_meta

    bad_values = {"uid_slash": ("SeriesInstanceUID", "/"), "uid_dotdot": ("StudyInstanceUID", ".."),
                  "uid_200_chars": ("SOPInstanceUID", None)}
    for case, (keyword, needle) in bad_values.items():
        value = str(pydicom.dcmread(cases[case][0])[keyword].value)
        assert not is_valid_uid(value)
        assert (needle in value) if needle else len(value) == 200
        assert cases[case][1][{"StudyInstanceUID": "study_uid", "SeriesInstanceUID": "series_uid",
                               "SOPInstanceUID": "sop_uid"}[keyword]] == value

    ds = pydicom.dcmread(cases["private_10mb"][0])
    private = ds[0x0009, 0x1001]
    assert private.VR == "OB" and len(private.value) == 10 * 1024 * 1024
    assert ds.pixel_array.shape == (32, 32)
    assert is_valid_uid(str(ds.SOPInstanceUID), strict=True)

    ds = pydicom.dcmread(cases["dicomdir"][0])
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert len(ds.DirectoryRecordSequence) >= 4  # patient, study, series, image


def test_broken_files_get_the_manifest_reason_from_the_header_reader(written):
    """The manifest's reason codes agree with shared.dicom (what the ingest will say)."""
    for case, (path, entry) in _broken(written).items():
        header = None
        try:
            header = read_header_bytes(path.read_bytes())
            validate(header)
        except BadInput as exc:
            assert str(exc.reason) == entry["reason"], case
        else:
            assert case in corpus.VALID_BROKEN_CASES, case
            assert entry["reason"] is None


def test_sentinel_name_everywhere(tmp_path):
    corpus.write_corpus(tmp_path / "a", patients=3, slices=1, broken=False, sentinel="SENTINEL^PHI")
    manifest = corpus.load_manifest(tmp_path / "a")
    assert {str(pydicom.dcmread(tmp_path / "a" / f["path"]).PatientName) for f in manifest["files"]} == {
        "SENTINEL^PHI"}
    corpus.write_corpus(tmp_path / "b", patients=4, slices=1, broken=False, sentinel="Sentinel^Ünïcødé=哨兵")
    for f in corpus.load_manifest(tmp_path / "b")["files"]:
        ds = pydicom.dcmread(tmp_path / "b" / f["path"])
        assert str(ds.PatientName) == "Sentinel^Ünïcødé=哨兵" and ds.SpecificCharacterSet == "ISO_IR 192"


_RSS_PROBE = r"""
import resource, sys, json
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tools import corpus
import numpy, pydicom  # imported before the baseline
uids = corpus.UidFactory(0)
study = corpus.make_study(corpus.make_patients(2)[1], uids, "large", description="DBT")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
corpus.make_multiframe_mg(Path(sys.argv[2]), study, uids, frames=25, rows=2048, cols=2048)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after}))
"""


@pytest.mark.slow
def test_huge_multiframe_streams_to_disk_with_low_peak_memory(tmp_path):
    """A 200 MiB instance: peak RSS grows far less than the file (measured in a fresh process)."""
    path = tmp_path / "big.dcm"
    proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(ROOT), str(path)], capture_output=True,
                          text=True, timeout=120, check=True)
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    growth_mib = (rss["after_kib"] - rss["before_kib"]) / 1024
    pixel_bytes = 25 * 2048 * 2048 * 2
    size = path.stat().st_size
    assert pixel_bytes < size < pixel_bytes + 1024 * 1024
    assert growth_mib < 100, f"peak RSS grew by {growth_mib:.0f} MiB for a {size / 2**20:.0f} MiB file"

    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert int(header.NumberOfFrames) == 25 and len(header.PerFrameFunctionalGroupsSequence) == 25
    last = pydicom.pixels.pixel_array(path, index=24)  # reads one frame from the file
    assert last.shape == (2048, 2048) and last.max() > last.min()
    with path.open("rb") as f:  # the Pixel Data element closes the file exactly
        f.seek(size - pixel_bytes - 12)
        tag, vr, _, length = struct.unpack("<I2sHI", f.read(12))
    assert (tag, vr, length) == (0x00107FE0, b"OW", pixel_bytes)


@pytest.mark.peers
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy is not installed (make peers)")
def test_good_files_pass_dciodvfy(written, tmp_path):
    """Standards compliance of every good object, as the dicom3tools validator sees it (it cannot read
    deflated files: those are checked after pydicom re-writes them as explicit VR little endian)."""
    out, manifest, _ = written
    checked: set[tuple[str, str]] = set()
    problems = {}
    for entry in _good(manifest) + [f for f in manifest["files"] if f["defect"] in corpus.VALID_BROKEN_CASES]:
        kind = (entry["modality"], entry["transfer_syntax_uid"])
        if kind in checked:
            continue
        checked.add(kind)
        path = out / entry["path"]
        if entry["transfer_syntax_uid"] == DeflatedExplicitVRLittleEndian:
            ds = pydicom.dcmread(path)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            path = tmp_path / "inflated.dcm"
            ds.save_as(path, enforce_file_format=True)
        report = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
        lines = [line for line in (report.stdout + report.stderr).splitlines()
                 if line.startswith(("Error", "Warning")) and "Unrecognized tag" not in line]
        if lines:
            problems[entry["path"]] = lines[:5]
    assert {m for m, _ in checked} == {"CT", "MR", "DX", "MG", "SR"}
    assert not problems, problems


def test_multiframe_refuses_what_does_not_fit_a_native_pixel_data_element(tmp_path):
    uids = corpus.UidFactory(0)
    study = corpus.make_study(corpus.make_patients(1)[0], uids, "x", description="x")
    with pytest.raises(ValueError, match="does not fit"):
        corpus.make_multiframe_mg(tmp_path / "x.dcm", study, uids, frames=600, rows=2048, cols=2048)
    assert not (tmp_path / "x.dcm").exists()


def test_synth_command(tmp_path, capsys):
    assert synth.main([str(tmp_path / "c"), "--patients", "1", "--slices", "2", "--no-broken", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Wrote 5 files" in out and "manifest.json" in out
    assert corpus.load_manifest(tmp_path / "c")["options"]["broken"] is False
    assert synth.main([str(tmp_path / "d"), "--slices", "0"]) == 2
    assert "--slices must be at least 1" in capsys.readouterr().err
