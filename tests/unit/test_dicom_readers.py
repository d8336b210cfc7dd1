"""The pure readers on their own: the ranged reader, the header parse, validation, DICOM facts.

Real files by name (pydicom's test data), bytes in memory; no storage.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from shared.dicom import facts
from shared.dicom.header import DEFER_SIZE, read_header, read_header_bytes
from shared.dicom.ranged import BytesRangeSource, RangedReader
from shared.dicom.validate import check_uid, is_valid_uid, validate
from shared.errors import ADVICE, BadInput, Reason


def data(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path)).read_bytes()


class CountingSource(BytesRangeSource):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.calls: list[tuple[int, int]] = []

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        self.calls.append((offset, length))
        return super().read_range(offset, length)


def dataset_bytes(ds: Dataset, *, meta_sop: str | None = None, pixels: bytes = b"") -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = meta_sop or ds.get("SOPInstanceUID", generate_uid())
    if pixels:
        ds.Rows, ds.Columns = len(pixels) // 1000, 1000
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
        ds.PixelData = pixels
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def minimal(**values: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality = "OT"
    for k, v in values.items():
        setattr(ds, k, v)
    return ds


# -- RangedReader ----------------------------------------------------------------------------------

def test_ranged_reader_reads_what_is_asked_in_growing_chunks_and_counts_it() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    src = CountingSource(payload)
    reader = RangedReader(src, first_chunk=1024, max_chunk=8192)
    assert reader.read(10) == payload[:10]
    assert reader.size == len(payload)
    assert src.calls == [(0, 1024)]  # the first range also told the size
    out = reader.read(3000)  # sequential: the window grows (2048, then 4096)
    assert out == payload[10:3010]
    assert [n for _, n in src.calls] == [1024, 2048]
    assert reader.requests == 2 and reader.bytes_fetched == 3072


def test_ranged_reader_seeks_past_values_without_fetching_them() -> None:
    payload = b"\x01" * 100_000 + b"tail"
    src = CountingSource(payload)
    reader = RangedReader(src, first_chunk=64)
    reader.read(4)
    reader.seek(-4, io.SEEK_END)
    assert reader.read(4) == b"tail"
    assert reader.bytes_fetched < 200  # the 100 kB in between were never downloaded
    assert reader.tell() == len(payload)
    assert reader.read(5) == b""  # end of the object


def test_ranged_reader_digest_is_equal_for_equal_content_and_differs_otherwise() -> None:
    def digest(payload: bytes) -> str:
        r = RangedReader(BytesRangeSource(payload), first_chunk=16)
        r.read(40)
        return r.digest()

    assert digest(b"a" * 64) == digest(b"a" * 64)
    assert digest(b"a" * 64) != digest(b"a" * 20 + b"b" + b"a" * 43)


def test_a_digest_so_far_covers_the_ranges_fetched_until_then_and_is_computed_when_asked() -> None:
    payload = bytes(range(256)) * 4
    r = RangedReader(BytesRangeSource(payload), first_chunk=16)
    r.read(40)
    so_far = r.digest_so_far()
    expected = r.digest()
    r.read(400)  # later reads (a deferred sequence read for the JSON) do not change it
    assert so_far.hexdigest() == expected != r.digest()


def test_ranged_reader_refuses_bad_seeks() -> None:
    reader = RangedReader(BytesRangeSource(b"abc"))
    with pytest.raises(OSError):
        reader.seek(-1)
    with pytest.raises(ValueError, match="whence"):
        reader.seek(0, 7)


# -- header ----------------------------------------------------------------------------------------

def test_header_of_ct_small_reads_uids_and_locates_the_pixel_data() -> None:
    raw = data("CT_small.dcm")
    h = read_header_bytes(raw)
    ref = pydicom.dcmread(io.BytesIO(raw))
    assert (h.study_uid, h.series_uid, h.sop_uid, h.sop_class_uid) == (
        ref.StudyInstanceUID, ref.SeriesInstanceUID, ref.SOPInstanceUID, ref.SOPClassUID)
    assert h.transfer_syntax_uid == ref.file_meta.TransferSyntaxUID
    assert h.pixel_data_tag == 0x7FE00010 and h.pixel_data_length == len(ref.PixelData)
    assert raw[h.pixel_data_offset:h.pixel_data_offset + h.pixel_data_length] == ref.PixelData
    assert h.warnings == []


def test_header_of_a_large_instance_costs_one_request_and_never_the_pixel_data() -> None:
    pixels = b"\x07" * 3_000_000
    raw = dataset_bytes(minimal(), pixels=pixels)
    src = CountingSource(raw)
    h = read_header(RangedReader(src))
    assert len(src.calls) == 1 and src.calls[0] == (0, 64 * 1024)
    assert h.pixel_data_length == len(pixels) and h.size_bytes == len(raw)


def test_values_above_defer_size_are_skipped_not_downloaded() -> None:
    ds = minimal()
    ds.add_new(0x00091010, "OB", b"\x00" * (DEFER_SIZE * 8))  # a large private blob in the header
    raw = dataset_bytes(ds, pixels=b"\x01" * 16000)
    src = CountingSource(raw)
    h = read_header(RangedReader(src))
    assert sum(n for _, n in src.calls) < DEFER_SIZE * 4
    assert h.sop_uid == ds.SOPInstanceUID and h.pixel_data_length == 16000


def test_a_deflated_file_over_one_range_is_parsed_once_and_never_by_dcmread(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom's dcmread inflates all of a deflated data set at once (a bomb's whole size): the header is
    parsed once, straight through the bounded inflating reader, never tried on the first range first and
    never handed to dcmread."""
    ds = minimal()
    ds.add_new(0x00091010, "OB", random.Random(0).randbytes(100_000))  # incompressible: the file is over one range
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    assert len(raw) > 64 * 1024
    parses = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: parses.append(1) or real(*a, **k))
    h = read_header_bytes(raw)
    assert parses == []
    assert (h.transfer_syntax_uid, h.sop_uid, h.study_uid) == (DeflatedExplicitVRLittleEndian, ds.SOPInstanceUID,
                                                               ds.StudyInstanceUID)
    assert h.bytes_read == len(raw)


