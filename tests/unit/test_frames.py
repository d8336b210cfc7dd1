"""Frame index against pydicom's own frame decoding, on pydicom's bundled test files."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import JPEGBaseline8Bit

from shared.dicom.frames import FrameIndex, FrameIndexError, build
from shared.dicom.header import read_header_bytes


@dataclass
class CountingSource:
    data: bytes
    fetched: int = 0
    requests: int = 0

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        chunk = self.data[offset:offset + length]
        self.fetched += len(chunk)
        self.requests += 1
        return chunk, len(self.data)


def data_of(name: str) -> bytes:
    path = get_testdata_file(name)
    if path is None:  # some files are downloaded on demand; the network is closed here
        pytest.skip(f"{name} is not bundled with pydicom")
    with open(path, "rb") as f:
        return f.read()


def index_of(data: bytes) -> tuple[FrameIndex, CountingSource]:
    header = read_header_bytes(data)
    src = CountingSource(data)
    return build(header, src), src


def frame_bytes(data: bytes, ranges) -> bytes:
    return b"".join(data[o:o + n] for o, n in ranges)


NATIVE = ["CT_small.dcm", "rtdose.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "SC_rgb_small_odd.dcm",
          "SC_ybr_full_422_uncompressed.dcm", "liver_1frame.dcm", "examples_palette.dcm", "rtdose_expb.dcm"]
ENCAPSULATED = ["rtdose_rle.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_rle_32bit_2frame.dcm", "examples_ybr_color.dcm",
                "examples_jpeg2k.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                "JPEGLSNearLossless_16.dcm"]


@pytest.mark.parametrize("name", NATIVE)
def test_native_frames_equal_pydicom_pixel_array(name):
    data = data_of(name)
    ds = pydicom.dcmread(io.BytesIO(data))
    index, _ = index_of(data)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    assert index.number_of_frames == n and not index.encapsulated
    expected = ds.pixel_array if n > 1 else ds.pixel_array[np.newaxis]
    for i in range(n):
        one = pydicom.dcmread(io.BytesIO(data))
        one.PixelData = frame_bytes(data, index.frame(i + 1))
        one.NumberOfFrames = 1
        np.testing.assert_array_equal(one.pixel_array, expected[i])


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_encapsulated_frames_equal_pydicom_generate_frames(name):
    data = data_of(name)
    ds = pydicom.dcmread(io.BytesIO(data))
    n = int(ds.get("NumberOfFrames", 1) or 1)
    index, _ = index_of(data)
    assert index.encapsulated and index.number_of_frames == n
    theirs = list(generate_frames(ds.PixelData, number_of_frames=n))
    ours = [frame_bytes(data, index.frame(i + 1)) for i in range(n)]
    assert ours == theirs


def test_rle_frames_decode_to_the_same_pixels():
    data = data_of("rtdose_rle.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    index, _ = index_of(data)
    for i in (0, 7, 14):
        one = pydicom.dcmread(io.BytesIO(data))
        one.PixelData = encapsulate([frame_bytes(data, index.frame(i + 1))])
        one.NumberOfFrames = 1
        np.testing.assert_array_equal(one.pixel_array, ds.pixel_array[i])


def _rewrap(name: str, **encapsulate_kw) -> bytes:
    ds = pydicom.dcmread(get_testdata_file(name) or pytest.skip(f"{name} not bundled"))
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    if encapsulate_kw.pop("extended", False):
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    else:
        ds.PixelData = encapsulate(frames, **encapsulate_kw)
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_extended_offset_table():
    data = _rewrap("examples_ybr_color.dcm", extended=True)
    index, _ = index_of(data)
    ds = pydicom.dcmread(io.BytesIO(data))
    theirs = list(generate_frames(ds.PixelData, number_of_frames=30))
    assert [frame_bytes(data, index.frame(i + 1)) for i in range(30)] == theirs


def test_fragmented_frames_without_offset_table_split_at_jpeg_eoi():
    data = _rewrap("examples_ybr_color.dcm", fragments_per_frame=3, has_bot=False)
    index, _ = index_of(data)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    theirs = list(generate_frames(ds.PixelData, number_of_frames=30))
    assert all(len(f) == 3 for f in index.frames)
    assert [frame_bytes(data, index.frame(i + 1)) for i in range(30)] == theirs


def test_fragmented_frames_with_basic_offset_table():
    data = _rewrap("examples_ybr_color.dcm", fragments_per_frame=2, has_bot=True)
    index, _ = index_of(data)
    ds = pydicom.dcmread(io.BytesIO(data))
    theirs = list(generate_frames(ds.PixelData, number_of_frames=30))
    assert [frame_bytes(data, index.frame(i + 1)) for i in range(30)] == theirs


def test_walk_reads_item_headers_not_fragments():
    # 40 frames of 1 MB each (RLE-shaped fragments are opaque to the walk): it must not download them.
    frames = [bytes([i]) * 1_000_000 for i in range(40)]
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    ds.NumberOfFrames = 40
    ds.PixelData = encapsulate(frames, has_bot=False)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    header = read_header_bytes(data)
    src = CountingSource(data)
    index = build(header, src)
    assert [frame_bytes(data, r) for r in index.frames] == frames
    assert src.fetched < 40 * 20_000, src.fetched  # a few KB per item header, not 40 MB
    assert src.requests <= 45


def test_json_round_trip_and_bounds():
    index, _ = index_of(data_of("rtdose.dcm"))
    again = FrameIndex.from_json(index.to_json())
    assert again == index
    with pytest.raises(IndexError):
        index.frame(0)
    with pytest.raises(IndexError):
        index.frame(16)


def test_no_pixel_data_is_an_error():
    with pytest.raises(FrameIndexError):
        index_of(data_of("rtplan.dcm"))


def test_unaligned_1bit_frames_are_cut_out_and_start_on_a_byte_boundary():
    """5 x 5 binary frames are 25 bits: frame 2 starts at bit 1 of byte 3 (PS3.5 8.1.1 packs frames bit by bit)."""
    from pydicom.pixels import pack_bits

    from shared.dicom.frames import realign_bits

    rng = np.random.default_rng(7)
    frames = rng.integers(0, 2, size=(3, 5, 5), dtype=np.uint8)
    ds = pydicom.dcmread(io.BytesIO(data_of("CT_small.dcm")))
    ds.Rows = ds.Columns = 5
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = 3
    ds.PixelData = pack_bits(frames.ravel())
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    index, _ = index_of(data)
    assert index.bits_per_frame == 25 and index.number_of_frames == 3
    assert FrameIndex.from_json(index.to_json()) == index
    for n in (1, 2, 3):
        got = realign_bits(frame_bytes(data, index.frame(n)), index.bit_shift(n), index.bits_per_frame)
        assert got == pack_bits(frames[n - 1].ravel()), n
