"""DICOM JSON (PS3.18 F.2) of a parsed header, with large values as BulkDataURI.

Values that the header parse deferred (larger than ``DEFER_SIZE``) are never read
for the JSON: binary ones become BulkDataURIs pointing at their byte range in the
archived file; deferred sequences (e.g. megabyte-long per-frame functional groups)
are part of the header and are read (ranged) and converted.

BulkDataURIs are written relative to the DICOMweb base
(``studies/<s>/series/<se>/instances/<i>/bulkdata/<offset>-<length>``); the DICOMweb
layer prefixes its base URL when it serves them.

Speed: ingest writes this JSON for every instance, and pydicom's way (convert every raw
element to a ``DataElement``, then ``to_json_dict``) costs several times the parse itself.
So the common cases are written straight from the raw element bytes (:func:`_fast`): text
and string VRs (text with ISO 2022 escape sequences decoded by pydicom's ``decode_bytes``, as
its conversion does), IS/DS that are plain numbers, binary numbers, inline binary. Everything
else (sequences' own conversion, text the first encoding cannot decode, ambiguous or unknown
VRs, values pydicom would repair or refuse) goes through pydicom's ``to_json_dict`` as before.
The result is the same dict either way: ``tests/unit/test_dicom_json.py`` compares both on every
pydicom test and charset file.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

from pydicom import config, hooks
from pydicom.charset import decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.valuerep import TEXT_VR_DELIMS, PersonName
from pydicom.values import convert_PN

from shared.dicom.bounds import current_limits, load_deferred_sequence, too_deep_at
from shared.dicom.facts import has_native_pixels_in_place
from shared.dicom.header import Header
from shared.errors import BadInput

#: Binary values above this many bytes go out as BulkDataURI, not inline.
BULK_THRESHOLD = 1024
#: pydicom's rule: base64 makes a value 4/3 longer, so bytes above this go out by URI.
_INLINE_MAX = (BULK_THRESHOLD // 4) * 3
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
PIXEL_DATA = 0x7FE00010
_SPECIFIC_CHARACTER_SET = 0x00080005

Handler = Callable[[DataElement], str]


def bulk_uri(study: str, series: str, sop: str, offset: int, length: int) -> str:
    return f"studies/{study}/series/{series}/instances/{sop}/bulkdata/{offset}-{length}"


def _vr_of(raw: Any) -> str | None:
    vr = getattr(raw, "VR", None)
    return str(vr) if vr else None


def to_dicom_json(header: Header, study: str, series: str, sop: str) -> dict[str, Any]:
    """The instance's metadata as a DICOM JSON object (one instance).

    Deferred sequences are read and their items counted against the header's limits before they become
    objects (:func:`shared.dicom.bounds.load_deferred_sequence`): over a limit, :class:`BadInput`
    (``header-too-large``), as from the parse itself."""
    ds = header.dataset
    meter = header.meter
    max_depth = (meter.limits if meter is not None else current_limits()).max_depth
    out: dict[str, Any] = {}

    def handler(elem: DataElement) -> str:
        # Binary values above the threshold inside the parsed header: their offset is
        # known only for top-level elements, so nested ones are addressed by tag.
        return f"studies/{study}/series/{series}/instances/{sop}/bulkdata/tag/{elem.tag:08X}"

    fast = _fast_ok()
    encodings = _encodings(ds) if fast else None
    plans, writers = _PLANS, _WRITERS
    ordered = True
    last = ""
    for tag, raw in ds._dict.items():
        deferred = False
        plan = plans.get(tag.real)  # a plain int: BaseTag compares in Python, a lookup with it costs 3x
        if plan is None:
            plan = _plan(tag)
        key = plan[0]
        if not key:
            continue  # file meta and group lengths are not part of DICOM JSON metadata
        if key < last:
            ordered = False
        last = key
        if type(raw) is RawDataElement:
            value = raw.value
            if value is None and raw.length not in (0, 0xFFFFFFFF):
                vr = _vr_of(raw)
                if vr is None or vr in _BINARY_VRS or vr.startswith("O"):
                    out[key] = {"vr": vr or "UN",
                                "BulkDataURI": bulk_uri(study, series, sop, raw.value_tell, raw.length)}
                    continue
                deferred = True
            elif encodings is not None:
                # _fast, written out: this runs for every element of every instance
                vr = raw.VR if raw.VR is not None else plan[1]
                writer = writers.get(vr) if vr is not None else None
                if writer is not None and vr is not None:
                    if value:
                        got = writer(vr, raw, value, encodings, handler)
                    elif value is not None or raw.length == 0:
                        got = {"vr": vr}
                    else:
                        got = None
                    if got is not None:
                        out[key] = got
                        continue
        elif encodings is not None and raw.VR in _CONVERTED_STRINGS and type(raw.value) is str:
            out[key] = {"vr": raw.VR, "Value": [raw.value]} if raw.value else {"vr": raw.VR}
            continue
        try:
            if deferred and meter is not None:
                load_deferred_sequence(ds, raw, meter)  # a long sequence: its items are counted first
            elem = ds[tag]
            if fast and elem.VR == "SQ":
                out[key] = _sequence_json(elem, handler, 1, max_depth)
            else:
                out[key] = elem.to_json_dict(handler, BULK_THRESHOLD)
        except BadInput:
            raise  # over the header's limits: the file is refused, not indexed without the element
        except RecursionError:
            raise too_deep_at(max_depth) from None
        except Exception:  # noqa: BLE001 - tolerant reading: an undecodable value is left out
            continue
    if header.pixel_data_tag is not None and header.pixel_data_offset is not None:
        native = header.pixel_data_length is not None and has_native_pixels_in_place(header.transfer_syntax_uid)
        vr = "OW" if native else "OB"
        length = header.pixel_data_length if header.pixel_data_length is not None else 0xFFFFFFFF
        key = f"{header.pixel_data_tag:08X}"
        ordered = ordered and key > last
        out[key] = {"vr": vr, "BulkDataURI": bulk_uri(study, series, sop, header.pixel_data_offset, length)}
    return out if ordered else dict(sorted(out.items()))


#: Converted elements (e.g. Specific Character Set, which the parse converts) whose single str
#: value is written as pydicom writes it.
_CONVERTED_STRINGS = {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "SH", "LO", "UC", "ST", "LT", "UT", "UR"}


#: Per tag seen (a plain int): its DICOM JSON key ("" for tags left out: file meta, group
#: lengths) and its VR in an implicit VR data set (:func:`_implicit_vr`).
_PLANS: dict[int, tuple[str, str | None]] = {}


def _plan(tag: BaseTag) -> tuple[str, str | None]:
    number = tag.real
    key = "" if number >> 16 == 0x0002 or number & 0xFFFF == 0 else f"{number:08X}"
    if len(_PLANS) > 50_000:  # private tags vary without bound: keep the memory bounded
        _PLANS.clear()
    plan = _PLANS[number] = (key, _implicit_vr(tag) if key else None)
    return plan


# -- the fast path ------------------------------------------------------------------------------


def _fast_ok() -> bool:
    """pydicom is configured as shipped (no hooks, callbacks or value options that change what
    a raw value converts to): only then is the fast path the same as pydicom's."""
    return (hooks.hooks.raw_element_vr is hooks.raw_element_vr
            and hooks.hooks.raw_element_value is hooks.raw_element_value
            and not hooks.hooks.raw_element_kwargs
            and config.data_element_callback is None
            and config.settings.reading_validation_mode != config.RAISE
            and not config.datetime_conversion
            and not config.use_DS_numpy and not config.use_IS_numpy and not config.use_DS_decimal
            and config.replace_un_with_known_vr)


