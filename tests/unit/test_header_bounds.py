"""Bounded header reads (shared/dicom/bounds.py): hostile headers are refused as ``header-too-large``
before they cost memory, real ones parse as they did, and every entry point gets the same bound.

Memory is measured with tracemalloc (every Python allocation, the inflater's and pydicom's included):
deterministic enough to assert with wide margins, unlike timings."""

from __future__ import annotations

import io
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from shared.config import HeaderLimits, LimitSettings, Settings
from shared.dicom import frames
from shared.dicom.bounds import KEEP, STEP, InflatingReader, Meter, count_sequence
from shared.dicom.dicomjson import to_dicom_json
from shared.dicom.header import read_header, read_header_bytes
from shared.dicom.ranged import BytesRangeSource, RangedReader
from shared.errors import BadInput, Reason
from shared.ingest.service import IngestService
from shared.ingest.states import IngestState
from shared.storage import layout
from tests import hostile
from tests.fakes import memory_services

MIB = 1024 * 1024


def peak_mib(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Peak Python memory (MiB) allocated while ``fn`` runs, and what it returned or raised."""
    tracemalloc.start()
    try:
        try:
            out: Any = fn()
        except BadInput as bad:
            out = bad
        return tracemalloc.get_traced_memory()[1] / MIB, out
    finally:
        tracemalloc.stop()


def parse_and_json(data: bytes, limits: HeaderLimits | None = None) -> dict[str, Any]:
    h = read_header_bytes(data, limits=limits)
    return to_dicom_json(h, h.study_uid or "1", h.series_uid or "2", h.sop_uid or "3")


# -- deflate -----------------------------------------------------------------------------------------

def test_a_deflate_bomb_stops_at_the_inflate_limit_holding_about_a_mebibyte() -> None:
    bomb = hostile.deflate_bomb("bounds-bomb", inflated=48 * MIB)  # 50 KiB on the wire
    peak, out = peak_mib(lambda: read_header_bytes(bomb, limits=HeaderLimits(max_inflated_bytes=16 * MIB)))
    assert isinstance(out, BadInput) and out.reason is Reason.HEADER_TOO_LARGE
    assert "DICOMFLOW_HEADER_MAX_INFLATED_BYTES" in out.message
    assert peak < 8, f"{peak:.1f} MiB held while inflating 16 MiB"  # pydicom's own inflate held all 48 MiB


def test_a_deflated_file_within_the_limit_parses_in_bounded_memory_and_skips_its_large_value() -> None:
    """The same shape under the limit: archived from a bounded parse (the large value is inflated and
    dropped on the way, never held), with the UIDs and the data set pydicom reads."""
    data = hostile.deflate_bomb("bounds-ok", inflated=24 * MIB)
    peak, h = peak_mib(lambda: read_header_bytes(data, limits=HeaderLimits(max_bytes=16 * MIB)))
    assert not isinstance(h, BadInput), h
    assert (h.study_uid, h.series_uid, h.sop_uid) == hostile.uids_of("bounds-ok")
    assert h.meter.inflated >= 24 * MIB and peak < 8, f"{peak:.1f} MiB held"
    ref = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size=64 * 1024)
    assert list(h.dataset._dict) == list(ref._dict)  # the keys only: reading the 24 MiB value is refused
    with pytest.raises(BadInput, match="DICOMFLOW_HEADER_MAX_BYTES"):
        h.dataset[0x00091010]  # a deferred value is read through the same meter


@pytest.mark.parametrize("name", ["image_dfl.dcm"])
def test_real_deflated_files_read_as_pydicom_reads_them(name: str) -> None:
    raw = open(get_testdata_file(name), "rb").read()  # noqa: SIM115 - small test file
    h = read_header_bytes(raw)
    ref = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    assert {e.keyword: str(e.value) for e in h.dataset if e.tag != 0x7FE00010} == \
        {e.keyword: str(e.value) for e in ref}


def test_the_inflating_reader_serves_any_position_like_the_inflated_bytes() -> None:
    import random
    import zlib

    data = hostile.deflate_bomb("bounds-seek", inflated=3 * MIB)
    start = 132 + 12 + struct.unpack("<L", data[140:144])[0]
    full = zlib.decompress(data[start:], -zlib.MAX_WBITS)
    meter = Meter(HeaderLimits(max_inflated_bytes=1 << 40, max_bytes=1 << 40, max_elements=1 << 40))
    r = InflatingReader(RangedReader(BytesRangeSource(data)), start, meter)
    rng = random.Random(7)
    most = 0
    for _ in range(150):
        pos = rng.randrange(0, len(full) + 10) if rng.random() < 0.3 else max(0, r.tell() - rng.randrange(0, 64))
        n = rng.choice([1, 8, 100, 70_000])
        r.seek(pos)
        assert r.read(n) == full[pos:pos + n]
        most = max(most, len(r._buf))
    assert most <= KEEP + STEP + 70_000  # what it holds stays bounded wherever it reads


# -- elements, items, bytes, nesting -----------------------------------------------------------------

@pytest.mark.parametrize("shape", ["defined", "undefined", "deflated"])
def test_an_item_flood_is_refused_before_its_objects_exist(shape: str) -> None:
    """A million empty items (8 MB, 35 KB deflated) would be ~800 MiB of Datasets: the parse stops at the
    budget (2,000 here, to keep the test fast: the default is 100,000), holding what that many cost. (The
    first range is 4 KiB here: a 64 KiB one is parsed unmetered first, bounded by its size.)"""
    data = hostile.item_flood(f"bounds-flood-{shape}", 1_000_000, defined=shape != "undefined",
                              deflate=shape == "deflated")

    def parse() -> dict[str, Any]:
        h = read_header(RangedReader(BytesRangeSource(data), first_chunk=4096), limits=HeaderLimits(max_elements=2000))
        return to_dicom_json(h, "1", "2", "3")

    peak, out = peak_mib(parse)
    assert isinstance(out, BadInput) and out.reason is Reason.HEADER_TOO_LARGE
    assert "DICOMFLOW_HEADER_MAX_ELEMENTS" in out.message
    # What it holds: copies of the bytes read (a deferred sequence is read whole to be counted), and at
    # most ~2 KiB per budgeted header; never the ~800 MiB the items would be as objects.
    inflated = 8 * 1_000_000 / MIB
    assert peak < 4 * inflated + 2000 * 2 / 1024, f"{peak:.0f} MiB"


def test_a_real_sized_sequence_is_accepted_and_converted_whole() -> None:
    """Per-frame functional groups of 1,000 frames (item + FrameContentSequence + 2 values each) fit the
    default budget and all reach the DICOM JSON (the budget allows ~10,000 such frames)."""
    ds = Dataset()
    for name in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, name, "1.2.3." + str(len(name)))
    frame = Dataset()
    content = Dataset()
    content.FrameAcquisitionNumber, content.StackID = 1, "1"
    frame.FrameContentSequence = [content]
    ds.PerFrameFunctionalGroupsSequence = [frame] * 1000
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    doc = parse_and_json(buf.getvalue())
    assert len(doc["52009230"]["Value"]) == 1000


def test_a_long_deferred_text_value_is_charged_before_it_is_read() -> None:
    ds = hostile._dataset("bounds-text")
    ds.TextValue = "x" * (3 * MIB)  # UT, deferred by the parse, read by the DICOM JSON
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(BadInput, match="DICOMFLOW_HEADER_MAX_BYTES") as bad:
        parse_and_json(buf.getvalue(), HeaderLimits(max_bytes=2 * MIB))
    assert bad.value.reason is Reason.HEADER_TOO_LARGE
    assert "TextValue" not in parse_and_json(buf.getvalue())  # within the default: read (it is not a key)
    assert "0040A160" in parse_and_json(buf.getvalue())


@pytest.mark.parametrize(("depth", "defined"), [(20_000, False), (200, False), (200, True), (40, True)])
def test_deep_nesting_is_refused_with_a_reason(depth: int, defined: bool) -> None:
    with pytest.raises(BadInput) as bad:
        parse_and_json(hostile.deep_nesting(f"bounds-deep-{depth}", depth, defined=defined))
    assert bad.value.reason is Reason.HEADER_TOO_LARGE and "nested" in bad.value.message


def test_nesting_within_the_limit_is_read_whole() -> None:
    doc = parse_and_json(hostile.deep_nesting("bounds-deep-ok", 30, defined=True))
    depth, node = 0, doc.get("0040A730")
    while node and node.get("Value"):
        depth += 1
        node = node["Value"][0].get("0040A730")
    assert depth == 30


@pytest.mark.parametrize("name", ["rtplan.dcm", "test-SR.dcm", "nested_priv_SQ.dcm", "rtdose.dcm"])
def test_the_walk_counts_at_least_what_pydicom_makes(name: str) -> None:
    """count_sequence charges a sequence before pydicom converts it: never fewer objects than pydicom
    makes of it (items and elements, nested ones included), so the budget is a real bound. Each
    sequence of a real file is written back as bytes in the file's encoding, walked, and compared."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_sequence

    ds = pydicom.dcmread(get_testdata_file(name))
    implicit, little = ds.original_encoding

    def made(value: Any) -> int:
        n = 0
        for item in value:
            n += 1
            for elem in item:
                n += 1
                if elem.VR == "SQ":
                    n += made(elem.value)
        return n

    checked = 0
    for elem in ds:
        if elem.VR != "SQ" or not elem.value:
            continue
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = bool(little), bool(implicit)
        write_sequence(out, elem, [ds.get("SpecificCharacterSet", "ISO_IR 6")])
        counted = count_sequence(out.getvalue(), implicit=bool(implicit), little=bool(little),
                                 meter=Meter(HeaderLimits()))
        assert counted >= made(elem.value), (elem.keyword, counted, made(elem.value))
        checked += 1
    assert checked


# -- every entry point: ingest quarantines, reads beyond the limits never reach the index --------------

def test_ingest_quarantines_a_bomb_with_its_own_reason_and_indexes_nothing() -> None:
    f = memory_services(DICOMFLOW_HEADER_MAX_INFLATED_BYTES=str(4 * MIB))  # the setting reaches ingest
    f.blobs.put(layout.INBOX, "bomb.dcm", hostile.deflate_bomb("bounds-ingest", inflated=8 * MIB))
    f.blobs.put(layout.INBOX, "flood.dcm", hostile.item_flood("bounds-ingest-2", 200_000))
    svc = IngestService(f.services)
    for name in ("bomb.dcm", "flood.dcm"):
        out = svc.ingest(f.services.blobs.open(layout.INBOX, name))
        assert (out.state, out.reason) == (IngestState.QUARANTINED, Reason.HEADER_TOO_LARGE), out
    assert f.blobs.names(layout.ARCHIVE) == []


def test_limits_are_settings_with_defaults() -> None:
    assert Settings.from_env({}).limits == LimitSettings()
    got = Settings.from_env({"DICOMFLOW_HEADER_MAX_ELEMENTS": "5000", "DICOMFLOW_HEADER_MAX_INFLATED_BYTES": "2097152",
                             "DICOMFLOW_STOW_MAX_PARTS": "7", "DICOMFLOW_QUERY_MAX_WILDCARDS": "3"}).limits
    assert (got.header.max_elements, got.header.max_inflated_bytes, got.stow_max_parts, got.query_max_wildcards) == \
        (5000, 2 * MIB, 7, 3)
    from shared.config import SettingsError

    for bad in ({"DICOMFLOW_HEADER_MAX_ELEMENTS": "\u0661\u0660\u0660\u0660\u0660"}, {"DICOMFLOW_STOW_MAX_PARTS": "0"},
                {"DICOMFLOW_HEADER_MAX_DEPTH": "1000"}):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)


