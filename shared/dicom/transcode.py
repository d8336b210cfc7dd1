"""Transcoding pixel data from its stored transfer syntax into another, one frame at a time.

Decoding is pydicom's (its pixel decoders with the pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-rle and
pyjpegls plugins: every syntax pydicom knows, big endian and deflate included). Encoding is pydicom's
encoders where it has one (JPEG-LS: pyjpegls; JPEG 2000: pylibjpeg-openjpeg; RLE: pydicom), HTJ2K with
``imagecodecs`` (OpenJPH: pydicom 3.0 has no HTJ2K encoder). No codec code of our own.

What we produce (:data:`OFFERED`): Explicit and Implicit VR Little Endian from anything we can decode;
lossless JPEG-LS, JPEG 2000, HTJ2K and RLE; and, only when a client names them, the lossy JPEG-LS
near-lossless, JPEG 2000 and HTJ2K syntaxes (the result says so in its Lossy Image Compression
attributes, :func:`lossy_attributes`). "As stored" decodes nothing: callers never come here for it.

Frames are decoded into the colour space pydicom returns (YBR_FULL/YBR_FULL_422 as RGB), and the
Photometric Interpretation of the result follows (:attr:`Encoded.photometric`).
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder, get_encoder, pack_bits, unpack_bits
from pydicom.uid import UID

from shared.dicom import facts
from shared.dicom.frames import native_frame_length

EXPLICIT_LE: Final = facts.EXPLICIT_VR_LITTLE_ENDIAN
IMPLICIT_LE: Final = facts.IMPLICIT_VR_LITTLE_ENDIAN
JPEG_LS_LOSSLESS: Final = UID("1.2.840.10008.1.2.4.80")
JPEG_LS_NEAR_LOSSLESS: Final = UID("1.2.840.10008.1.2.4.81")
JPEG_2000_LOSSLESS: Final = UID("1.2.840.10008.1.2.4.90")
JPEG_2000: Final = UID("1.2.840.10008.1.2.4.91")
HTJ2K_LOSSLESS: Final = UID("1.2.840.10008.1.2.4.201")
HTJ2K: Final = UID("1.2.840.10008.1.2.4.203")
RLE_LOSSLESS: Final = UID("1.2.840.10008.1.2.5")

NATIVE: Final = (EXPLICIT_LE, IMPLICIT_LE)
LOSSLESS: Final = (JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS, HTJ2K_LOSSLESS, RLE_LOSSLESS)
#: Lossy targets: produced only when a client names one.
LOSSY: Final = (JPEG_LS_NEAR_LOSSLESS, JPEG_2000, HTJ2K)
#: Every transfer syntax we can produce from any syntax we can decode, in the order we name them.
OFFERED: Final = (*NATIVE, *LOSSLESS, *LOSSY)
#: Lossy Image Compression Method (0028,2114) per target (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHOD: Final = {JPEG_LS_NEAR_LOSSLESS: "ISO_14495_1", JPEG_2000: "ISO_15444_1", HTJ2K: "ISO_15444_15"}
#: Source syntaxes whose pixels already lost information (their decoded pixels stay "lossy").
LOSSY_SOURCES: Final = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
                                  "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203"})
#: JPEG-LS near-lossless: the largest error per sample; JPEG 2000 lossy: the compression ratio.
JLS_NEAR_ERROR: Final = 2
J2K_RATIO: Final = 10.0
PIXEL_KEYWORDS: Final = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
                         "PixelRepresentation", "PhotometricInterpretation", "PlanarConfiguration",
                         "NumberOfFrames")


class TranscodeError(Exception):
    """This instance or frame cannot be put into the requested syntax (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class PixelModule:
    """The Image Pixel attributes a codec needs (one frame's shape and sample format)."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar: int = 0
    frames: int = 1

    @classmethod
    def of(cls, ds: Dataset) -> PixelModule:
        try:
            bits_allocated = int(ds.BitsAllocated)
            return cls(int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1), bits_allocated,
                       int(ds.get("BitsStored", bits_allocated) or bits_allocated),
                       int(ds.get("PixelRepresentation", 0) or 0),
                       str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip(),
                       int(ds.get("PlanarConfiguration", 0) or 0), int(ds.get("NumberOfFrames", 1) or 1))
        except (AttributeError, TypeError, ValueError) as exc:
            raise TranscodeError(f"The Image Pixel attributes are missing or not numbers ({exc}).") from None

    def options(self, **changes: Any) -> dict[str, Any]:
        """Keyword options for pydicom's decoders and encoders, for one frame."""
        out = {"rows": self.rows, "columns": self.columns, "samples_per_pixel": self.samples,
               "bits_allocated": self.bits_allocated, "bits_stored": self.bits_stored,
               "pixel_representation": self.pixel_representation,
               "photometric_interpretation": self.photometric, "number_of_frames": 1,
               "planar_configuration": self.planar, "pixel_keyword": "PixelData"}
        out.update(changes)
        return out


@dataclass(frozen=True, slots=True)
class Encoded:
    """One frame in the target syntax, and the Photometric Interpretation it is in."""

    data: bytes
    photometric: str


def name(uid: str) -> str:
    """``1.2.840.10008.1.2.1 (Explicit VR Little Endian)``: a transfer syntax or SOP class, for messages."""
    known = UID(uid).name
    return f"{uid} ({known})" if known and known != uid else uid


def _why(exc: BaseException) -> str:
    """A codec's exception in one short line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


def offered_text() -> str:
    return ", ".join(OFFERED)


def can_decode(transfer_syntax: str) -> bool:
    """pydicom has a decoder (with an installed plugin) for ``transfer_syntax``."""
    if facts.has_native_pixels(transfer_syntax):
        return True
    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except NotImplementedError:
        return False


#: The plugins pydicom should decode a syntax with, best first, where the one it tries first costs more: JPEG-LS
#: with imagecodecs (:mod:`shared.dicom.imagecodecs_jpegls`: CharLS with the GIL released, so worker threads
#: decode in parallel), else pyjpegls (CharLS holding the GIL), instead of pylibjpeg-libjpeg, which took 4x the
#: CPU for a 512x512 16-bit CT slice (24 vs 6 ms on the bench machine). All are lossless decoders of the same
#: standard: the pixels are the same.
PREFERRED_DECODERS: Final[dict[str, tuple[str, ...]]] = {
    JPEG_LS_LOSSLESS: ("imagecodecs", "pyjpegls"), JPEG_LS_NEAR_LOSSLESS: ("imagecodecs", "pyjpegls")}


def _register_plugins() -> None:
    """Add the imagecodecs JPEG-LS plugin to pydicom's decoders (once, at import: adding is not thread-safe)."""
    from shared.dicom import imagecodecs_jpegls

    for syntax in imagecodecs_jpegls.DECODER_DEPENDENCIES:
        decoder: Any = get_decoder(syntax)
        if imagecodecs_jpegls.LABEL not in decoder._available and imagecodecs_jpegls.LABEL not in decoder._unavailable:
            decoder.add_plugin(imagecodecs_jpegls.LABEL, (imagecodecs_jpegls.__name__, "_decode_frame"))


_register_plugins()


def _decoding_plugin(decoder: Any, syntax: str) -> str:
    """The first preferred plugin for ``syntax`` that is installed, else "" (pydicom's own order)."""
    available = decoder.available_plugins
    return next((p for p in PREFERRED_DECODERS.get(syntax, ()) if p in available), "")


def decode_frame(pm: PixelModule, transfer_syntax: str, data: bytes) -> tuple[np.ndarray, str]:
    """One frame's pixels (rows x columns [x samples]) and their Photometric Interpretation.

    ``data`` is the frame as stored: a native frame's little-endian bytes (big-endian frames are
    swapped by the frame index before they get here), or one encapsulated frame (its fragments joined).
    """
    native = facts.has_native_pixels(transfer_syntax)
    syntax = EXPLICIT_LE if native else UID(transfer_syntax)
    if not can_decode(syntax):
        raise TranscodeError(f"No decoder is installed for {name(transfer_syntax)}.")
    src = data if native else encapsulate([data])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoder: Any = get_decoder(syntax)
            arr, meta = decoder.as_array(src, index=0, transfer_syntax_uid=syntax,
                                         decoding_plugin=_decoding_plugin(decoder, syntax), **pm.options())
    except Exception as exc:  # noqa: BLE001 - codec plugins raise anything (RuntimeError, ValueError, ...)
        raise TranscodeError(f"The frame cannot be decoded from {name(transfer_syntax)} ({_why(exc)})") from None
    return arr, str(meta.get("photometric_interpretation") or pm.photometric)


def encode_frame(arr: np.ndarray, pm: PixelModule, photometric: str, target: str) -> Encoded:
    """``arr`` (a decoded frame) in syntax ``target`` (one of :data:`OFFERED`)."""
    if target in NATIVE:
        return Encoded(_native_bytes(arr, pm), photometric)
    if pm.bits_allocated == 1 or pm.bits_allocated > 16:
        raise TranscodeError(f"{pm.bits_allocated}-bit pixel data is sent uncompressed only: ask for "
                             f"{name(EXPLICIT_LE)}.")
    opts = pm.options(photometric_interpretation=photometric, planar_configuration=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if target in (HTJ2K_LOSSLESS, HTJ2K):
                import imagecodecs

                out = imagecodecs.htj2k_encode(arr, reversible=target == HTJ2K_LOSSLESS, rgb=False)
                return Encoded(bytes(out), photometric)
            extra: dict[str, Any] = {}
            if target == JPEG_LS_NEAR_LOSSLESS:
                extra["jls_error"] = JLS_NEAR_ERROR
            elif target == JPEG_2000:
                extra["j2k_cr"] = [J2K_RATIO]
            if target in (JPEG_2000_LOSSLESS, JPEG_2000):
                extra["use_mct"] = False  # keep RGB as RGB (else the result is YBR_RCT / YBR_ICT)
            return Encoded(bytes(get_encoder(target).encode(arr, **opts, **extra)), photometric)
    except TranscodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - codec plugins raise anything
        raise TranscodeError(f"The frame cannot be encoded as {name(target)} ({_why(exc)})") from None


def transcode_frame(pm: PixelModule, source: str, data: bytes, target: str) -> Encoded:
    arr, photometric = decode_frame(pm, source, data)
    return encode_frame(arr, pm, photometric, target)


def _native_bytes(arr: np.ndarray, pm: PixelModule) -> bytes:
    """A decoded frame as native little-endian bytes of ``BitsAllocated`` (colour by pixel, not by plane)."""
    if pm.bits_allocated == 1:
        return bytes(pack_bits(arr, pad=False))
    width = pm.bits_allocated // 8
    kind = "i" if pm.pixel_representation else "u"
    return np.ascontiguousarray(arr).astype(f"<{kind}{width}", copy=False).tobytes()


def lossy_attributes(ds: Dataset, source: str, target: str) -> None:
    """Lossy Image Compression (0028,2110), Method (0028,2114) after decoding ``source`` into ``target``:
    once lossy, always "01" (PS3.3 C.7.6.1.1.5); a lossy target adds its method."""
    if target in LOSSY:
        ds.LossyImageCompression = "01"
        methods = [str(m) for m in (ds.get("LossyImageCompressionMethod") or [])]
        ds.LossyImageCompressionMethod = [*methods, LOSSY_METHOD[UID(target)]]
    elif source in LOSSY_SOURCES:
        ds.LossyImageCompression = "01"


def header_for(ds: Dataset, source: str, target: str, photometric: str | None) -> Dataset:
    """A copy of header data set ``ds`` (no pixel data) as it describes the transcoded pixels."""
    out = Dataset()
    for elem in ds:
        if not 0x7FE00000 <= elem.tag <= 0x7FE0FFFF:
            out.add(copy.deepcopy(elem))  # never change the caller's elements
    for tag in (0x7FE00001, 0x7FE00002):  # an Extended Offset Table describes the stored fragments only
        if tag in out:
            del out[tag]
    if photometric is not None and photometric != str(ds.get("PhotometricInterpretation", "")).strip():
        out.PhotometricInterpretation = photometric
        if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
            out.PlanarConfiguration = 0
    elif int(ds.get("SamplesPerPixel", 1) or 1) > 1 and "PlanarConfiguration" in ds:
        out.PlanarConfiguration = 0  # decoded pixels are interleaved
    lossy_attributes(out, source, target)
    return out


def frames_of(ds: Dataset) -> Iterator[bytes]:
    """The stored frames of an in-memory data set (native: little-endian bytes of each frame)."""
    pm = PixelModule.of(ds)
    ts = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
    if facts.has_native_pixels(ts):
        if not facts.encoding_of(ts)[1]:  # big endian: pydicom decodes, we re-encode little endian
            arr = ds.pixel_array
            for i in range(pm.frames):
                yield _native_bytes(arr[i] if pm.frames > 1 else arr, pm)
            return
        flen = native_frame_length(ds)
        raw = bytes(ds.PixelData)
        if pm.bits_allocated == 1:
            bits = np.asarray(unpack_bits(raw))
            per = pm.rows * pm.columns * pm.samples
            for i in range(pm.frames):
                yield bytes(pack_bits(bits[i * per:(i + 1) * per], pad=False))
            return
        for i in range(pm.frames):
            yield raw[i * flen:(i + 1) * flen]
        return
    yield from (bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=pm.frames))


def transcode_dataset(ds: Dataset, target: str) -> Dataset:
    """``ds`` (read whole, as the DIMSE senders do) with its pixel data in ``target``; a data set without
    pixel data is only relabelled (its elements are encoded by whoever writes it)."""
    source = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
    if "PixelData" not in ds:
        out = copy.deepcopy(ds)
        out.file_meta = meta_for(ds, target)
        syntax = UID(target)
        _reencode(out, implicit=syntax.is_implicit_VR, little=syntax.is_little_endian)
        return out
    pm = PixelModule.of(ds)
    encoded: list[bytes] = []
    photometric: str | None = None
    decode_as = EXPLICIT_LE if facts.has_native_pixels(source) else source
    for frame in frames_of(ds):
        if target in NATIVE and decode_as == EXPLICIT_LE:
            encoded.append(frame)
            continue
        got = transcode_frame(pm, decode_as, frame, target)
        photometric = got.photometric
        encoded.append(got.data)
    out = header_for(ds, source, target, photometric)
    out.file_meta = meta_for(ds, target)
    if target in NATIVE:
        out.PixelData = b"".join(encoded)
        out["PixelData"].VR = "OW" if pm.bits_allocated > 8 else "OB"
    else:
        out.PixelData = encapsulate(encoded, has_bot=False)
        out["PixelData"].VR = "OB"
        out["PixelData"].is_undefined_length = True
    return out


def _reencode(ds: Dataset, *, implicit: bool, little: bool) -> None:
    """Make ``ds`` (and every sequence item in it) be written in the given encoding: its elements still held
    as read (raw bytes of the stored syntax) are decoded, and each data set says it is in that encoding now
    (pynetdicom refuses a data set read as one syntax and labelled another, and raw items would be copied
    in the syntax they were read in)."""
    for elem in ds:  # iterating converts raw elements
        if elem.VR == "SQ":
            for item in elem.value:
                _reencode(item, implicit=implicit, little=little)
    ds.set_original_encoding(implicit, little, ds.original_character_set)


def meta_for(ds: Dataset, target: str) -> FileMetaDataset:
    """A copy of the file meta of ``ds`` naming ``target``."""
    out = copy.deepcopy(ds.file_meta) if getattr(ds, "file_meta", None) else FileMetaDataset()
    out.TransferSyntaxUID = UID(target)
    if "MediaStorageSOPClassUID" not in out and "SOPClassUID" in ds:
        out.MediaStorageSOPClassUID = ds.SOPClassUID
    if "MediaStorageSOPInstanceUID" not in out and "SOPInstanceUID" in ds:
        out.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return out


def encapsulated_items(frames: Iterable[bytes]) -> Iterator[bytes]:
    """Pixel Data (7FE0,0010) of undefined length in Explicit VR Little Endian: the element header, an
    empty Basic Offset Table, one item per frame (padded to even length), the delimiter; streamed."""
    yield b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    for frame in frames:
        if len(frame) % 2:
            frame += b"\x00"
        yield b"\xfe\xff\x00\xe0" + len(frame).to_bytes(4, "little")
        yield frame
    yield b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def native_element_header(length: int, bits_allocated: int, *, implicit: bool) -> bytes:
    """The header of a native Pixel Data element of ``length`` bytes (little endian)."""
    if length >= 0xFFFFFFFF:
        raise TranscodeError(f"Uncompressed pixel data of {length} bytes does not fit a DICOM element "
                             "(4 GiB at most): ask for a compressed transfer syntax, or for frames.")
    tag = b"\xe0\x7f\x10\x00"
    if implicit:
        return tag + length.to_bytes(4, "little")
    vr = b"OW" if bits_allocated > 8 else b"OB"
    return tag + vr + b"\x00\x00" + length.to_bytes(4, "little")


def read_whole(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data), force=True)


