"""Reading a DICOM header without its pixel data.

Layers, as in pydicom: :class:`~shared.dicom.ranged.RangedReader` (bytes on demand)
→ ``pydicom.dcmread(stop_before_pixels=True, defer_size=...)`` (parse, seeking past
large values) → :func:`read_header` (classify failures into reason codes, locate the
pixel data element). Only the bytes the parse needs are fetched; values larger than
``defer_size`` (private blobs, icons, large LUTs) are skipped, never downloaded.

Untrusted input: every parse is bounded by :mod:`shared.dicom.bounds` (bytes read, elements and
items, inflated bytes, nesting; ``DICOMFLOW_HEADER_*``), and every way a parse can fail is bad input
with a reason code (``header-too-large`` past a limit), never a crash; only the storage's own errors
propagate (the trigger retries them). A deflated data set is never inflated by pydicom (which inflates
it whole, in one call): :class:`~shared.dicom.bounds.InflatingReader` inflates it as far as the parse
reads, in bounded memory.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from shared.config import HeaderLimits
from shared.dicom import facts
from shared.dicom.bounds import LONG_VRS, InflatingReader, Meter, charge_dataset, current_limits, too_large
from shared.dicom.ranged import BytesRangeSource, FileRangeSource, RangedReader, ReadDigest
from shared.errors import ADVICE, BadInput, Reason

#: Values longer than this are skipped while parsing (their offset is kept).
DEFER_SIZE = 64 * 1024
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_DIRECTORY_RECORDS = BaseTag(0x00041220)


@dataclass(slots=True)
class Header:
    """What ingest needs from one file: the parsed header and where its pixel data is."""

    dataset: Dataset
    transfer_syntax_uid: str
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    sop_class_uid: str | None
    size_bytes: int
    #: Byte offset where the pixel data element (tag) starts, or the end of the data set.
    header_end: int
    pixel_data_tag: int | None
    #: Byte offset of the pixel data value, and its length (None: undefined length, encapsulated).
    pixel_data_offset: int | None
    pixel_data_length: int | None
    is_little_endian: bool
    is_implicit_vr: bool
    bytes_read: int
    requests: int
    #: SHA-256 of the ranges the parse fetched, computed when first asked for (:attr:`digest`).
    read_digest: ReadDigest
    #: Tolerated defects (pydicom reads such files too), as reason codes: Reason.TRUNCATED,
    #: Reason.TRUNCATED_PIXEL_DATA.
    warnings: list[Reason] = field(default_factory=list)
    content_md5: bytes | None = None
    etag: str | None = None
    #: What the parse spent; reading deferred sequences later (the DICOM JSON) is charged to it too.
    meter: Meter | None = None

    @property
    def digest(self) -> str:
        """SHA-256 over the bytes the parse fetched (with their offsets): equal for identical files."""
        return self.read_digest.hexdigest()


def _text(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an undecodable value is reported as absent
        return None
    if value is None:
        return None
    text = str(value).strip("\0 ")
    return text or None


#: Tags of the UIDs read from every header.
_UID_TAGS = {k: BaseTag(v) for k, v in {
    "StudyInstanceUID": 0x0020000D, "SeriesInstanceUID": 0x0020000E, "SOPInstanceUID": 0x00080018,
    "SOPClassUID": 0x00080016, "TransferSyntaxUID": 0x00020010, "MediaStorageSOPClassUID": 0x00020002}.items()}


def _uid(ds: Dataset, keyword: str) -> str | None:
    """A UID as :func:`_text` reads it, straight from the raw bytes when they are a UI value (the
    common case: no pydicom conversion); anything else the way :func:`_text` does."""
    raw = ds._dict.get(_UID_TAGS[keyword])
    if raw is None:
        return None
    if type(raw) is RawDataElement and raw.VR in (None, "UI") and raw.value is not None:
        text = raw.value.decode("latin-1").strip("\0 ")
        if "\\" not in text:  # a multi-valued UID is shown as pydicom shows it (then refused)
            return text or None
    return _text(ds, keyword)


def _looks_like_dataset(head: bytes) -> bool:
    """A raw data set (no preamble, no DICM) starts with a low group number."""
    if len(head) < 8:
        return False
    group, _elem = struct.unpack("<HH", head[:4])
    group_be, _ = struct.unpack(">HH", head[:4])
    return group in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def _parse(reader: RangedReader, defer_size: int, meter: Meter) -> tuple[Dataset, bool]:
    """Parse from the first fetched range when the header lies inside it (almost every
    file: the common case costs pydicom's C-speed ``BytesIO`` reads instead of Python-level
    ranged reads), else through the ranged reader itself (headers over one chunk), metered.
    Returns the data set and whether it was read through the meter (False: from the first range,
    which bounds it: 64 KiB hold at most 8,192 headers)."""
    prefix = reader.prefix()
    whole = len(prefix) >= reader.size
    if _DEFLATED in prefix[:meta_span(prefix)]:
        # Maybe deflated (a guess from the bytes chooses the path; the file meta decides): pydicom
        # would inflate the whole data set at once, so it never sees a deflated one.
        deflated = _parse_deflated(reader, defer_size, meter)
        if deflated is not None:
            return deflated, True
    fast = io.BytesIO(prefix)
    try:
        ds = _dcmread(fast, defer_size)
    except BadInput:
        if whole:
            raise
    except Exception:  # a short prefix can fail in any way: the full path below decides
        if whole:
            raise
    else:
        pos = fast.tell()
        # Trust the prefix only if the parse ended on a pixel data tag inside it (or it is the
        # whole file): an element cut by the prefix's end would otherwise look complete.
        if whole or (pos + 12 <= len(prefix) and _is_pixel_tag(prefix[pos:pos + 4])):
            reader.seek(pos)
            return ds, False
    # A header longer than the first range. Its file meta is read first (a deflated syntax named
    # beyond the first range must not reach pydicom's inflate either), then the data set, metered.
    deflated = _parse_deflated(reader, defer_size, meter)
    if deflated is not None:
        return deflated, True
    reader.seek(0)
    reader.meter = meter
    return _dcmread(reader, defer_size), True


def _not_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 0x0002


def _at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in PIXEL_TAGS


def _parse_deflated(reader: RangedReader, defer_size: int, meter: Meter) -> Dataset | None:
    """The header of a Deflated Explicit VR Little Endian file, inflated as far as the parse reads
    (:class:`~shared.dicom.bounds.InflatingReader`); None if the file meta names another syntax."""
    reader.seek(0)
    reader.meter = meter  # the file meta is charged like any header
    fp = cast(BinaryIO, reader)  # a binary reader (pydicom's annotations name BinaryIO)
    try:
        preamble = read_preamble(fp, True)
        meta = read_dataset(fp, False, True, stop_when=_not_meta)
    finally:
        reader.meter = None
    raw = meta._dict.get(_UID_TAGS["TransferSyntaxUID"])
    value = getattr(raw, "value", None)
    ts = value.decode("latin-1").strip("\0 ") if isinstance(value, bytes) else str(value or "")
    if ts != DeflatedExplicitVRLittleEndian:
        return None
    inflating = cast(BinaryIO, InflatingReader(reader, reader.tell(), meter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = read_dataset(inflating, False, True, stop_when=_at_pixels, defer_size=defer_size)
    file_meta = FileMetaDataset(meta)
    file_meta.set_original_encoding(False, True)
    out = FileDataset(inflating, ds, preamble, file_meta, False, True)
    out.set_original_encoding(False, True, ds._character_set)
    return out


def _is_pixel_tag(head: bytes) -> bool:
    return len(head) == 4 and (struct.unpack("<HH", head) in _PIXEL_PAIRS or struct.unpack(">HH", head) in _PIXEL_PAIRS)


_PIXEL_PAIRS = {(t >> 16, t & 0xFFFF) for t in PIXEL_TAGS}
_DEFLATED = str(DeflatedExplicitVRLittleEndian).encode()


def meta_span(prefix: bytes) -> int:
    """Where the file meta ends in ``prefix`` (its Transfer Syntax UID lies before): group 0002 elements
    walked as the standard writes them (explicit VR little endian). Anything else (an implicit VR meta,
    a VR that is not two letters) gives the whole prefix: the deflate guess then looks everywhere."""
    pos = 132 if prefix[128:132] == b"DICM" else 0
    size = len(prefix)
    while pos + 8 <= size and prefix[pos:pos + 2] == b"\x02\x00":
        vr = prefix[pos + 4:pos + 6]
        if vr in LONG_VRS:
            if pos + 12 > size:
                return size
            pos += 12 + int.from_bytes(prefix[pos + 8:pos + 12], "little")
        elif b"AA" <= vr <= b"ZZ":
            pos += 8 + int.from_bytes(prefix[pos + 6:pos + 8], "little")
        else:
            return size
    return min(pos, size)


def _dcmread(fp: Any, defer_size: int) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(fp, stop_before_pixels=True, defer_size=defer_size)
        except InvalidDicomError:
            fp.seek(0)
            if not _looks_like_dataset(fp.read(8)):
                raise BadInput(Reason.NOT_DICOM) from None
            fp.seek(0)
            return pydicom.dcmread(fp, stop_before_pixels=True, defer_size=defer_size, force=True)


def _locate_pixel_data(reader: RangedReader, little: bool, implicit: bool) -> tuple[int | None, int | None, int | None]:
    start = reader.tell()
    head = reader.read(8)
    if len(head) < 8:
        return None, None, None
    endian = "<" if little else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    tag = (group << 16) | elem
    if tag not in PIXEL_TAGS:
        return None, None, None
    if implicit:
        (length,) = struct.unpack(endian + "L", head[4:8])
        offset = start + 8
    elif head[4:6] in LONG_VRS:
        (length,) = struct.unpack(endian + "L", reader.read(4))
        offset = start + 12
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
        offset = start + 8
    return tag, offset, (None if length == 0xFFFFFFFF else length)


def read_header(reader: RangedReader, *, defer_size: int = DEFER_SIZE, limits: HeaderLimits | None = None) -> Header:
    """Parse the header through ``reader``, within ``limits`` (default: the ``DICOMFLOW_HEADER_*``
    settings). Raises :class:`BadInput` with a reason code for anything that is not a readable DICOM
    header or costs more than the limits allow; only the storage's errors propagate."""
    meter = Meter(limits or current_limits())
    if reader.size == 0:
        raise BadInput(Reason.EMPTY)
    try:
        ds, metered = _parse(reader, defer_size, meter)
        if metered:
            charge_dataset(ds, meter)  # what its sequences will cost as objects, before they exist
        return _header(ds, reader, meter)
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure parsing untrusted bytes is bad input (storage's own excepted)
        raise _classify(exc, reader, meter) from None


def _header(ds: Dataset, reader: RangedReader, meter: Meter) -> Header:
    """What ingest needs from the parsed data set (values are read here too: inside the same guard)."""
    meta = getattr(ds, "file_meta", None)
    ts = _uid(meta, "TransferSyntaxUID") if meta is not None else None
    implicit, little = _encoding(ds, ts)
    if ts is None:
        ts = str(facts.syntax_for(implicit, little))

    # The identity of an instance is what its data set says (PS3.3: Type 1 in every IOD). The file
    # meta's Media Storage UIDs only classify the file (a DICOMDIR): a data set without its own
    # SOP Class/Instance UID is refused (missing-*), never archived under the file meta's UID.
    sop_class = _uid(ds, "SOPClassUID")
    meta_class = _uid(meta, "MediaStorageSOPClassUID") if meta is not None else None
    if MEDIA_STORAGE_DIRECTORY in (sop_class, meta_class) or _DIRECTORY_RECORDS in ds._dict:
        raise BadInput(Reason.UNSUPPORTED)

    deflated = facts.is_deflated(ts)
    header_end = reader.size if deflated else reader.tell()
    tag = offset = length = None
    if not deflated:
        tag, offset, length = _locate_pixel_data(reader, little, implicit)
    warnings_: list[Reason] = []
    if not deflated:
        if not _complete(ds, reader.size, offset, reader.prefix()):
            warnings_.append(Reason.TRUNCATED)
        if offset is not None and length is not None and offset + length > reader.size:
            warnings_.append(Reason.TRUNCATED_PIXEL_DATA)
    return Header(
        dataset=ds,
        transfer_syntax_uid=ts,
        study_uid=_uid(ds, "StudyInstanceUID"),
        series_uid=_uid(ds, "SeriesInstanceUID"),
        sop_uid=_uid(ds, "SOPInstanceUID"),
        sop_class_uid=sop_class,
        size_bytes=reader.size,
        header_end=header_end,
        pixel_data_tag=tag,
        pixel_data_offset=offset,
        pixel_data_length=length,
        is_little_endian=little,
        is_implicit_vr=implicit,
        bytes_read=reader.bytes_fetched,
        requests=reader.requests,
        read_digest=reader.digest_so_far(),
        warnings=warnings_,
        meter=meter,
    )


def _classify(exc: Exception, reader: RangedReader, meter: Meter) -> BaseException:
    """A parse failure as the reason code it stands for; a storage failure (met by the reader, whatever
    pydicom wrapped it in) as itself, so the trigger retries it; a limit passed as that limit's refusal."""
    if reader.source_error is not None:
        return reader.source_error
    if meter.tripped is not None:
        return meter.tripped
    if _is_storage_error(exc):
        return exc
    name = type(exc).__name__
    if isinstance(exc, RecursionError) or _caused_by(exc, RecursionError):
        # pydicom turns an error met while reading an item's tag into OSError("No tag to read"): where the
        # recursion limit strikes first depends on how deep the caller's stack already is.
        return too_large("Sequences are nested too deeply to parse")
    if isinstance(exc, MemoryError):
        return too_large("The header needs more memory than a parse may use")
    if isinstance(exc, EOFError | struct.error):
        return BadInput(Reason.TRUNCATED, f"{ADVICE[Reason.TRUNCATED]} ({name})")
    return BadInput(Reason.UNDECODABLE, f"{ADVICE[Reason.UNDECODABLE]} ({name})")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is in ``exc``'s chain of causes or contexts (a few links deep)."""
    seen: BaseException | None = exc
    for _ in range(8):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
    return False


def _complete(ds: Dataset, size: int, pixel_offset: int | None, prefix: bytes) -> bool:
    """pydicom stops quietly at a short read: a data set that ends inside an element (or
    declares a length past the end of the file) leaves a value shorter than declared.
    Nested items lie inside their parent's extent, so the top level is enough, and since the
    parse stops at the first short element, only the last one read can be short: each level
    (file meta, data set) is looked at from its end, up to its last raw element of defined length.
    A file cut inside an element's tag or length leaves 1-7 stray bytes at the end; one cut
    inside its file meta leaves the meta shorter than its group length says."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        group_length = meta.get("FileMetaInformationGroupLength")
        if isinstance(group_length, int) and prefix[128:132] == b"DICM" and size < 132 + 12 + group_length:
            return False
    data_end = 0
    levels: list[list[Any]] = [list(meta._dict.values()) if meta is not None else [], list(ds._dict.values())]
    for elements in levels:
        for elem in reversed(elements):
            tell = getattr(elem, "value_tell", None)
            length = getattr(elem, "length", None)
            if tell is None or length is None or length == 0xFFFFFFFF:
                continue
            if tell + length > size:
                return False
            data_end = max(data_end, tell + length)
            break
    return not (pixel_offset is None and data_end and 0 < size - data_end < 8)


def _encoding(ds: Dataset, ts: str | None) -> tuple[bool, bool]:
    enc: Any = getattr(ds, "original_encoding", None)
    if enc and enc[0] is not None:
        return bool(enc[0]), bool(enc[1])
    return facts.encoding_of(ts) if ts else (False, True)


def _is_storage_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("azure.")


def read_header_bytes(data: bytes | bytearray | memoryview, *, defer_size: int = DEFER_SIZE,
                      limits: HeaderLimits | None = None) -> Header:
    """Parse a header held in memory (STOW-RS parts, tests)."""
    return read_header(RangedReader(BytesRangeSource(data)), defer_size=defer_size, limits=limits)


def read_header_file(path: str | os.PathLike[str], *, defer_size: int = DEFER_SIZE,
                     limits: HeaderLimits | None = None) -> Header:
    """Parse the header of a local file (DIMSE C-STORE data sets) without reading its pixel data."""
    return read_header(RangedReader(FileRangeSource(os.fspath(path))), defer_size=defer_size, limits=limits)
