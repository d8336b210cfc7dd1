"""The in-place header rewrite on pydicom's own test files: every element but the changed ones (and the
Group Length elements of changed groups) survives unchanged, pixel data bytes included."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file

from shared.dicom.header import read_header_bytes
from shared.dicom.ranged import BytesRangeSource, RangedReader
from shared.update.changes import parse_changes
from shared.update.rewrite import CannotRewrite, KnownPrefix, needs_recode, new_version

FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "ExplVR_BigEnd.dcm", "rtstruct.dcm",
         "ExplVR_LitEndNoMeta.dcm", "MR_small_RLE.dcm", "SC_rgb_small_odd.dcm", "chrGerm.dcm",
         "chrRuss.dcm", "chrJapMulti.dcm", "chrSQEncoding.dcm", "no_meta_group_length.dcm",
         "MR_small_implicit.dcm", "test-SR.dcm", "waveform_ecg.dcm", "examples_overlay.dcm"]
ASCII = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Roe^Richard"}]},
         "00081030": {"vr": "LO", "Value": ["Corrected description"]}}
CYRILLIC = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Иванов^Пётр"}]}}


def read(name: str) -> bytes:
    path = get_testdata_file(name) or get_charset_files(name)[0]
    with open(path, "rb") as f:
        return f.read()


def rewritten(data: bytes, change: dict[str, Any]) -> tuple[bytes, Any]:
    reader = RangedReader(BytesRangeSource(data), first_chunk=4096)
    header = read_header_bytes(data)
    version = new_version(header, reader, parse_changes(change))
    return version.head + data[version.split:], version


def elements(ds: Any) -> dict[int, Any]:
    out = {}
    for elem in ds:
        if elem.tag.element == 0:
            continue  # Group Length: dropped for changed groups
        out[int(elem.tag)] = [elements(i) for i in elem.value] if elem.VR == "SQ" else elem.value
    return out


@pytest.mark.parametrize("name", FILES)
def test_only_the_changed_attributes_change(name: str) -> None:
    data = read(name)
    new, version = rewritten(data, ASCII)
    before, after = pydicom.dcmread(io.BytesIO(data), force=True), pydicom.dcmread(io.BytesIO(new), force=True)
    assert str(after.PatientName) == "Roe^Richard" and after.StudyDescription == "Corrected description"
    old, now = elements(before), elements(after)
    for tag in (0x00100010, 0x00081030):
        old.pop(tag, None)
        now.pop(tag, None)
    assert now == old
    # The tail is the original's own bytes, copied, and the header parse sees the same pixel data.
    assert new[len(version.head):] == data[version.split:]
    if "PixelData" in before:
        assert after.PixelData == before.PixelData
        assert read_header_bytes(new).pixel_data_length == read_header_bytes(data).pixel_data_length


@pytest.mark.parametrize("name", ["CT_small.dcm", "chrGerm.dcm"])
def test_a_name_the_character_set_cannot_hold_switches_the_whole_head_to_utf8(name: str) -> None:
    data = read(name)
    assert needs_recode(read_header_bytes(data), parse_changes(CYRILLIC))
    new, version = rewritten(data, CYRILLIC)
    before, after = pydicom.dcmread(io.BytesIO(data)), pydicom.dcmread(io.BytesIO(new))
    assert version.recoded and after.SpecificCharacterSet == "ISO_IR 192"
    assert str(after.PatientName) == "Иванов^Пётр"
    for kw in ("StudyDescription", "InstitutionName", "SeriesDescription", "OperatorsName"):
        if kw in before:
            assert str(after[kw].value) == str(before[kw].value), kw  # re-encoded, same text
    assert after.PixelData == before.PixelData


def test_a_change_the_character_set_holds_keeps_it() -> None:
    data = read("chrGerm.dcm")
    new, version = rewritten(data, {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Größer^Jürgen"}]}})
    assert not version.recoded
    after = pydicom.dcmread(io.BytesIO(new))
    assert after.SpecificCharacterSet == "ISO_IR 100" and str(after.PatientName) == "Größer^Jürgen"


def test_the_new_header_is_read_from_the_bytes_in_hand_and_the_stored_file_beyond_them() -> None:
    data = read("CT_small.dcm")
    new, version = rewritten(data, ASCII)

    class Stored:
        calls = 0
        container, name, url, etag, content_md5, last_modified, metadata = "c", "n", "u", None, None, None, {}

        def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
            Stored.calls += 1
            return new[offset:offset + length], len(new)

    in_hand = version.known(data[:version.split + 1000])
    known = KnownPrefix(in_hand, Stored(), version.new_size)  # type: ignore[arg-type]
    assert version.new_size == len(new) and new.startswith(in_hand) and len(in_hand) == len(version.head) + 1000
    for offset, length in [(0, 64), (len(version.head) - 5, 20), (100, 5000), (len(new) - 10, 100)]:
        got, total = known.read_range(offset, length)
        assert got == new[offset:offset + length] and total == len(new)
    assert Stored.calls == 2  # only the two reads past the bytes in hand


def test_deflated_files_are_refused_with_advice() -> None:
    data = read("image_dfl.dcm")
    with pytest.raises(CannotRewrite, match="STOW-RS"):
        rewritten(data, ASCII)


@pytest.mark.peers
@pytest.mark.parametrize("name", ["CT_small.dcm", "chrRuss.dcm"])
def test_dciodvfy_finds_nothing_new_in_a_rewritten_file(name: str, tmp_path: Path) -> None:
    import subprocess

    from tests.integration.routing_peers import need

    def problems(data: bytes, label: str) -> set[str]:
        path = tmp_path / label
        path.write_bytes(data)
        out = subprocess.run([need("dciodvfy"), str(path)], capture_output=True, timeout=60)
        text = (out.stdout + out.stderr).decode("utf-8", "replace")  # it echoes values in their character set
        return {line for line in text.splitlines() if line.startswith(("Error", "Warning"))}

    data = read(name)
    new, _ = rewritten(data, CYRILLIC)
    assert problems(new, "new.dcm") <= problems(data, "old.dcm")
