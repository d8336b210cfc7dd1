"""The DICOM JSON ingest writes is exactly what pydicom's ``to_json_dict`` writes (with our
BulkDataURI rules), though most of it is written straight from the raw element bytes.

The reference below is the way it was done before the fast path: convert every element with
pydicom, then ``DataElement.to_json_dict``. Compared as serialised bytes (so key order and
NaN count too) on every pydicom test file and character set file, and on made-up edge cases.
"""

from __future__ import annotations

import glob
import io
import os
import warnings
from typing import Any

import orjson
import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pydicom.valuerep import PersonName

from shared.dicom.dicomjson import _BINARY_VRS, BULK_THRESHOLD, bulk_uri, to_dicom_json
from shared.dicom.facts import has_native_pixels_in_place, is_derived
from shared.dicom.header import Header, read_header_bytes
from shared.dicom.validate import validate
from shared.errors import BadInput
from shared.index import records
from shared.index.records import InstanceRecord

S, SE, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


def reference(header: Header, study: str, series: str, sop: str) -> dict[str, Any]:
    """pydicom's own DICOM JSON of every element, our BulkDataURI rules (the former implementation)."""
    ds = header.dataset
    out: dict[str, Any] = {}

    def handler(elem: DataElement) -> str:
        return f"studies/{study}/series/{series}/instances/{sop}/bulkdata/tag/{elem.tag:08X}"

    for tag, raw in ds._dict.items():
        if tag.group == 0x0002 or tag.element == 0x0000:
            continue
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length not in (0, 0xFFFFFFFF):
            vr = str(raw.VR) if raw.VR else None
            if vr is None or vr in _BINARY_VRS or vr.startswith("O"):
                out[f"{int(tag):08X}"] = {"vr": vr or "UN",
                                          "BulkDataURI": bulk_uri(study, series, sop, raw.value_tell, raw.length)}
                continue
        try:
            out[f"{int(tag):08X}"] = ds[tag].to_json_dict(handler, BULK_THRESHOLD)
        except Exception:  # as the former implementation: left out
            continue
    if header.pixel_data_tag is not None and header.pixel_data_offset is not None:
        native = header.pixel_data_length is not None and has_native_pixels_in_place(header.transfer_syntax_uid)
        length = header.pixel_data_length if header.pixel_data_length is not None else 0xFFFFFFFF
        out[f"{header.pixel_data_tag:08X}"] = {"vr": "OW" if native else "OB",
                                               "BulkDataURI": bulk_uri(study, series, sop, header.pixel_data_offset,
                                                                       length)}
    return dict(sorted(out.items()))


def pydicom_files() -> list[str]:
    base = os.path.join(os.path.dirname(pydicom.__file__), "data")
    files = glob.glob(base + "/test_files/**/*", recursive=True) + glob.glob(base + "/charset_files/*")
    return sorted(f for f in files if os.path.isfile(f))


def both(data: bytes) -> tuple[bytes, bytes] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fast_header, ref_header = read_header_bytes(data), read_header_bytes(data)
        except BadInput:
            return None
        return (orjson.dumps(to_dicom_json(fast_header, S, SE, SOP)),
                orjson.dumps(reference(ref_header, S, SE, SOP)))


def test_same_json_as_pydicom_on_every_pydicom_test_and_charset_file() -> None:
    files = pydicom_files()
    compared = charsets = 0
    for path in files:
        with open(path, "rb") as f:
            got = both(f.read())
        if got is None:
            continue
        fast, ref = got
        assert fast == ref, path
        compared += 1
        charsets += "charset_files" in path
    assert compared > 100, compared  # most of them are DICOM headers we read
    assert charsets >= 15, charsets  # every character set file (Japanese, Korean, Chinese, Greek, ...)


def encoded(ds: Dataset, syntax: Any = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, little_endian=syntax != ExplicitVRBigEndian,
               implicit_vr=syntax == ImplicitVRLittleEndian)
    return buf.getvalue()


