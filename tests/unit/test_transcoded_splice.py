"""Whole instances transcoded to Explicit VR Little Endian by reusing their stored header bytes: the result is
byte for byte what re-encoding with pydicom gives, and every case where the header would change takes pydicom's
path."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from shared.dicom import transcode
from shared.dicomweb import transcoded

ELE = transcode.EXPLICIT_LE


def stored(name: str, change: object = None) -> bytes:
    ds = pydicom.dcmread(get_testdata_file(name))
    if callable(change):
        change(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format="ImplementationVersionName" in ds.file_meta)
    return buf.getvalue()


def reencoded(data: bytes) -> bytes:
    """The general path: the file read whole by pydicom, transcoded, written again."""
    return transcoded._write_header(transcode.transcode_dataset(transcode.read_whole(data), ELE), ELE)


def padded(ds: pydicom.Dataset) -> None:
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 10)  # Data Set Trailing Padding, after Pixel Data


def unnamed(ds: pydicom.Dataset) -> None:
    """A file meta without Implementation Version Name (pydicom adds one on writing: so does the splice)."""
    del ds.file_meta.ImplementationVersionName


@pytest.mark.parametrize(("name", "change"), [
    ("MR_small_jpeg_ls_lossless.dcm", None),
    ("MR_small_RLE.dcm", None),
    ("MR_small_jp2klossless.dcm", None),
    ("JPEG2000.dcm", None),  # lossy JPEG 2000, already marked lossy in its header
    ("MR_small_jpeg_ls_lossless.dcm", padded),
    ("MR_small_RLE.dcm", unnamed),
])
def test_spliced_is_what_pydicom_writes(name: str, change: object) -> None:
    data = stored(name, change)
    got = transcoded._spliced(data, ELE)
    assert got is not None, "this case should not need the header re-encoded"
    assert got == reencoded(data)
    assert transcoded.whole_in(data, ELE) == got
    back = pydicom.dcmread(io.BytesIO(got))
    assert back.file_meta.TransferSyntaxUID == ELE
    np.testing.assert_array_equal(back.pixel_array, pydicom.dcmread(io.BytesIO(data)).pixel_array)
    if change is padded:
        assert back[0xFFFCFFFC].value == b"\0" * 10


def unmarked(ds: pydicom.Dataset) -> None:
    del ds.LossyImageCompression


def with_eot(ds: pydicom.Dataset) -> None:
    ds.ExtendedOffsetTable = (0).to_bytes(8, "little")
    ds.ExtendedOffsetTableLengths = (len(ds.PixelData) - 16).to_bytes(8, "little")


@pytest.mark.parametrize(("name", "change", "why"), [
    ("SC_rgb_jpeg_dcmtk.dcm", None, "colour: decoding gives RGB, the header must say so"),
    ("JPEG2000.dcm", unmarked, "a lossy source not marked lossy: the header gains Lossy Image Compression"),
    ("MR_small_jpeg_ls_lossless.dcm", with_eot, "an Extended Offset Table describes the stored fragments only"),
])
def test_header_changes_take_pydicoms_path(name: str, change: object, why: str) -> None:
    data = stored(name, change)
    assert transcoded._spliced(data, ELE) is None, why
    back = pydicom.dcmread(io.BytesIO(transcoded.whole_in(data, ELE)))
    assert back.file_meta.TransferSyntaxUID == ELE
    assert "ExtendedOffsetTable" not in back
    if name != "MR_small_jpeg_ls_lossless.dcm":
        assert back.LossyImageCompression == "01"
