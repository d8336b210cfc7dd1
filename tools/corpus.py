"""A realistic synthetic DICOM corpus for demos, tests and benchmarks (dev only, never deployed).

What it writes (:func:`write_corpus`)::

    OUT/good/pNN/ct/IM0001.dcm ...    CT series per patient (many slices, HU phantom)
    OUT/good/pNN/mr/IM0001.dcm ...    MR series per patient
    OUT/good/pNN/sr/SR0001.dcm        a Comprehensive SR on the CT study (first patient)
    OUT/good/pNN/dx/DX0001.dcm        a DX image (first patient)
    OUT/good/pNN/mg/DBT0001.dcm       a multi-frame Breast Tomosynthesis instance (second patient)
    OUT/good/large/DBT_large.dcm      optional huge multi-frame instance (``large_frames``)
    OUT/good/pNN/sm/SM0001.dcm ...    optional whole-slide microscopy pyramid (``slide``; last patient)
    OUT/broken/*.dcm, broken/dicomdir/DICOMDIR   deliberately bad input (see :data:`BROKEN_CASES`)
    OUT/manifest.json                 every file: kind, expected outcome, defect, UIDs, charset

Patients carry non-ASCII names in several character sets (ISO_IR 100, ISO_IR 192, GB18030,
ISO 2022 IR 87, ISO 2022 IR 149), encoded by pydicom's own charset support; series use
explicit and implicit VR little endian, explicit VR big endian and (one series) deflated.
File and folder names never contain patient data (they become blob names, which are logged).

Determinism: UIDs come from :func:`pydicom.uid.generate_uid` with the fixed prefix
:data:`UID_PREFIX` and the seed as entropy, pixel noise from ``numpy.random.default_rng(seed)``:
the same arguments give byte-identical files.

Library choice: everything is written with pydicom (datasets, charsets, transfer syntaxes, DICOMDIR
via :class:`pydicom.fileset.FileSet`). The one hand-written binary piece is
:func:`make_multiframe_mg`'s Pixel Data append: the header is written by pydicom, then the Pixel Data
element header (tag, VR, length) and the frames are streamed to disk, so a 1 GiB instance needs a
few frames of memory, not 1 GiB. The broken set corrupts pydicom-written files on purpose (cut,
patched length), which is not a writer.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from shared.errors import Reason

log = logging.getLogger(__name__)

#: Fixed UID root for synthetic objects (under pydicom's registered root, 1.2.826.0.1.3680043.8.498).
UID_PREFIX: Final = "1.2.826.0.1.3680043.8.498.7."

CT_IMAGE: Final = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE: Final = "1.2.840.10008.5.1.4.1.1.4"
DX_IMAGE: Final = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
MG_IMAGE: Final = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation
CR_IMAGE: Final = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
BREAST_TOMO_IMAGE: Final = "1.2.840.10008.5.1.4.1.1.13.1.3"
COMPREHENSIVE_SR: Final = "1.2.840.10008.5.1.4.1.1.88.33"

#: Largest Pixel Data value that fits an explicit 32-bit length (0xFFFFFFFF means "undefined").
MAX_NATIVE_PIXEL_BYTES: Final = 0xFFFFFFFE

#: Defects of the broken set; each file's manifest entry names its defect.
BROKEN_CASES: Final = (
    "zero_bytes",  # empty file
    "random_bytes",  # 4 KiB of noise, no DICM
    "truncated_header",  # Part 10 file cut in the middle of the StudyInstanceUID value
    "huge_length",  # PatientName declares a ~2 GiB length in a 2 KB file (implicit VR)
    "missing_study_uid",
    "missing_series_uid",
    "missing_sop_uid",  # absent from the dataset and the file meta
    "missing_sop_class_uid",
    "uid_slash",  # SeriesInstanceUID with '/'
    "uid_dotdot",  # StudyInstanceUID ".."
    "uid_200_chars",  # SOPInstanceUID of 200 characters
    "private_10mb",  # VALID: a 10 MiB private OB element before the pixel data (expect archived)
    "dicomdir",  # a DICOMDIR (Media Storage Directory), not an image
)

#: The broken cases that are in fact valid instances (the ingest must archive them).
VALID_BROKEN_CASES: Final = frozenset({"private_10mb"})

#: The reason code (shared.dicom.validate.Reason) each refused case should be quarantined with.
EXPECTED_REASONS: Final[dict[str, str]] = {
    "zero_bytes": Reason.EMPTY,
    "random_bytes": Reason.NOT_DICOM,
    "truncated_header": Reason.TRUNCATED,
    "huge_length": Reason.TRUNCATED,
    "missing_study_uid": Reason.MISSING_STUDY_UID,
    "missing_series_uid": Reason.MISSING_SERIES_UID,
    "missing_sop_uid": Reason.MISSING_SOP_UID,
    "missing_sop_class_uid": Reason.MISSING_SOP_CLASS,
    "uid_slash": Reason.INVALID_UID,
    "uid_dotdot": Reason.INVALID_UID,
    "uid_200_chars": Reason.INVALID_UID,
    "dicomdir": Reason.UNSUPPORTED,
}


# ---------------------------------------------------------------------------------------------
# Patients, studies, UIDs


@dataclass(frozen=True)
class Patient:
    """A synthetic patient. ``charset`` is the (0008,0005) value used for every file of the patient."""

    index: int
    name: str
    patient_id: str
    charset: str | tuple[str, ...]
    birth_date: str
    sex: str

    @property
    def charset_value(self) -> str | list[str]:
        return list(self.charset) if isinstance(self.charset, tuple) else self.charset


#: (charset, names). Multi-group names are Alphabetic=Ideographic=Phonetic (PS3.5 6.2.1.1).
NAME_POOLS: Final[tuple[tuple[str | tuple[str, ...], tuple[str, ...]], ...]] = (
    ("ISO_IR 100", ("Müller^Jürgen", "Gonçalves^Inês", "Ångström^Øyvind")),
    ("ISO_IR 192", ("Иванов^Пётр", "Παπαδόπουλος^Νίκος", "Nowak^Łucja")),
    ("GB18030", ("Wang^XiaoDong=王^小东", "Li^Na=李^娜")),
    (("", "ISO 2022 IR 87"), ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Tanaka^Hanako=田中^花子=たなか^はなこ")),
    (("", "ISO 2022 IR 149"), ("Hong^Gildong=洪^吉洞=홍^길동", "Kim^Minji=金^敏智=김^민지")),
    ("", ("Doe^John", "Smith^Anna")),  # default repertoire (ASCII), no (0008,0005)
)


def make_patients(count: int, *, seed: int = 0, sentinel: str | None = None) -> list[Patient]:
    """``count`` patients cycling through :data:`NAME_POOLS`; ``sentinel`` replaces every name.

    With a non-ASCII sentinel the patients switch to ISO_IR 192 so the name stays encodable.
    """
    rng = np.random.default_rng([seed, 1])
    patients = []
    for i in range(count):
        charset, names = NAME_POOLS[i % len(NAME_POOLS)]
        name = names[(i // len(NAME_POOLS)) % len(names)]
        if sentinel is not None:
            name = sentinel
            if not sentinel.isascii():
                charset = "ISO_IR 192"
        year = 1940 + int(rng.integers(0, 60))
        patients.append(
            Patient(
                index=i,
                name=name,
                patient_id=f"SYN{seed:03d}-{i:04d}",
                charset=charset,
                birth_date=f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
                sex="F" if i % 2 else "M",
            )
        )
    return patients


@dataclass(frozen=True)
class UidFactory:
    """Deterministic UIDs: the same seed and parts give the same UID."""

    seed: int = 0
    prefix: str = UID_PREFIX
    #: Another set of UIDs for the same seed (the same files otherwise), e.g. to ingest a mix twice.
    variant: str = ""

    def __call__(self, *parts: object) -> str:
        base = f"dicomflow-synth:{self.seed}" + (f":{self.variant}" if self.variant else "")
        return str(generate_uid(self.prefix, entropy_srcs=[base, *map(str, parts)]))


@dataclass(frozen=True)
class Study:
    patient: Patient
    study_uid: str
    date: str
    time: str
    accession: str
    description: str
    study_id: str = "1"
    institution: str = "Synthetic General Hospital"
    referring: str = "Referrer^Synthetic"


def make_study(patient: Patient, uids: UidFactory, key: str, *, description: str, day: int = 0) -> Study:
    """A study of ``patient``; ``key`` distinguishes studies of the same patient."""
    return Study(
        patient=patient,
        study_uid=uids("study", patient.index, key),
        date=f"2026{1 + (patient.index + day) % 12:02d}{1 + (patient.index * 7 + day) % 28:02d}",
        time=f"{8 + patient.index % 10:02d}{(patient.index * 13) % 60:02d}{day % 60:02d}.000000",
        accession=f"A{uids.seed:03d}{patient.index:04d}{_short(key)}"[:16],
        description=description,
    )


def _short(key: str) -> str:
    # Stable across processes (unlike hash()): a few characters of the key's letters.
    return "".join(c for c in key.upper() if c.isalnum())[:4]


@dataclass
class CorpusEntry:
    """One file of the manifest."""

    path: str
    kind: str  # "good" | "broken" | "large"
    expect: str  # "archived" | "quarantined"
    defect: str | None = None
    reason: str | None = None  # expected quarantine reason code (broken set)
    modality: str | None = None
    sop_class_uid: str | None = None
    transfer_syntax_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    patient_index: int | None = None
    size_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Pixel phantoms (plausible, cheap, deterministic)


def _ellipse_mask(rows: int, cols: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.ogrid[:rows, :cols]
    if ry <= 0 or rx <= 0:
        return np.zeros((rows, cols), dtype=bool)
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def ct_phantom_hu(rows: int, cols: int, z: float, rng: np.random.Generator) -> np.ndarray:
    """One axial slice in Hounsfield units at ``z`` in [-1, 1] of an ellipsoidal body.

    Air (-1000) outside, soft tissue (~40) inside, two lungs (~-800) in the upper half of the
    body and a spine (~700) posteriorly, with Gaussian noise: a threshold at -300 HU segments the
    body, at 300 HU the bone.
    """
    hu = np.full((rows, cols), -1000.0)
    scale = float(np.sqrt(max(0.0, 1.0 - z * z)))
    cy, cx = rows / 2, cols / 2
    body = _ellipse_mask(rows, cols, cy, cx, rows * 0.30 * scale, cols * 0.42 * scale)
    hu[body] = 40.0
    if abs(z) < 0.7:
        for side in (-1, 1):
            lung = _ellipse_mask(rows, cols, cy - rows * 0.03, cx + side * cols * 0.17, rows * 0.17 * scale,
                                 cols * 0.11 * scale)
            hu[lung & body] = -800.0
    spine = _ellipse_mask(rows, cols, cy + rows * 0.19 * scale, cx, rows * 0.05 * scale, cols * 0.05 * scale)
    hu[spine & body] = 700.0
    hu += rng.normal(0.0, 12.0, size=hu.shape)
    return hu


def mr_phantom(rows: int, cols: int, z: float, rng: np.random.Generator) -> np.ndarray:
    """A T1-like head slice: background noise, scalp ring, brain, ventricles (12-bit values)."""
    scale = float(np.sqrt(max(0.0, 1.0 - z * z)))
    cy, cx = rows / 2, cols / 2
    img = np.abs(rng.normal(0.0, 15.0, size=(rows, cols)))
    head = _ellipse_mask(rows, cols, cy, cx, rows * 0.42 * scale, cols * 0.35 * scale)
    brain = _ellipse_mask(rows, cols, cy, cx, rows * 0.38 * scale, cols * 0.31 * scale)
    vent = _ellipse_mask(rows, cols, cy, cx, rows * 0.08 * scale, cols * 0.05 * scale)
    img[head] = 1400 + rng.normal(0, 40, size=int(head.sum()))
    img[brain] = 900 + rng.normal(0, 30, size=int(brain.sum()))
    img[vent] = 250 + rng.normal(0, 20, size=int(vent.sum()))
    return np.clip(img, 0, 4095).astype(np.uint16)


def _breast_base(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A breast-like half ellipse against the chest wall at x=0 (12-bit, uint16)."""
    y, x = np.ogrid[:rows, :cols]
    inside = ((y - rows / 2) / (rows * 0.45)) ** 2 + (x / (cols * 0.8)) ** 2 <= 1.0
    img = np.full((rows, cols), 80, dtype=np.uint16)
    tissue = (2200 - (x * 900 // max(cols, 1))).astype(np.uint16)
    img = np.where(inside, tissue, img).astype(np.uint16)
    img += rng.integers(0, 60, size=(rows, cols), dtype=np.uint16)
    return img


# ---------------------------------------------------------------------------------------------
# Dataset building blocks


@contextlib.contextmanager
def _lenient_writing() -> Iterator[None]:
    """Let pydicom store invalid values (the broken set) without warnings."""
    settings = pydicom_config.settings
    old = (settings.writing_validation_mode, settings.reading_validation_mode)
    settings.writing_validation_mode = pydicom_config.IGNORE
    settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        settings.writing_validation_mode, settings.reading_validation_mode = old


def _base_dataset(study: Study, *, sop_class: str, sop_uid: str, modality: str, series_uid: str,
                  series_number: int, instance_number: int, series_description: str,
                  station: str, body_part: str) -> Dataset:
    p = study.patient
    ds = Dataset()
    if p.charset:
        ds.SpecificCharacterSet = p.charset_value
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study.date
    ds.SeriesDate = study.date
    ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = study.time
    ds.ContentTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = "dicomflow synthetic"
    ds.ManufacturerModelName = "SYNTH-1"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "dicomflow-synth 1"
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = study.referring
    ds.StationName = station
    ds.StudyDescription = study.description
    ds.SeriesDescription = series_description
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.BodyPartExamined = body_part
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    return ds


def _set_image_pixels(ds: Dataset, pixels: np.ndarray, *, bits_stored: int, signed: bool, big_endian: bool) -> None:
    rows, cols = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = np.dtype("i2" if signed else "u2").newbyteorder(">" if big_endian else "<")
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()


def _save(ds: Dataset, path: Path, transfer_syntax: str, *, enforce: bool = True) -> Path:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID(transfer_syntax)
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = UID(UID_PREFIX + "1")
    meta.ImplementationVersionName = "DICOMFLOW_SYNTH"
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128  # also when not enforcing the file format (the broken set)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=enforce)
    return path


def _orientation_axial() -> list[float]:
    return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Generators for each kind of object


def make_ct_series(out_dir: Path, study: Study, uids: UidFactory, *, slices: int = 40, rows: int = 256,
                   cols: int = 256, transfer_syntax: str = ExplicitVRLittleEndian, series_number: int = 1,
                   slice_thickness: float = 2.5, rng: np.random.Generator | None = None,
                   on_file: Callable[[Path], None] | None = None) -> list[Path]:
    """A contiguous axial CT series (``IM0001.dcm`` ...) through an ellipsoidal body phantom.

    Stored values are HU + 1024 (unsigned, 12 bits, RescaleIntercept -1024); geometry
    (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness,
    SpacingBetweenSlices) is consistent so a volume can be computed from the headers.
    """
    rng = rng if rng is not None else np.random.default_rng([uids.seed, study.patient.index, series_number])
    series_uid = uids("series", study.study_uid, "CT", series_number)
    fov = 400.0
    spacing = fov / cols
    big = transfer_syntax == ExplicitVRBigEndian
    frame_uid = uids("frame-of-reference", study.study_uid)
    paths = []
    for n in range(slices):
        z_frac = -0.95 + 1.9 * (n + 0.5) / slices
        hu = ct_phantom_hu(rows, cols, z_frac, rng)
        stored = np.clip(np.rint(hu) + 1024, 0, 4095).astype(np.uint16)
        ds = _base_dataset(study, sop_class=CT_IMAGE, sop_uid=uids("sop", series_uid, n), modality="CT",
                           series_uid=series_uid, series_number=series_number, instance_number=n + 1,
                           series_description="CT CHEST ABDOMEN 2.5mm", station="CT-SYNTH-01", body_part="CHEST")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.SliceThickness = slice_thickness
        ds.SpacingBetweenSlices = slice_thickness
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.ImagePositionPatient = [-fov / 2, -fov / 2, round(-slice_thickness * n, 3)]
        ds.ImageOrientationPatient = _orientation_axial()
        ds.SliceLocation = round(-slice_thickness * n, 3)
        ds.PixelSpacing = [spacing, spacing]
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        _set_image_pixels(ds, stored, bits_stored=12, signed=False, big_endian=big)
        path = _save(ds, out_dir / f"IM{n + 1:04d}.dcm", transfer_syntax)
        paths.append(path)
        if on_file:
            on_file(path)
    return paths


def make_mr_series(out_dir: Path, study: Study, uids: UidFactory, *, slices: int = 24, rows: int = 256,
                   cols: int = 256, transfer_syntax: str = ImplicitVRLittleEndian, series_number: int = 1,
                   rng: np.random.Generator | None = None,
                   on_file: Callable[[Path], None] | None = None) -> list[Path]:
    """An axial T1-weighted head MR series (``IM0001.dcm`` ...), 12-bit unsigned."""
    rng = rng if rng is not None else np.random.default_rng([uids.seed, study.patient.index, 100 + series_number])
    series_uid = uids("series", study.study_uid, "MR", series_number)
    fov, thickness = 240.0, 5.0
    big = transfer_syntax == ExplicitVRBigEndian
    frame_uid = uids("frame-of-reference", study.study_uid)
    paths = []
    for n in range(slices):
        z_frac = -0.9 + 1.8 * (n + 0.5) / slices
        ds = _base_dataset(study, sop_class=MR_IMAGE, sop_uid=uids("sop", series_uid, n), modality="MR",
                           series_uid=series_uid, series_number=series_number, instance_number=n + 1,
                           series_description="T1 SE AX", station="MR-SYNTH-01", body_part="HEAD")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.AcquisitionNumber = 1
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500
        ds.EchoTime = 12
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 1.5
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.SliceThickness = thickness
        ds.SpacingBetweenSlices = thickness
        ds.ImagePositionPatient = [-fov / 2, -fov / 2, round(thickness * n - thickness * slices / 2, 3)]
        ds.ImageOrientationPatient = _orientation_axial()
        ds.PixelSpacing = [fov / rows, fov / cols]
        _set_image_pixels(ds, mr_phantom(rows, cols, z_frac, rng), bits_stored=12, signed=False, big_endian=big)
        path = _save(ds, out_dir / f"IM{n + 1:04d}.dcm", transfer_syntax)
        paths.append(path)
        if on_file:
            on_file(path)
    return paths


def make_dx(path: Path, study: Study, uids: UidFactory, *, rows: int = 1024, cols: int = 1024,
            transfer_syntax: str = ExplicitVRLittleEndian, series_number: int = 1) -> Path:
    """A PA chest radiograph-like DX image (For Presentation, 14 bits)."""
    rng = np.random.default_rng([uids.seed, study.patient.index, 200 + series_number])
    series_uid = uids("series", study.study_uid, "DX", series_number)
    y = np.arange(rows)[:, None]
    img = 800 + (y * 600 // rows) + rng.integers(0, 80, size=(rows, cols))
    for side in (-1, 1):
        lung = _ellipse_mask(rows, cols, rows * 0.45, cols / 2 + side * cols * 0.2, rows * 0.3, cols * 0.14)
        img[lung] = 3000 + rng.integers(0, 200, size=int(lung.sum()))
    ds = _base_dataset(study, sop_class=DX_IMAGE, sop_uid=uids("sop", series_uid, 0), modality="DX",
                       series_uid=series_uid, series_number=series_number, instance_number=1,
                       series_description="CHEST PA", station="DX-SYNTH-01", body_part="CHEST")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = "PA"
    ds.ViewCodeSequence = [_code("399348003", "SCT", "postero-anterior")]
    ds.AnatomicRegionSequence = [_code("51185008", "SCT", "Chest")]
    ds.ImageLaterality = "U"
    ds.DetectorType = "DIRECT"
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = []
    ds.LossyImageCompression = "00"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter = 2000
    ds.WindowWidth = 4000
    ds.ImagerPixelSpacing = [0.143, 0.143]
    ds.PixelSpacing = [0.143, 0.143]
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    _set_image_pixels(ds, np.clip(img, 0, 16383).astype(np.uint16), bits_stored=14, signed=False,
                      big_endian=transfer_syntax == ExplicitVRBigEndian)
    return _save(ds, path, transfer_syntax)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def make_sr(path: Path, study: Study, uids: UidFactory, *, evidence: Sequence[Path] = (),
            series_number: int = 900) -> Path:
    """A Comprehensive SR report (title, a finding text, a code and a measurement) on ``study``.

    ``evidence``: instances of the same study referenced in the Current Requested Procedure Evidence.
    """
    series_uid = uids("series", study.study_uid, "SR", series_number)
    ds = _base_dataset(study, sop_class=COMPREHENSIVE_SR, sop_uid=uids("sop", series_uid, 0), modality="SR",
                       series_uid=series_uid, series_number=series_number, instance_number=1,
                       series_description="Radiology report", station="RIS-SYNTH", body_part="CHEST")
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic imaging report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = []
    ds.ReferencedPerformedProcedureStepSequence = []
    del ds.BodyPartExamined  # not part of the SR IODs

    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    finding.TextValue = "Synthetic phantom. No acute findings."

    code = Dataset()
    code.RelationshipType = "CONTAINS"
    code.ValueType = "CODE"
    code.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    code.ConceptCodeSequence = [_code("17621005", "SCT", "Normal")]

    num = Dataset()
    num.RelationshipType = "CONTAINS"
    num.ValueType = "NUM"
    num.ConceptNameCodeSequence = [_code("410668003", "SCT", "Length")]
    measured = Dataset()
    measured.NumericValue = "12.5"
    measured.MeasurementUnitsCodeSequence = [_code("mm", "UCUM", "millimeter")]
    num.MeasuredValueSequence = [measured]
    ds.ContentSequence = [finding, code, num]

    if evidence:
        refs: dict[str, list[Dataset]] = {}
        for p in evidence:
            ref = dcmread(p, stop_before_pixels=True)
            item = Dataset()
            item.ReferencedSOPClassUID = ref.SOPClassUID
            item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
            refs.setdefault(str(ref.SeriesInstanceUID), []).append(item)
        series_items = []
        for s_uid, items in refs.items():
            s = Dataset()
            s.SeriesInstanceUID = s_uid
            s.ReferencedSOPSequence = items
            series_items.append(s)
        study_item = Dataset()
        study_item.StudyInstanceUID = study.study_uid
        study_item.ReferencedSeriesSequence = series_items
        ds.CurrentRequestedProcedureEvidenceSequence = [study_item]
    return _save(ds, path, ExplicitVRLittleEndian)


def make_multiframe_mg(path: Path, study: Study, uids: UidFactory, *, frames: int = 16, rows: int = 512,
                       cols: int = 416, series_number: int = 1, slice_spacing: float = 1.0,
                       pixel_spacing: float = 0.1, chunk_frames: int = 1) -> Path:
    """An enhanced multi-frame Breast Tomosynthesis instance with per-frame functional groups.

    The header is written by pydicom; then the Pixel Data element header (explicit VR little endian:
    tag, ``OW``, 2 reserved bytes, 32-bit length) and the frames are appended ``chunk_frames`` at a
    time, so memory stays at a few frames whatever the file size (1 GiB = 128 frames of 2048x2048).
    Returns ``path``; the file is written in place (remove it on error).
    """
    frame_bytes = rows * cols * 2
    total = frame_bytes * frames
    if frames < 1 or rows < 1 or cols < 1:
        raise ValueError(f"frames, rows and cols must be positive, got {frames}, {rows}, {cols}")
    if total > MAX_NATIVE_PIXEL_BYTES:
        raise ValueError(
            f"Pixel data of {total} bytes does not fit a native (uncompressed) Pixel Data element "
            f"(max {MAX_NATIVE_PIXEL_BYTES}); use fewer frames or smaller frames."
        )
    rng = np.random.default_rng([uids.seed, study.patient.index, 300 + series_number])
    series_uid = uids("series", study.study_uid, "MG", series_number)
    sop_uid = uids("sop", series_uid, 0, frames, rows, cols)
    ds = _base_dataset(study, sop_class=BREAST_TOMO_IMAGE, sop_uid=sop_uid, modality="MG",
                       series_uid=series_uid, series_number=series_number, instance_number=1,
                       series_description="DBT L CC", station="MG-SYNTH-01", body_part="BREAST")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "TOMOSYNTHESIS"
    ds.AcquisitionContextSequence = []
    ds.BreastImplantPresent = "NO"
    view = _code("399162004", "SCT", "cranio-caudal")
    view.ViewModifierCodeSequence = []
    ds.ViewCodeSequence = [view]
    ds.FrameOfReferenceUID = uids("frame-of-reference", study.study_uid, "MG")
    ds.PositionReferenceIndicator = ""
    ds.ContentQualification = "PRODUCT"
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"

    dim_uid = uids("dimension-organization", sop_uid)
    org = Dataset()
    org.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = [org]
    dim_stack = Dataset()
    dim_stack.DimensionOrganizationUID = dim_uid
    dim_stack.DimensionIndexPointer = 0x00209057  # In-Stack Position Number
    dim_stack.FunctionalGroupPointer = 0x00209111  # Frame Content Sequence
    ds.DimensionIndexSequence = [dim_stack]

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [pixel_spacing, pixel_spacing]
    measures.SliceThickness = slice_spacing
    shared.PixelMeasuresSequence = [measures]
    orient = Dataset()
    orient.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    shared.PlaneOrientationSequence = [orient]
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [_code("76752008", "SCT", "Breast")]
    anatomy.FrameLaterality = "L"
    shared.FrameAnatomySequence = [anatomy]
    transform = Dataset()
    transform.RescaleIntercept = 0
    transform.RescaleSlope = 1
    transform.RescaleType = "US"
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]

    per_frame = []
    for n in range(frames):
        item = Dataset()
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = n + 1
        content.DimensionIndexValues = [n + 1]
        content.FrameAcquisitionDateTime = f"{study.date}{study.time}"
        content.FrameReferenceDateTime = f"{study.date}{study.time}"
        content.FrameAcquisitionDuration = 100.0
        item.FrameContentSequence = [content]
        position = Dataset()
        position.ImagePositionPatient = [round(n * slice_spacing, 3), 0.0, 0.0]
        item.PlanePositionSequence = [position]
        frame_type = Dataset()  # per frame: the X-Ray 3D Frame Type macro may not be shared
        frame_type.FrameType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
        frame_type.PixelPresentation = "MONOCHROME"
        frame_type.VolumetricProperties = "VOLUME"
        frame_type.VolumeBasedCalculationTechnique = "TOMOSYNTHESIS"
        item.XRay3DFrameTypeSequence = [frame_type]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    _save(ds, path, ExplicitVRLittleEndian)

    base = _breast_base(rows, cols, rng)
    with path.open("ab") as f:
        # (7FE0,0010) OW, 2 reserved bytes, 32-bit value length: PS3.5 7.1.2.
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, total))
        step = max(1, chunk_frames)
        for start in range(0, frames, step):
            count = min(step, frames - start)
            block = np.empty((count, rows, cols), dtype="<u2")
            for k in range(count):
                # A slowly varying frame: the base phantom brightened towards the middle slice.
                n = start + k
                boost = int(200 * (1.0 - abs(2.0 * n / max(frames - 1, 1) - 1.0)))
                np.add(base, boost, out=block[k], casting="unsafe")
            block.tofile(f)
    return path


