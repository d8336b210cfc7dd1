"""Frame index: the byte ranges of each frame of an archived instance, computed once.

WADO-RS ``/frames/1,3,5`` is served with ranged reads of the archived blob at these
ranges, so a frame of a 1 GiB multi-frame instance costs one small read, not a
download. The index is built from the header (:class:`shared.dicom.header.Header`:
pixel data offset and length) plus, for encapsulated pixel data, a walk over the
item headers with small ranged reads (never the fragments themselves):

* native (uncompressed): frame *i* is ``offset + i * frame_length`` (one range); big-endian
  pixel data records its sample width (``byte_swap``) so frames can be served little-endian, as
  ``application/octet-stream`` frames are by default (PS3.18 8.7.3); 1-bit pixel data (binary SEG) whose
  frames do not fill whole bytes records ``bits_per_frame``: a frame's range covers the bytes its bits lie
  in, and :func:`realign_bits` cuts the frame out, starting on a byte boundary as WADO-RS sends it;
* encapsulated, in this order of preference (PS3.5 A.4):
  1. Extended Offset Table (7FE0,0001)/(7FE0,0002): one fragment per frame;
  2. a non-empty Basic Offset Table: the fragments that start inside each frame's span;
  3. one frame: every fragment; as many fragments as frames: one each;
  4. otherwise (JPEG family): a frame ends at a fragment whose data ends with the
     EOI marker ``FFD9`` (optionally padded with one 0x00), as pydicom's
     ``generate_frames`` does.

Stored as JSON at :func:`shared.storage.layout.frame_index_path` in ``dicom-metadata``.

Untrusted input: nothing the header declares is taken on trust. The frame count is at most
``DICOMFLOW_MAX_FRAMES`` (so is the number of fragments walked and of offset table entries read), and
every range the index holds lies inside the blob's real size; anything else is a
:class:`FrameIndexError` (bad input, ``frame-index``), never a crash.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Final

from pydicom.dataset import Dataset

from shared.config import get_settings
from shared.dicom import facts
from shared.dicom.header import Header
from shared.dicom.ranged import RangedReader, RangeSource
from shared.errors import BadInput, Reason

VERSION: Final = 2  # 2: byte_swap for big-endian native pixel data, bits_per_frame for unaligned 1-bit frames
ITEM: Final = 0xFFFEE000
SEQ_DELIM: Final = 0xFFFEE0DD
JPEG_FAMILY_PREFIX: Final = "1.2.840.10008.1.2.4."
#: Item-header walks read this much at a time; small fragments then share one read.
WALK_CHUNK: Final = 16 * 1024

Range = tuple[int, int]  # (offset in the file, length)


class FrameIndexError(BadInput):
    """The pixel data's frames cannot be located (the message says why)."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.NO_FRAMES, message)


@dataclass(frozen=True, slots=True)
class FrameIndex:
    transfer_syntax_uid: str
    encapsulated: bool
    #: Per frame, the byte ranges of its data in the file (several for a fragmented frame).
    frames: tuple[tuple[Range, ...], ...]
    #: The version of the archived file the ranges were computed from (a replaced file needs a new index):
    #: its region-independent version stamp, or its ETag (see :mod:`shared.dicomweb.wado`).
    etag: str | None = None
    #: Big-endian native pixel data: bytes per sample to swap when serving little-endian (0 = none).
    byte_swap: int = 0
    #: 1-bit pixel data whose frames are not whole bytes: bits per frame (0 = frames are byte ranges).
    bits_per_frame: int = 0

    def bit_shift(self, number: int) -> int:
        """Where frame ``number`` starts inside the first byte of its range (0 unless ``bits_per_frame``)."""
        return (number - 1) * self.bits_per_frame % 8

    @property
    def number_of_frames(self) -> int:
        return len(self.frames)

    def frame(self, number: int) -> tuple[Range, ...]:
        """Ranges of frame ``number`` (1-based, as in WADO-RS URLs)."""
        if not 1 <= number <= len(self.frames):
            raise IndexError(number)
        return self.frames[number - 1]

    def to_json(self) -> dict[str, Any]:
        frames = [[list(r) for r in f] for f in self.frames]
        return {"version": VERSION, "transferSyntaxUID": self.transfer_syntax_uid,
                "encapsulated": self.encapsulated, "etag": self.etag, "byteSwap": self.byte_swap,
                "bitsPerFrame": self.bits_per_frame, "frames": frames}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FrameIndex:
        if obj.get("version") != VERSION:
            raise ValueError(f"frame index version {obj.get('version')!r} is not {VERSION}; rebuild it")
        frames = tuple(tuple((int(o), int(n)) for o, n in f) for f in obj["frames"])
        return cls(str(obj["transferSyntaxUID"]), bool(obj["encapsulated"]), frames, obj.get("etag"),
                   int(obj.get("byteSwap") or 0), int(obj.get("bitsPerFrame") or 0))


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise FrameIndexError(f"{keyword} is missing: the frames of the pixel data cannot be located.")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FrameIndexError(f"{keyword} is not a number: the frames cannot be located.") from None


