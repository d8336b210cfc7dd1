"""Part 10 framing of files archived without it (``shared.dicom.part10``), on pydicom's own test files."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.data import get_testdata_file

from shared.dicom.part10 import PREAMBLE, missing_prefix
from shared.errors import BadInput


def raw(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path, name
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize(("name", "syntax"), [("ExplVR_LitEndNoMeta.dcm", "1.2.840.10008.1.2.1"),
                                              ("ExplVR_BigEndNoMeta.dcm", "1.2.840.10008.1.2.2"),
                                              ("rtstruct.dcm", "1.2.840.10008.1.2")])
def test_a_bare_data_set_gets_preamble_and_file_meta_and_keeps_its_bytes(name: str, syntax: str) -> None:
    data = raw(name)
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(io.BytesIO(data))  # strict readers refuse it as stored
    prefix = missing_prefix(data[:4096])
    framed = prefix + data
    ds = pydicom.dcmread(io.BytesIO(framed))
    bare = pydicom.dcmread(io.BytesIO(data), force=True)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.file_meta.MediaStorageSOPInstanceUID == bare.SOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPClassUID == bare.SOPClassUID
    assert framed.endswith(data) and framed.startswith(PREAMBLE)
    assert ds == bare  # every element, same values


def test_part10_files_get_nothing_and_meta_without_preamble_gets_the_preamble() -> None:
    data = raw("CT_small.dcm")
    assert missing_prefix(data[:4096]) == b""
    no_preamble = data[132:]  # starts with the file meta group
    prefix = missing_prefix(no_preamble[:4096])
    assert prefix == PREAMBLE
    assert pydicom.dcmread(io.BytesIO(prefix + no_preamble)).SOPInstanceUID == pydicom.dcmread(
        io.BytesIO(data)).SOPInstanceUID


def test_a_data_set_without_its_uids_cannot_be_framed() -> None:
    ds = pydicom.dcmread(io.BytesIO(raw("rtstruct.dcm")), force=True)
    del ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)  # pydicom 3 writes no meta without enforce
    with pytest.raises(BadInput) as err:
        missing_prefix(buf.getvalue()[:4096])
    assert err.value.reason == "missing-sop-instance-uid"