def test_a_storage_failure_mid_parse_is_the_storage_failure_not_bad_input() -> None:
    class Flaky:
        def __init__(self, data: bytes) -> None:
            self.data, self.calls = data, 0

        def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
            self.calls += 1
            if self.calls > 1:
                raise TimeoutError("storage timed out")
            return self.data[offset:offset + length], len(self.data)

    with pytest.raises(TimeoutError):  # the second range fails, inside pydicom's parse of a sequence
        read_header(RangedReader(Flaky(hostile.item_flood("bounds-flaky", 1000, defined=False)), first_chunk=4096))


# -- frame indexes -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("frames_", "rows", "why"), [
    ("2147483647", 8, "DICOMFLOW_MAX_FRAMES"), ("-5", 8, "positive"), ("1000", 0, "must be positive"),
    ("3", 8, "fewer than 3 frames"),
])
def test_frame_indexes_trust_no_declared_count(frames_: str, rows: int, why: str) -> None:
    data = hostile.frame_count(f"bounds-frames-{frames_}-{rows}", frames_, rows=rows)
    with pytest.raises(frames.FrameIndexError, match=why):
        frames.build(read_header_bytes(data), BytesRangeSource(data))


def test_encapsulated_walks_stop_at_the_frame_limit() -> None:
    ds = hostile._dataset("bounds-frag")
    ds.NumberOfFrames = 1
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 2) + b"\xff\xd9"
    pixels = (hostile._element(0x7FE0, 0x0010, b"OB", 0xFFFFFFFF) + struct.pack("<HHL", 0xFFFE, 0xE000, 0)
              + item * 500 + hostile.SEQUENCE_DELIMITER)
    data = hostile._meta(ds, "1.2.840.10008.1.2.4.50") + hostile._body(ds) + pixels
    header = read_header_bytes(data)
    with pytest.raises(frames.FrameIndexError, match="fragments"):
        frames.build(header, BytesRangeSource(data), max_frames=100)
    assert frames.build(header, BytesRangeSource(data), max_frames=1000).number_of_frames == 1
