"""Synthetic DICOM with known geometry, for the inference and routing tests.

An ellipsoid "body" in a CT series has an analytic volume (4/3 pi a b c), so the
built-in model's measurement can be checked against a number that does not come
from the code under test. Patient data here is invented; the strings are easy to
search for in de-identified output.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, DigitalMammographyXRayImageStorageForPresentation, ExplicitVRLittleEndian

PATIENT_NAME = "Phantom^Ellipsoid^Q"
PATIENT_ID = "PHANTOM-0042"
ROOT = "1.2.826.0.1.3680043.10.1234."  # synthetic test UIDs


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=ROOT, entropy_srcs=[str(p) for p in parts]))


def _patient_study(ds: Dataset, study_uid: str) -> None:
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20261127"
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyID = "S1"
    ds.AccessionNumber = "ACC-PHANTOM-7"
    ds.InstitutionName = "Phantom General Hospital"
    ds.StationName = "CTSTATION1"
    ds.Manufacturer = "dicomflow-tests"


def _meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def ellipsoid_ct(
    semi_axes_mm: tuple[float, float, float] = (60.0, 45.0, 50.0),
    *,
    pixel_mm: float = 0.9,
    slice_mm: float = 2.0,
    size: int = 160,
    tag: str = "ct",
) -> list[Dataset]:
    """A CT series of an ellipsoid (x, y, z semi-axes) of 40 HU in air (-1000 HU).

    It holds a -800 HU "lung" inside that the model must count as body. Slices are
    written in reverse order on purpose: the reader must sort by position.
    """
    a, b, c = semi_axes_mm
    study, series, frame = _uid(tag, "study"), _uid(tag, "series"), _uid(tag, "for")
    half = (size - 1) / 2 * pixel_mm
    xs = np.arange(size) * pixel_mm - half
    x, y = np.meshgrid(xs, xs)
    n = math.ceil(c / slice_mm) + 2
    out = []
    for k, z in enumerate(reversed(np.arange(-n, n + 1) * slice_mm)):
        inside = (x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 <= 1.0
        lung = (x / (a / 3)) ** 2 + (y / (b / 3)) ** 2 + (z / (c / 3)) ** 2 <= 1.0
        hu = np.where(inside, 40, -1000)
        hu = np.where(lung, -800, hu)
        ds = Dataset()
        _patient_study(ds, study)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = _uid(tag, "sop", k)
        ds.SeriesInstanceUID = series
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.BodyPartExamined = "CHEST"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-half, -half, float(z)]
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.SliceThickness = slice_mm
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
        ds.ContentDate = "20261127"
        ds.ContentTime = "101501"
        _meta(ds)
        out.append(ds)
    return out


def ellipsoid_volume_ml(semi_axes_mm: tuple[float, float, float]) -> float:
    a, b, c = semi_axes_mm
    return 4.0 / 3.0 * math.pi * a * b * c / 1000.0


def disc_mg(radius_mm: float = 40.0, *, pixel_mm: float = 0.2, size: int = 512, tag: str = "mg") -> Dataset:
    """A digital mammogram (for presentation) with a disc of tissue: area pi r^2."""
    half = (size - 1) / 2 * pixel_mm
    xs = np.arange(size) * pixel_mm - half
    x, y = np.meshgrid(xs, xs)
    img = np.where(x**2 + y**2 <= radius_mm**2, 3000, 200).astype(np.uint16)
    ds = Dataset()
    _patient_study(ds, _uid(tag, "study"))
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = _uid(tag, "sop")
    ds.SeriesInstanceUID = _uid(tag, "series")
    ds.Modality = "MG"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImagerPixelSpacing = [pixel_mm, pixel_mm]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = img.tobytes()
    _meta(ds)
    return ds


def write_all(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