def _encodings(ds: Dataset) -> list[str] | None:
    """The Python codec that decodes this data set's text values when they hold no escape
    sequence (pydicom's ``decode_bytes`` then uses the first encoding alone), or None when the
    fast path should leave text to pydicom."""
    try:
        enc = ds.original_character_set or ds._character_set
    except Exception:  # noqa: BLE001 - an odd Specific Character Set: pydicom decides per element
        return None
    encodings = [enc] if isinstance(enc, str) else list(enc)
    return encodings if encodings else None


_CODEC_OK: dict[str, bool] = {}
#: Codecs pydicom encodes its own way (JIS X 0201/0208/0212, escape sequences).
_SPECIAL_CODECS = {"shift_jis", "iso2022_jp", "iso2022_jp_2", "iso_ir_58"}


def _codec(encodings: Sequence[str]) -> str | None:
    """The codec the fast path may use for person names: pydicom sends a decoded name through
    an encode/decode round trip with the first encoding, which is the identity for a plain
    (stateless) codec, not for the ones pydicom encodes its own way."""
    name = encodings[0]
    ok = _CODEC_OK.get(name)
    if ok is None:
        import codecs

        try:
            codec = codecs.lookup(name).name
        except LookupError:
            codec = ""
        ok = bool(codec) and name not in _SPECIAL_CODECS and codec not in _SPECIAL_CODECS \
            and not codec.startswith("iso2022")
        _CODEC_OK[name] = ok
    return name if ok else None