def native_frame_bits(ds: Dataset) -> int:
    """Bits per frame of native pixel data (PS3.5 8.1.1): frames follow each other bit by bit."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    samples, bits = _int(ds, "SamplesPerPixel", 1), _int(ds, "BitsAllocated")
    pixel_bits = rows * cols * samples * bits
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        pixel_bits = pixel_bits // 3 * 2  # two chroma samples shared by each pixel pair
    return pixel_bits


def native_frame_length(ds: Dataset) -> int:
    """Bytes per frame of native pixel data (a frame of 1-bit data that is not whole bytes: rounded up)."""
    return math.ceil(native_frame_bits(ds) / 8)


def realign_bits(data: bytes, shift: int, nbits: int) -> bytes:
    """Bits ``shift .. shift + nbits`` of ``data`` (DICOM's bit order: first pixel in the lowest bit) as bytes
    starting on a byte boundary, the last one zero-padded."""
    import numpy as np

    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[shift: shift + nbits]
    if len(bits) < nbits:
        raise FrameIndexError("The pixel data is shorter than its frames: the file is truncated.")
    return np.packbits(bits, bitorder="little").tobytes()


def build(header: Header, source: RangeSource, *, max_frames: int | None = None) -> FrameIndex:
    """The frame index of the instance whose header is ``header``, reading item headers from ``source``.

    ``header`` is a :class:`shared.dicom.header.Header` (``dataset``, ``transfer_syntax_uid``,
    ``pixel_data_offset``, ``pixel_data_length``, ``size_bytes``, ``is_little_endian``). At most
    ``max_frames`` frames (default ``DICOMFLOW_MAX_FRAMES``).
    """
    limit = max_frames if max_frames is not None else get_settings().limits.max_frames
    try:
        return _build(header, source, limit)
    except (struct.error, ValueError, OverflowError, MemoryError) as exc:  # declared lengths that do not add up
        raise FrameIndexError(f"The pixel data's item headers are malformed ({type(exc).__name__}).") from None


def _frame_count(ds: Dataset, limit: int) -> int:
    nframes = _int(ds, "NumberOfFrames", 1) or 1
    if nframes < 1:
        raise FrameIndexError(f"NumberOfFrames is {nframes}: it must be a positive number.")
    if nframes > limit:
        raise FrameIndexError(f"NumberOfFrames is {nframes}, over the {limit:,} frames an index holds here "
                              "(DICOMFLOW_MAX_FRAMES).")
    return nframes


def _build(header: Header, source: RangeSource, limit: int) -> FrameIndex:
    ds: Dataset = header.dataset
    ts = str(header.transfer_syntax_uid)
    offset = header.pixel_data_offset
    if offset is None:
        raise FrameIndexError("The instance has no pixel data: it has no frames.")
    nframes = _frame_count(ds, limit)
    size = header.size_bytes
    if header.pixel_data_length is not None:
        if not facts.has_native_pixels(ts):
            raise FrameIndexError(f"Pixel data of defined length in compressed transfer syntax {ts}.")
        fbits = native_frame_bits(ds)
        if fbits <= 0:
            raise FrameIndexError("Rows, Columns, SamplesPerPixel and BitsAllocated must be positive: a frame of "
                                  f"{fbits} bits cannot be located.")
        if offset + math.ceil(fbits * nframes / 8) > size:
            raise FrameIndexError(f"The file holds {size} bytes, fewer than {nframes} frames of {fbits} bits "
                                  "after its header.")
        if fbits % 8 and nframes > 1:  # 1-bit frames that do not fill whole bytes: the bytes each one spans
            if math.ceil(fbits * nframes / 8) > header.pixel_data_length:
                raise FrameIndexError(f"Pixel data holds {header.pixel_data_length} bytes, fewer than {nframes} "
                                      f"frames of {fbits} bits.")
            spans = ((offset + i * fbits // 8, math.ceil((i + 1) * fbits / 8) - i * fbits // 8) for i in range(nframes))
            return FrameIndex(ts, False, tuple((span,) for span in spans), bits_per_frame=fbits)
        flen = native_frame_length(ds)
        if flen * nframes > header.pixel_data_length:
            raise FrameIndexError(
                f"Pixel data holds {header.pixel_data_length} bytes, fewer than {nframes} frames of {flen} bytes."
            )
        bits = _int(ds, "BitsAllocated")
        little_endian = facts.encoding_of(ts)[1]
        swap = bits // 8 if not little_endian and bits in (16, 32, 64) else 0
        return FrameIndex(ts, False, tuple(((offset + i * flen, flen),) for i in range(nframes)), byte_swap=swap)
    little = bool(getattr(header, "is_little_endian", True))
    reader = RangedReader(source, first_chunk=WALK_CHUNK, max_chunk=WALK_CHUNK, size=header.size_bytes)
    bot, fragments = _walk(reader, offset, little, want_tails=ts.startswith(JPEG_FAMILY_PREFIX), limit=limit)
    first = fragments[0][0] - 8 if fragments else offset  # item tag of the first fragment
    eot = _extended_offsets(ds, reader, little, limit)
    if eot is not None:
        offsets, lengths = eot
        if len(offsets) != nframes or len(lengths) != nframes:
            raise FrameIndexError("The Extended Offset Table does not list NumberOfFrames frames.")
        if any(first + o + 8 + n > size for o, n in zip(offsets, lengths, strict=True)):
            raise FrameIndexError("The Extended Offset Table points past the end of the file.")
        return FrameIndex(ts, True, tuple(((first + o + 8, n),) for o, n in zip(offsets, lengths, strict=True)))
    if not fragments:
        raise FrameIndexError("The encapsulated pixel data holds no fragments.")
    if bot and len(bot) == nframes:
        starts = [first + o for o in bot] + [math.inf]
        frames: list[tuple[Range, ...]] = []
        for i in range(nframes):
            frames.append(tuple((d, n) for d, n, _ in fragments if starts[i] <= d - 8 < starts[i + 1]))
        if any(not f for f in frames):
            raise FrameIndexError("The Basic Offset Table points between fragments.")
        return FrameIndex(ts, True, tuple(frames))
    if nframes == 1:
        return FrameIndex(ts, True, (tuple((d, n) for d, n, _ in fragments),))
    if len(fragments) == nframes:
        return FrameIndex(ts, True, tuple(((d, n),) for d, n, _ in fragments))
    if ts.startswith(JPEG_FAMILY_PREFIX):
        frames, current = [], []
        for d, n, tail in fragments:
            current.append((d, n))
            if tail.endswith(b"\xff\xd9") or tail.endswith(b"\xff\xd9\x00"):
                frames.append(tuple(current))
                current = []
        if current:
            frames.append(tuple(current))
        if len(frames) == nframes:
            return FrameIndex(ts, True, tuple(frames))
    raise FrameIndexError(
        f"{len(fragments)} fragments for {nframes} frames without an offset table: frame boundaries are unknown."
    )


def _walk(
    reader: RangedReader, offset: int, little: bool, *, want_tails: bool, limit: int
) -> tuple[list[int], list[tuple[int, int, bytes]]]:
    """Basic Offset Table and (data offset, length, last 3 bytes) of each fragment (at most ``limit``)."""
    endian = "<" if little else ">"
    end = reader.size
    pos = offset
    reader.seek(pos)
    head = reader.read(8)
    if len(head) < 8 or _tag(head, endian) != ITEM:
        raise FrameIndexError("Encapsulated pixel data does not start with the Basic Offset Table item.")
    (bot_len,) = struct.unpack(endian + "L", head[4:8])
    bot: list[int] = []
    if bot_len == 0xFFFFFFFF or pos + 8 + bot_len > end:
        raise FrameIndexError("The Basic Offset Table runs past the end of the file.")
    if bot_len // 4 > limit:
        raise FrameIndexError(f"The Basic Offset Table lists over {limit:,} frames (DICOMFLOW_MAX_FRAMES).")
    if bot_len:
        raw = reader.read(bot_len)
        bot = list(struct.unpack(f"{endian}{bot_len // 4}L", raw[: bot_len // 4 * 4]))
    pos += 8 + bot_len
    fragments: list[tuple[int, int, bytes]] = []
    while pos + 8 <= end:
        reader.seek(pos)
        head = reader.read(8)
        tag = _tag(head, endian)
        if tag == SEQ_DELIM:
            break
        if tag != ITEM:
            raise FrameIndexError(f"Expected a fragment item at byte {pos}, found tag {tag:08X}.")
        (length,) = struct.unpack(endian + "L", head[4:8])
        if length == 0xFFFFFFFF or pos + 8 + length > end:
            raise FrameIndexError(f"The fragment at byte {pos} runs past the end of the file.")
        if len(fragments) >= limit:
            raise FrameIndexError(f"The pixel data holds over {limit:,} fragments (DICOMFLOW_MAX_FRAMES).")
        tail = b""
        if want_tails and length:
            reader.seek(pos + 8 + max(0, length - 3))
            tail = reader.read(min(3, length))
        fragments.append((pos + 8, length, tail))
        pos += 8 + length
    return bot, fragments


def _tag(head: bytes, endian: str) -> int:
    group, elem = struct.unpack(endian + "HH", head[:4])
    return int((group << 16) | elem)


def _extended_offsets(ds: Dataset, reader: RangedReader, little: bool,
                      limit: int) -> tuple[list[int], list[int]] | None:
    if 0x7FE00001 not in ds or 0x7FE00002 not in ds:
        return None
    endian = "<" if little else ">"
    out = []
    for tag in (0x7FE00001, 0x7FE00002):
        raw: Any = ds.get_item(tag, keep_deferred=True)
        value = getattr(raw, "value", None)
        if raw is None or (raw.length or 0) // 8 > limit:
            raise FrameIndexError(f"The Extended Offset Table lists over {limit:,} frames (DICOMFLOW_MAX_FRAMES).")
        if value is None:  # deferred by the header parse: read it (it lies inside the header's extent)
            reader.seek(raw.value_tell)
            value = reader.read(raw.length)
        data = bytes(value)
        out.append(list(struct.unpack(f"{endian}{len(data) // 8}Q", data[: len(data) // 8 * 8])))
    return out[0], out[1]