# ---------------------------------------------------------------------------------------------
# Whole-slide microscopy


VL_WSI: Final = "1.2.840.10008.5.1.4.1.1.77.1.6"
JPEG_BASELINE: Final = "1.2.840.10008.1.2.4.50"
#: The offset table of each pyramid level written by :func:`make_wsi` (base level first).
WSI_LEVELS: Final = ("empty-bot", "eot", "bot")


def _tissue(size: int, rng: np.random.Generator) -> np.ndarray:
    """An H&E-looking RGB image: pink stroma with purple nuclei on a near-white background (uint8)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    blob = np.exp(-(((xx - 0.5) ** 2) / 0.09 + ((yy - 0.5) ** 2) / 0.05))  # the tissue section
    noise = rng.random((size // 8 + 1, size // 8 + 1)).astype(np.float32)
    texture = np.kron(noise, np.ones((8, 8), np.float32))[:size, :size]
    tissue = (blob * (0.6 + 0.4 * texture)) > 0.35
    nuclei = tissue & (rng.random((size, size)) > 0.985)
    img = np.full((size, size, 3), 242, np.uint8)
    img[tissue] = (233, 150, 190)
    grow = np.zeros_like(nuclei)
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            grow |= np.roll(np.roll(nuclei, dy, 0), dx, 1)
    img[grow] = (110, 60, 150)
    return img


def make_wsi(folder: Path, study: Study, uids: UidFactory, *, size: int = 1024, tile: int = 256,
             series_number: int = 20, offsets: Sequence[str] = WSI_LEVELS) -> list[Path]:
    """A VL Whole Slide Microscopy pyramid (one instance per level, ``size`` px at the base, halved per level
    down to one tile): TILED_FULL JPEG tiles (Pillow encodes them; YBR_FULL_422), level *i* with the offset
    table ``offsets[i]`` (an empty Basic Offset Table, an Extended Offset Table, or a Basic Offset Table),
    as scanners write them. Returns the files, base level first."""
    from PIL import Image, ImageCms
    from pydicom.encaps import encapsulate, encapsulate_extended

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # the colour of the tiles
    rng = np.random.default_rng([uids.seed, study.patient.index, 700 + series_number])
    series_uid = uids("series", study.study_uid, "SM", series_number)
    frame_of_reference = uids("frame-of-reference", study.study_uid, "SM")
    base = Image.fromarray(_tissue(size, rng))
    spacing0 = 0.00025  # mm per pixel at the base level (0.25 um)
    paths = []
    level, width = 0, size
    while width >= tile:
        image = base if width == size else base.resize((width, width), Image.Resampling.LANCZOS)
        pixels = np.asarray(image)
        tiles = []
        for y in range(0, width, tile):
            for x in range(0, width, tile):
                out = io.BytesIO()
                Image.fromarray(pixels[y:y + tile, x:x + tile]).save(out, "JPEG", quality=90, subsampling=1)
                tiles.append(out.getvalue())
        sop_uid = uids("sop", series_uid, "level", level)
        ds = _base_dataset(study, sop_class=VL_WSI, sop_uid=sop_uid, modality="SM", series_uid=series_uid,
                           series_number=series_number, instance_number=level + 1,
                           series_description="Slide H&E (synthetic)", station="WSI-SYNTH-01", body_part="")
        del ds.BodyPartExamined
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if level == 0 else \
            ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
        ds.AcquisitionDateTime = f"{study.date}{study.time}"
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = "SLIDE_CORNER"
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.ContainerIdentifier = f"SLIDE-{_short(study.study_uid)}"
        ds.IssuerOfTheContainerIdentifierSequence = []
        ds.ContainerTypeCodeSequence = [_code("433466003", "SCT", "Microscope slide")]
        specimen = Dataset()
        specimen.SpecimenIdentifier = f"SPECIMEN-{_short(study.study_uid)}"
        specimen.SpecimenUID = uids("specimen", study.study_uid)
        specimen.IssuerOfTheSpecimenIdentifierSequence = []
        specimen.SpecimenPreparationSequence = []
        ds.SpecimenDescriptionSequence = [specimen]
        ds.Rows = ds.Columns = tile
        ds.NumberOfFrames = len(tiles)
        ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = width
        ds.TotalPixelMatrixFocalPlanes = 1
        spacing = spacing0 * size / width
        ds.ImagedVolumeWidth = ds.ImagedVolumeHeight = round(width * spacing, 6)
        ds.ImagedVolumeDepth = 0.001
        origin = Dataset()
        origin.XOffsetInSlideCoordinateSystem = 20.0
        origin.YOffsetInSlideCoordinateSystem = 40.0
        ds.TotalPixelMatrixOriginSequence = [origin]
        ds.ImageOrientationSlide = [0.0, -1.0, 0.0, -1.0, 0.0, 0.0]
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.BurnedInAnnotation = "NO"
        ds.SpecimenLabelInImage = "NO"
        ds.FocusMethod = "AUTO"
        ds.ExtendedDepthOfField = "NO"
        ds.VolumetricProperties = "VOLUME"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.LossyImageCompressionRatio = round(len(tiles) * tile * tile * 3 / sum(map(len, tiles)), 2)
        ds.NumberOfOpticalPaths = 1
        path_item = Dataset()
        path_item.OpticalPathIdentifier = "1"
        path_item.IlluminationTypeCodeSequence = [_code("111744", "DCM", "Brightfield illumination")]
        path_item.IlluminationColorCodeSequence = [_code("414298005", "SCT", "Full Spectrum")]
        path_item.ICCProfile = icc
        path_item.ColorSpace = "SRGB"
        ds.OpticalPathSequence = [path_item]
        ds.AcquisitionContextSequence = []
        organization = Dataset()
        organization.DimensionOrganizationUID = uids("dimension-organization", sop_uid)
        ds.DimensionOrganizationSequence = [organization]
        shared = Dataset()
        measures = Dataset()
        measures.PixelSpacing = [round(spacing, 8), round(spacing, 8)]
        measures.SliceThickness = 0.001
        shared.PixelMeasuresSequence = [measures]
        frame_type = Dataset()
        frame_type.FrameType = list(ds.ImageType)
        shared.WholeSlideMicroscopyImageFrameTypeSequence = [frame_type]
        optical = Dataset()
        optical.OpticalPathIdentifier = "1"
        shared.OpticalPathIdentificationSequence = [optical]
        ds.SharedFunctionalGroupsSequence = [shared]
        kind = offsets[min(level, len(offsets) - 1)]
        if kind == "eot":
            ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(tiles)
        else:
            ds.PixelData = encapsulate(tiles, has_bot=kind == "bot")
        paths.append(_save(ds, folder / f"SM{level + 1:04d}.dcm", JPEG_BASELINE))
        level, width = level + 1, width // 2
    return paths


# ---------------------------------------------------------------------------------------------
# The broken set


def _small_ct(study: Study, uids: UidFactory, key: str, rows: int = 32, cols: int = 32) -> Dataset:
    series_uid = uids("series", study.study_uid, "broken", key)
    ds = _base_dataset(study, sop_class=CT_IMAGE, sop_uid=uids("sop", series_uid, key), modality="CT",
                       series_uid=series_uid, series_number=99, instance_number=1,
                       series_description=f"broken {key}", station="CT-SYNTH-01", body_part="CHEST")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = uids("frame-of-reference", study.study_uid, "broken", key)
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.KVP = 120
    ds.AcquisitionNumber = 1
    ds.SliceThickness = 5.0
    ds.ImagePositionPatient = [-200.0, -200.0, 0.0]
    ds.ImageOrientationPatient = _orientation_axial()
    ds.PixelSpacing = [400.0 / cols, 400.0 / rows]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    rng = np.random.default_rng([uids.seed, 999])
    stored = np.clip(np.rint(ct_phantom_hu(rows, cols, 0.0, rng)) + 1024, 0, 4095).astype(np.uint16)
    _set_image_pixels(ds, stored, bits_stored=12, signed=False, big_endian=False)
    return ds


def make_broken_set(out_dir: Path, study: Study, uids: UidFactory) -> list[CorpusEntry]:
    """Write every case of :data:`BROKEN_CASES` under ``out_dir``; one manifest entry per file.

    Entry paths are relative to ``out_dir``. ``expect`` is "archived" for the valid cases
    (:data:`VALID_BROKEN_CASES`), "quarantined" for the rest.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[CorpusEntry] = []

    def add(case: str, path: Path, ds: Dataset | None = None) -> None:
        entry = CorpusEntry(
            path=path.relative_to(out_dir).as_posix(), kind="broken",
            expect="archived" if case in VALID_BROKEN_CASES else "quarantined", defect=case,
            reason=None if case in VALID_BROKEN_CASES else str(EXPECTED_REASONS[case]),
            size_bytes=path.stat().st_size, patient_index=study.patient.index,
        )
        if ds is not None:
            with _lenient_writing():
                values = {k: ds.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                                  "SOPClassUID", "Modality")}
            text = {k: (None if v is None else str(v)) for k, v in values.items()}
            entry.study_uid = text["StudyInstanceUID"]
            entry.series_uid = text["SeriesInstanceUID"]
            entry.sop_uid = text["SOPInstanceUID"]
            entry.sop_class_uid = text["SOPClassUID"]
            entry.modality = text["Modality"]
            meta = getattr(ds, "file_meta", None)
            entry.transfer_syntax_uid = str(meta.TransferSyntaxUID) if meta is not None else None
        entries.append(entry)

    def save_bad(case: str, ds: Dataset, ts: str = ExplicitVRLittleEndian) -> Path:
        with _lenient_writing():
            path = _save(ds, out_dir / f"{case}.dcm", ts, enforce=False)
        return path

    rng = np.random.default_rng([uids.seed, 4242])

    p = out_dir / "zero_bytes.dcm"
    p.write_bytes(b"")
    add("zero_bytes", p)

    p = out_dir / "random_bytes.dcm"
    p.write_bytes(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    add("random_bytes", p)

    # Cut in the middle of the StudyInstanceUID value: the UIDs that follow are gone.
    ds = _small_ct(study, uids, "truncated_header")
    full = _save(ds, out_dir / "truncated_header.dcm", ExplicitVRLittleEndian)
    data = full.read_bytes()
    uid_bytes = str(ds.StudyInstanceUID).encode("ascii")
    at = data.index(b"\x20\x00\x0d\x00UI")  # (0020,000D) explicit VR LE
    cut = at + 8 + len(uid_bytes) // 2
    full.write_bytes(data[:cut])
    add("truncated_header", full, ds)

    # Implicit VR: every length is 32-bit. Declare ~2 GiB for PatientName in a small file.
    ds = _small_ct(study, uids, "huge_length")
    full = _save(ds, out_dir / "huge_length.dcm", ImplicitVRLittleEndian)
    patched = bytearray(full.read_bytes())
    at = patched.index(b"\x10\x00\x10\x00", 132)  # (0010,0010) after the meta
    patched[at + 4:at + 8] = struct.pack("<I", 0x7FFFFFF0)
    full.write_bytes(bytes(patched))
    add("huge_length", full, ds)

    for case, keyword in (("missing_study_uid", "StudyInstanceUID"), ("missing_series_uid", "SeriesInstanceUID"),
                          ("missing_sop_uid", "SOPInstanceUID"), ("missing_sop_class_uid", "SOPClassUID")):
        ds = _small_ct(study, uids, case)
        delattr(ds, keyword)
        add(case, save_bad(case, ds), ds)

    for case, keyword, value in (
        ("uid_slash", "SeriesInstanceUID", "1.2.826.0.1.3680043.8.498.7/99"),
        ("uid_dotdot", "StudyInstanceUID", ".."),
        ("uid_200_chars", "SOPInstanceUID", ("1.2.826.0.1.3680043.8.498.7" + ".12345" * 40)[:200]),
    ):
        ds = _small_ct(study, uids, case)
        delattr(ds, keyword)  # a new element picks up the lenient validation mode
        with _lenient_writing():
            setattr(ds, keyword, value)
        add(case, save_bad(case, ds), ds)

    ds = _small_ct(study, uids, "private_10mb")
    block = ds.private_block(0x0009, "DICOMFLOW SYNTH", create=True)
    block.add_new(0x01, "OB", rng.integers(0, 256, size=10 * 1024 * 1024, dtype=np.uint8).tobytes())
    p = _save(ds, out_dir / "private_10mb.dcm", ExplicitVRLittleEndian)
    add("private_10mb", p, ds)

    # A DICOMDIR written by pydicom's FileSet; only the DICOMDIR itself goes in the corpus.
    with tempfile.TemporaryDirectory() as tmp:
        ds = _small_ct(study, uids, "dicomdir")
        inst = _save(ds, Path(tmp) / "src" / "IM0001.dcm", ExplicitVRLittleEndian)
        fs = FileSet()
        fs.add(inst)
        fs.write(Path(tmp) / "fs")
        target = out_dir / "dicomdir" / "DICOMDIR"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / "fs" / "DICOMDIR", target)
    add("dicomdir", target)
    return entries


