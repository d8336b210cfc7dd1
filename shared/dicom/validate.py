"""Validation with reason codes. Strict about what becomes a key or a path, tolerant
about the rest (pydicom reads what it can; we refuse only what we cannot index).

UIDs are checked here before they ever become a blob path or a Table key.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from shared.errors import ADVICE, BadInput, Reason

if TYPE_CHECKING:
    from shared.dicom.header import Header


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
    if Reason.TRUNCATED in header.warnings and not all(
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