_STRUCTS: dict[tuple[bool, int, str], struct.Struct] = {}
_INT = re.compile(r" *[+-]?[0-9]+ *")
_FLOAT = re.compile(r" *[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)? *")
_LUT_DESCRIPTORS = {0x00281101, 0x00281102, 0x00281103, 0x00283002}
_DICT_VR: dict[int, str | None] = {}
_ESC = 0x1B


def _implicit_vr(tag: BaseTag) -> str | None:
    """The dictionary VR of an implicit VR element, None where pydicom decides more (private,
    unknown or ambiguous tags)."""
    number = tag.real  # the cache is keyed by plain int (see to_dicom_json)
    if number in _DICT_VR:
        return _DICT_VR[number]
    found: str | None = None
    if not tag.is_private:
        try:
            found = str(dictionary_VR(tag))
        except KeyError:
            found = None
        if found is not None and " " in found:  # e.g. "US or SS": pydicom corrects it from context
            found = None
    _DICT_VR[number] = found
    return found


def _multi(vr: str, items: list[str]) -> dict[str, Any]:
    """A string element after splitting (pydicom: one item is a str, and an empty one means no Value)."""
    if len(items) == 1 and not items[0]:
        return {"vr": vr}
    return {"vr": vr, "Value": items}


#: One writer per VR: (vr, raw element, its bytes (never empty), encodings, bulk data handler) ->
#: the element's JSON, or None to let pydicom convert it.
Writer = Callable[[str, RawDataElement, bytes, Sequence[str], Handler], "dict[str, Any] | None"]


def _split(vr: str, text: str) -> dict[str, Any]:
    """:func:`_multi` of ``text`` split at backslashes (one value, the common case, without splitting)."""
    if "\\" in text:
        return _multi(vr, text.split("\\"))
    return {"vr": vr, "Value": [text]} if text else {"vr": vr}


