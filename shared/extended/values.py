"""An instance's values of extended query tags, from its DICOM JSON, each checked against the tag's VR.

Strict when indexing, as the standard defines each VR (PS3.5 6.2): a value that does not fit (a date that is
not YYYYMMDD, a 70-character LO, a DS that is not a number, a US out of range...) is not indexed, and the
instance is reported as an error of that tag (``GET .../extendedquerytags/{path}/errors``). The instance itself is
stored and served as usual: a bad value is never a failed ingest. Messages name the tag and the VR, never the
value (it may be patient data).

Private tags are read only when their block's creator element holds the tag's ``privateCreator``. A private
element read with an implicit VR comes as ``UN`` (inline binary): it is decoded as the tag's VR (text VRs as
Latin-1 text, binary VRs little endian).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shared.extended.tags import ExtendedTag, creator_tag

_MAX_CHARS: Final = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "DS": 16, "IS": 12, "AS": 4, "DA": 8, "DT": 26,
                     "TM": 16, "UI": 64}
_INT_RANGE: Final = {"US": (0, 0xFFFF), "SS": (-0x8000, 0x7FFF), "UL": (0, 0xFFFFFFFF),
                     "SL": (-0x80000000, 0x7FFFFFFF), "IS": (-(2**31), 2**31 - 1)}
_BINARY: Final = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d"}
_AS = re.compile(r"\d{3}[DWMY]")
_CS = re.compile(r"[A-Z0-9 _]*")
_TM = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DS = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class _Unfit(Exception):
    """A value that does not fit its VR (a local signal: never raised past this module)."""


@dataclass(frozen=True, slots=True)
class TagError:
    tag: ExtendedTag
    message: str


def extract(doc: Mapping[str, Any], tags: Sequence[ExtendedTag]) -> tuple[dict[str, list[Any]], list[TagError]]:
    """``{tag.key: [values]}`` for every tag (an empty list when the instance has no valid value: the tag
    was looked at), and the tags whose value failed their VR."""
    values: dict[str, list[Any]] = {}
    errors: list[TagError] = []
    for tag in tags:
        try:
            values[tag.key] = _values(doc, tag)
        except _Unfit as bad:
            values[tag.key] = []
            errors.append(TagError(tag, str(bad)))
    return values, errors


def _values(doc: Mapping[str, Any], tag: ExtendedTag) -> list[Any]:
    element = doc.get(tag.path)
    if not isinstance(element, dict):
        return []
    if tag.private_creator is not None:
        creator = doc.get(creator_tag(tag.path))
        held = creator.get("Value") if isinstance(creator, dict) else None
        if not held or str(held[0]).strip() != tag.private_creator:
            return []  # this block belongs to another creator: not our tag
    if "InlineBinary" in element and element.get("vr") != tag.vr:
        raw = _inline(element["InlineBinary"], tag)
        items: list[Any] = _decode(raw, tag)
    else:
        items = [v for v in element.get("Value") or [] if v is not None and v != ""]
    return [_check(tag, v) for v in items]


def _inline(text: object, tag: ExtendedTag) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise _Unfit(f"The value of {tag.path} is not valid base64 inline binary.") from None


def _decode(raw: bytes, tag: ExtendedTag) -> list[Any]:
    """A value read without its VR (UN), as the tag's VR."""
    code = _BINARY.get(tag.vr)
    if code is not None:
        size = struct.calcsize(code)
        if len(raw) % size:
            raise _Unfit(f"The value of {tag.path} is {len(raw)} bytes, not a multiple of {size} as VR "
                              f"{tag.vr} needs.")
        return [v[0] for v in struct.iter_unpack(code, raw)]
    text = raw.decode("latin-1").rstrip("\x00 ")
    return [t for t in text.split("\\") if t.strip()] if text.strip() else []


def _check(tag: ExtendedTag, value: Any) -> Any:
    """The value as kept in the index (str, int or float), or _Unfit naming the tag and VR."""
    vr = tag.vr
    if isinstance(value, dict):  # a person name in DICOM JSON
        if vr != "PN":
            raise _Unfit(f"The value of {tag.path} is a person name, not VR {vr}.")
        value = "=".join(str(value[k]) for k in ("Alphabetic", "Ideographic", "Phonetic") if k in value)
    check = _CHECKS.get(vr)
    assert check is not None, vr
    try:
        return check(value)
    except (TypeError, ValueError, OverflowError, _Unfit):
        raise _Unfit(f"A value of {tag.path} does not fit its VR {vr}.") from None


def _text(limit: int | None = None, pattern: re.Pattern[str] | None = None, strip: str = " ") -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Unfit("not text")
        text = value.strip(strip)
        if any(ord(c) < 0x20 and c not in "\t\r\n\x1b" for c in text) or "\\" in text:
            raise _Unfit("control characters")
        if limit is not None and len(text) > limit:
            raise _Unfit("too long")
        if pattern is not None and not pattern.fullmatch(text):
            raise _Unfit("bad form")
        return text
    return check


def _date(value: Any) -> str:
    text = _text(8)(value)
    dt.datetime.strptime(text, "%Y%m%d")  # ValueError for anything but a real date
    if len(text) != 8:
        raise _Unfit("not YYYYMMDD")
    return text


def _integer(vr: str) -> Callable[[Any], int]:
    low, high = _INT_RANGE[vr]

    def check(value: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise _Unfit("not a whole number")
        if isinstance(value, str):
            text = value.strip()
            if vr == "IS" and (len(text) > _MAX_CHARS["IS"] or not re.fullmatch(r"[+-]?\d+", text)):
                raise _Unfit("not an integer string")
            value = int(text)
        number = int(value)
        if not low <= number <= high:
            raise _Unfit("out of range")
        return number
    return check


def _decimal(vr: str) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool):
            raise _Unfit("not a number")
        if isinstance(value, str):
            text = value.strip()
            if vr == "DS" and (len(text) > _MAX_CHARS["DS"] or not _DS.fullmatch(text)):
                raise _Unfit("not a decimal string")
            value = float(text)
        number = float(value)
        if not math.isfinite(number):
            raise _Unfit("not finite")
        return number
    return check


def _pn(value: Any) -> str:
    text = _text()(value)
    if any(len(group) > 64 for group in text.split("=")) or text.count("=") > 2:
        raise _Unfit("bad person name")
    return text


_CHECKS: Final[dict[str, Callable[[Any], Any]]] = {
    "AE": _text(16), "AS": _text(4, _AS), "CS": _text(16, _CS), "DA": _date, "DT": _text(26, _DT),
    "TM": _text(16, _TM), "LO": _text(64), "SH": _text(16), "PN": _pn, "UI": _text(64, _UID, " \x00"),
    "DS": _decimal("DS"), "FL": _decimal("FL"), "FD": _decimal("FD"),
    "IS": _integer("IS"), "US": _integer("US"), "SS": _integer("SS"), "UL": _integer("UL"), "SL": _integer("SL"),
}