# ---------------------------------------------------------------------------------------------
# The whole corpus


def _entry_for(path: Path, root: Path, kind: str, patient_index: int | None) -> CorpusEntry:
    ds = dcmread(path, stop_before_pixels=True)
    return CorpusEntry(
        path=path.relative_to(root).as_posix(), kind=kind, expect="archived",
        modality=ds.get("Modality"), sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID), sop_uid=str(ds.SOPInstanceUID), patient_index=patient_index,
        size_bytes=path.stat().st_size,
    )


@dataclass(frozen=True)
class CorpusOptions:
    patients: int = 6
    slices: int = 40
    seed: int = 0
    broken: bool = True
    large_frames: int = 0
    sentinel: str | None = None
    rows: int = 256
    cols: int = 256
    large_rows: int = 2048
    large_cols: int = 2048
    #: A whole-slide microscopy pyramid (3 instances, TILED_FULL JPEG tiles) in a pathology study of the last patient.
    slide: bool = False


#: Transfer syntax of each patient's CT and MR series (cycled); exactly one MR series is deflated.
CT_SYNTAXES: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
MR_SYNTAXES: Final = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
DEFLATED_MR_PATIENT: Final = 1


def corpus_file_count(options: CorpusOptions) -> int:
    """How many files :func:`write_corpus` writes for ``options`` (for progress bars)."""
    n = options.patients
    mr_slices = max(1, options.slices // 2)
    count = n * (options.slices + mr_slices)
    count += 2 if n >= 1 else 0  # SR + DX on the first patient
    count += 1 if n >= 2 else 0  # MG on the second patient
    count += len(BROKEN_CASES) if options.broken else 0
    count += 1 if options.large_frames else 0
    count += len(WSI_LEVELS) if options.slide else 0
    return count


def write_corpus(out_dir: Path, options: CorpusOptions | None = None, *, progress: bool = False,
                 **overrides: Any) -> list[Path]:
    """Write the corpus (see the module docstring) and ``manifest.json``; return every file written.

    ``overrides`` are :class:`CorpusOptions` fields (``write_corpus(out, patients=2, slices=5)``).
    """
    from tqdm import tqdm  # dev dependency; the library is dev-only

    opts = replace(options or CorpusOptions(), **overrides)
    if opts.patients < 1 or opts.slices < 1:
        raise ValueError(f"patients and slices must be at least 1, got {opts.patients} and {opts.slices}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    uids = UidFactory(opts.seed)
    patients = make_patients(opts.patients, seed=opts.seed, sentinel=opts.sentinel)
    entries: list[CorpusEntry] = []
    written: list[Path] = []
    bar = tqdm(total=corpus_file_count(opts), unit="file", desc="synth", disable=not progress, leave=False)

    def good(path: Path, patient: Patient | None, kind: str = "good") -> None:
        written.append(path)
        entries.append(_entry_for(path, out_dir, kind, patient.index if patient else None))
        bar.update(1)

    try:
        for p in patients:
            folder = out_dir / "good" / f"p{p.index + 1:02d}"
            ct_study = make_study(p, uids, "ct", description="CT CHEST ABDOMEN", day=0)
            ct_paths = make_ct_series(folder / "ct", ct_study, uids, slices=opts.slices, rows=opts.rows,
                                      cols=opts.cols, transfer_syntax=CT_SYNTAXES[p.index % len(CT_SYNTAXES)],
                                      series_number=2, on_file=functools.partial(good, patient=p))
            mr_study = make_study(p, uids, "mr", description="MR BRAIN", day=3)
            mr_ts = (DeflatedExplicitVRLittleEndian if p.index == DEFLATED_MR_PATIENT
                     else MR_SYNTAXES[p.index % len(MR_SYNTAXES)])
            make_mr_series(folder / "mr", mr_study, uids, slices=max(1, opts.slices // 2), rows=opts.rows,
                           cols=opts.cols, transfer_syntax=mr_ts, series_number=3,
                           on_file=functools.partial(good, patient=p))
            if p.index == 0:
                good(make_sr(folder / "sr" / "SR0001.dcm", ct_study, uids, evidence=ct_paths), p)
                dx_study = make_study(p, uids, "dx", description="XR CHEST PA", day=5)
                good(make_dx(folder / "dx" / "DX0001.dcm", dx_study, uids), p)
            if p.index == 1:
                mg_study = make_study(p, uids, "mg", description="DBT SCREENING", day=7)
                good(make_multiframe_mg(folder / "mg" / "DBT0001.dcm", mg_study, uids), p)
        if opts.slide:
            p = patients[-1]
            sm_study = make_study(p, uids, "sm", description="PATHOLOGY SLIDE H&E", day=13)
            for path in make_wsi(out_dir / "good" / f"p{p.index + 1:02d}" / "sm", sm_study, uids):
                good(path, p)
        if opts.large_frames:
            p = patients[min(1, len(patients) - 1)]
            large_study = make_study(p, uids, "large", description="DBT LARGE", day=9)
            path = make_multiframe_mg(out_dir / "good" / "large" / "DBT_large.dcm", large_study, uids,
                                      frames=opts.large_frames, rows=opts.large_rows, cols=opts.large_cols,
                                      series_number=7)
            good(path, p, kind="large")
        if opts.broken:
            broken_dir = out_dir / "broken"
            broken_study = make_study(patients[0], uids, "broken", description="BROKEN", day=11)
            for e in make_broken_set(broken_dir, broken_study, uids):
                e.path = f"broken/{e.path}"
                entries.append(e)
                written.append(out_dir / e.path)
                bar.update(1)
    finally:
        bar.close()

    manifest = {
        "generator": "dicomflow tools.corpus",
        "options": {k: v for k, v in vars(opts).items() if k != "sentinel"} | {"sentinel": opts.sentinel is not None},
        "uid_prefix": UID_PREFIX,
        "patients": [
            {"index": p.index, "name": p.name, "patient_id": p.patient_id,
             "charset": list(p.charset) if isinstance(p.charset, tuple) else p.charset}
            for p in patients
        ],
        "files": [vars(e) for e in entries],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return written


#: The projection studies of :func:`write_small_mix`: (modality, SOP class, body part, views).
SMALL_KINDS: Final = (
    ("MG", MG_IMAGE, "BREAST", ("L CC", "L MLO", "R CC", "R MLO")),
    ("DX", DX_IMAGE, "CHEST", ("PA", "LAT")),
    ("CR", CR_IMAGE, "EXTREMITY", ("AP", "LAT", "OBL")),
)


def make_projection(path: Path, study: Study, uids: UidFactory, *, modality: str, sop_class: str, body_part: str,
                    series_number: int, instance: int, view: str, rows: int = 64, cols: int = 64) -> CorpusEntry:
    """One single-frame projection image (DX, MG or CR For Presentation) of a small study."""
    series_uid = uids("series", study.study_uid, modality, series_number)
    rng = np.random.default_rng([uids.seed, study.patient.index, series_number, instance])
    ds = _base_dataset(study, sop_class=sop_class, sop_uid=uids("sop", series_uid, instance), modality=modality,
                       series_uid=series_uid, series_number=series_number, instance_number=instance,
                       series_description=f"{modality} {view}", station=f"{modality}-SYNTH-01", body_part=body_part)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = view.split()[-1]
    ds.ImageLaterality = view.split()[0] if view[:2] in ("L ", "R ") else "U"
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    ds.PixelIntensityRelationship = "LOG"
    _set_image_pixels(ds, rng.integers(0, 4095, size=(rows, cols)).astype(np.uint16), bits_stored=12, signed=False,
                      big_endian=False)
    _save(ds, path, ExplicitVRLittleEndian)
    return CorpusEntry(path=str(path), kind="good", expect="archived", modality=modality, sop_class_uid=sop_class,
                       transfer_syntax_uid=ExplicitVRLittleEndian, study_uid=study.study_uid, series_uid=series_uid,
                       sop_uid=ds.SOPInstanceUID, patient_index=study.patient.index, size_bytes=path.stat().st_size)


def write_small_mix(out_dir: Path, *, studies: int = 40, seed: int = 0, date: str = "20260315",
                    variant: str = "") -> list[Path]:
    """A day of small projection studies (an X-ray and mammography day): ``studies`` studies of 1-10
    single-frame DX, MG or CR images each (one or two series), one patient each, all on ``date``. The
    manifest is written as :func:`write_corpus` writes it (``good`` entries only), so the same loaders read
    it. The per-study share of the pipeline's cost is largest on such a day (bench/, request budget test)."""
    out_dir = Path(out_dir)
    uids = UidFactory(seed, variant=variant)
    rng = np.random.default_rng([seed, 23])
    patients = make_patients(studies, seed=seed)
    entries: list[CorpusEntry] = []
    for p in patients:
        modality, sop_class, body_part, views = SMALL_KINDS[p.index % len(SMALL_KINDS)]
        study = replace(make_study(p, uids, "small", description=f"{modality} {body_part}"), date=date)
        n = int(rng.integers(1, 11))
        series = 2 if n > len(views) else 1  # extra views and repeats go in a second series
        for k in range(n):
            number = 1 + (k >= len(views)) if series == 2 else 1
            path = out_dir / "good" / f"s{p.index + 1:03d}" / f"IM{k + 1:04d}.dcm"
            e = make_projection(path, study, uids, modality=modality, sop_class=sop_class, body_part=body_part,
                                series_number=number, instance=k + 1, view=views[k % len(views)])
            e.path = str(path.relative_to(out_dir))
            entries.append(e)
    manifest = {"generator": "dicomflow tools.corpus small mix", "options": {"studies": studies, "seed": seed},
                "uid_prefix": UID_PREFIX, "patients": [], "files": [vars(e) for e in entries]}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return [out_dir / e.path for e in entries]


def write_large_mix(out_dir: Path, *, studies: int = 4, slices: int = 60, seed: int = 0, rows: int = 16,
                    cols: int = 16, variant: str = "") -> list[Path]:
    """CT and MR studies of ``slices`` instances each (alternating, one series each), a manifest as
    :func:`write_corpus` writes it: the mix where the per-instance path dominates the cost."""
    out_dir = Path(out_dir)
    uids = UidFactory(seed, variant=variant)
    entries: list[CorpusEntry] = []
    written: list[Path] = []
    for p in make_patients(studies, seed=seed):
        ct = p.index % 2 == 0
        study = make_study(p, uids, "large", description="CT CHEST" if ct else "MR BRAIN", day=p.index)
        folder = out_dir / "good" / f"p{p.index + 1:02d}"
        make = make_ct_series if ct else make_mr_series
        for path in make(folder, study, uids, slices=slices, rows=rows, cols=cols, series_number=2):
            written.append(path)
            entries.append(_entry_for(path, out_dir, "good", p.index))
    manifest = {"generator": "dicomflow tools.corpus large mix", "options": {"studies": studies, "slices": slices,
                                                                              "seed": seed},
                "uid_prefix": UID_PREFIX, "patients": [], "files": [vars(e) for e in entries]}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return written


def load_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest written by :func:`write_corpus`."""
    result: dict[str, Any] = json.loads((Path(out_dir) / "manifest.json").read_text(encoding="utf-8"))
    return result
