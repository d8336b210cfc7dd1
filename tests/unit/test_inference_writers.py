"""SEG and SR written by highdicom: read back by highdicom and checked by dciodvfy (dicom3tools)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from shared.inference import pixels
from shared.inference.builtin import BodySegmentation
from shared.inference.model import ImageSet
from shared.inference.service import SeriesInfo, run_models
from tests.phantoms import disc_mg, ellipsoid_ct


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines of dciodvfy (it exits 0 even with errors; warnings are reported, not failed)."""
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy missing: install Debian's dicom3tools ('make peers')")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def ct_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], ImageSet]:
    datasets = ellipsoid_ct(tag="writers-ct")
    info = SeriesInfo(datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID, "CT")
    ((_result, written),) = run_models(info, datasets, [BodySegmentation()])
    folder = tmp_path_factory.mktemp("ct-results")
    paths = []
    for ds in written:
        path = folder / f"{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    ordered, px, spacing = pixels.load_volume(datasets)
    return paths, ImageSet(ordered, px, spacing, is_volume=True)


@pytest.mark.peers
def test_ct_seg_reads_back_and_passes_dciodvfy(ct_results: tuple[list[Path], ImageSet]) -> None:
    (seg_path, _), images = ct_results
    assert dciodvfy_errors(seg_path) == []
    seg = hd.seg.segread(seg_path)
    assert seg.Modality == "SEG" and seg.ImageType[0] == "DERIVED"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == images.datasets[0].SeriesInstanceUID
    (description,) = seg.SegmentSequence
    assert description.SegmentAlgorithmType == "AUTOMATIC"
    assert description.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "dicomflow-body"
    # The stored mask is the prediction, frame by frame in source order.
    expected = BodySegmentation().predict(images)
    assert expected is not None
    source_uids = [str(ds.SOPInstanceUID) for ds in images.datasets]
    stored = seg.get_pixels_by_source_instance(source_sop_instance_uids=source_uids, segment_numbers=[1])
    np.testing.assert_array_equal(stored[..., 0].astype(bool), expected.mask)


@pytest.mark.peers
def test_ct_sr_reads_back_with_the_volume_and_passes_dciodvfy(ct_results: tuple[list[Path], ImageSet]) -> None:
    (seg_path, sr_path), _ = ct_results
    assert dciodvfy_errors(sr_path) == []
    sr = hd.sr.srread(sr_path)
    seg = hd.seg.segread(seg_path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    (group,) = groups
    (measurement,) = group.get_measurements()
    assert measurement.unit.value == "mL" and measurement.value > 500
    assert group.reference_type.value == "121191"  # Referenced Segment
    referenced = group.referenced_segment
    assert referenced is not None
    assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID


@pytest.mark.peers
def test_mg_seg_and_sr_pass_dciodvfy(tmp_path: Path) -> None:
    mg = disc_mg(tag="writers-mg")
    info = SeriesInfo(mg.StudyInstanceUID, mg.SeriesInstanceUID, "MG")
    ((result, written),) = run_models(info, [mg], [BodySegmentation()])
    assert list(result.measurements) == ["Area (cm2)"]
    for ds in written:
        path = tmp_path / f"{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], ds.Modality
    hd.seg.segread(tmp_path / "SEG.dcm")
    sr = hd.sr.srread(tmp_path / "SR.dcm")
    (group,) = sr.content.get_planar_roi_measurement_groups()
    assert group.get_measurements()[0].unit.value == "cm2"


def test_same_input_gives_the_same_result_uids() -> None:
    datasets = ellipsoid_ct(tag="writers-again")
    info = SeriesInfo(datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID, "CT")
    first = [str(ds.SOPInstanceUID) for _, w in run_models(info, datasets, [BodySegmentation()]) for ds in w]
    again = [str(ds.SOPInstanceUID) for _, w in run_models(info, datasets, [BodySegmentation()]) for ds in w]
    assert first == again and len(set(first)) == 2
