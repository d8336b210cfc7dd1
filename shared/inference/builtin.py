"""The built-in model: body/tissue segmentation by thresholding + largest connected component.

Deterministic, offline, and fast enough for a Functions worker: a fixed threshold
for CT (Hounsfield units are absolute), Otsu's threshold for MR and 2-D images
(their grey levels are not), then the largest 3-D connected component
(``scipy.ndimage.label``) with holes filled slice by slice
(``scipy.ndimage.binary_fill_holes``) so lungs and bowel gas count as body.
Measurements are in clinical units: volume in mL for series, area in cm² for
projection images (MG, DX, CR).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from scipy import ndimage

from shared.inference.model import (
    PROJECTION_MODALITIES,
    ImageSet,
    Measurement,
    Prediction,
    SeriesInfo,
)

ML = Code("mL", "UCUM", "milliliter")
CM2 = Code("cm2", "UCUM", "square centimeter")
#: CT threshold between air (-1000 HU) and fat (about -100 HU).
CT_BODY_HU = -500.0


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance) of ``values``."""
    flat = values[np.isfinite(values)].ravel()
    lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        return hi
    hist, edges = np.histogram(flat, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep: np.ndarray = labels == int(np.argmax(sizes))
    return keep


def fill_slices(mask: np.ndarray) -> np.ndarray:
    out = np.empty_like(mask)
    for i in range(mask.shape[0]):
        out[i] = ndimage.binary_fill_holes(mask[i])
    return out


@dataclass
class BodySegmentation:
    """Body (CT/MR series) or tissue (2-D images) segmentation with a size measurement.

    ``priority_ml`` / ``priority_cm2``: when set, a result at or above the value is
    flagged as priority (a routing rule can act on it).
    """

    name: str = "dicomflow-body"
    version: str = "1.0.0"
    modalities: frozenset[str] = frozenset({"CT", "MR"}) | PROJECTION_MODALITIES
    priority_ml: float | None = None
    priority_cm2: float | None = None

    def accepts(self, series: SeriesInfo) -> bool:
        return (not series.derived) and series.modality in self.modalities

    def predict(self, images: ImageSet) -> Prediction | None:
        pixels = images.pixels
        modality = str(getattr(images.datasets[0], "Modality", ""))
        threshold = CT_BODY_HU if modality == "CT" else otsu_threshold(pixels)
        mask = fill_slices(largest_component(pixels > threshold))
        label, category, kind = (
            ("Body", codes.SCT.AnatomicalStructure, codes.SCT.EntireBody)
            if images.is_volume
            else ("Tissue", codes.SCT.Tissue, codes.SCT.SoftTissue)
        )
        return measured_prediction(
            mask, images, label, category, kind, priority_ml=self.priority_ml, priority_cm2=self.priority_cm2
        )


def measured_prediction(
    mask: np.ndarray,
    images: ImageSet,
    label: str,
    category: Code,
    kind: Code,
    *,
    priority_ml: float | None = None,
    priority_cm2: float | None = None,
) -> Prediction | None:
    """A prediction with its size: volume in mL (series) or area in cm² (2-D), ``None`` if empty."""
    count = int(mask.sum())
    if count == 0:
        return None
    dz, dy, dx = images.spacing_mm
    if images.is_volume:
        value = count * dz * dy * dx / 1000.0
        measurement = Measurement(codes.SCT.Volume, round(value, 3), ML)
        priority = priority_ml is not None and value >= priority_ml
    else:
        value = count * dy * dx / 100.0
        measurement = Measurement(codes.SCT.Area, round(value, 3), CM2)
        priority = priority_cm2 is not None and value >= priority_cm2
    return Prediction(
        mask=mask,
        segment_label=label,
        category=category,
        segment_type=kind,
        measurements=[measurement],
        priority=bool(priority),
    )
