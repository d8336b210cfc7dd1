"""WADO-RS in a transfer syntax other than the stored one (PS3.18 8.7.3): frames and whole instances.

Only reached when a client names a syntax that differs from what is stored ("as stored" never comes here,
so its cost is unchanged). Pixels are decoded and encoded with :mod:`shared.dicom.transcode`.

* Frames: each frame read with ranged reads (the frame index), transcoded, and, for the compressed
  targets (whose encoding costs the most, and whose results are small), kept in ``dicom-cache`` keyed on the
  archived version's stamp: a viewer reading the same tiles again gets them with one read. Uncompressed
  targets are not cached (decoding is the cheap half, and raw frames are large to keep).
* Instances: a new header (the stored one re-encoded in the target syntax, its Photometric Interpretation and
  Lossy Image Compression attributes updated) followed by Pixel Data produced frame by frame: memory is a
  few frames whatever the instance's size. Instances without pixel data or stored deflated (their bytes are
  not at fixed offsets) are read whole, up to :data:`MAX_WHOLE` bytes.
* Failures: a frame that cannot be decoded fails its own part (an ``application/json`` error part naming the
  frame or instance), never the whole response; the first part of a frames request fails the request (406)
  before anything is sent.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import orjson
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from shared.dicom import facts, transcode
from shared.dicom.bounds import LONG_VRS
from shared.dicom.header import Header
from shared.dicom.transcode import PixelModule, TranscodeError
from shared.ports import Blob, BlobStore
from shared.storage import layout

log = logging.getLogger(__name__)

#: The largest header (everything before Pixel Data) re-encoded for a transcoded instance.
MAX_HEADER: Final = 64 * 1024 * 1024
#: The largest instance read whole (no pixel data, or deflated) to transcode it.
MAX_WHOLE: Final = 256 * 1024 * 1024
#: Encoded frames of an instance computed before its part starts (so a bad frame fails the part cleanly).
PREFETCH_BYTES: Final = 16 * 1024 * 1024
ERROR_PART: Final = "application/json"
CACHED_TARGETS: Final = frozenset(transcode.LOSSLESS + transcode.LOSSY)


def error_part(message: str) -> tuple[str, list[bytes]]:
    """A multipart part that says what failed (instead of the object), so the rest of a response still streams."""
    return ERROR_PART, [orjson.dumps({"error": message})]


@dataclass(frozen=True, slots=True)
class FrameSource:
    """One archived instance's frames as served as stored (native: little-endian bytes, byte-aligned)."""

    study: str
    series: str
    sop: str
    version: str | None
    pm: PixelModule
    #: The syntax the frames are in as read (big endian native: Explicit VR Little Endian, after the swap).
    syntax: str
    read_frame: Callable[[int], bytes]