def choose_target(stored: str, accepted: Iterable[str]) -> str | None:
    """What to send to a peer that accepted ``accepted`` for an instance stored as ``stored``: the stored
    syntax if accepted, else the first we can produce without losing anything (uncompressed first)."""
    accepted = {str(a) for a in accepted}
    if stored in accepted:
        return stored
    for target in (*NATIVE, *LOSSLESS):
        if target in accepted:
            return target
    return None


def for_peer(ds: Dataset, accepted: Iterable[str]) -> Dataset:
    """``ds`` as a peer that accepted ``accepted`` (for its SOP class) can take it: unchanged when its
    syntax was accepted, else transcoded; :class:`TranscodeError` says what to change when neither works."""
    accepted = sorted({str(a) for a in accepted})
    stored = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
    target = choose_target(stored, accepted)
    if target == stored:
        return ds
    if target is None:
        raise TranscodeError(
            f"the peer accepted it only as {', '.join(name(a) for a in accepted) or 'nothing'}, none of which we "
            f"can produce from {name(stored)}; configure the peer to also accept {name(stored)} or "
            f"{name(EXPLICIT_LE)}")
    try:
        return transcode_dataset(ds, target)
    except TranscodeError as exc:
        raise TranscodeError(
            f"it is stored as {name(stored)} and the peer accepted only {', '.join(name(a) for a in accepted)}; "
            f"configure the peer to also accept {name(stored)}, since converting it failed: {exc}") from None