@pytest.mark.parametrize("name", ["ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_implicit.dcm"])
def test_transfer_syntax_is_known_for_files_with_and_without_file_meta(name: str) -> None:
    h = read_header_bytes(data(name))
    implicit, little = facts.encoding_of(h.transfer_syntax_uid)
    assert (implicit, little) == (h.is_implicit_vr, h.is_little_endian)
    assert h.sop_uid


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", Reason.EMPTY),
    (b"hello, this is not a DICOM file at all" * 10, Reason.NOT_DICOM),
])
def test_unreadable_input_gets_its_reason(payload: bytes, reason: Reason) -> None:
    with pytest.raises(BadInput) as info:
        read_header_bytes(payload)
    assert info.value.reason is reason
    assert info.value.message.startswith(ADVICE[reason])


def test_dicomdir_is_an_unsupported_object() -> None:
    with pytest.raises(BadInput) as info:
        read_header_bytes(data("DICOMDIR"))
    assert info.value.reason is Reason.UNSUPPORTED


def test_a_file_cut_inside_its_pixel_data_is_tolerated_with_a_warning() -> None:
    raw = data("CT_small.dcm")
    h = read_header_bytes(raw[: len(raw) - 1000])
    assert h.warnings == [Reason.TRUNCATED_PIXEL_DATA]
    assert validate(h)[2] == h.sop_uid


def test_a_file_cut_inside_its_header_loses_uids_and_is_refused_as_truncated() -> None:
    raw = data("CT_small.dcm")
    h = read_header_bytes(raw[:300])
    assert Reason.TRUNCATED in h.warnings
    with pytest.raises(BadInput) as info:
        validate(h)
    assert info.value.reason is Reason.TRUNCATED


# -- validation --------------------------------------------------------------------------------------

def test_sop_instance_uid_only_in_the_file_meta_is_refused_not_borrowed() -> None:
    """Policy: the data set's own UIDs identify the instance (Type 1 in every IOD). Archiving under
    the file meta's Media Storage SOP Instance UID would serve an object without (0008,0018)."""
    ds = minimal()
    meta_uid = generate_uid()
    del ds.SOPInstanceUID
    h = read_header_bytes(dataset_bytes(ds, meta_sop=meta_uid))
    assert h.sop_uid is None
    with pytest.raises(BadInput) as info:
        validate(h)
    assert info.value.reason is Reason.MISSING_SOP_UID