class FrameCache:
    """Transcoded frames in ``dicom-cache`` (one blob each)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def get(self, path: str) -> bytes | None:
        return self.blobs.read(layout.CACHE, path)

    def put(self, path: str, data: bytes) -> None:
        self.blobs.write(layout.CACHE, path, data, content_type="application/octet-stream")


def frame_in(source: FrameSource, number: int, target: str, cache: FrameCache | None) -> bytes:
    """Frame ``number`` of ``source`` in ``target``: from the cache, or decoded + encoded (and cached)."""
    if target in transcode.NATIVE and facts.has_native_pixels(source.syntax):
        return source.read_frame(number)  # the same bytes
    path = None
    if cache is not None and target in CACHED_TARGETS:
        path = layout.transcoded_frame_path(source.study, source.series, source.sop, source.version, target, number)
        hit = cache.get(path)
        if hit is not None:
            return hit
    data = transcode.transcode_frame(source.pm, source.syntax, source.read_frame(number), target).data
    if path is not None and cache is not None:
        cache.put(path, data)
    return data


def frame_parts(source: FrameSource, numbers: list[int], target: str, part_type: str,
                cache: FrameCache | None) -> Iterator[tuple[str, list[bytes]]]:
    """The parts of a transcoded frames response; the first frame is computed now (406 if it fails)."""
    ctype = part_type if part_type == "application/octet-stream" else f"{part_type}; transfer-syntax={target}"
    try:
        first = frame_in(source, numbers[0], target, cache)
    except TranscodeError as exc:
        from shared.dicomweb.errors import NotAcceptable

        raise NotAcceptable(f"Frame {numbers[0]} of instance {source.sop} cannot be sent as {target}: {exc}. "
                            "Ask for transfer-syntax=* to get it as stored.") from None

    def parts() -> Iterator[tuple[str, list[bytes]]]:
        yield ctype, [first]
        for n in numbers[1:]:
            try:
                yield ctype, [frame_in(source, n, target, cache)]
            except TranscodeError as exc:
                log.warning("Frame %d of %s cannot be transcoded: %s", n, source.sop, exc)
                yield error_part(f"Frame {n} of instance {source.sop} cannot be sent as {target}: {exc}")

    return parts()


def header_dataset(src: Blob, header: Header) -> bytes:
    """The stored bytes before Pixel Data (the whole header, large values included)."""
    end = header.header_end
    if end > MAX_HEADER:
        raise TranscodeError(f"The header is {end} bytes, over the {MAX_HEADER} we re-encode.")
    out = bytearray()
    while len(out) < end:
        data, _ = src.read_range(len(out), min(4 * 1024 * 1024, end - len(out)))
        if not data:
            raise TranscodeError("The archived file is shorter than its header.")
        out += data
    return bytes(out)


def _write_header(ds: object, target: str) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcmwrite(buf, ds, enforce_file_format=True)  # type: ignore[arg-type]
    return buf.getvalue()


def instance_in(src: Blob, header: Header, source: FrameSource | None, target: str,
                native_pixels: Callable[[], Iterator[bytes]] | None) -> Iterator[bytes]:
    """An archived instance as a Part 10 file in ``target``, produced lazily (the first frames eagerly, so
    the caller learns of a failure before the part starts: see :func:`prefetched`).

    ``source`` gives the frames (None: no pixel data); ``native_pixels`` streams the stored native pixel data
    as little-endian bytes (used when both stored and target are uncompressed: nothing is decoded).
    """
    stored = str(header.transfer_syntax_uid)
    if source is None or facts.is_deflated(stored):
        yield _whole(src, header, target)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(io.BytesIO(header_dataset(src, header)), force=True, stop_before_pixels=True)
    pm = source.pm
    if target in transcode.NATIVE and facts.has_native_pixels(stored) and native_pixels is not None:
        out = transcode.header_for(ds, stored, target, None)
        out.file_meta = transcode.meta_for(ds, target)
        length = int(header.pixel_data_length or 0)
        yield _write_header(out, target)
        yield transcode.native_element_header(length + length % 2, pm.bits_allocated,
                                              implicit=target == transcode.IMPLICIT_LE)
        yield from native_pixels()
        if length % 2:
            yield b"\0"
        return
    first = transcode.transcode_frame(pm, source.syntax, source.read_frame(1), target)
    out = transcode.header_for(ds, stored, target, first.photometric)
    out.file_meta = transcode.meta_for(ds, target)
    head = _write_header(out, target)

    def rest() -> Iterator[bytes]:
        yield first.data
        for n in range(2, pm.frames + 1):
            got = transcode.transcode_frame(pm, source.syntax, source.read_frame(n), target).data
            if target in transcode.NATIVE and len(got) != len(first.data):
                raise TranscodeError(f"Frame {n} decodes to {len(got)} bytes, frame 1 to {len(first.data)}.")
            yield got

    yield head
    if target in transcode.NATIVE:
        yield transcode.native_element_header(len(first.data) * pm.frames, pm.bits_allocated,
                                              implicit=target == transcode.IMPLICIT_LE)
        yield from rest()
        if len(first.data) * pm.frames % 2:
            yield b"\0"
    else:
        yield from transcode.encapsulated_items(rest())


def whole_in(data: bytes, target: str) -> bytes:
    """A whole stored file (in memory) as a Part 10 file in ``target``: unchanged if it is stored so."""
    spliced = _spliced(data, target)
    if spliced is not None:
        return spliced
    try:
        ds = transcode.read_whole(data)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
        raise TranscodeError(f"The archived file cannot be read ({type(exc).__name__}).") from None
    if str(ds.file_meta.get("TransferSyntaxUID", "")) == target and data[128:132] == b"DICM":
        return data
    return _write_header(transcode.transcode_dataset(ds, target), target)


def _encapsulated_end(data: bytes, offset: int) -> int | None:
    """Where the encapsulated Pixel Data value starting at ``offset`` ends (after its sequence delimiter), by a
    walk of its item headers; None if they do not follow the standard's layout."""
    pos, size = offset, len(data)
    while pos + 8 <= size:
        tag, length = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if tag == b"\xfe\xff\xdd\xe0":
            return pos + 8
        if tag != b"\xfe\xff\x00\xe0" or length == 0xFFFFFFFF:
            return None
        pos += 8 + length
    return None