def _w_string(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
    return _split(vr, value.decode("latin-1").rstrip(" \x00"))


def _w_uid(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
    return _split(vr, value.decode("latin-1").rstrip("\0 "))


def _w_ae(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
    return _multi(vr, [s.strip() for s in value.decode("latin-1").split("\\")])


def _w_ur(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
    return _multi(vr, [value.decode("latin-1").rstrip()])


def _numbers(code: str, size: int, kind: type) -> Writer:
    def write(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
        if len(value) % size or raw.tag in _LUT_DESCRIPTORS:
            return None  # pydicom refuses the length / fixes LUT descriptors
        key = (raw.is_little_endian, len(value) // size, code)
        st = _STRUCTS.get(key)
        if st is None:
            st = _STRUCTS[key] = struct.Struct(("<" if key[0] else ">") + str(key[1]) + code)
        numbers = st.unpack(value)
        return {"vr": vr, "Value": list(numbers) if kind is int else [float(n) for n in numbers]}

    return write


def _w_is(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
    items = value.decode("latin-1").rstrip(" \x00").split("\\")
    for i in items:
        if not _INT.fullmatch(i):
            return None
    return {"vr": vr, "Value": [int(i) for i in items]}


def _w_ds(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
    text = value.decode("latin-1").strip().rstrip(" \x00")
    if "\\" not in text:  # one value, the common case
        return {"vr": vr, "Value": [float(text)]} if _FLOAT.fullmatch(text) else None
    items = text.split("\\")
    for i in items:
        if not _FLOAT.fullmatch(i):
            return None
    return {"vr": vr, "Value": [float(i) for i in items]}


def _w_binary(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
    if len(value) > _INLINE_MAX:
        return {"vr": vr, "BulkDataURI": h(DataElement(raw.tag, vr, b"", already_converted=True))}
    return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}


def _decoded(value: bytes, enc: Sequence[str]) -> str | None:
    """Text as pydicom's conversion decodes it (``decode_bytes``, text delimiters): with escape
    sequences (ISO 2022 code extensions: Japanese, Korean, ...) by ``decode_bytes`` itself; without,
    the first encoding alone, strictly (else pydicom warns and replaces: its business)."""
    if _ESC in value:
        return decode_bytes(value, enc, TEXT_VR_DELIMS)
    try:
        return value.decode(enc[0])
    except (UnicodeError, LookupError):
        return None


def _w_text(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
    text = _decoded(value, enc)
    if text is None:
        return None
    if "\\" not in text:  # one value, the common case
        return _multi(vr, [text.rstrip("\0 ")])
    return _multi(vr, [s.rstrip("\0 ") for s in text.split("\\")])


def _w_single_text(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler
                   ) -> dict[str, Any] | None:
    text = _decoded(value, enc)
    return None if text is None else _multi(vr, [text.rstrip("\0 ")])


def _w_pn(vr: str, raw: RawDataElement, value: bytes, enc: Sequence[str], h: Handler) -> dict[str, Any] | None:
    if _codec(enc) is not None:
        text = _decoded(value.rstrip(b"\x00 "), enc)
        if text is not None:
            return _person_names(text)
    # A first encoding pydicom encodes its own way, or a value the first encoding cannot decode:
    # pydicom's own PN conversion, not its element machinery around it.
    try:
        names = convert_PN(value, list(enc))
    except Exception:  # noqa: BLE001 - pydicom would try other VRs: let it
        return None
    items = [names] if isinstance(names, PersonName) else list(names)
    if len(items) == 1 and not items[0]:
        return {"vr": "PN"}
    return _pn_value([list(name.components) for name in items])


_WRITERS: dict[str, Writer] = {
    **dict.fromkeys(("AS", "CS", "DA", "DT", "TM"), _w_string),
    "UI": _w_uid, "AE": _w_ae, "UR": _w_ur, "IS": _w_is, "DS": _w_ds, "PN": _w_pn,
    **dict.fromkeys(("SH", "LO", "UC"), _w_text),
    **dict.fromkeys(("ST", "LT", "UT"), _w_single_text),
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW"), _w_binary),
    "US": _numbers("H", 2, int), "SS": _numbers("h", 2, int), "UL": _numbers("L", 4, int),
    "SL": _numbers("l", 4, int), "SV": _numbers("q", 8, int), "UV": _numbers("Q", 8, int),
    "FL": _numbers("f", 4, float), "FD": _numbers("d", 8, float),
}  # not here: SQ (see _dataset_json), AT, and UN (pydicom may swap it for the dictionary's VR)


def _fast(raw: RawDataElement, encodings: Sequence[str], handler: Handler) -> dict[str, Any] | None:
    """The DICOM JSON of a raw element as pydicom would write it, or None to let pydicom do it."""
    vr = raw.VR
    if vr is None:
        vr = _implicit_vr(raw.tag)
        if vr is None:
            return None
    writer = _WRITERS.get(vr)
    if writer is None:
        return None
    if raw.length == 0:
        return {"vr": vr}
    value = raw.value
    if value is None:
        return None
    if not value:  # cut to nothing at the end of a truncated file
        return {"vr": vr}
    return writer(vr, raw, value, encodings, handler)


def _person_names(text: str) -> dict[str, Any] | None:
    items = text.split("\\")
    if len(items) == 1 and not items[0]:
        return {"vr": "PN"}
    names = []
    for item in items:
        groups = item.split("=")
        while groups and not groups[-1]:
            groups.pop()
        names.append(groups)
    return _pn_value(names)


_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _pn_value(names: list[list[str]]) -> dict[str, Any] | None:
    """PN in DICOM JSON (PS3.18 F.2.2): one object per name, its component groups by name. A name with
    no group at all is what pydicom fails on; None lets it (the element is then left out)."""
    if any(not groups for groups in names):
        return None
    return {"vr": "PN", "Value": [dict(zip(_PN_GROUPS, groups, strict=False)) for groups in names]}


def _dataset_json(ds: Dataset, handler: Handler, depth: int, max_depth: int) -> dict[str, Any]:
    """An item's JSON as pydicom's ``Dataset.to_json_dict`` writes it (an error propagates, as
    there: the sequence holding the item is then left out). ``depth``: the item's nesting level."""
    encodings = _encodings(ds)
    out: dict[str, Any] = {}
    for tag, raw in ds._dict.items():
        key = f"{tag:08X}"
        if type(raw) is RawDataElement and encodings is not None and (raw.value is not None or raw.length == 0):
            got = _fast(raw, encodings, handler)
            if got is not None:
                out[key] = got
                continue
        elem = ds[tag]
        out[key] = (_sequence_json(elem, handler, depth + 1, max_depth) if elem.VR == "SQ"
                    else elem.to_json_dict(handler, BULK_THRESHOLD))
    return out


def _sequence_json(elem: DataElement, handler: Handler, depth: int, max_depth: int) -> dict[str, Any]:
    """A sequence at nesting level ``depth`` (1: in the data set itself); deeper than ``max_depth``:
    ``header-too-large`` (``DICOMFLOW_HEADER_MAX_DEPTH``), before pydicom recurses any further."""
    if depth > max_depth:
        raise too_deep_at(max_depth)
    items: DicomSequence = elem.value
    return {"vr": "SQ", "Value": [_dataset_json(item, handler, depth, max_depth) for item in items]}
