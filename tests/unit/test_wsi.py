"""Whole-slide images: the synthetic pyramid is a valid TILED_FULL slide, and WADO-RS serves frames of slides
with an empty Basic Offset Table and with an Extended Offset Table, past 4 GiB included, by ranged reads
(the >4 GiB file is sparse on disk; the bytes read are counted)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from shared.dicom.frames import build
from shared.dicom.header import read_header
from shared.dicom.ranged import FileRangeSource, RangedReader
from shared.dicomweb.wado import Wado
from shared.index.store import IndexStore
from shared.storage import layout
from tests.fakes import MemoryBlobStore
from tools.corpus import WSI_LEVELS, UidFactory, make_patients, make_study, make_wsi

GIB = 1 << 30


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    uids = UidFactory(11)
    study = make_study(make_patients(1, seed=11)[0], uids, "sm", description="PATHOLOGY")
    return make_wsi(tmp_path_factory.mktemp("wsi"), study, uids)


def test_the_synthetic_pyramid_is_a_tiled_full_slide_whose_frames_we_index(slide: list[Path]) -> None:
    assert len(slide) == len(WSI_LEVELS) == 3
    for path, kind in zip(slide, WSI_LEVELS, strict=True):
        ds = pydicom.dcmread(path)
        assert ds.DimensionOrganizationType == "TILED_FULL" and ds.Modality == "SM"
        assert ("ExtendedOffsetTable" in ds) == (kind == "eot")
        header = read_header(RangedReader(FileRangeSource(str(path))))
        index = build(header, FileRangeSource(str(path)))
        data = path.read_bytes()
        tiles = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        assert [b"".join(data[o:o + n] for o, n in f) for f in index.frames] == [bytes(t) for t in tiles]
    if shutil.which("dciodvfy"):  # dicom3tools' IOD check (a Debian peer): no errors
        for path in slide:
            out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
            assert not [line for line in out.stderr.splitlines() if line.startswith("Error")], out.stderr


class CountingFile:
    """A blob backed by a local (sparse) file, counting requests and bytes like the Azure adapter's counters."""

    def __init__(self, path: Path, counts: dict[str, int], container: str, name: str) -> None:
        self.path, self.counts = path, counts
        self.container, self.name, self.url = container, name, f"file://{path}"
        self.etag: str | None = '"0x1"'
        self.content_md5 = None
        self.last_modified = None
        self.metadata: dict[str, str] = {}

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        data, size = FileRangeSource(str(self.path)).read_range(offset, length)
        self.counts["requests"] += 1
        self.counts["bytes"] += len(data)
        return data, size


class SlideStore(MemoryBlobStore):
    """The memory store, except that one archived instance is a file on disk (4 GiB do not go into memory)."""

    def __init__(self, path: Path, name: str) -> None:
        super().__init__()
        self.file, self.file_name = path, name
        self.counts = {"requests": 0, "bytes": 0}

    def open(self, container: str, path: str) -> Any:
        if container == layout.ARCHIVE and path == self.file_name:
            return CountingFile(self.file, self.counts, container, path)
        return super().open(container, path)

    def open_version(self, container: str, path: str, etag: str) -> Any:
        return self.open(container, path)

    def properties(self, container: str, path: str) -> Any:
        if container == layout.ARCHIVE and path == self.file_name:
            from shared.ports import BlobItem

            return BlobItem(path, self.file.stat().st_size, '"0x1"')
        return super().properties(container, path)


def _tile(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, 40, 200 - shade)).save(out, "JPEG", quality=90)
    return out.getvalue()


def sparse_slide(path: Path, *, extended: bool) -> tuple[tuple[str, str, str], list[bytes]]:
    """A 6-frame TILED_FULL slide over 4 GiB: a JPEG tile, four 1.1 GiB tiles (holes on disk: an item's length
    is 32-bit), a JPEG tile; with an empty Basic Offset Table, or with an Extended Offset Table (64-bit offsets)."""
    first, last = _tile(30), _tile(160)
    big = GIB + 100 * 1024 * 1024
    holes = 4
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (generate_uid() for _ in range(3))
    ds.Modality = "SM"
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.Rows = ds.Columns = 16
    ds.NumberOfFrames = holes + 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    lengths = [len(first), *[big] * holes, len(last)]
    if extended:
        offsets = [sum(8 + n for n in lengths[:i]) for i in range(len(lengths))]
        ds.ExtendedOffsetTable = struct.pack(f"<{len(offsets)}Q", *offsets)
        ds.ExtendedOffsetTableLengths = struct.pack(f"<{len(lengths)}Q", *lengths)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ds.save_as(path, enforce_file_format=True)
    with path.open("r+b") as f:  # not "ab": appending ignores seek, and the holes need it
        f.seek(0, io.SEEK_END)
        f.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")  # Pixel Data, undefined length
        f.write(b"\xfe\xff\x00\xe0\x00\x00\x00\x00")  # an empty Basic Offset Table
        f.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(first)) + first)
        for _ in range(holes):
            f.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", big))
            f.seek(big, io.SEEK_CUR)  # never written: a hole in a sparse file
        f.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(last)) + last)
        f.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    return (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)), [first, last]


@pytest.mark.parametrize("extended", [False, True], ids=["empty-basic-offset-table", "extended-offset-table"])
def test_frames_of_a_slide_over_4_gib_are_ranged_reads(tmp_path: Path, extended: bool) -> None:
    path = tmp_path / "slide.dcm"
    ids, (first, last) = sparse_slide(path, extended=extended)
    assert path.stat().st_size > 4 * GIB
    store = SlideStore(path, layout.instance_path(*ids))
    wado = Wado(store, cast(IndexStore, None))
    reply = wado.frames('multipart/related; type="image/jpeg"', *ids, "6,1")
    body = b"".join(reply.stream or [])
    assert body.index(last) < body.index(first)  # in the order asked, each tile whole
    index = wado.frame_index(*ids)[0]
    assert index.frames[5][0][0] > 4 * GIB  # the last tile lies past 4 GiB
    # The frame index (the header, six item headers) and two tiles: kilobytes of a 4.4 GiB file.
    assert store.counts["bytes"] < 1024 * 1024, store.counts
    before = dict(store.counts)
    again = b"".join(wado.frames('multipart/related; type="image/jpeg"', *ids, "6").stream or [])
    assert last in again
    assert store.counts["requests"] - before["requests"] == 1  # the index is stored: one read for the tile
    assert store.counts["bytes"] - before["bytes"] == len(last)