def _elements(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]] | None:
    """(tag, start, next start) of each Explicit VR Little Endian element of defined length from ``pos`` to
    exactly ``end``; None if the bytes are not such elements (a sequence, an undefined length, a bad VR)."""
    out = []
    while pos < end:
        if pos + 8 > end:
            return None
        tag = int.from_bytes(data[pos:pos + 2], "little") << 16 | int.from_bytes(data[pos + 2:pos + 4], "little")
        vr = data[pos + 4:pos + 6]
        if vr == b"SQ":
            return None
        if vr in LONG_VRS:
            length = int.from_bytes(data[pos + 8:pos + 12], "little") if pos + 12 <= end else 0xFFFFFFFF
            if length == 0xFFFFFFFF:
                return None
            following = pos + 12 + length
        elif b"AA" <= vr <= b"ZZ":
            following = pos + 8 + int.from_bytes(data[pos + 6:pos + 8], "little")
        else:
            return None
        out.append((tag, pos, following))
        pos = following
    return iter(out) if pos == end else None


#: File meta elements pydicom adds when missing (``enforce_file_format``): a meta without them is re-encoded.
_META_REQUIRED: Final = frozenset({0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})


def _meta_in(data: bytes, end: int, target: str) -> bytes | None:
    """The stored file meta (bytes 132 to ``end``) naming ``target`` as its Transfer Syntax, with its group
    length recomputed; None when an element pydicom would add is missing (or the meta is not plain elements)."""
    walked = _elements(data, 132, end)
    if walked is None:
        return None
    uid = target.encode("ascii") + (b"\0" if len(target) % 2 else b"")
    kept, seen = [], set()
    for tag, start, following in walked:
        seen.add(tag)
        if tag == 0x00020000:
            continue
        if tag == 0x00020010:
            kept.append(b"\x02\x00\x10\x00UI" + len(uid).to_bytes(2, "little") + uid)
        elif following - start > (12 if data[start + 4:start + 6] in LONG_VRS else 8) or tag not in (0x00020001,
                                                                                                    0x00020012):
            kept.append(data[start:following])
        else:
            return None  # an empty Version or Implementation Class UID: pydicom would fill it in
    if not seen >= _META_REQUIRED:
        return None
    body = b"".join(kept)
    return b"\x02\x00\x00\x00UL\x04\x00" + len(body).to_bytes(4, "little") + body


