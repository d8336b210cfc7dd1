"""Decoded pixel data and geometry for the models.

Decoding goes through pydicom's pixel-data backends; the compressed transfer
syntaxes a hospital sends most (JPEG baseline/extended/lossless, JPEG-LS,
JPEG 2000, RLE) are handled by the pinned ``pylibjpeg`` plugins
(``pylibjpeg-libjpeg``, ``pylibjpeg-openjpeg``, ``pylibjpeg-rle``), which pydicom
finds on its own once installed. Slice spacing comes from Image Position
(Patient) projected on the slice normal, not from Slice Thickness, which is often
not the spacing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut

from shared.errors import BadInput, Reason

log = logging.getLogger(__name__)



def _frame(ds: Dataset) -> np.ndarray:
    """One decoded frame in modality units (grey), float32."""
    if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
        raise BadInput(Reason.INFERENCE_INCONSISTENT,
            "Only single-frame instances are supported by the built-in reader.")
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise BadInput(Reason.INFERENCE_NO_PIXELS,
            f"Instance {ds.SOPInstanceUID} has no pixel data to analyse.")
    arr = ds.pixel_array
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3:  # colour: luminance (ITU-R BT.601), pydicom has converted YBR to RGB
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        return np.asarray(arr, dtype=np.float32)
    out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    if photometric == "MONOCHROME1":  # minimum is white: flip so bright means dense
        out = out.max() - out
    return out


def _row_col_spacing(ds: Dataset) -> tuple[float, float]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            return float(value[0]), float(value[1])
    raise BadInput(Reason.INFERENCE_NO_GEOMETRY,
        f"Instance {ds.SOPInstanceUID} has no Pixel Spacing: measurements need it.")


def slice_normal(ds: Dataset) -> np.ndarray:
    iop = getattr(ds, "ImageOrientationPatient", None)
    if iop is None or len(iop) != 6:
        raise BadInput(Reason.INFERENCE_NO_GEOMETRY,
            f"Instance {ds.SOPInstanceUID} has no Image Orientation (Patient).")
    row = np.array([float(v) for v in iop[:3]])
    col = np.array([float(v) for v in iop[3:]])
    return np.cross(row, col)


def load_volume(datasets: Sequence[Dataset]) -> tuple[list[Dataset], np.ndarray, tuple[float, float, float]]:
    """Sort slices along their normal and stack them; return (sorted, pixels, spacing)."""
    if not datasets:
        raise BadInput(Reason.INFERENCE_NO_PIXELS,
            "The series has no instances with pixel data.")
    normal = slice_normal(datasets[0])
    keyed = []
    for ds in datasets:
        ipp = getattr(ds, "ImagePositionPatient", None)
        if ipp is None or len(ipp) != 3:
            raise BadInput(Reason.INFERENCE_NO_GEOMETRY,
                f"Instance {ds.SOPInstanceUID} has no Image Position (Patient).")
        keyed.append((float(np.dot(normal, [float(v) for v in ipp])), ds))
    keyed.sort(key=lambda item: item[0])
    ordered = [ds for _, ds in keyed]
    shape = (int(ordered[0].Rows), int(ordered[0].Columns))
    if any((int(ds.Rows), int(ds.Columns)) != shape for ds in ordered):
        raise BadInput(Reason.INFERENCE_INCONSISTENT,
            "Slices of the series differ in size; expected one Rows x Columns.")
    positions = np.array([key for key, _ in keyed])
    if len(ordered) > 1:
        gaps = np.diff(positions)
        if np.any(gaps <= 1e-6):
            raise BadInput(Reason.INFERENCE_INCONSISTENT,
                "Two slices share one position; expected one slice per position.")
        dz = float(np.median(gaps))
    else:
        dz = float(getattr(ordered[0], "SpacingBetweenSlices", 0) or getattr(ordered[0], "SliceThickness", 0) or 0)
        if dz <= 0:
            raise BadInput(Reason.INFERENCE_NO_GEOMETRY,
                "A single slice needs Slice Thickness to measure a volume.")
    dy, dx = _row_col_spacing(ordered[0])
    pixels = np.stack([_frame(ds) for ds in ordered])
    return ordered, pixels, (dz, dy, dx)


def load_projection(ds: Dataset) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One 2-D image: pixels as (1, rows, columns) and spacing (0, row, column)."""
    dy, dx = _row_col_spacing(ds)
    return _frame(ds)[np.newaxis, ...], (0.0, dy, dx)
