"""Small DICOM instances in memory, for unit tests of the services (real Part 10 bytes)."""

from __future__ import annotations

import io

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = "1.2.826.0.1.3680043.10.1234.9."


def uid(*parts: object) -> str:
    return str(generate_uid(prefix=ROOT, entropy_srcs=[str(p) for p in parts]))


def instance(study: str, series: str, sop: str, *, name: str = "Doe^Jane", patient_id: str = "PID-1",
             modality: str = "CT", number: int = 1, study_date: str = "20261129", accession: str = "ACC-1",
             pixel: int = 0, sop_class: str = CTImageStorage) -> bytes:
    """A small CT-like instance (8x8, 16-bit); ``pixel`` changes the content, not the UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, patient_id, "19700101", "F"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = study_date, "101500", accession, "1"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, number
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes([pixel % 256, 0]) * 64
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def study_of(n_series: int, n_instances: int, tag: str = "s", **kw: object) -> list[tuple[str, str, str, bytes]]:
    """``n_series`` x ``n_instances`` instances of one study: (study, series, sop, bytes)."""
    study = uid(tag, "study")
    out = []
    for s in range(n_series):
        series = uid(tag, "series", s)
        for i in range(n_instances):
            sop = uid(tag, "sop", s, i)
            out.append((study, series, sop, instance(study, series, sop, number=i + 1, **kw)))  # type: ignore[arg-type]
    return out
