"""Bounded header reads: what one parse of an untrusted DICOM header may cost, whatever it declares.

pydicom trusts a file's lengths: it inflates a whole deflated data set in one call, turns every item
of a sequence into a Python ``Dataset`` (about 0.8 KiB for an 8-byte empty item) and recurses once
per nesting level. So a 0.5 MiB upload can ask for gigabytes. :func:`shared.dicom.header.read_header`
(the one header parse of ingest, STOW-RS, the gateway's C-STORE, the peer follower, reindex and the
WADO-RS frame index) meters each parse with a :class:`Meter` against :class:`~shared.config.HeaderLimits`:

* **bytes** the parse reads into memory, charged before the read (a value that declares 2 GiB is
  refused before it is fetched). Values over ``DEFER_SIZE`` are skipped, not read, while parsing;
* **elements and items**: every 8-byte element, item or delimiter header the parse reads (pydicom reads
  each as one 8-byte read), and, before a sequence held as bytes becomes objects, a walk over its bytes
  (:func:`count_sequence`) that counts its headers the way pydicom will read them, nesting included;
* **inflated bytes** of a Deflated Explicit VR Little Endian data set, which :class:`InflatingReader`
  inflates on demand with bounded memory (skipping a deflated value means inflating it: this bounds
  the time; the memory stays about :data:`KEEP` bytes);
* **depth**: sequences nested deeper than the limit.

Over a limit, the parse raises :class:`~shared.errors.BadInput` with ``Reason.HEADER_TOO_LARGE`` and a
message naming the limit and its setting. A header that fits in the first ranged read (64 KiB, almost
every file) is parsed unmetered: 64 KiB cannot hold more than 8,192 headers, so it is bounded as it is.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

from pydicom.datadict import dictionary_VR

from shared.config import HeaderLimits, get_settings
from shared.dicom.ranged import SeekableReader
from shared.errors import ADVICE, BadInput, Reason

UNDEFINED: Final = 0xFFFFFFFF
ITEM: Final = (0xFFFE, 0xE000)
ITEM_DELIMITER: Final = (0xFFFE, 0xE00D)
SEQUENCE_DELIMITER: Final = (0xFFFE, 0xE0DD)
_SEQUENCE_DELIMITER_LE: Final = b"\xfe\xff\xdd\xe0"
_SEQUENCE_DELIMITER_BE: Final = b"\xff\xfe\xe0\xdd"
#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS: Final = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT",
                             b"SV", b"UV"})
#: How much inflated data :class:`InflatingReader` keeps behind the read position (pydicom seeks back a
#: few bytes at a time; further back means inflating again from the start, charged again).
KEEP: Final = 1024 * 1024
#: Inflate at most this much per step (memory per step).
STEP: Final = 256 * 1024


def current_limits() -> HeaderLimits:
    """The process's header limits (``DICOMFLOW_HEADER_*``)."""
    return get_settings().limits.header


def too_large(what: str) -> BadInput:
    return BadInput(Reason.HEADER_TOO_LARGE, f"{what}. {ADVICE[Reason.HEADER_TOO_LARGE]}")


class Meter:
    """What one header parse has spent; raises ``header-too-large`` past a limit."""

    __slots__ = ("bytes", "elements", "inflated", "limits", "tripped")

    def __init__(self, limits: HeaderLimits) -> None:
        self.limits = limits
        self.bytes = 0
        self.elements = 0
        self.inflated = 0
        #: The refusal once a limit was passed (pydicom wraps some errors of its reads in its own).
        self.tripped: BadInput | None = None

    def read(self, n: int) -> None:
        """The parse asks for ``n`` bytes (charged before they are fetched)."""
        if n == 8:  # an element, item or delimiter header (or an 8-byte value: counted too, conservatively)
            self.elements += 1
            if self.elements > self.limits.max_elements:
                raise self._trip(self._elements())
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise self._trip(too_large(f"The header holds more than {self.limits.max_bytes:,} bytes of values "
                                       "that must be read (DICOMFLOW_HEADER_MAX_BYTES)"))

    def count(self, n: int) -> None:
        """``n`` more element/item headers (a sequence about to become objects)."""
        self.elements += n
        if self.elements > self.limits.max_elements:
            raise self._trip(self._elements())

    def inflate(self, n: int) -> None:
        self.inflated += n
        if self.inflated > self.limits.max_inflated_bytes:
            raise self._trip(too_large(f"The deflated data set inflates past {self.limits.max_inflated_bytes:,} "
                                       "bytes before its pixel data (DICOMFLOW_HEADER_MAX_INFLATED_BYTES)"))

    def _trip(self, bad: BadInput) -> BadInput:
        self.tripped = bad
        return bad

    def _elements(self) -> BadInput:
        return too_large(f"The header holds more than {self.limits.max_elements:,} data elements and sequence "
                         "items (DICOMFLOW_HEADER_MAX_ELEMENTS)")


