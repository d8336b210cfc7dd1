"""The model protocol and the plain values that cross it.

A model is anything with ``name``, ``version``, ``accepts(series)`` and
``predict(images)``: the built-in one (:mod:`shared.inference.builtin`) and a
hospital's own (registered in the config container, see
:mod:`shared.inference.registry`) are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

#: Modalities whose series are volumes (a stack of slices with a position each).
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
#: Modalities whose instances are single projection images.
PROJECTION_MODALITIES = frozenset({"MG", "DX", "CR", "XA", "RF", "IO", "PX"})


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What a model may look at before any pixel data is read."""

    study_uid: str
    series_uid: str
    modality: str
    sop_class_uid: str = ""
    instance_count: int = 0
    derived: bool = False


@dataclass(slots=True)
class ImageSet:
    """Decoded pixel data of one series (or one 2-D image) with its geometry.

    ``pixels`` is ``(frames, rows, columns)`` float32 in modality units (HU for CT,
    after Rescale Slope/Intercept). ``datasets`` are the source instances in the
    same order as the frames (one dataset per frame; single-frame instances only).
    ``spacing_mm`` is ``(slice, row, column)`` spacing; the slice spacing is 0 for
    a projection image.
    """

    datasets: list[Dataset]
    pixels: np.ndarray
    spacing_mm: tuple[float, float, float]
    is_volume: bool


@dataclass(frozen=True, slots=True)
class Measurement:
    """One number with its concept and unit (both coded, as TID 1500 wants)."""

    name: Code
    value: float
    unit: Code


@dataclass(slots=True)
class Prediction:
    """A binary mask over the image set plus the measurements made from it."""

    mask: np.ndarray  # bool, same shape as ImageSet.pixels
    segment_label: str
    category: Code
    segment_type: Code
    measurements: list[Measurement] = field(default_factory=list)
    priority: bool = False


@runtime_checkable
class Model(Protocol):
    """A model the registry can run. ``name`` and ``version`` go into the result UIDs."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def accepts(self, series: SeriesInfo) -> bool: ...

    def predict(self, images: ImageSet) -> Prediction | None: ...