def edge_cases(charset: str | None) -> Dataset:
    """Values pydicom converts in surprising ways: the fast path must agree or step aside."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.add_new(0x00100010, "PN", "Müller^Hans=ミュラー^ハンス=")  # trailing empty group
    ds.add_new(0x00100021, "LO", "")
    ds.add_new(0x00081030, "LO", "A\\ \\B  ")  # empty and padded components
    ds.add_new(0x00080090, "PN", "=")  # no groups at all
    ds.add_new(0x00081050, "PN", "A^B\\\\C")  # an empty name among several
    ds.add_new(0x00200013, "IS", "1.0")  # pydicom accepts a float string without loss
    ds.add_new(0x00200012, "IS", " 7 ")
    ds.add_new(0x00201041, "DS", "nan")
    ds.add_new(0x00280030, "DS", " 0.5\\1e-3 ")
    ds.add_new(0x00181050, "DS", "")
    ds.add_new(0x00080060, "CS", "MR ")
    ds.add_new(0x00080008, "CS", "ORIGINAL\\PRIMARY\\\\")
    ds.add_new(0x00080054, "AE", " AET1 \\ AET2")
    ds.add_new(0x00081190, "UR", "http://example.org/x  ")
    ds.add_new(0x00204000, "LT", "line\\with backslash \0")
    ds.add_new(0x00280010, "US", 512)
    ds.add_new(0x00283010, "SQ", Sequence([Dataset()]))
    ds.add_new(0x00281101, "US", [0, 0, 16])  # LUT descriptor: pydicom fixes the first value
    ds.add_new(0x00186011, "SQ", Sequence([Dataset(), Dataset()]))
    item = ds[0x00186011].value[0]
    item.add_new(0x00186012, "US", [1, 2, 3])
    item.add_new(0x00186014, "FD", [0.25, -1.5])
    item.add_new(0x0008103E, "LO", "Größe")
    ds.add_new(0x00091010, "LO", "PRIVATE CREATOR")
    ds.add_new(0x00091011, "OB", b"\x00\x1b\xff" * 300)  # above the inline limit
    ds.add_new(0x00091012, "OB", b"\x01\x02")
    ds.add_new(0x00091013, "UN", b"ABCD")
    ds.add_new(0x00091014, "FL", [1.5, 2.5])
    ds.add_new(0x00091015, "SL", [-1, 2])
    ds.add_new(0x00091016, "OW", b"")
    ds.add_new(0x00091017, "AT", [0x00100010, 0x00100020])
    ds.add_new(0x00091018, "SV", [-(2**40)])
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", "ISO_IR 144"])
def test_same_json_as_pydicom_on_edge_cases(syntax: Any, charset: str | None) -> None:
    ds = edge_cases(charset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = encoded(ds, syntax)
    got = both(data)
    assert got is not None
    fast, ref = got
    assert fast == ref
    doc = orjson.loads(fast)
    assert doc["00280010"] == {"vr": "US", "Value": [512]}  # the edge cases did reach the JSON
    assert doc["00091011"]["BulkDataURI"].endswith("/bulkdata/tag/00091011")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = records.from_dicom_json(doc, transfer_syntax_uid="1.2.840.10008.1.2.1", size_bytes=1)
        assert rec == reference_record(read_header_bytes(data).dataset)
    assert rec.patient_name and rec.patient_name.endswith("^Hans=ミュラー^ハンス" if charset == "ISO_IR 192" else "")


def test_text_that_does_not_decode_falls_back_to_pydicom() -> None:
    ds = edge_cases("ISO_IR 192")
    ds.add_new(0x00081040, "LO", b"caf\xe9")  # latin-1 bytes in a UTF-8 data set
    ds.add_new(0x00100020, "LO", b"ID\x1b$B")  # an escape sequence
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = both(encoded(ds))
    assert got is not None and got[0] == got[1]


def reference_record(ds: Dataset) -> InstanceRecord:
    """The index fields as pydicom's own values give them (the former ``from_header``)."""
    values: dict[str, Any] = {}
    for name, keyword in records._KEYWORD.items():
        try:
            raw = ds.get(keyword)
        except Exception:
            continue
        if raw is None or isinstance(raw, bytes):
            continue
        if isinstance(raw, PersonName):
            value: Any = str(raw).strip() or None
        elif isinstance(raw, MultiValue | list | tuple):
            value = [str(v) for v in raw]
        else:
            value = str(raw).strip("\0 ") or None
        if value is None:
            continue
        if name in records._INT_FIELDS:
            try:
                value = int(float(value[0] if isinstance(value, list) else value))
            except (TypeError, ValueError):
                continue
        elif name in records._LIST_FIELDS:
            value = value if isinstance(value, list) else [value]
        elif isinstance(value, list):
            value = "\\".join(value)
        values[name] = value
    rec = InstanceRecord(**values, transfer_syntax_uid="1.2.840.10008.1.2.1", size_bytes=1)
    rec.derived = is_derived(rec.sop_class_uid, rec.modality)
    return rec


def test_index_fields_read_from_the_json_are_pydicom_values_on_every_test_file() -> None:
    compared = 0
    for path in pydicom_files():
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = f.read()
            try:
                fast, ref = read_header_bytes(data), read_header_bytes(data)
                validate(fast)  # what ingest indexes
            except BadInput:
                continue
            got = records.from_dicom_json(to_dicom_json(fast, S, SE, SOP), transfer_syntax_uid="1.2.840.10008.1.2.1",
                                          size_bytes=1)
            assert got == reference_record(ref.dataset), path
        compared += 1
    assert compared > 100