def too_deep(limits: HeaderLimits) -> BadInput:
    return too_deep_at(limits.max_depth)


def too_deep_at(max_depth: int) -> BadInput:
    return too_large(f"Sequences are nested deeper than {max_depth} levels (DICOMFLOW_HEADER_MAX_DEPTH)")


def _is_sequence_tag(tag: int) -> bool:
    try:
        return str(dictionary_VR(tag)) == "SQ"
    except KeyError:  # private or unknown: pydicom keeps its bytes (UN), never items
        return False


def count_sequence(value: bytes | bytearray | memoryview, *, implicit: bool, little: bool, meter: Meter,
                   depth: int = 1) -> int:
    """Count the headers pydicom reads when it turns the sequence value ``value`` into items (nested
    sequences included: they become objects as soon as anything walks into them), and charge them to
    ``meter`` as they are counted, so a flood is refused before its objects exist. ``depth`` is the
    nesting level of this sequence (1 at the top of the data set).

    The walk reads as pydicom does (PS3.5 7.5): any header in a sequence is taken as an item; an item
    ends at its length or its delimiter; elements of explicit VR files carry their VR, a UN element of
    a known sequence tag holds implicit VR items; an undefined-length value that is not a sequence
    ends at the sequence delimiter. Where the bytes stop making sense the rest is charged as if it
    were all 8-byte headers (an upper bound on what pydicom can make of them). Returns the count.
    """
    buf = value if isinstance(value, bytes) else bytes(value)  # one copy at most: searched in place below
    size = len(buf)
    limits = meter.limits
    counted = 0

    def charge(n: int) -> None:
        nonlocal counted
        counted += n
        meter.count(n)

    # A stack of open levels: (is_sequence, end or None for undefined length, implicit, little).
    stack: list[tuple[bool, int | None, bool, bool]] = [(True, size, implicit, little)]
    if depth > limits.max_depth:
        raise too_deep(limits)
    pos = 0
    while stack:
        is_seq, end, imp, le = stack[-1]
        limit = size if end is None else min(end, size)
        if pos + 8 > limit:
            if end is not None and pos < end <= size:
                pos = end
            stack.pop()
            continue
        e = "<" if le else ">"
        group, elem = struct.unpack_from(e + "HH", buf, pos)
        if is_seq:
            (length,) = struct.unpack_from(e + "L", buf, pos + 4)
            charge(1)
            pos += 8
            if (group, elem) == SEQUENCE_DELIMITER:
                stack.pop()
                continue
            # Any other header is read as an item (pydicom does not check the tag).
            stack.append((False, None if length == UNDEFINED else pos + length, imp, le))
            continue
        if (group, elem) == ITEM_DELIMITER:
            charge(1)
            pos += 8
            stack.pop()
            continue
        tag = (group << 16) | elem
        vr = buf[pos + 4:pos + 6]
        elem_implicit = imp
        if not imp and vr in LONG_VRS:
            if pos + 12 > limit:
                charge(max(1, (limit - pos) // 8))
                pos = limit
                continue
            (length,) = struct.unpack_from(e + "L", buf, pos + 8)
            header = 12
        elif not imp and b"AA" <= vr <= b"ZZ":
            (length,) = struct.unpack_from(e + "H", buf, pos + 6)
            header = 8
        else:  # implicit VR (or an explicit file switching to implicit: pydicom assumes so)
            (length,) = struct.unpack_from(e + "L", buf, pos + 4)
            vr, header, elem_implicit = b"", 8, True
        charge(1)
        start = pos + header
        sequence = vr == b"SQ" or (vr in (b"", b"UN") and (length == UNDEFINED or _is_sequence_tag(tag)))
        if vr == b"" and length == UNDEFINED and not _is_sequence_tag(tag):
            # pydicom looks ahead: items follow only in a sequence
            sequence = start + 4 <= size and struct.unpack_from(e + "HH", buf, start) == ITEM
        if sequence:
            if (len(stack) + 1) // 2 + depth > limits.max_depth:
                raise too_deep(limits)
            # A UN sequence holds implicit VR little endian items (PS3.5 6.2.2).
            inner_implicit = True if vr == b"UN" else elem_implicit
            inner_little = True if vr == b"UN" else le
            pos = start
            stack.append((True, None if length == UNDEFINED else start + length, inner_implicit, inner_little))
            continue
        if length == UNDEFINED:  # a value read up to its sequence delimiter
            found = buf.find(_SEQUENCE_DELIMITER_LE if le else _SEQUENCE_DELIMITER_BE, start)
            pos = size if found < 0 else found + 8
            continue
        pos = start + length
    return counted


def sequence_encoding(raw: Any) -> tuple[bool, bool] | None:
    """(implicit, little) of the items of a raw element that pydicom will read as a sequence, else None."""
    vr = raw.VR
    if vr == "SQ":
        return bool(raw.is_implicit_VR), bool(raw.is_little_endian)
    if vr in (None, "UN") and _is_sequence_tag(int(raw.tag)):
        return (True, True) if vr == "UN" else (bool(raw.is_implicit_VR), bool(raw.is_little_endian))
    return None


def charge_dataset(ds: Any, meter: Meter, *, depth: int = 0) -> None:
    """Charge what turning every sequence of the parsed data set ``ds`` into objects will cost: sequences
    still held as bytes are walked (:func:`count_sequence`); sequences the parse already made (undefined
    length: their headers were charged as they were read) are entered for the byte-held ones inside.
    Deferred values (not read yet) are charged when they are read."""
    from pydicom.dataelem import RawDataElement

    limits = meter.limits
    if depth > limits.max_depth:
        raise too_deep(limits)
    for elem in ds._dict.values():
        if type(elem) is RawDataElement:
            if elem.value:
                encoding = sequence_encoding(elem)
                if encoding is not None:
                    count_sequence(elem.value, implicit=encoding[0], little=encoding[1], meter=meter,
                                   depth=depth + 1)
        elif getattr(elem, "VR", None) == "SQ":
            for item in elem.value or ():
                charge_dataset(item, meter, depth=depth + 1)


def load_deferred_sequence(ds: Any, raw: Any, meter: Meter) -> None:
    """Read the deferred sequence ``raw`` of ``ds`` (longer than the parse's defer size: e.g. per-frame
    functional groups) and count its items (:func:`count_sequence`) before pydicom makes them: after
    this, ``ds[raw.tag]`` converts the bytes read here."""
    from pydicom.filereader import read_deferred_data_element

    encoding = sequence_encoding(raw)
    if encoding is None:
        return
    source: Any = ds.buffer if getattr(ds, "buffer", None) is not None else getattr(ds, "filename", None)
    loaded = read_deferred_data_element(ds.fileobj_type, source, ds.timestamp, raw)
    count_sequence(loaded.value or b"", implicit=encoding[0], little=encoding[1], meter=meter)
    ds._dict[raw.tag] = loaded


class InflatingReader(SeekableReader):
    """The inflated data set of a Deflated Explicit VR Little Endian file (PS3.5 A.5), read on demand.

    ``source`` is the file (any seekable binary reader; the ranged reader in practice) and ``start``
    where its deflated bytes begin, after the file meta. Reading inflates only as far as asked, in
    steps of at most :data:`STEP`, keeping :data:`KEEP` bytes behind the position; a forward seek is
    free until the next read, which inflates (and drops) what lies between; a seek further back than
    what is kept inflates again from ``start``. Every inflated byte is charged to ``meter``, so a
    bomb stops at ``max_inflated_bytes`` whatever it declares, with memory bounded all along.
    """

    def __init__(self, source: Any, start: int, meter: Meter, *, chunk: int = 64 * 1024) -> None:
        super().__init__()
        self.source, self.start, self.meter, self.chunk = source, start, meter, chunk
        self._pos = 0
        self._restart()

    def _restart(self) -> None:
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._in = self.start  # next compressed byte to fetch
        self._tail = b""  # compressed input the decompressor has not taken yet
        self._buf = bytearray()
        self._buf_start = 0  # inflated offset of _buf[0]
        self._eof = False

    # -- io API (position and seek: SeekableReader) -------------------------------------------------
    def _end(self) -> int:
        self._inflate_to(None)
        return self._buf_start + len(self._buf)

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            self._inflate_to(None)
            n = max(0, self._buf_start + len(self._buf) - self._pos)
        self.meter.read(n)
        if n == 0:
            return b""
        if self._pos < self._buf_start:
            self._restart()  # further back than what is kept: inflate again (charged again)
        self._inflate_to(self._pos + n)
        lo = self._pos - self._buf_start
        out = bytes(self._buf[lo:lo + n])
        self._pos += len(out)
        return out

    # -- inflating --------------------------------------------------------------------------------
    def _inflate_to(self, end: int | None) -> None:
        """Inflate until offset ``end`` is held (None: to the end), dropping what lies more than
        :data:`KEEP` behind the position."""
        while not self._eof and (end is None or self._buf_start + len(self._buf) < end):
            data = self._tail or self._fetch()
            if data:
                out = self._z.decompress(data, STEP)
                self._tail = self._z.unconsumed_tail
                self._eof = self._z.eof
            else:  # the file ends: what zlib still holds (at most a match), then a short read for the parse
                out, self._eof = self._z.flush(), True
            self.meter.inflate(len(out))
            self._buf += out
            drop = min(self._pos - KEEP - self._buf_start, len(self._buf))
            if drop > 0:
                del self._buf[:drop]
                self._buf_start += drop

    def _fetch(self) -> bytes:
        self.source.seek(self._in)
        data: bytes = self.source.read(self.chunk)
        self._in += len(data)
        return data
