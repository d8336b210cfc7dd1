"""Validation with reason codes. Strict about what becomes a key or a path, tolerant
about the rest (pydicom reads what it can; we refuse only what we cannot index).

UIDs are checked here before they ever become a blob path or a Table key.
"""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING

from shared.errors import BadInput

if TYPE_CHECKING:
    from shared.dicom.header import Header


class Reason(enum.StrEnum):
    """Why a file was refused. Stable codes: they appear in blob metadata, the ingest
    log, ``Dicom.IngestFailed`` events and STOW-RS failure responses."""

    EMPTY = "empty-file"
    NOT_DICOM = "not-dicom"
    TRUNCATED = "truncated-header"
    UNDECODABLE = "undecodable-header"
    UNSUPPORTED = "unsupported-object"
    MISSING_STUDY_UID = "missing-study-uid"
    MISSING_SERIES_UID = "missing-series-uid"
    MISSING_SOP_UID = "missing-sop-instance-uid"
    MISSING_SOP_CLASS = "missing-sop-class-uid"
    INVALID_UID = "invalid-uid"
    UID_CONFLICT = "uid-conflict"
    STUDY_MISMATCH = "study-mismatch"


#: A human sentence per reason: what was expected and what to do next.
ADVICE: dict[Reason, str] = {
    Reason.EMPTY: "The file is empty (0 bytes). Upload the file again.",
    Reason.NOT_DICOM: "The file is not DICOM (no DICM prefix and no readable data set). "
                      "Upload DICOM Part 10 files only.",
    Reason.TRUNCATED: "The DICOM header ends before it is complete; the file was probably cut short. "
                      "Upload the complete file again.",
    Reason.UNDECODABLE: "The DICOM header could not be decoded. Check the file with dciodvfy or dcmdump.",
    Reason.UNSUPPORTED: "The object is not a storable instance (for example a DICOMDIR). "
                        "Upload the instances it refers to instead.",
    Reason.MISSING_STUDY_UID: "Study Instance UID (0020,000D) is missing or empty. It is required to index the file.",
    Reason.MISSING_SERIES_UID: "Series Instance UID (0020,000E) is missing or empty. It is required to index the file.",
    Reason.MISSING_SOP_UID: "SOP Instance UID (0008,0018) is missing or empty. It is required to index the file.",
    Reason.MISSING_SOP_CLASS: "SOP Class UID (0008,0016) is missing or empty. It is required to index the file.",
    Reason.INVALID_UID: "A UID is not valid (only digits and dots, at most 64 characters, no empty components). "
                        "Fix the sending system's UID generation.",
    Reason.UID_CONFLICT: "The same UID is used at two levels (study, series, instance). "
                         "Fix the sending system's UID generation.",
    Reason.STUDY_MISMATCH: "The instance's Study Instance UID differs from the study in the request URL.",
}

_UID_STRICT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_TOLERANT = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_LENGTH = 64


def is_valid_uid(value: object, *, strict: bool = False) -> bool:
    """True for a UID that is safe as a path segment and key: digits and dots, no
    empty component, at most 64 characters. ``strict`` also refuses leading zeros."""
    if not isinstance(value, str) or not value or len(value) > MAX_UID_LENGTH:
        return False
    return bool((_UID_STRICT if strict else _UID_TOLERANT).fullmatch(value))


def check_uid(value: object, name: str, missing: Reason | None = None, *, strict: bool = False) -> str:
    """Return ``value`` as a UID string or raise :class:`BadInput` naming the attribute
    (never echoing the value, which could be anything)."""
    if value is None or (isinstance(value, str) and value.strip("\0 ") == ""):
        reason = missing or Reason.INVALID_UID
        raise BadInput(reason, ADVICE[reason] if missing else f"{name} is missing or empty.")
    text = str(value).strip("\0 ")
    if not is_valid_uid(text, strict=strict):
        shown = f"{len(text)} characters" if len(text) > MAX_UID_LENGTH else "characters other than digits and dots"
        raise BadInput(Reason.INVALID_UID, f"{name} is not a valid UID ({shown}). {ADVICE[Reason.INVALID_UID]}")
    return text


def validate(header: Header, *, strict: bool = False) -> tuple[str, str, str, str]:
    """Check everything that becomes a key or a path. Returns (study, series, sop, sop_class).

    A header that was cut short is tolerated when all four UIDs were read (pydicom
    reads such files too); otherwise the truncation is the reason given."""
    if "truncated-header" in header.warnings and not all(
        is_valid_uid(v) for v in (header.study_uid, header.series_uid, header.sop_uid, header.sop_class_uid)
    ):
        raise BadInput(Reason.TRUNCATED, ADVICE[Reason.TRUNCATED])
    study = check_uid(header.study_uid, "StudyInstanceUID", Reason.MISSING_STUDY_UID, strict=strict)
    series = check_uid(header.series_uid, "SeriesInstanceUID", Reason.MISSING_SERIES_UID, strict=strict)
    sop = check_uid(header.sop_uid, "SOPInstanceUID", Reason.MISSING_SOP_UID, strict=strict)
    sop_class = check_uid(header.sop_class_uid, "SOPClassUID", Reason.MISSING_SOP_CLASS, strict=strict)
    if len({study, series, sop}) != 3:
        raise BadInput(Reason.UID_CONFLICT, ADVICE[Reason.UID_CONFLICT])
    return study, series, sop, sop_class
