"""DICOM facts the pipeline relies on, in one place: what is a derived result, and what a
transfer syntax implies (asked of :class:`pydicom.uid.UID`, never kept as our own lists).

"Derived" (the ``derived`` flag on index rows, events, routing facts and the inference
filter) means *a result object made from other instances*: segmentations, structured
reports, key object selections, presentation states, RT structure sets, parametric maps,
encapsulated documents. Models never run on them and routing rules can select them.
An *image* whose ImageType says DERIVED (a CT reformat, a MIP) is still an image: it is
not derived in this sense (rules that want to tell reformats apart match on ImageType).
"""

from __future__ import annotations

import functools
from typing import Final

from pydicom.uid import UID

#: SOP classes whose instances are always derived results.
DERIVED_SOP_CLASSES: Final = frozenset({
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map Storage
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set Storage
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF Storage
})
#: SOP class families (UID prefixes) of derived results: every SR (incl. Key Object
#: Selection, 88.59) and every presentation state (11.x).
DERIVED_SOP_CLASS_PREFIXES: Final = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.")
#: Modalities of derived results (used when the SOP class is unknown, e.g. a series-level event).
DERIVED_MODALITIES: Final = frozenset({"SEG", "SR", "KO", "PR", "RTSTRUCT", "DOC"})

IMPLICIT_VR_LITTLE_ENDIAN: Final = UID("1.2.840.10008.1.2")
EXPLICIT_VR_LITTLE_ENDIAN: Final = UID("1.2.840.10008.1.2.1")
EXPLICIT_VR_BIG_ENDIAN: Final = UID("1.2.840.10008.1.2.2")


def is_derived(sop_class_uid: str | None, modality: str | None = None) -> bool:
    """True for a derived result (see the module docstring): by SOP class, else by modality."""
    sop_class = (sop_class_uid or "").strip()
    if sop_class in DERIVED_SOP_CLASSES or sop_class.startswith(DERIVED_SOP_CLASS_PREFIXES):
        return True
    return (modality or "").strip().upper() in DERIVED_MODALITIES


@functools.lru_cache(maxsize=256)  # asked per instance; pydicom's UID properties cost microseconds each
def _known(transfer_syntax_uid: str) -> UID | None:
    """The UID if pydicom knows it as a transfer syntax. Syntaxes newer than pydicom (e.g.
    Deflated Image Frame Compression, 1.2.840.10008.1.2.8.1) are encapsulated, explicit VR
    little endian by definition (PS3.5 A.4), which is what callers assume for None."""
    uid = UID(transfer_syntax_uid)
    return uid if uid.is_transfer_syntax else None


@functools.lru_cache(maxsize=256)
def is_deflated(transfer_syntax_uid: str) -> bool:
    """The data set after the file meta is deflated (zlib): its bytes are not at fixed offsets."""
    uid = _known(transfer_syntax_uid)
    return bool(uid and uid.is_deflated)


@functools.lru_cache(maxsize=256)
def has_native_pixels(transfer_syntax_uid: str) -> bool:
    """Pixel data is stored uncompressed (native), so frames are fixed-size byte ranges of the
    (inflated) data set. True for the three uncompressed syntaxes and deflated explicit LE."""
    uid = _known(transfer_syntax_uid)
    return bool(uid and not uid.is_compressed)


def has_native_pixels_in_place(transfer_syntax_uid: str) -> bool:
    """Native pixel data at a byte offset of the stored file (not deflated)."""
    return has_native_pixels(transfer_syntax_uid) and not is_deflated(transfer_syntax_uid)


def encoding_of(transfer_syntax_uid: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) of a transfer syntax."""
    uid = _known(transfer_syntax_uid)
    return (bool(uid.is_implicit_VR), bool(uid.is_little_endian)) if uid else (False, True)


def syntax_for(implicit_vr: bool, little_endian: bool) -> UID:
    """The uncompressed transfer syntax with this encoding (files without file meta)."""
    if not little_endian:
        return EXPLICIT_VR_BIG_ENDIAN
    return IMPLICIT_VR_LITTLE_ENDIAN if implicit_vr else EXPLICIT_VR_LITTLE_ENDIAN
