"""Hostile DICOM files, built in memory and small on the wire (real Part 10 bytes, pydicom + zlib).

Each builder writes the parts pydicom can write (file meta, a few elements) with pydicom and the
hostile part by hand (a huge declared value streamed through zlib, items by the million, deep
nesting), so a test never holds what the file claims to hold.
"""

from __future__ import annotations

import io
import struct
import zlib

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from tests.instances import uid

MIB = 1024 * 1024
ITEM = struct.pack("<HHL", 0xFFFE, 0xE000, 0)  # an empty item of defined length
ITEM_UNDEFINED = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
ITEM_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
SEQUENCE_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _dataset(tag: str, *, name: str = "Hostile^Test") -> Dataset:
    """The top of a small CT image: UIDs, patient and image attributes (8x8, 16-bit)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid(tag, "sop")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(tag, "study"), uid(tag, "series")
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = name, f"HOSTILE-{tag}", "20261201", "OT"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    return ds


def _meta(ds: Dataset, syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    out = DicomBytesIO()
    write_file_meta_info(out, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + out.getvalue()


def _body(ds: Dataset) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def _element(group: int, elem: int, vr: bytes, length: int) -> bytes:
    """An explicit VR little endian element header with a 4-byte length (OB, UN, SQ, UT ...)."""
    return struct.pack("<HH2sHL", group, elem, vr, 0, length)


PIXELS = _element(0x7FE0, 0x0010, b"OW", 128) + b"\1\0" * 64
PRIVATE_CREATOR = struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 8) + b"HOSTILE "


def uids_of(tag: str) -> tuple[str, str, str]:
    """(study, series, sop) of the files built with ``tag``."""
    return uid(tag, "study"), uid(tag, "series"), uid(tag, "sop")


def deflate_bomb(tag: str, inflated: int = 512 * MIB) -> bytes:
    """A Deflated Explicit VR Little Endian file whose data set inflates to ``inflated`` bytes: a private
    OB of zeros before a small pixel data element. 0.5 MiB on the wire for the default 512 MiB."""
    head = _body(_dataset(tag)) + PRIVATE_CREATOR + _element(0x0009, 0x1010, b"OB", inflated)
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = io.BytesIO()
    out.write(_meta(_dataset(tag), DeflatedExplicitVRLittleEndian))
    out.write(z.compress(head))
    zeros = bytes(MIB)
    left = inflated
    while left:
        n = min(left, len(zeros))
        out.write(z.compress(zeros[:n]))
        left -= n
    out.write(z.compress(PIXELS))
    out.write(z.flush())
    return out.getvalue()


def deflated_ok(tag: str) -> bytes:
    """A small, valid deflated file (the same top as the bomb, no private blob)."""
    body = _body(_dataset(tag)) + PIXELS
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return _meta(_dataset(tag), DeflatedExplicitVRLittleEndian) + z.compress(body) + z.flush()


def item_flood(tag: str, items: int, *, defined: bool = True, deflate: bool = False) -> bytes:
    """A sequence (Per-frame Functional Groups) of ``items`` empty items before the pixel data: 8 bytes on
    the file per item, each a Python Dataset (~0.8 KiB) once parsed. ``defined``: the sequence has a
    defined length (converted only when read); else undefined (parsed with the header)."""
    ds = _dataset(tag)
    body = ITEM * items
    seq = (_element(0x5200, 0x9230, b"SQ", len(body)) + body if defined
           else _element(0x5200, 0x9230, b"SQ", 0xFFFFFFFF) + body + SEQUENCE_DELIMITER)
    data = _body(ds) + seq + PIXELS
    if deflate:
        z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return _meta(ds, DeflatedExplicitVRLittleEndian) + z.compress(data) + z.flush()
    return _meta(ds, ExplicitVRLittleEndian) + data


def deep_nesting(tag: str, depth: int, *, defined: bool = False) -> bytes:
    """``depth`` sequences, each the only element of the one item of the sequence around it."""
    if defined:
        inner = b""
        for _ in range(depth):
            item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
            inner = _element(0x0040, 0xA730, b"SQ", len(item)) + item
        seq = inner
    else:
        opening = _element(0x0040, 0xA730, b"SQ", 0xFFFFFFFF) + ITEM_UNDEFINED
        closing = ITEM_DELIMITER + SEQUENCE_DELIMITER
        seq = opening * depth + closing * depth
    ds = _dataset(tag)
    return _meta(ds, ExplicitVRLittleEndian) + _body(ds) + seq + PIXELS


def frame_count(tag: str, frames: str, *, rows: int = 8) -> bytes:
    """A native image whose NumberOfFrames says ``frames`` (8x8 16-bit, one frame of pixel data)."""
    ds = _dataset(tag)
    ds.NumberOfFrames = frames
    ds.Rows = rows
    return _meta(ds, ExplicitVRLittleEndian) + _body(ds) + PIXELS


def multipart(parts: list[bytes], boundary: str = "hostile-boundary") -> tuple[bytes, str]:
    """A STOW-RS body of ``parts`` (application/dicom) and its Content-Type."""
    b = boundary.encode()
    body = b"".join(b"--" + b + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + b + b"--\r\n", f'multipart/related; type="application/dicom"; boundary={boundary}'