def test_sop_class_only_in_the_file_meta_is_refused() -> None:
    ds = minimal()
    del ds.SOPClassUID
    with pytest.raises(BadInput) as info:
        validate(read_header_bytes(dataset_bytes(ds)))
    assert info.value.reason is Reason.MISSING_SOP_CLASS


@pytest.mark.parametrize(("value", "ok"), [
    ("1.2.840.10008.1.2", True), ("1.2.3", True), ("1", True), ("1.02.3", True),
    ("", False), ("1..2", False), (".1", False), ("1.", False), ("1.2.a", False), ("1/2", False),
    ("1." + "2" * 63, False), (None, False), (12, False),
])
def test_uids_that_may_become_paths_and_keys(value: object, ok: bool) -> None:
    assert is_valid_uid(value) is ok


def test_strict_uids_refuse_leading_zeros() -> None:
    assert is_valid_uid("1.02.3") and not is_valid_uid("1.02.3", strict=True)


def test_check_uid_names_the_attribute_but_never_echoes_the_value() -> None:
    with pytest.raises(BadInput) as info:
        check_uid("Smith^John", "StudyInstanceUID")
    assert info.value.reason is Reason.INVALID_UID
    assert "StudyInstanceUID" in info.value.message and "Smith" not in info.value.message
    with pytest.raises(BadInput) as missing:
        check_uid("  ", "SeriesInstanceUID", Reason.MISSING_SERIES_UID)
    assert missing.value.reason is Reason.MISSING_SERIES_UID


def test_one_uid_at_two_levels_is_a_conflict() -> None:
    ds = minimal()
    ds.SeriesInstanceUID = ds.StudyInstanceUID
    with pytest.raises(BadInput) as info:
        validate(read_header_bytes(dataset_bytes(ds)))
    assert info.value.reason is Reason.UID_CONFLICT


def test_bad_input_requires_a_known_reason() -> None:
    assert BadInput("not-dicom").reason is Reason.NOT_DICOM
    with pytest.raises(ValueError):
        BadInput("made-up-reason", "x")


# -- DICOM facts ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("sop_class", "modality", "derived"), [
    ("1.2.840.10008.5.1.4.1.1.66.4", "SEG", True),  # Segmentation
    ("1.2.840.10008.5.1.4.1.1.88.33", "SR", True),  # Comprehensive SR
    ("1.2.840.10008.5.1.4.1.1.88.59", "KO", True),  # Key Object Selection
    ("1.2.840.10008.5.1.4.1.1.11.1", "PR", True),  # Grayscale Softcopy Presentation State
    ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", True),
    ("1.2.840.10008.5.1.4.1.1.30", "MR", True),  # Parametric Map
    ("", "SEG", True),  # a series-level event names only the modality
    ("1.2.840.10008.5.1.4.1.1.2", "CT", False),  # CT Image, also when ImageType says DERIVED (a reformat)
    ("1.2.840.10008.5.1.4.1.1.13.1.3", "MG", False),  # Breast Tomosynthesis
])
def test_one_derived_rule(sop_class: str, modality: str, derived: bool) -> None:
    assert facts.is_derived(sop_class, modality) is derived


def test_transfer_syntax_facts_come_from_pydicom() -> None:
    assert facts.has_native_pixels_in_place("1.2.840.10008.1.2.2")
    assert facts.has_native_pixels("1.2.840.10008.1.2.1.99") and facts.is_deflated("1.2.840.10008.1.2.1.99")
    assert not facts.has_native_pixels_in_place("1.2.840.10008.1.2.1.99")
    assert not facts.has_native_pixels("1.2.840.10008.1.2.4.50")  # JPEG baseline
    # A syntax newer than pydicom (Deflated Image Frame Compression) is encapsulated, explicit LE.
    assert not facts.has_native_pixels("1.2.840.10008.1.2.8.1") and not facts.is_deflated("1.2.840.10008.1.2.8.1")
    assert facts.encoding_of("1.2.840.10008.1.2.8.1") == (False, True)