def _meta_written(ds: Dataset, target: str) -> bytes:
    """The file meta of ``ds`` naming ``target``, written by pydicom (what it adds when missing included)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_file_meta_info(out, transcode.meta_for(ds, target), enforce_standard=True)
    return out.getvalue()


#: What :func:`_spliced` needs of the header (pydicom parses only these into elements).
_SPLICE_TAGS: Final = [0x00280002, 0x00280004, 0x00280006, 0x00280008, 0x00280010, 0x00280011, 0x00280100,
                       0x00280101, 0x00280102, 0x00280103, 0x00282110, 0x7FE00001, 0x7FE00002]
#: Pixel Data of undefined length (encapsulated), as OB (the standard's VR) or OW (some writers').
_ENCAPSULATED_PIXELS: Final = (b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff",
                               b"\xe0\x7f\x10\x00OW\x00\x00\xff\xff\xff\xff")


def _spliced(data: bytes, target: str) -> bytes | None:
    """``data`` (a whole Part 10 file, compressed) in Explicit VR Little Endian with its bytes reused: the stored
    file meta naming the new syntax, the stored elements before Pixel Data byte for byte (an encapsulated syntax
    encodes them in Explicit VR Little Endian already), then the decoded frames as native Pixel Data. Nothing
    else in the header changes in this case, so re-encoding it with pydicom (a third of the CPU per CT slice) is
    skipped: the result is the bytes pydicom would write.

    None (the caller re-encodes with pydicom) whenever the header would change or the layout is unusual: colour
    (decoding may change the Photometric Interpretation), a lossy source not yet marked lossy, an Extended
    Offset Table, 1-bit or over 16-bit samples, no preamble or file meta. Elements after the pixel data (Data
    Set Trailing Padding) follow it unchanged, as pydicom would write them.
    """
    from shared.dicom.header import meta_span

    if target != transcode.EXPLICIT_LE or data[128:132] != b"DICM":
        return None
    fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(fp, stop_before_pixels=True, specific_tags=_SPLICE_TAGS)
    except Exception:  # noqa: BLE001 - pydicom raises many kinds for a damaged file: the general path reports it
        return None
    at = fp.tell()
    stored = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if (data[at:at + 12] not in _ENCAPSULATED_PIXELS or facts.has_native_pixels(stored) or facts.is_deflated(stored)
            or ds.original_encoding != (False, True)):
        return None
    try:
        pm = PixelModule.of(ds)
    except TranscodeError:
        return None
    lossy_marked = str(ds.get("LossyImageCompression", "") or "").strip() == "01"
    if (pm.samples != 1 or pm.bits_allocated not in (8, 16) or 0x7FE00001 in ds or 0x7FE00002 in ds
            or (stored in transcode.LOSSY_SOURCES and not lossy_marked)):
        return None
    offset = at + 12
    end = _encapsulated_end(data, offset)
    meta_end = meta_span(data[:at])
    if end is None or _elements(data, end, len(data)) is None or not 132 < meta_end <= at:
        return None
    meta = _meta_in(data, meta_end, target) or _meta_written(ds, target)
    from pydicom.encaps import generate_frames

    frames = []
    for frame in generate_frames(data[offset:end], number_of_frames=pm.frames):
        arr, photometric = transcode.decode_frame(pm, stored, bytes(frame))
        if photometric != pm.photometric:
            return None
        frames.append(transcode.encode_frame(arr, pm, photometric, target).data)
    pixels = b"".join(frames)
    if len(pixels) != pm.rows * pm.columns * pm.frames * (pm.bits_allocated // 8):
        return None
    pad = b"\0" if len(pixels) % 2 else b""
    # A zero preamble, as pydicom writes a new data set: a stored one may be a TIFF header pointing at the
    # stored (compressed) pixels.
    return b"".join((bytes(128), b"DICM", meta, data[meta_end:at],
                     transcode.native_element_header(len(pixels) + len(pad), pm.bits_allocated, implicit=False),
                     pixels, pad, data[end:]))


def _whole(src: Blob, header: Header, target: str) -> bytes:
    """A small instance read whole and transcoded in memory (no pixel data, or deflated)."""
    size = header.size_bytes
    if size > MAX_WHOLE:
        raise TranscodeError(f"The instance is {size} bytes; instances over {MAX_WHOLE} bytes are transcoded only "
                             "when their pixel data is at fixed offsets (not deflated).")
    data = bytearray()
    while len(data) < size:
        chunk, _ = src.read_range(len(data), min(4 * 1024 * 1024, size - len(data)))
        if not chunk:
            break
        data += chunk
    return whole_in(bytes(data), target)


def prefetched(chunks: Iterator[bytes], limit: int = PREFETCH_BYTES) -> Iterator[bytes]:
    """``chunks`` with its first ``limit`` bytes computed now: an error there is raised to the caller (who sends
    an error part instead), an error later ends the stream."""
    head: list[bytes] = []
    size = 0
    for chunk in chunks:
        head.append(chunk)
        size += len(chunk)
        if size >= limit:
            break

    def all_of() -> Iterator[bytes]:
        yield from head
        yield from chunks

    return all_of()
